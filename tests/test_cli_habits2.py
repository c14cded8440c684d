"""More of the CLI's habits (issue 15, 5): the daemon says where it listens and, on SIGTERM, how
many agents it leaves running and how to re-adopt them (or, with --kill-agents, that it ended
them); `--json` on every client command, each object with the package's `version` and money in
$J (events too); a closed pipe ends a command quietly with status 0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from helpers import maxwell, wait_until
from maxwell import __version__
from maxwell.units import Money

J = 1_000_000
_STARTED: list[subprocess.Popen[bytes]] = []  # every daemon a test started: none outlives it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _Daemon:
    """`maxwell daemon` as a process of its own, its stderr kept."""

    def __init__(self, root: Path, *flags: str) -> None:
        self.state = root / "state"
        self.log = (root / f"stderr-{len(list(root.glob('stderr-*')))}").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(self.state),
             "--cgroup", "none", "--tick", "0.1", "--log-level", "error", *flags],
            stderr=self.log, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _STARTED.append(self.process)
        wait_until(lambda: "state " in self.said(), timeout_s=60, what="the daemon to start")

    def said(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> str:
        """SIGTERM, and what it said, once it ended (with status 0)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=60) == 0, self.said()
            return self.said()
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()


@pytest.fixture
def root() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="mxw-say-", dir="/tmp"))
    made.chmod(0o711)  # a root daemon's agents, uids of their own, pass through it
    try:
        yield made
    finally:
        for process in _STARTED:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(made, ignore_errors=True)


def test_the_daemon_says_where_it_listens_and_what_it_leaves_running(root: Path) -> None:
    first = _Daemon(root, "--listen", "127.0.0.1:0")
    socket = first.state / "maxwell.sock"
    started = first.said().splitlines()
    assert started[-2].startswith(f"maxwell daemon: listening on {socket} and http://127.0.0.1:")
    assert started[-1] == f"maxwell daemon: state {first.state}"
    spawned = maxwell(
        "spawn", "--state", str(first.state), "--fund", "5J", "--bid", "1", "--json", "--",
        "sleep", "300",
    )  # fmt: skip
    assert spawned.returncode == 0, spawned.stderr
    pid = json.loads(spawned.stdout)["pid"]
    try:
        said = first.stop().splitlines()[-1]
        assert said == (
            f"maxwell daemon: stopped on SIGTERM; 1 agent left running: 'maxwell daemon --state "
            f"{first.state}' re-adopts it (--kill-agents ends it on stop)"
        )
        assert _alive(pid)
        second = _Daemon(root, "--kill-agents")
        assert second.said().splitlines()[-1] == (
            f"maxwell daemon: state {second.state}; 1 agent re-adopted"
        )
        said = second.stop().splitlines()[-1]
        assert said == "maxwell daemon: stopped on SIGTERM; killed 1 agent (--kill-agents)"
        wait_until(lambda: not _alive(pid), timeout_s=10, what="the agent to be killed")
        third = _Daemon(root)
        assert third.stop().splitlines()[-1] == (
            "maxwell daemon: stopped on SIGTERM; no agent left running"
        )
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, list[str]]]:
    fake = FakeNode()
    with serving(fake) as server:
        assert server.socket_path is not None
        yield fake, ["--socket", server.socket_path, "--token", ADMIN_TOKEN]


def _objects(stdout: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines and all(isinstance(line, dict) for line in lines), stdout
    return lines


def test_every_client_command_prints_json_with_its_version(
    node: tuple[FakeNode, list[str]],
) -> None:
    fake, connection = node
    spawn = maxwell("spawn", *connection, "--fund", "2.5J", "--bid", "1", "--json", "--", "true")
    agent = json.loads(spawn.stdout)
    token = str(agent["token"])
    other = fake.spawn(["true"], fund=Money(J), bid=1.0, name="other").agent
    runs = {
        "spawn": spawn,
        "ps": maxwell("ps", *connection, "--json"),
        "fund": maxwell("fund", *connection, "a1", "1J", "--json"),
        "bid": maxwell("bid", *connection, "a1", "2", "--json"),
        "price": maxwell("price", *connection, "--json"),
        "status": maxwell("status", *connection, "--json"),
        "top": maxwell("top", *connection, "--json"),
        "audit": maxwell("audit", *connection, "a1", "--json"),
        "report": maxwell(
            "report", "--socket", connection[1], "--token", token, "--cpu", "0", "--json"
        ),
        "kill": maxwell("kill", *connection, other, "--json"),
        "rm": maxwell("rm", *connection, other, "--json"),
        "events": maxwell("events", *connection, "--json"),
    }
    for command, run in runs.items():
        assert run.returncode == 0, (command, run.stderr)
        for said in _objects(run.stdout):
            assert said["version"] == __version__, command
    assert json.loads(runs["kill"].stdout)["ended"] == "killed"
    assert json.loads(runs["fund"].stdout)["balance"] == 3.5  # $J, as the API's answers
    funded = [e for e in _objects(runs["events"].stdout) if e["kind"] == "funded"]
    assert [e["detail"]["amount"] for e in funded][:2] == [2.5, 1.0]  # $J, not µ$J
    top = json.loads(runs["top"].stdout)
    assert {"agents", "price", "events"} <= set(top) and top["events"][-1]["kind"] == "bid"


def test_a_closed_pipe_ends_a_command_quietly(node: tuple[FakeNode, list[str]]) -> None:
    fake, connection = node
    for n in range(600):  # more than a pipe holds, whatever the command prints
        fake.spawn(["true"], fund=Money(J), bid=1.0, name=f"agent-{n}")
    for command in ("events", "ps --json", "events --json", "ps", "ps -a"):
        reader = subprocess.run(
            f"{sys.executable} -m maxwell.cli.main {command} {' '.join(connection)} | head -c 1;"
            " exit ${PIPESTATUS[0]}",
            shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert (reader.returncode, reader.stderr) == (0, ""), command
        assert len(reader.stdout) == 1
