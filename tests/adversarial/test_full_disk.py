"""Attack (or accident): a full disk (issue 11, 6). With the state on a full filesystem, ticks
stopped, agents ran unbilled, and nothing was logged. Now ticks that keep failing freeze every
agent, the cause is logged and shown in the status, and the first tick that commits again thaws
them and bills what the meter saw meanwhile, once. (On `maxwell.testing`'s fakes.)"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.economy.store import LedgerStoreError
from maxwell.node.facade import AgentState
from maxwell.node.hold import HOLD_AFTER_FAILURES
from maxwell.units import Money
from test_node_settlement import TICK_S, J, Node, running


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running(tmp_path / "state") as made:
        yield made


def failing_tick(node: Node) -> None:
    node.clock.advance(TICK_S)
    node.wall[0] += TICK_S
    with pytest.raises(LedgerStoreError, match="disk is full"):
        node.daemon.tick_once()


def test_agents_are_frozen_while_the_ledger_cannot_be_written(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    busy, idle = (
        node.daemon.spawn(["work"], fund=Money(100 * J), bid=2.0, demand=0.5).agent
        for _ in range(2)
    )
    node.ticks(3, (busy,))
    groups = node.supervisor.groups

    def full(*_: object) -> None:
        raise LedgerStoreError("cannot commit: database or disk is full")

    monkeypatch.setattr(node.daemon._ticker, "_commit", full)
    node.supervisor.burn(busy, 0.05)  # metered by a tick that cannot commit
    for _ in range(HOLD_AFTER_FAILURES - 1):
        failing_tick(node)
    assert not groups[busy].frozen and not groups[idle].frozen  # a passing hiccup holds nothing
    with caplog.at_level(logging.ERROR, logger="maxwell.node.hold"):
        failing_tick(node)
    assert groups[busy].frozen and groups[idle].frozen
    assert "2 agents frozen until a tick commits again" in caplog.text
    failing_tick(node)  # still failing: still held, said once
    assert caplog.text.count("agents frozen") == 1
    status = node.daemon.status().tick_stats
    assert status.last_error is not None and "disk is full" in status.last_error
    # The records keep the last committed state: the freeze is the hold's, not the plan's.
    assert node.daemon.agent(busy).state is AgentState.RUNNING

    monkeypatch.undo()  # the disk has room again
    node.ticks(1)
    assert not groups[busy].frozen and not groups[idle].frozen
    node.daemon.tick_once(settle_all=True)
    info = node.daemon.agent(busy)
    assert info.energy_uj > 0 and info.paid == info.energy_uj  # billed once, at 1 $J per J
    assert node.daemon.ledger().verify().ok


def test_an_agent_the_plan_froze_stays_frozen_after_the_hold(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(100 * J), bid=2.0, demand=0.5).agent
    node.ticks(2)
    node.daemon.bid(agent, 0.5)  # below the spot price: the plan freezes it
    node.ticks(2)
    assert node.daemon.agent(agent).state is AgentState.FROZEN

    def full(*_: object) -> None:
        raise LedgerStoreError("cannot commit: database or disk is full")

    monkeypatch.setattr(node.daemon._ticker, "_commit", full)
    for _ in range(HOLD_AFTER_FAILURES):
        failing_tick(node)
    monkeypatch.undo()
    node.ticks(1)
    assert node.supervisor.groups[agent].frozen  # the hold did not thaw what the plan froze
