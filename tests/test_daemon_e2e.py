"""`maxwell daemon` for real: a daemon process, real agents, the CLI over its socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import maxwell, pids_with_tag


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
    deadline = time.monotonic() + 30
    while not (state / "maxwell.sock").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    try:
        yield state
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr


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
        f"sleep 60 # {tag}",
    )
    assert spawned.returncode == 0, spawned.stderr
    agent = json.loads(spawned.stdout)
    assert set(agent) >= {"agent", "name", "pid", "token"}
    try:
        time.sleep(0.6)  # a few ticks
        listed = json.loads(maxwell("ps", *state, "--json").stdout)
        mine = next(a for a in listed["agents"] if a["id"] == agent["agent"])
        assert mine["name"] == "sleeper"
        assert mine["state"] in ("running", "throttled")
        assert mine["balance"] <= 50.0

        price = json.loads(maxwell("price", *state, "--json").stdout)
        assert price["spot"] >= price["grid"] > 0
        assert price["measured"] in (True, False)

        # The agent's own token may change its own bid, and nothing else.
        as_agent = ["--socket", str(daemon / "maxwell.sock"), "--token", agent["token"]]
        assert maxwell("bid", *as_agent, agent["agent"], "3").returncode == 0
        refused = maxwell("fund", *as_agent, agent["agent"], "10J")
        assert refused.returncode == 1
        assert "refused" in refused.stderr

        top = subprocess.Popen(
            [sys.executable, "-m", "maxwell.cli.main", "top", *state, "--refresh", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        top.send_signal(signal.SIGINT)
        view, errors = top.communicate(timeout=30)
        assert top.returncode == 0, errors
        assert "sleeper" in view and "spot" in view

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
