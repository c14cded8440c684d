"""Settlement on the daemon (over `maxwell.testing`'s fakes, on a fake clock): the ledger takes
an agent at most once per interval, at once on an event, never for an idle agent; apoptosis reads
the accrued balance."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from helpers import fail_once
from maxwell.clock import FakeClock
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState
from maxwell.node.supervisor import AgentProcess
from maxwell.sensors import NodeSample
from maxwell.testing import FakeSensors, FakeSupervisor
from maxwell.units import Money

J = 1_000_000
TICK_S = 0.1


class Node:
    """A daemon on fakes, and the hands that move its clock and its agents' CPU."""

    def __init__(self, state: Path, audit_seed: int = 0, **settings: float) -> None:
        self.clock, self.wall = FakeClock(), [1_000_000.0]
        self.supervisor = FakeSupervisor()
        sensors = FakeSensors(self.clock, self.supervisor)
        config = NodeConfig(state_dir=state, tick_s=TICK_S, **settings)  # type: ignore[arg-type]
        self.daemon = NodeDaemon(
            config, clock=self.clock, wall=lambda: self.wall[0], sensors=sensors,
            supervisor=self.supervisor, audit_rng=random.Random(audit_seed),
        )  # fmt: skip

    def ticks(self, count: int, busy: tuple[str, ...] = (), cpu_s: float = TICK_S) -> None:
        for _ in range(count):
            for agent in busy:
                self.supervisor.burn(agent, cpu_s)
            self.clock.advance(TICK_S)
            self.wall[0] += TICK_S
            self.daemon.tick_once()

    def bills(self, agent: str) -> int:
        entries = self.daemon.ledger().entries()
        return sum(1 for e in entries if e.kind == "bill" and e.detail["agent"] == agent)


