"""Escape by forking (issue 11, 7): an agent of a root daemon, a uid of its own, that double-forks
and `setsid`s children out of its process group and session, or forks as fast as it can, is
still held by its cgroup: the fork bomb stops at its pids limit, and a kill leaves nothing of
either running. The ledger stays sound."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import pids_with_tag, wait_until
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState
from maxwell.units import Money
from test_node_daemon import cgroups_or_skip

pytestmark = pytest.mark.root

J = 1_000_000


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    cgroups_or_skip()
    made = NodeDaemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, grace_s=60.0))
    try:
        yield made
    finally:
        made.shutdown(kill_agents=True)


def _tag() -> str:
    """A sleep duration no other process on the machine has: its processes' mark."""
    return f"3{secrets.randbelow(10**6):06d}.5"


def test_children_that_leave_the_session_and_the_process_group_die_with_the_agent(
    daemon: NodeDaemon,
) -> None:
    tag = _tag()
    escaper = daemon.spawn(
        ["sh", "-c", f"setsid sleep {tag} & (sleep {tag} &); (setsid sh -c 'sleep {tag} &'); "
         f"exec sleep {tag}"],
        fund=Money(100 * J), bid=1.0, demand=0.1,
    )  # fmt: skip
    wait_until(lambda: len(pids_with_tag(tag)) == 4, what="the agent and its three runaways")
    assert str(daemon.agent(escaper.agent).user).startswith("dynamic:")  # a uid of its own
    daemon.kill(escaper.agent)
    wait_until(lambda: not pids_with_tag(tag), what="every runaway to die with the agent")
    daemon.tick_once()
    assert daemon.agent(escaper.agent).state is AgentState.DEAD
    assert daemon.ledger().verify().ok


def test_a_fork_bomb_stops_at_its_pids_limit_and_dies_whole(daemon: NodeDaemon) -> None:
    tag = _tag()
    # 200 forks, as fast as the shell goes: bounded, so that it is safe without a limit too.
    bomb = daemon.spawn(
        ["sh", "-c", f"i=0; while [ $i -lt 200 ]; do sleep {tag} & i=$((i+1)); done; wait"],
        fund=Money(100 * J), bid=1.0, demand=0.1, pids=16,
    )  # fmt: skip
    neighbour = daemon.spawn(["sleep", "120"], fund=Money(100 * J), bid=1.0, demand=0.1)
    seen: list[int] = []
    wait_until(
        lambda: seen.append(len(pids_with_tag(tag))) or seen[-1] >= 10, what="the bomb's children"
    )
    assert max(seen) <= 16  # of 200: the shell (its command line carries the tag) and its children
    # The shell gives up at its first failed fork (dash does), and its agent ends: the daemon
    # then takes its whole group down. A shell that went on would be killed here.
    daemon.tick_once()
    if daemon.agent(bomb.agent).state not in (AgentState.EXITED, AgentState.DEAD):
        daemon.kill(bomb.agent)
    wait_until(lambda: not pids_with_tag(tag), what="every child of the bomb to die")
    daemon.tick_once()
    assert daemon.agent(neighbour.agent).state is AgentState.RUNNING
    assert daemon.ledger().verify().ok
