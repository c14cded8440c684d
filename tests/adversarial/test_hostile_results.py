"""Attacks through an agent's result (`maxwell.node.results`): what it leaves is read by the
node as root and handed to whoever reads it. A link to the node's admin token, a sparse file of
2 GiB, a FIFO or a directory must not be followed, exhaust the node or stall it: each is a 400
that says why, and the node reads nothing else; nor does a file someone else planted there."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import wait_until
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState, NodeError
from maxwell.units import Money

J = 1_000_000


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    made = NodeDaemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"))
    try:
        yield made
    finally:
        made.shutdown(kill_agents=True)


def leaves(daemon: NodeDaemon, script: str) -> str:
    """An agent that runs `script` (sh) in its directory and ends; its id once it has ended."""
    spawned = daemon.spawn(["sh", "-c", f'cd "$MAXWELL_AGENT_DIR" && {script}'],
                           fund=Money(J), bid=1.0)  # fmt: skip

    def ended() -> bool:
        daemon.tick_once()
        return daemon.agent(spawned.agent).state is AgentState.EXITED

    wait_until(ended, timeout_s=30, what="the agent ended")
    return spawned.agent


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ('ln -s "$MAXWELL_AGENT_DIR/../../admin.token" result', "symbolic link"),
        ("ln -s /etc/passwd result", "symbolic link"),
        ("truncate -s 2G result", "over the limit"),
        ("mkfifo result", "not a regular file"),
        ("mkdir result", "not a regular file"),
    ],
    ids=["admin-token-link", "passwd-link", "sparse-2g", "fifo", "directory"],
)
def test_a_hostile_result_is_refused_at_once_and_reads_nothing(
    daemon: NodeDaemon, script: str, says: str
) -> None:
    agent = leaves(daemon, script)
    started = time.monotonic()
    with pytest.raises(NodeError, match=says) as refused:
        daemon.result(agent)
    assert time.monotonic() - started < 5  # no FIFO wait, no 2 GiB read
    assert refused.value.status == 400 and daemon.admin_token not in str(refused.value)


@pytest.mark.root
def test_a_result_the_agent_does_not_own_is_refused(daemon: NodeDaemon, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the agent must run as a uid of its own")
    agent = leaves(daemon, "true")
    work = tmp_path / "state" / "work" / agent
    (work / "result").write_bytes(b"planted by someone else")  # root's, not the agent's
    with pytest.raises(NodeError, match="not by the agent"):
        daemon.result(agent)
