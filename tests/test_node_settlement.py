"""Settlement on a real daemon: the ledger takes an agent at most once per interval, at once on
an event, never for an idle agent; apoptosis reads the accrued balance."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState
from maxwell.units import Money

J = 1_000_000
BUSY = [sys.executable, "-c", "while True: pass"]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    node = NodeDaemon(
        NodeConfig(state_dir=tmp_path / "state", tick_s=0.05, cgroup="none", settlement_s=0.5)
    )
    try:
        yield node
    finally:
        node.shutdown(kill_agents=True)


def ticks_for(daemon: NodeDaemon, seconds: float) -> int:
    """Tick at the daemon's interval for `seconds` of real time (the meter reads real
    counters, so the intervals must be real); how many ticks ran."""
    ran, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(daemon.config.tick_s)
        daemon.tick_once()
        ran += 1
    return ran


def entries_of(daemon: NodeDaemon, agent: str, kind: str) -> int:
    return sum(
        1 for e in daemon.ledger().entries() if e.kind == kind and e.detail["agent"] == agent
    )


def test_an_idle_agent_writes_no_ledger_row(daemon: NodeDaemon) -> None:
    idle = daemon.spawn(["sleep", "60"], fund=Money(J), bid=2.0, demand=0.1).agent
    daemon.tick_once()
    before = daemon.ledger().entries_written()
    assert ticks_for(daemon, 1.0) >= 5
    assert daemon.ledger().entries_written() == before
    assert entries_of(daemon, idle, "bill") == 0


def test_a_busy_agent_is_settled_at_most_once_per_interval(daemon: NodeDaemon) -> None:
    busy = daemon.spawn(BUSY, fund=Money(1000 * J), bid=2.0, demand=1.0).agent
    ran = ticks_for(daemon, 2.0)
    settlements = entries_of(daemon, busy, "bill")
    # 2 s at a 0.5 s settlement: at most 4 (+1 for the first tick's events), whatever the ticks.
    assert ran >= 10 and 1 <= settlements <= 5
    # What it is shown already takes off what it has accrued and the ledger has not taken yet.
    assert daemon.agent(busy).balance <= daemon.ledger().balance(f"agent:{busy}")
    daemon.tick_once(settle_all=True)
    billed = sum(
        int(str(e.detail["energy_uj"]))
        for e in daemon.ledger().entries()
        if e.kind == "bill" and e.detail["agent"] == busy
    )
    assert billed == daemon.agent(busy).energy_uj > 0
    assert daemon.agent(busy).balance == daemon.ledger().balance(f"agent:{busy}")


def test_funding_settles_the_agent_at_the_next_tick(daemon: NodeDaemon) -> None:
    busy = daemon.spawn(BUSY, fund=Money(1000 * J), bid=2.0, demand=1.0).agent
    ticks_for(daemon, 0.6)
    daemon.tick_once(settle_all=True)
    before = entries_of(daemon, busy, "bill")
    time.sleep(daemon.config.tick_s)
    daemon.tick_once()  # well inside the 0.5 s interval: nothing due
    assert entries_of(daemon, busy, "bill") == before
    daemon.fund(busy, Money(J))
    time.sleep(daemon.config.tick_s)
    daemon.tick_once()
    assert entries_of(daemon, busy, "bill") == before + 1


def test_apoptosis_reads_the_accrued_balance_and_the_ledger_never_overdraws(
    tmp_path: Path,
) -> None:
    node = NodeDaemon(
        NodeConfig(
            state_dir=tmp_path / "s", tick_s=0.05, cgroup="none", settlement_s=3600.0, grace_s=0.2
        )
    )
    try:
        poor = node.spawn(BUSY, fund=Money(J // 20), bid=2.0, demand=1.0).agent
        deadline = time.monotonic() + 30
        while node.agent(poor).state is not AgentState.DEAD:
            assert time.monotonic() < deadline, "the poor agent never died"
            time.sleep(node.config.tick_s)
            node.tick_once()
        # Frozen then killed on what it had accrued, though nothing was due for an hour: the
        # events forced its settlement, and the ledger took exactly its funding.
        assert node.ledger().balance(f"agent:{poor}") == 0
        assert node.agent(poor).balance == 0
        assert node.ledger().verify().ok
    finally:
        node.shutdown(kill_agents=True)