@contextlib.contextmanager
def running(state: Path, **settings: float) -> Iterator[Node]:
    """A `Node` on `state`, its agents killed at the end."""
    made = Node(state, **settings)
    try:
        yield made
    finally:
        made.daemon.shutdown(kill_agents=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running(tmp_path / "state", settlement_s=0.5) as made:
        yield made


def test_an_idle_agent_writes_no_ledger_row(node: Node) -> None:
    idle = node.daemon.spawn(["sleep"], fund=Money(J), bid=2.0, demand=0.1).agent
    node.ticks(1)
    before = node.daemon.ledger().entries_written()
    node.ticks(50)
    assert node.daemon.ledger().entries_written() == before
    assert node.bills(idle) == 0


def test_a_busy_agent_is_settled_once_per_interval(node: Node) -> None:
    busy = node.daemon.spawn(["work"], fund=Money(1000 * J), bid=2.0, demand=1.0).agent
    node.ticks(1, (busy,))
    first = node.bills(busy)
    node.ticks(50, (busy,))  # 5 s of ticks at a 0.5 s settlement: 10 settlements
    assert node.bills(busy) - first == 10
    # What it is shown takes off what it has accrued and the ledger has not taken yet.
    ledger_balance = node.daemon.ledger().balance(f"agent:{busy}")
    assert node.daemon.agent(busy).balance <= ledger_balance
    node.daemon.tick_once(settle_all=True)
    entries = node.daemon.ledger().entries()
    billed = sum(
        int(str(e.detail["energy_uj"]))
        for e in entries
        if e.kind == "bill" and e.detail["agent"] == busy
    )
    assert billed == node.daemon.agent(busy).energy_uj > 0
    assert node.daemon.agent(busy).balance == node.daemon.ledger().balance(f"agent:{busy}")


def test_funding_settles_the_agent_at_the_next_tick(node: Node) -> None:
    busy = node.daemon.spawn(["work"], fund=Money(1000 * J), bid=2.0, demand=1.0).agent
    node.ticks(3, (busy,))
    node.daemon.tick_once(settle_all=True)
    before = node.bills(busy)
    node.ticks(1, (busy,))  # inside the 0.5 s interval: nothing due
    assert node.bills(busy) == before
    node.daemon.fund(busy, Money(J))
    node.ticks(1, (busy,))
    assert node.bills(busy) == before + 1


def test_apoptosis_reads_the_accrued_balance_and_the_ledger_never_overdraws(
    tmp_path: Path,
) -> None:
    made = Node(tmp_path / "s", settlement_s=3600.0, grace_s=0.2)
    daemon = made.daemon
    try:
        poor = daemon.spawn(["work"], fund=Money(J // 20), bid=2.0, demand=1.0).agent
        for _ in range(300):
            if daemon.agent(poor).state is AgentState.DEAD:
                break
            made.ticks(1, (poor,))
        assert daemon.agent(poor).state is AgentState.DEAD
        # Frozen then killed on what it had accrued, though nothing was due for an hour: the
        # events forced its settlement, and the ledger took exactly its funding.
        assert daemon.ledger().balance(f"agent:{poor}") == 0
        assert daemon.agent(poor).balance == 0
        assert daemon.ledger().verify().ok
    finally:
        daemon.shutdown(kill_agents=True)


class SlowSensors(FakeSensors):
    """Sensors whose reading blocks until the test lets it go (a slow read of many counters)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reading, self.go = threading.Event(), threading.Event()
        self.blocking = False

    def sample(self) -> NodeSample:
        if self.blocking:
            self.reading.set()
            assert self.go.wait(30), "the test never let the reading finish"
        return super().sample()


def test_api_calls_are_served_while_the_tick_reads_the_meter(tmp_path: Path) -> None:
    clock, supervisor = FakeClock(), FakeSupervisor()
    sensors = SlowSensors(clock, supervisor)
    daemon = NodeDaemon(
        NodeConfig(state_dir=tmp_path / "s", tick_s=TICK_S), clock=clock, sensors=sensors,
        supervisor=supervisor,
    )  # fmt: skip
    try:
        agent = daemon.spawn(["work"], fund=Money(J), bid=2.0).agent
        sensors.blocking = True
        ticking = threading.Thread(target=daemon.tick_once)
        ticking.start()
        assert sensors.reading.wait(30), "the tick never started reading"
        # The tick is in the middle of its reading: a bid, a funding and a status still answer.
        assert daemon.bid(agent, 3.0).bid == 3.0
        assert daemon.fund(agent, Money(J)).balance == 2 * J
        assert daemon.status().ticks == 0
        assert ticking.is_alive()  # still reading
        sensors.go.set()
        ticking.join(30)
        assert not ticking.is_alive() and daemon.ticks == 1
    finally:
        sensors.blocking = False
        sensors.go.set()
        daemon.shutdown(kill_agents=True)


class ReapingSupervisor(FakeSupervisor):
    """Names an ended process once, as the kernel names a child waiting to be reaped."""

    def __init__(self) -> None:
        super().__init__()
        self.named: set[int] = set()

    def ended(self, processes: Mapping[str, AgentProcess]) -> list[str]:
        found = [
            a for a, p in processes.items() if p.poll() is not None and p.pid not in self.named
        ]
        self.named.update(processes[agent].pid for agent in found)
        return found


def test_an_exit_found_by_a_tick_that_fails_is_found_again_by_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(tmp_path / "state")
    node.supervisor = supervisor = ReapingSupervisor()
    node.daemon.shutdown(kill_agents=True)
    node.daemon = NodeDaemon(
        NodeConfig(state_dir=tmp_path / "state", tick_s=TICK_S), clock=node.clock,
        wall=lambda: node.wall[0], sensors=FakeSensors(node.clock, supervisor),
        supervisor=supervisor,
    )  # fmt: skip
    try:
        agent = node.daemon.spawn(["work"], fund=Money(10 * J), bid=2.0).agent
        node.ticks(2)
        supervisor.exit(agent, 3)
        store = node.daemon._store.state  # the tick's own commit fails, once
        fail_once(monkeypatch, store, "commit_tick", OSError(28, "No space left on device"))
        with pytest.raises(OSError):
            node.ticks(1)
        assert node.daemon.agent(agent).state == AgentState.RUNNING  # rolled back
        node.ticks(1)
        info = node.daemon.agent(agent)
        assert info.state == AgentState.EXITED and info.exit_code == 3
    finally:
        node.daemon.shutdown(kill_agents=True)
