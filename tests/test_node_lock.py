"""One daemon per state directory: a second start is refused before it touches anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIME_SCALE, maxwell, wait_until
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.paths import StateLock, StateLockError, StatePaths
from maxwell.units import Money
from test_node_daemon import J, cgroups_or_skip, tree_dirs


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    held = StateLock.acquire(paths)
    try:
        with pytest.raises(StateLockError, match=f"another maxwell daemon \\(pid {os.getpid()}\\)"):
            StateLock.acquire(paths)
    finally:
        held.release()
    held.release()  # idempotent
    StateLock.acquire(paths).release()


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "daemon.lock").symlink_to(target)
    with pytest.raises(StateLockError, match="cannot open"):
        StateLock.acquire(StatePaths(tmp_path))


def test_a_lock_held_by_a_process_killed_with_sigkill_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from maxwell.node.paths import StateLock, StatePaths; "
         "StateLock.acquire(StatePaths(__import__('pathlib').Path(sys.argv[1]))); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StateLockError) as caught:
            StateLock.acquire(StatePaths(tmp_path))
        assert caught.value.holder_pid == holder.pid
    finally:
        holder.kill()
        holder.communicate()
    StateLock.acquire(StatePaths(tmp_path)).release()


@pytest.mark.root
def test_a_second_daemon_on_the_same_state_changes_nothing(tmp_path: Path) -> None:
    """The second start is refused before it opens the database or the cgroups: the running
    daemon's groups stay, its next spawn works, and no false "adopted" event is written."""
    cgroups_or_skip()
    state = tmp_path / "state"
    first = NodeDaemon(NodeConfig(state_dir=state, tick_s=0.1))
    try:
        running = first.spawn(["sleep", "30"], fund=Money(J), bid=1.0)
        first.tick_once()
        before = (tree_dirs(state), [e.kind for e in first.events()])
        with pytest.raises(StateLockError, match="another maxwell daemon"):
            NodeDaemon(NodeConfig(state_dir=state, tick_s=0.1))
        assert tree_dirs(state) == before[0]
        assert [e.kind for e in first.events()] == before[1]
        assert "adopted" not in before[1]
        assert first.group_dirs(running.agent) and all(
            os.path.isdir(d) for d in first.group_dirs(running.agent)
        )
        later = first.spawn(["sleep", "30"], fund=Money(J), bid=1.0)
        first.tick_once()
        assert first.agent(later.agent).state.value == "running"
    finally:
        first.shutdown(kill_agents=True)
    assert tree_dirs(state) == []


@pytest.mark.root
def test_maxwell_daemon_twice_on_one_state_is_refused_with_status_2(tmp_path: Path) -> None:
    cgroups_or_skip()
    state = tmp_path / "state"
    socket_path = state / "maxwell.sock"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
         "--tick", "0.2", "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(socket_path.exists, timeout_s=30, what="the first daemon's socket")
        second = maxwell("daemon", "--state", str(state), "--tick", "0.2")
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"maxwell daemon: error: another maxwell daemon (pid {daemon.pid}) is running on "
            f"{state}"
        ]
        # Funded to outlive the test whatever its start costs (an emulated CPU's is dear).
        spawned = maxwell("spawn", "--state", str(state), "--fund", "100J", "--bid", "1",
                          "--json", "--", "sleep", f"{30 * TIME_SCALE:g}")  # fmt: skip
        assert spawned.returncode == 0, spawned.stderr
        agent = json.loads(spawned.stdout.strip().splitlines()[-1])["agent"]
        assert socket_path.exists()
        # The running daemon still serves its own agents: kill this one (so the daemon, with
        # none left to re-adopt, removes its tree when it stops).
        assert maxwell("kill", "--state", str(state), agent).returncode == 0
    finally:
        daemon.terminate()
        _, errors = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, errors
    assert tree_dirs(state) == []
