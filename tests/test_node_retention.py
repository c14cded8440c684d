"""Dead agents are reclaimed after the retention period (`maxwell.node.retention`): gone from the
registry, the read models, the node's tables and the disk; their ledger history stays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.economy.ledger import agent_account
from maxwell.node.facade import AgentState, UnknownAgentError
from maxwell.units import Money
from test_node_settlement import J, Node, running

RETENTION_S = 30.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running(tmp_path / "state", retention_s=RETENTION_S) as made:
        yield made


def test_an_agent_that_ended_long_ago_is_reclaimed_and_its_history_kept(
    node: Node, tmp_path: Path
) -> None:
    daemon = node.daemon
    gone = daemon.spawn(["work"], fund=Money(5 * J), bid=1.0)
    alive = daemon.spawn(["work"], fund=Money(5 * J), bid=1.0)
    state = tmp_path / "state"
    (state / "work" / gone.agent).mkdir(parents=True, exist_ok=True)
    (state / "work" / gone.agent / "proof.mxp").write_bytes(b"left behind")
    (state / "agents").mkdir(exist_ok=True)
    (state / "agents" / f"{gone.agent}.log").write_text("what it printed\n")
    node.supervisor.exit(gone.agent, 0)
    node.ticks(2, (gone.agent,))
    assert daemon.agent(gone.agent).state is AgentState.EXITED
    held = daemon.agent(gone.agent).balance
    node.wall[0] += RETENTION_S - 5
    node.ticks(1)
    assert daemon.agent(gone.agent).state is AgentState.EXITED  # not yet
    node.wall[0] += 60  # past the retention, and past the next sweep
    node.ticks(1)
    with pytest.raises(UnknownAgentError):
        daemon.agent(gone.agent)
    assert [info.id for info in daemon.agents()] == [alive.agent]
    assert daemon.authenticate(gone.token) is None  # its token answers no more
    assert not (state / "work" / gone.agent).exists()
    assert not (state / "agents" / f"{gone.agent}.log").exists()
    # The money's history stays: its account, its entries, a ledger that verifies.
    ledger = daemon.ledger()
    assert ledger.balance(agent_account(gone.agent)) == held
    assert {"spawned", "exited"} <= {e.kind for e in daemon.events() if e.agent == gone.agent}
    assert ledger.verify().ok
    assert daemon.agent(alive.agent).state is AgentState.RUNNING


def test_a_reclaimed_agent_stays_gone_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running(state, retention_s=0.0) as node:
        agent = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
        node.daemon.kill(agent)
        node.ticks(2)
        with pytest.raises(UnknownAgentError):
            node.daemon.agent(agent)
    with running(state, retention_s=0.0) as again:
        assert again.daemon.agents() == []
        assert again.daemon.ledger().verify().ok
