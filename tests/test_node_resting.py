"""Resting agents on the daemon (`maxwell.node.resting`, over `maxwell.testing`'s fakes): idle
agents rest, a tick does no work for them, and everything that may change one wakes it first.
Every tick here checks that each resting agent is as it rested (`RestingAgents.verifying`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import fail_once
from maxwell.node.facade import AgentState
from maxwell.units import Money
from test_node_settlement import TICK_S, J, Node

IDLE = 4


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path / "state", settlement_s=0.3)
    made.daemon._ticker.resting.verifying = True
    try:
        yield made
    finally:
        made.daemon.shutdown(kill_agents=True)


def resting(node: Node) -> set[str]:
    return set(node.daemon._ticker.resting.inputs)


def rested(node: Node) -> list[str]:
    """`IDLE` idle agents, spawned and ticked until they all rest."""
    agents = [
        node.daemon.spawn(["sleep"], fund=Money(10 * J), bid=2.0, demand=0.1).agent
        for _ in range(IDLE)
    ]
    node.ticks(3)
    assert resting(node) == set(agents)
    return agents


def test_idle_agents_rest_and_a_tick_plans_none_of_them(node: Node) -> None:
    agents = rested(node)
    ticker = node.daemon._ticker
    node.ticks(5)
    assert resting(node) == set(agents)
    assert ticker.touched == set()  # nothing planned, nothing changed, nothing to publish
    assert [node.daemon.agent(a).state for a in agents] == [AgentState.RUNNING] * IDLE


def test_cpu_the_meter_sees_wakes_an_agent_and_it_is_billed(node: Node) -> None:
    first, *others = rested(node)
    node.ticks(1, busy=(first,))
    assert first not in resting(node) and set(others) <= resting(node)
    node.daemon.tick_once(settle_all=True)
    assert node.bills(first) == 1 and node.daemon.agent(first).paid > 0
    node.ticks(5)
    assert resting(node) == {first, *others}  # idle again, settled: it rests again


def test_a_stored_bid_wakes_the_agent_and_the_market_clears_again(node: Node) -> None:
    first, *_ = rested(node)
    node.daemon.bid(first, 3.0, 0.2)
    assert first in resting(node)  # queued: it changes nothing until stored
    node.ticks(1)
    assert node.daemon.agent(first).bid == 3.0 and node.daemon.agent(first).demand == 0.2
    assert first not in resting(node)


def test_funding_and_killing_wake_the_agent(node: Node) -> None:
    first, second, *_ = rested(node)
    node.daemon.fund(first, Money(5 * J))
    assert first not in resting(node)
    node.ticks(3)
    assert node.daemon.agent(first).balance == 15 * J
    node.daemon.kill(second)
    assert second not in resting(node)
    node.ticks(1)
    assert node.daemon.agent(second).state is AgentState.DEAD
    assert second not in resting(node)


def test_an_exit_wakes_the_agent_and_ends_it(node: Node) -> None:
    first, *_ = rested(node)
    node.supervisor.exit(first, 3)
    node.ticks(1)
    info = node.daemon.agent(first)
    assert info.state is AgentState.EXITED and info.exit_code == 3
    assert first not in resting(node)


def test_a_failed_tick_wakes_everyone(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    agents = rested(node)
    fail_once(monkeypatch, node.daemon._ticker, "_commit", OSError("disk full"))
    node.supervisor.burn(agents[0], 0.05)
    node.clock.advance(TICK_S)
    with pytest.raises(OSError, match="disk full"):
        node.daemon.tick_once()
    assert resting(node) == set()
    node.ticks(4)
    assert resting(node) == set(agents)
    node.daemon.tick_once(settle_all=True)
    assert node.bills(agents[0]) == 1  # the failed tick's energy, billed once


def test_another_tick_length_wakes_everyone(node: Node) -> None:
    agents = rested(node)
    ticker = node.daemon._ticker
    ticker.resting.resting(TICK_S * 10)
    assert resting(node) == set()
    node.ticks(3)
    assert resting(node) == set(agents)
