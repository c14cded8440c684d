"""Attacks on the machine's memory and process table (issue 11, 1): every agent's group has a
memory limit and a pids limit (the spawn's, `maxwell spawn --memory BYTES --pids N`, or the
node's `memory_max` and `pids_max`), so a memory bomb is killed inside its own group, never the
daemon or a neighbour, and a fork or thread bomb stops at its limit. Real processes in real
cgroups: runs as root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import public_python, wait_until
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState
from maxwell.units import Money
from test_node_daemon import cgroups_or_skip

pytestmark = pytest.mark.root

J = 1_000_000
BOMB = "chunks = []\nwhile True:\n    chunks.append(b'x' * (8 << 20))\n"
# Starts as many threads as it can (up to 64), then says how many it got in its own directory.
THREADS = """
import os, threading, time
started = 0
for _ in range(64):
    try:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    except RuntimeError:
        break
    started += 1
with open(os.path.join(os.environ["MAXWELL_AGENT_DIR"], "threads"), "w") as out:
    out.write(str(started))
time.sleep(60)
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    cgroups_or_skip()
    made = NodeDaemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, grace_s=60.0))
    try:
        yield made
    finally:
        made.shutdown(kill_agents=True)


def ended(daemon: NodeDaemon, agent: str) -> bool:
    daemon.tick_once()
    return daemon.agent(agent).state is AgentState.EXITED


def test_a_memory_bomb_dies_alone_in_its_group(daemon: NodeDaemon) -> None:
    neighbour = daemon.spawn(["sleep", "120"], fund=Money(100 * J), bid=1.0, demand=0.1)
    bomb = daemon.spawn(
        [public_python(), "-c", BOMB], fund=Money(100 * J), bid=1.0, demand=0.5,
        memory=64 << 20, name="bomb",
    )  # fmt: skip
    wait_until(lambda: ended(daemon, bomb.agent), timeout_s=60, what="the bomb to be killed")
    assert daemon.agent(bomb.agent).exit_code == -9  # the kernel's OOM killer: SIGKILL
    assert daemon.agent(neighbour.agent).state is AgentState.RUNNING
    daemon.tick_once()  # the daemon lives on


def test_a_thread_bomb_stops_at_its_pids_limit(daemon: NodeDaemon, tmp_path: Path) -> None:
    spawned = daemon.spawn(
        [public_python(), "-c", THREADS], fund=Money(100 * J), bid=1.0, demand=0.5, pids=8
    )
    said = tmp_path / "state" / "work" / spawned.agent / "threads"
    wait_until(said.exists, timeout_s=60, what="the agent to count its threads")
    started = int(wait_until(said.read_text, timeout_s=10, what="the count"))
    assert 0 <= started < 8  # the main thread counts too
    assert daemon.agent(spawned.agent).state in (AgentState.RUNNING, AgentState.THROTTLED)


def test_without_limits_of_its_own_an_agent_gets_the_node_s(tmp_path: Path) -> None:
    cgroups_or_skip()
    config = NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, memory_max=96 << 20)
    daemon = NodeDaemon(config)
    try:
        bomb = daemon.spawn([public_python(), "-c", BOMB], fund=Money(100 * J), bid=1.0)
        wait_until(lambda: ended(daemon, bomb.agent), timeout_s=60, what="the bomb's end")
        assert daemon.agent(bomb.agent).exit_code == -9
    finally:
        daemon.shutdown(kill_agents=True)
