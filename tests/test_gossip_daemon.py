"""`maxwell daemon --gossip`: real daemons with their own Serf agents on loopback, read through
`maxwell cluster members|price`, `/metrics` and `maxwell price`; a SIGKILLed daemon's serf dies
with it and a restarted daemon takes its place; `maxwell cluster demo` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip_support import ClusterKeys, Daemon, free_port, needs_serf, node_prefix, serfs_named
from helpers import maxwell, wait_until
from maxwell.gossip.agent import SERF_MISSING
from maxwell.gossip.keys import public_path

pytestmark = needs_serf
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Daemon]]:
    prefix = node_prefix()
    names = [f"{prefix}-{i}" for i in range(2)]
    keys = ClusterKeys.make(tmp_path / "keys", names)
    daemons: list[Daemon] = []
    try:
        for name in names:
            join = daemons[0].bind if daemons else None
            daemons.append(Daemon(keys, name, tmp_path / name, join))
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.communicate()
    assert serfs_named(prefix) == ""


def _verified(daemon: Daemon) -> set[str]:
    members = daemon.ask("cluster", "members")["members"]
    assert isinstance(members, list)
    return {m["node"] for m in members if m["verified"] and m["status"] == "alive"}


def test_daemons_gossip_verified_records_and_show_them(cluster) -> None:
    daemons = cluster
    names = {d.name for d in daemons}
    for daemon in daemons:
        wait_until(lambda d=daemon: _verified(d) == names, timeout_s=30, what="both verified")
    row = next(
        m for m in daemons[0].ask("cluster", "members")["members"] if m["node"] == daemons[1].name
    )
    assert set(row) == {"node", "address", "status", "verified", "temperature_c", "measured",
                        "headroom_c", "price", "free_cores", "age_s"}  # fmt: skip
    assert row["address"] == daemons[1].bind and row["measured"] is False
    prices = daemons[1].ask("cluster", "price")
    assert {n["node"] for n in prices["nodes"]} == names and prices["cheapest"] in names
    metrics = maxwell("cluster", "members", "--state", str(daemons[0].state))
    assert metrics.returncode == 0 and daemons[1].name in metrics.stdout
    page = _metrics(daemons[0])
    assert 'maxwell_gossip_rejected_total{reason="forged"} 0.0' in page
    assert 'maxwell_cluster_members{status="alive",verified="true"} 2.0' in page
    assert "maxwell_price_coupling 1.0" in page  # two cool nodes: nobody hotter
    for daemon in daemons:
        daemon.stop()


def test_a_sigkilled_daemons_serf_dies_and_a_restarted_daemon_takes_over(cluster) -> None:
    daemons = cluster
    first, second = daemons
    wait_until(lambda: _verified(first) == {first.name, second.name}, timeout_s=30,
               what="both verified")  # fmt: skip
    second.process.kill()
    second.process.communicate()
    wait_until(lambda: serfs_named(second.name) == "", timeout_s=10, what="its serf to die")
    second.process = second.start()  # the same flags, the same state directory
    wait_until(lambda: second.name in _verified(first) and _verified(second) >= {first.name},
               timeout_s=40, what="the restarted node to be believed again")  # fmt: skip
    for daemon in daemons:
        daemon.stop()


def test_without_serf_gossip_fails_with_one_line_saying_how_to_install_it(tmp_path) -> None:
    keys = ClusterKeys.make(tmp_path / "keys", ["n0"])
    bare = tmp_path / "bin"
    bare.mkdir()
    said = subprocess.run(
        [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(tmp_path / "s"),
         "--cgroup", "none", "--gossip", f"127.0.0.1:{free_port()}", "--cluster-key",
         str(keys.cluster_key), "--node-key", str(keys.node_key("n0")), "--authority",
         str(public_path(keys.authority))],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": str(bare)},
    )  # fmt: skip
    assert said.returncode == 2
    assert said.stderr.strip() == f"maxwell daemon: error: {SERF_MISSING}"
    assert not (tmp_path / "s" / "maxwell.db").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--gossip", "127.0.0.1:7946"], "gossip needs --node-key FILE"),
        (["--gossip", "nowhere"], "--gossip 'nowhere': not HOST:PORT"),
        (["--serf-rpc", "127.0.0.1:7373", "--join", "h:1"], "--join and --cluster-key are its own"),
    ],
)
def test_gossip_flags_that_cannot_work_are_one_line_usage_errors(
    tmp_path, flags, complaint
) -> None:
    said = maxwell("daemon", "--state", str(tmp_path / "s"), "--cgroup", "none", *flags)
    assert said.returncode == 2
    assert said.stderr.count("\n") == 1 and complaint in said.stderr


def test_the_cluster_commands_say_when_gossip_is_off(tmp_path) -> None:
    state = tmp_path / "plain"
    process = subprocess.Popen(
        [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
         "--cgroup", "none", "--tick", "0.3"],
        cwd=TESTS, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: (state / "maxwell.sock").exists(), timeout_s=30, what="serving")
        said = maxwell("cluster", "members", "--state", str(state))
        assert said.returncode == 1
        assert "gossip is off on this node (maxwell daemon --gossip)" in said.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_the_demo_spreads_distress_and_moves_prices_then_leaves_nothing() -> None:
    said = maxwell("cluster", "demo", "--nodes", "3", "--json", timeout=240)
    assert said.returncode == 0, said.stdout + said.stderr
    summary = json.loads(said.stdout)
    assert summary["ok"] is True and summary["distress_reached"] is True
    hot = summary["hot_node"]
    before, after = summary["prices"]["before"], summary["prices"]["after"]
    assert after[hot] > before[hot]  # its own heat: dearer
    assert all(after[n] < before[n] for n in before if n != hot)  # its neighbours: cheaper
    assert summary["cheapest_after"] != hot
    # Honest traffic is refused only as `replayed`: a distress event that arrived after the hot
    # node's newer tags (docs/gossip.md, the demo). Nothing forged, unadmitted or malformed.
    refused = summary["rejected_by_reason"]
    assert set(refused) <= {"replayed"} and summary["rejected"] == sum(refused.values())
    assert 0 < summary["distress_seconds"]["max"] < 10
    prefix = hot.rsplit("-", 1)[0]  # demo-<pid>: this run's nodes
    wait_until(lambda: serfs_named(prefix) == "", timeout_s=10, what="the demo's serfs gone")


def _metrics(daemon: Daemon) -> str:
    from maxwell.transport import NodeConnection

    connection = NodeConnection(socket_path=str(daemon.state / "maxwell.sock"))
    try:
        return connection.request("GET", "/metrics").body.decode()
    finally:
        connection.close()
