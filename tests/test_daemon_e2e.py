"""`maxwell daemon` for real: a daemon process, real agents, the CLI over its socket."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import TIME_SCALE, maxwell, pids_with_tag, wait_until


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maxwell.cli.main",
            "daemon",
            "--state",
            str(state),
            "--tick",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def socket_open() -> bool:
        assert process.poll() is None, process.communicate()
        return (state / "maxwell.sock").exists()

    try:
        wait_until(socket_open, timeout_s=30, what="the daemon to open its socket")
    except AssertionError:
        process.kill()
        process.communicate()
        raise
    try:
        yield state
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr


def read_terminal(screen: int, into: list[bytes]) -> None:
    """Append what a program writes to its pseudo-terminal, until it closes the terminal."""
    with contextlib.suppress(OSError):  # EIO once no process has the terminal open
        while chunk := os.read(screen, 4096):
            into.append(chunk)


def ticks(state: Path) -> int:
    """The daemon's tick count, from `maxwell status`."""
    status = maxwell("status", "--state", str(state), "--json")
    assert status.returncode == 0, status.stderr
    count = json.loads(status.stdout)["ticks"]
    assert isinstance(count, int)
    return count


@pytest.mark.root
def test_spawn_ps_bid_events_price_kill_through_the_socket(daemon: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemon puts agents in cgroups")
    tag = f"mxdaemon-{uuid.uuid4().hex[:10]}"
    state = ["--state", str(daemon)]
    spawned = maxwell(
        "spawn",
        *state,
        "--fund",
        "50J",
        "--bid",
        "2",
        "--demand",
        "0.5",
        "--name",
        "sleeper",
        "--json",
        "--",
        "sh",
        "-c",
        f"sleep {60 * TIME_SCALE:g} # {tag}",
    )
    assert spawned.returncode == 0, spawned.stderr
    agent = json.loads(spawned.stdout)
    assert set(agent) >= {"agent", "name", "pid", "token"}
    try:
        spawned_at = ticks(daemon)
        wait_until(lambda: ticks(daemon) >= spawned_at + 3, timeout_s=30, what="a few ticks")
        listed = json.loads(maxwell("ps", *state, "--json").stdout)
        mine = next(a for a in listed["agents"] if a["id"] == agent["agent"])
        assert mine["name"] == "sleeper"
        assert mine["state"] in ("running", "throttled")
        assert mine["balance"] <= 50.0

        price = json.loads(maxwell("price", *state, "--json").stdout)
        assert price["spot"] >= price["grid"] > 0
        # "measured" only when neither figure comes from the model (here, a VM: both do).
        modelled = "model" in (price["energy_source"], price["temperature_source"])
        assert price["measured"] is (not modelled)

        # The agent's own token may change its own bid, and nothing else.
        as_agent = ["--socket", str(daemon / "maxwell.sock"), "--token", agent["token"]]
        assert maxwell("bid", *as_agent, agent["agent"], "3").returncode == 0
        refused = maxwell("fund", *as_agent, agent["agent"], "10J")
        assert refused.returncode == 1
        assert "refused" in refused.stderr

        # On a terminal `top` draws each frame as it goes (into a pipe it prints only the last,
        # at the Ctrl-C): under a pseudo-terminal the test sees a full frame, then presses Ctrl-C.
        screen, terminal = pty.openpty()
        top = subprocess.Popen(
            [sys.executable, "-m", "maxwell.cli.main", "top", *state, "--refresh", "0.2"],
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TERM": "xterm", "NO_COLOR": "1", "COLUMNS": "120", "LINES": "40"},
        )
        os.close(terminal)
        drawn: list[bytes] = []
        reader = threading.Thread(target=read_terminal, args=(screen, drawn), daemon=True)
        reader.start()
        try:
            wait_until(
                lambda: b"sleeper" in b"".join(drawn) and b"spot" in b"".join(drawn),
                timeout_s=30,
                what="`maxwell top` to draw the agent and the price",
            )
            top.send_signal(signal.SIGINT)
            _, errors = top.communicate(timeout=30)
        finally:
            if top.poll() is None:
                top.kill()
                top.communicate()
            reader.join(10)
            os.close(screen)
        assert top.returncode == 0, errors

        killed = maxwell("kill", *state, agent["agent"])
        assert killed.returncode == 0, killed.stderr
        lines = maxwell("events", *state, "--json").stdout.splitlines()
        kinds = [e["kind"] for e in map(json.loads, lines) if e["agent"] == agent["agent"]]
        assert {"funded", "spawned", "bid", "killed"} <= set(kinds)
        assert kinds.index("spawned") < kinds.index("bid") < kinds.index("killed")
    finally:
        for pid in pids_with_tag(tag):
            os.kill(pid, signal.SIGKILL)
    assert pids_with_tag(tag) == []
    verify = maxwell("ledger", "verify", "--state", str(daemon))
    assert verify.returncode == 0, verify.stdout + verify.stderr
