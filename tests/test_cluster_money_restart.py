"""Money across nodes survives nodes killed in the middle of a transfer (issue 13, 3): two real
`maxwell daemon --gossip` processes with their cluster identities. The home node is SIGKILLed
after sending a job's funds and before the runner got them; the runner is SIGKILLed while the
job runs on them. Restarted, each takes up where it was (the same voucher still pays the job
once; the restarted runner settles what is left), and `maxwell cluster ledger verify` finds
every ledger sound and the money between them conserved, with nothing in flight."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip_support import ClusterKeys, Daemon, needs_serf, node_prefix, serfs_named
from helpers import maxwell, wait_until
from maxwell.client import Client, ClientError
from maxwell.node.paths import ADMIN_TOKEN_FILE, SOCKET_NAME

NEEDS_ROOT = "needs root: the runner's agent is re-adopted from its cgroup after the SIGKILL"
pytestmark = [needs_serf, pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)]


def _client(daemon: Daemon) -> Client:
    token = (daemon.state / ADMIN_TOKEN_FILE).read_text().strip()
    return Client(socket=str(daemon.state / SOCKET_NAME), token=token)


def _kill_and_restart(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.communicate()
    daemon.process = daemon.start()


@pytest.fixture
def pair() -> Iterator[tuple[Daemon, Daemon]]:
    prefix = node_prefix()
    names = [f"{prefix}-home", f"{prefix}-runner"]
    # Under /tmp, passable by others: the agents run as uids of their own (a root daemon's).
    with tempfile.TemporaryDirectory(prefix="mx-xfer-", dir="/tmp") as base:
        os.chmod(base, 0o711)
        keys = ClusterKeys.make(Path(base) / "keys", names)
        daemons: list[Daemon] = []
        try:
            for name in names:
                join = daemons[0].bind if daemons else None
                # In cgroups: a restarted daemon finds its running agents again by their groups.
                daemons.append(Daemon(keys, name, Path(base) / name, join, "--cgroup", "auto"))
            yield daemons[0], daemons[1]
        finally:
            for daemon in daemons:  # stopped: a daemon removes the cgroups it made
                try:
                    daemon.stop()
                finally:
                    if daemon.process.poll() is None:
                        daemon.process.kill()
                        daemon.process.communicate()
    assert serfs_named(prefix) == ""


@pytest.mark.root
def test_halves_killed_midway_are_taken_up_again_and_nothing_is_made_or_lost(
    pair: tuple[Daemon, Daemon],
) -> None:
    home, runner = pair
    with _client(home) as at_home:
        sent = at_home.send_transfer("job-1", runner.name, 3.0)
    _kill_and_restart(home)  # after sending, before the runner heard of it
    with _client(home) as at_home:
        again = at_home.send_transfer("job-1", runner.name, 3.0)  # the submitter's retry
    assert again.amount == sent.amount and again.voucher is not None
    with _client(runner) as at_runner:
        spawned = at_runner.arrive(again.voucher, ["sleep", "60"], bid=2.0)
    _kill_and_restart(runner)  # while the job runs on the money
    with _client(runner) as at_runner:
        assert at_runner.agent(spawned.agent).state.value == "running"  # adopted again
        with pytest.raises(ClientError) as early:
            at_runner.settle("job-1")
        assert early.value.status == 409  # it still runs
        at_runner.kill(spawned.agent)
        wait_until(lambda: at_runner.agent(spawned.agent).state.value == "dead", what="dead")
        settled = at_runner.settle("job-1")
        with pytest.raises(ClientError, match="was received") as spent:
            at_runner.arrive(sent.voucher or "", ["true"], bid=2.0)  # the first voucher too
        assert spent.value.status == 409
    assert settled.voucher is not None and 0 < settled.amount <= 3_000_000
    with _client(home) as at_home:
        at_home.take_back(settled.voucher)
        at_home.take_back(settled.voucher)  # a retry: refunds once
    said = maxwell("cluster", "ledger", "verify", "--state", str(home.state),
                   "--state", str(runner.state), "--json")  # fmt: skip
    verdict = json.loads(said.stdout)
    assert said.returncode == 0 and verdict["ok"], said.stdout + said.stderr
    (only,) = verdict["pairs"]
    assert only["in_flight_uj"] == 0 and only["pending"] == [] and only["broken"] == []
    assert only["outbound_uj"] == -only["inbound_uj"] == 3_000_000 - settled.amount
