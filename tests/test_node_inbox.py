"""Calls that never wait for a tick: bids (`maxwell.node.bids`) and reports
(`maxwell.node.reports`), checked and queued at once and stored by the next tick or the next call
that changes the node (`maxwell.node.inbox`); and reads of the published answers
(`maxwell.node.views`)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from helpers import fail_once
from maxwell.audit.policy import Usage
from maxwell.clock import FakeClock
from maxwell.economy.ledger import LedgerError
from maxwell.node.bids import BidQueue, QueuedBid, checked_bid
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentGoneError, NodeError, Report
from maxwell.node.reports import QueuedReport, ReportQueue
from maxwell.node.state import ReportRow
from maxwell.node.supervisor import AgentProcess
from maxwell.testing import FakeSensors, FakeSupervisor
from maxwell.units import Money

J = 1_000_000
TICK_S = 0.1


def _bid(agent: str, price: float, demand: float = 1.0) -> QueuedBid:
    return QueuedBid(agent, price, demand, at=0.0)


def test_the_queue_keeps_each_agents_latest_bid_in_the_order_they_last_arrived() -> None:
    queue = BidQueue()
    queue.put(_bid("a", 1.0))
    queue.put(_bid("b", 2.0))
    queue.put(_bid("a", 3.0))
    assert queue.queued("a") == _bid("a", 3.0) and len(queue) == 2
    assert queue.take() == [_bid("b", 2.0), _bid("a", 3.0)]
    assert queue.take() == [] and queue.queued("a") is None


def test_bids_put_back_go_ahead_of_newer_ones_unless_the_agent_bid_again() -> None:
    queue = BidQueue()
    queue.put(_bid("a", 1.0))
    queue.put(_bid("b", 2.0))
    taken = queue.take()
    queue.put(_bid("c", 4.0))
    queue.put(_bid("b", 5.0))  # b bid again while the first were being stored
    queue.put_back(taken)
    assert queue.take() == [_bid("a", 1.0), _bid("c", 4.0), _bid("b", 5.0)]


def test_a_bid_without_a_demand_keeps_the_last_one_asked_for(tmp_path: Path) -> None:
    node = _Node(tmp_path)
    try:
        agent = node.daemon.spawn(["work"], fund=Money(J), bid=1.0, demand=0.5).agent
        record = node.daemon._registry.get(agent)
        assert checked_bid(record, 2.0, None, 0.0, None).demand == 0.5
        assert checked_bid(record, 2.0, None, 0.0, _bid(agent, 1.5, 1.5)).demand == 1.5
        for price, demand in ((-1.0, None), (float("nan"), None), (1.0, 0.0), (1.0, -2.0)):
            with pytest.raises(NodeError):
                node.daemon.bid(agent, price, demand)
        assert node.daemon.agent(agent).bid == 1.0  # nothing was queued
    finally:
        node.daemon.shutdown(kill_agents=True)


class BlockingSupervisor(FakeSupervisor):
    """Its exit poll (made under the daemon's lock, mid-tick) waits for the test's word."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking, self.inside, self.go = False, threading.Event(), threading.Event()

    def ended(self, processes: Mapping[str, AgentProcess]) -> list[str]:
        if self.blocking:
            self.inside.set()
            assert self.go.wait(30), "the test never let the tick go on"
        return super().ended(processes)


class _Node:
    def __init__(self, tmp_path: Path) -> None:
        self.clock, self.supervisor = FakeClock(), BlockingSupervisor()
        self.daemon = NodeDaemon(
            NodeConfig(state_dir=tmp_path / "state", tick_s=TICK_S), clock=self.clock,
            sensors=FakeSensors(self.clock, self.supervisor), supervisor=self.supervisor,
        )  # fmt: skip

    def tick(self) -> None:
        self.clock.advance(TICK_S)
        self.daemon.tick_once()

    def tick_stores(self, agent: str, price: float) -> None:
        """Tick, and find the agent's queued bid stored (one event) and standing."""
        self.tick()
        assert self.bid_events(agent) == [price]
        assert self.daemon._registry.get(agent).bid == price
        assert self.daemon.ledger().verify().ok

    def stored_cpu_ns(self, agent: str) -> int | None:
        """The CPU time the agent's stored claim (its latest report) claims; None: none stored."""
        stored = self.daemon._registry.get(agent).reported
        return None if stored is None else stored.cpu_ns

    def bid_events(self, agent: str) -> list[float]:
        return [
            float(e.detail["price"])
            for e in self.daemon.events()
            if e.kind == "bid" and e.agent == agent
        ]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[_Node]:
    made = _Node(tmp_path)
    try:
        yield made
    finally:
        made.supervisor.blocking = False
        made.supervisor.go.set()
        made.daemon.shutdown(kill_agents=True)


def test_bids_and_reads_are_answered_while_a_tick_holds_the_lock(node: _Node) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
    node.tick()
    node.supervisor.blocking = True
    ticking = threading.Thread(target=node.daemon.tick_once)
    ticking.start()
    assert node.supervisor.inside.wait(30), "the tick never reached its exit poll"
    answered: list[object] = []

    def calls() -> None:
        answered.append(node.daemon.bid(agent, 3.0).bid)
        answered.append(node.daemon.report(agent, Report(0.05, 0)).reported)
        answered.append(node.daemon.agent(agent).bid)
        answered.append([info.id for info in node.daemon.agents()])
        answered.append(node.daemon.status().ticks)
        answered.append(node.daemon.price().spot > 0)
        answered.append([e.kind for e in node.daemon.events() if e.agent == agent][-1])

    calling = threading.Thread(target=calls)
    calling.start()
    calling.join(10)
    shown = [3.0, Report(0.05, 0), 3.0, [agent], 1, True, "spawned"]
    assert answered == shown, "a call waited for the tick"
    assert ticking.is_alive()  # the tick still holds the lock
    node.supervisor.go.set()
    ticking.join(30)
    node.supervisor.blocking = False
    # Queued during that tick, the bid is stored by the next one, and stands in it.
    assert node.bid_events(agent) == []
    node.tick_stores(agent, 3.0)
    assert node.stored_cpu_ns(agent) == 50_000_000


def test_the_answer_to_a_report_shows_the_counters_it_arrived_at(node: _Node) -> None:
    # A tick under way has read the counters and not yet published them: the answer shows them
    # all the same, since the agent's next claim must cover them (cgroup v2 counts no freed
    # memory; the node's lower bound of it is only known from this answer: `report_usage`).
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.tick()
    node.supervisor.burn(agent, 0.4, freed_bytes=3 << 20)
    node.clock.advance(1.0)  # the meter reads memory about once a second
    node.supervisor.blocking = True
    ticking = threading.Thread(target=node.tick)
    ticking.start()
    assert node.supervisor.inside.wait(30), "the tick never reached its exit poll"
    published = node.daemon.agent(agent)
    answer = node.daemon.report(agent, Report(0.1, 0))
    node.supervisor.go.set()
    ticking.join(30)
    node.supervisor.blocking = False
    assert (published.cpu_s, published.memory_freed_bytes) == (0.0, 0)
    assert (answer.cpu_s, answer.memory_freed_bytes) == (pytest.approx(0.4), 3 << 20)
    node.tick()
    stored = node.daemon._registry.get(agent).reported
    assert stored is not None and stored.measured_freed_bytes == 0  # its first claim: nothing
    assert node.daemon._registry.get(agent).arrival == Usage(400_000_000, 3 << 20)


def test_only_the_last_of_several_bids_between_ticks_is_stored(node: _Node) -> None:
    first = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
    second = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
    for price in (1.5, 2.0, 2.5):
        assert node.daemon.bid(first, price).bid == price
        assert node.daemon.agent(first).bid == price  # shown before it is stored
    node.daemon.bid(second, 2.5)
    node.daemon.bid(first, 2.5, 0.5)
    node.tick()
    assert node.bid_events(first) == [2.5] and node.bid_events(second) == [2.5]
    records = node.daemon._registry
    # Arrival order: the second agent's bid came before the first's last one.
    assert records.get(second).bid_seq < records.get(first).bid_seq
    assert node.daemon.agent(first).demand == 0.5


def test_a_call_that_changes_the_node_stores_the_bids_before_it(node: _Node) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.daemon.bid(agent, 2.0)
    node.daemon.kill(agent)
    kinds = [e.kind for e in node.daemon.events() if e.agent == agent]
    assert kinds[-2:] == ["bid", "killed"]
    with pytest.raises(AgentGoneError):
        node.daemon.bid(agent, 3.0)


def test_bids_that_fail_to_be_stored_wait_for_the_next_tick(
    node: _Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.tick()
    state = node.daemon._store.state
    fail_once(monkeypatch, state, "place_bid", OSError(28, "No space left on device"))
    node.daemon.bid(agent, 2.0)
    with pytest.raises(OSError):
        node.tick()
    assert node.daemon.status().tick_stats.failures == 1  # type: ignore[union-attr]
    assert node.bid_events(agent) == [] and node.daemon.agent(agent).bid == 2.0  # still queued
    node.tick_stores(agent, 2.0)


def test_the_published_answers_follow_every_change(node: _Node) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
    assert node.daemon.agent(agent).balance == J  # published by the spawn itself
    node.daemon.fund(agent, Money(J))
    assert node.daemon.agent(agent).balance == 2 * J
    for _ in range(5):
        node.supervisor.burn(agent, TICK_S)
        node.tick()
    shown = node.daemon.agent(agent)
    record = node.daemon._registry.get(agent)
    ledger = node.daemon.ledger().balance(f"agent:{agent}")
    assert shown.balance == ledger - record.accrual.owed < 2 * J  # billed, settled or not
    assert shown.energy_uj == record.energy_uj > 0
    assert node.daemon.status().agents == [shown] == node.daemon.agents()
    node.daemon.kill(agent)
    assert node.daemon.agent(agent).state == "dead"


def test_a_publication_that_fails_keeps_the_last_answers(
    node: _Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
    node.tick()
    before = node.daemon.agent(agent)
    ledger = node.daemon.ledger()

    def unreadable() -> int:
        raise LedgerError("database disk image is malformed")

    monkeypatch.setattr(ledger, "entries_written", unreadable)
    with caplog.at_level(logging.ERROR, logger="maxwell.node.views"):
        node.supervisor.burn(agent, TICK_S)
        node.tick()  # the tick succeeds; its publication does not
    assert "cannot publish the agents' answers" in caplog.text
    assert node.daemon.ticks == 2
    assert node.daemon.agent(agent) == before  # the last answers stay
    monkeypatch.undo()
    node.tick()
    assert node.daemon.agent(agent).energy_uj > before.energy_uj


def test_agents_are_listed_in_the_order_they_were_spawned_whatever_was_published_late(
    node: _Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned = [node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent for _ in range(2)]
    ledger = node.daemon.ledger()
    written = ledger.entries_written

    def unreadable() -> int:
        raise LedgerError("database disk image is malformed")

    monkeypatch.setattr(ledger, "entries_written", unreadable)
    for _ in range(3):  # spawned, and not published until a later publication
        spawned.append(node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent)
    assert [info.id for info in node.daemon.agents()] == spawned[:2]
    monkeypatch.setattr(ledger, "entries_written", written)
    node.daemon.fund(spawned[0], Money(J))  # publishes the stale ones, new and old together
    assert [info.id for info in node.daemon.agents()] == spawned
    spawned.append(node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent)
    node.tick()
    assert [info.id for info in node.daemon.agents()] == spawned
    # The uids its agents hold (a root daemon's: one each; else none, they run as the daemon),
    # kept as agents come and go, so a spawn finds a free one without a pass over every agent.
    registry = node.daemon._registry
    uids = [registry.get(agent).user for agent in spawned]
    held = {int(user.removeprefix("dynamic:")) for user in uids if user is not None}
    assert set(registry.dynamic_uids) == held
    assert len(held) == (len(spawned) if os.geteuid() == 0 else 0)
    node.daemon.kill(spawned[0])
    node.daemon.remove(spawned[0])
    assert set(registry.dynamic_uids) == {
        int(user.removeprefix("dynamic:")) for user in uids[1:] if user is not None
    }  # fmt: skip


def _report(agent: str, cpu_s: float, arrival_s: float | None) -> QueuedReport:
    arrival = None if arrival_s is None else Usage(round(arrival_s * 1e9), 0)
    return QueuedReport(ReportRow(agent, 0.0, round(cpu_s * 1e9), 0, None), arrival)


def test_a_report_that_replaces_a_queued_one_must_cover_what_that_one_arrived_at() -> None:
    queue = ReportQueue()
    stored = _report("a", 1.0, 0.5).claim
    with pytest.raises(NodeError, match=r"cpu_s fell from 1 to 0\.5"):
        queue.put(_report("a", 0.5, 0.9), stored)  # below the stored claim
    queue.put(_report("a", 2.0, 1.5), stored)
    queue.put(_report("b", 1.0, 1.0), None)
    with pytest.raises(NodeError, match=r"cpu_s fell from 2 to 1\.5"):
        queue.put(_report("a", 1.5, 1.8), stored)  # below the queued one, above the stored
    queue.put(_report("a", 3.0, 2.5), stored)
    assert len(queue) == 2
    taken = queue.take()
    assert [r.agent for r in taken] == ["b", "a"] and queue.take() == []
    replacing = taken[1]
    assert replacing.claim.cpu_ns == 3_000_000_000 and replacing.replaced
    assert replacing.covers == Usage(1_500_000_000, 0)  # the replaced report's arrival
    assert not taken[0].replaced and taken[0].covers is None


def test_reports_put_back_go_ahead_of_newer_ones_which_replace_them() -> None:
    queue = ReportQueue()
    queue.put(_report("a", 1.0, 0.5), None)
    queue.put(_report("b", 1.0, 0.7), None)
    taken = queue.take()  # then storing them fails
    queue.put(_report("c", 1.0, 0.8), None)
    queue.put(_report("b", 2.0, 1.2), None)  # b reported again meanwhile
    queue.put_back(taken)
    back = queue.take()
    assert [(r.agent, r.claim.cpu_ns) for r in back] == [
        ("a", 1_000_000_000), ("c", 1_000_000_000), ("b", 2_000_000_000),
    ]  # fmt: skip
    assert back[2].replaced and back[2].covers == Usage(700_000_000, 0)


def test_reports_between_ticks_store_the_last_which_covers_the_first_ones_arrival(
    node: _Node,
) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.tick()
    node.supervisor.burn(agent, 0.2)
    node.daemon.report(agent, Report(0.2, 0))
    first_arrival = node.supervisor.groups[agent].cpu
    node.supervisor.burn(agent, 0.3)
    assert node.daemon.report(agent, Report(0.5, 0)).reported == Report(0.5, 0)
    record = node.daemon._registry.get(agent)
    assert record.reported is None  # queued, not stored
    node.tick()
    stored = record.reported
    assert stored is not None and stored.cpu_ns == 500_000_000
    assert stored.measured_cpu_ns == first_arrival > 0
    assert record.arrival == Usage(node.supervisor.groups[agent].cpu, 0)
    assert node.daemon._store.state.reports()[agent] == stored  # and in the database


def test_a_call_that_changes_the_node_stores_the_reports_before_it(node: _Node) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.tick()
    node.supervisor.burn(agent, 0.2)
    node.daemon.report(agent, Report(0.2, 0))
    node.daemon.fund(agent, Money(J))
    assert node.stored_cpu_ns(agent) == 200_000_000


def test_reports_that_fail_to_be_stored_wait_for_the_next_tick(
    node: _Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.tick()
    fail_once(monkeypatch, node.daemon._store.state, "save_report", OSError(28, "disk full"))
    node.daemon.report(agent, Report(0.1, 0))
    with pytest.raises(OSError):
        node.tick()
    assert node.stored_cpu_ns(agent) is None
    assert node.daemon.agent(agent).reported == Report(0.1, 0)  # still queued
    node.tick()
    assert node.stored_cpu_ns(agent) == 100_000_000


def test_a_report_whose_agent_ended_before_it_was_stored_is_dropped(
    node: _Node, caplog: pytest.LogCaptureFixture
) -> None:
    agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=1.0).agent
    node.tick()
    node.daemon.kill(agent)  # then a report it sent before its death is taken
    node.daemon._ticker.inbox.reports.put(_report(agent, 0.1, 0.1), None)
    with caplog.at_level(logging.INFO, logger="maxwell.node.claims"):
        node.tick()
    assert f"agent {agent} ended before its report was stored: dropped" in caplog.text
    assert node.stored_cpu_ns(agent) is None
    with pytest.raises(AgentGoneError):
        node.daemon.report(agent, Report(0.2, 0))
