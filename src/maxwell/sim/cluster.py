"""Many simulated nodes that hear each other's heat by gossip (issue 14, 2): the twin's cluster.

Each node is an engine node (`maxwell.sim.engine.NodeRun`: cores, a power model, a thermal RC
die, its own market through the daemon's `plan_tick`), priced as the daemon prices it: the
grid price times the PI controller's thermal factor (`maxwell.economy.price`), times the
neighbours' coupling when `coupled` (`maxwell.economy.coupling.CoupledPrice`, the daemon's own
class), over the cores the node still sells at its headroom (`maxwell.node.tick.
thermal_capacity`).

A tick of `tick_s` virtual seconds, in order:

1. heat records that reach a node this tick replace what it believed of their origin (a newer
   sequence number only, as `ClusterView` does);
2. jobs that arrived are placed by the placement rule (`maxwell.cluster.placement.rank`) on the
   offers their submitter's node believes: cheapest with room first. The chosen node admits a
   job only if it really has room; else the submitter tries the next (at most `tries`), and a
   job no node takes waits for the next tick, up to `max_wait_s`, then is dropped;
3. every node meters the interval (its die under its ambient, which a `HeatSpike` raises for a
   while), quotes its price on the new temperature and settles the next interval;
4. a node publishes its record every `publish_s` (at its own phase) and every tick while in
   distress (headroom under `distress_below_c`). Each record reaches each other node after a
   delay drawn from the gossip model (`maxwell.sim.gossip`, a bank of disseminations relabelled
   around the record's origin), rounded up to whole ticks.

Deterministic under `seed`: one `numpy` generator owned by the run (phases, gossip draws),
nodes in index order, jobs in arrival order. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

from maxwell.cluster.placement import MAX_AGE_S, Demand, Offer, rank
from maxwell.economy.coupling import CoupledPrice, Coupling
from maxwell.economy.price import ConstantPrice, SpotPrice, ThermalPriceController
from maxwell.node.tick import CORES_EPSILON, thermal_capacity
from maxwell.sim.behaviours import USEFUL
from maxwell.sim.engine import AgentSpec, NodeRun, Scenario
from maxwell.sim.gossip import CALIBRATED, GossipModel, arrival_bank

_BANK_RECORDS: Final = 64  # disseminations drawn per cluster; each record picks one
USEFUL_JOB: Final = USEFUL  # 10 units a core-second, each worth 1; its length set per job


@dataclass(frozen=True)
class Job:
    """An agent that arrives at `arrives_s` and is placed from `submitter`'s view."""

    arrives_s: float
    spec: AgentSpec
    submitter: int = 0


@dataclass(frozen=True)
class HeatSpike:
    """`node`'s cooling fails from `start_s` to `end_s`: its die's ambient is `ambient_c`."""

    node: int
    start_s: float
    end_s: float
    ambient_c: float

    def active(self, at_s: float) -> bool:
        return self.start_s <= at_s < self.end_s


@dataclass(frozen=True)
class ClusterScenario:
    """`nodes` nodes like `node` (its agents unused) for `duration_s`, the `jobs` to place."""

    nodes: int
    node: Scenario
    jobs: tuple[Job, ...]
    duration_s: float
    coupled: bool = True
    spikes: tuple[HeatSpike, ...] = ()
    gossip: GossipModel = CALIBRATED
    coupling: Coupling = field(default_factory=Coupling)
    grid_price: float = 1.0
    publish_s: float = 5.0  # the daemon's refresh_s
    distress_below_c: float = 5.0
    tries: int = 3
    max_wait_s: float = 60.0
    seed: int = 0
    trace: bool = True  # per node per tick temperature and price (cheap: numpy)


@dataclass
class ClusterOutcome:
    """What a cluster run did: per node, and tick by tick if traced."""

    scenario: ClusterScenario
    times_s: NDArray[np.float64]
    temperature_c: NDArray[np.float64]  # ticks x nodes (empty if not traced)
    price: NDArray[np.float64]  # the coupled spot price, ticks x nodes
    peak_c: NDArray[np.float64]
    derated_s: NDArray[np.float64]  # time selling fewer cores for heat
    over_setpoint_s: NDArray[np.float64]  # time above the price controller's setpoint
    placed: NDArray[np.int64]  # jobs placed on each node
    placed_in_spike: NDArray[np.int64]  # of them, while a spike was on at that node
    refused: int  # offers a node turned down (no room after all: a stale view)
    dropped: int  # jobs no node took within max_wait_s
    wait_s: float  # total time jobs waited to be placed
    energy_j: float
    value: float
    jobs_done: int
    agents: int


class _Views:
    """What each node believes of each other's last record (row: the believer)."""

    def __init__(self, nodes: int) -> None:
        shape = (nodes, nodes)
        self.seq = np.full(shape, -1, dtype=np.int64)
        self.at_s = np.full(shape, -math.inf)
        self.headroom_c = np.full(shape, math.inf)
        self.price = np.zeros(shape)
        self.free_cores = np.zeros(shape)
        self.pending: dict[int, list[tuple[int, NDArray[np.int64], tuple[float, ...]]]] = (
            defaultdict(list)
        )

    def believe(self, tick: int, origin: int, believers: NDArray[np.int64],
                record: tuple[float, ...]) -> None:  # fmt: skip
        """`record` (seq, at, headroom, price, free) of `origin` reaches `believers`."""
        newer = believers[self.seq[believers, origin] < record[0]]
        self.seq[newer, origin] = int(record[0])
        self.at_s[newer, origin], self.headroom_c[newer, origin] = record[1], record[2]
        self.price[newer, origin], self.free_cores[newer, origin] = record[3], record[4]

    def deliver(self, tick: int) -> None:
        for origin, believers, record in self.pending.pop(tick, ()):
            self.believe(tick, origin, believers, record)

    def send(self, tick: int, origin: int, arrival_ticks: NDArray[np.int64],
             record: tuple[float, ...]) -> None:  # fmt: skip
        """`record` leaves `origin` at `tick`; each node gets it `arrival_ticks` later."""
        everyone = np.arange(arrival_ticks.size, dtype=np.int64)
        for lag in np.unique(arrival_ticks):
            believers = everyone[arrival_ticks == lag]
            if lag == 0:
                self.believe(tick, origin, believers, record)
            else:
                self.pending[tick + int(lag)].append((origin, believers, record))

    def neighbours_headroom(self, node: int, now_s: float) -> list[float]:
        """The fresh headrooms `node` believes of the others (what coupling reads)."""
        fresh = now_s - self.at_s[node] <= MAX_AGE_S
        fresh[node] = False
        return self.headroom_c[node, fresh].tolist()  # type: ignore[no-any-return]


@dataclass
class _Node:
    """One node of the cluster and its pricing."""

    run: NodeRun
    spot: SpotPrice
    coupled: CoupledPrice | None
    phase: int  # ticks into the publish period at which it publishes
    headroom_c: float = math.inf
    price: float = 1.0
    sold_cores: float = 0.0

    def free_cores(self) -> float:
        asked = sum(a.spec.behaviour.demand for a in self.run.live)
        return max(self.sold_cores - asked, 0.0)


class Cluster:
    """A `ClusterScenario` stepped tick by tick (see the module); `simulate` runs it through."""

    def __init__(self, scenario: ClusterScenario) -> None:
        if scenario.nodes < 1:
            raise ValueError(f"a cluster needs a node or more, got {scenario.nodes}")
        self.scenario, self.tick = scenario, 0
        self.rng = np.random.default_rng(scenario.seed)
        self.bank = arrival_bank(scenario.gossip, scenario.nodes, _BANK_RECORDS, scenario.seed)
        self.views = _Views(scenario.nodes)
        self.publish_ticks = max(1, round(scenario.publish_s / scenario.node.tick_s))
        phases = self.rng.integers(0, self.publish_ticks, scenario.nodes)
        self.nodes = [self._node(i, int(phases[i])) for i in range(scenario.nodes)]
        self.jobs = sorted(scenario.jobs, key=lambda j: (j.arrives_s, j.spec.name))
        self.next_job, self.waiting = 0, list[Job]()
        n, ticks = scenario.nodes, round(scenario.duration_s / scenario.node.tick_s)
        rows = ticks if scenario.trace else 0
        self.temperature_c, self.price = np.zeros((rows, n)), np.zeros((rows, n))
        self.derated_s, self.over_setpoint_s = np.zeros(n), np.zeros(n)
        self.placed, self.placed_in_spike = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.refused = self.dropped = 0
        self.wait_s = 0.0
        for i, node in enumerate(self.nodes):  # everyone's first record, known at once
            node.sold_cores = scenario.node.cores
            self._publish(i, node, lag=False)

    def _node(self, index: int, phase: int) -> _Node:
        scenario = self.scenario
        die = scenario.node.thermal
        controller = ThermalPriceController.for_die(die)
        coupled = None
        if scenario.coupled:
            coupled = CoupledPrice(self._neighbours(index), scenario.coupling)
        run = NodeRun(scenario.node, "maxwell", trace=False)
        return _Node(run, SpotPrice(ConstantPrice(scenario.grid_price), controller), coupled,
                     phase, sold_cores=scenario.node.cores)  # fmt: skip

    def _neighbours(self, index: int) -> Callable[[], Sequence[float]]:
        return lambda: self.views.neighbours_headroom(index, self.now_s)

    @property
    def now_s(self) -> float:
        return self.tick * self.scenario.node.tick_s

    def step(self) -> None:
        """One tick (see the module)."""
        self.tick += 1
        self.views.deliver(self.tick)
        self._place_arrivals()
        for index, node in enumerate(self.nodes):
            self._run_node(index, node)
        for index, node in enumerate(self.nodes):
            due = (self.tick - node.phase) % self.publish_ticks == 0
            if due or node.headroom_c < self.scenario.distress_below_c:
                self._publish(index, node)

    def _run_node(self, index: int, node: _Node) -> None:
        """Meter the interval (under the spike, if on), quote the price, settle the next."""
        base, dt = self.scenario.node, self.scenario.node.tick_s
        spike = self._spike(index, self.now_s - dt)
        node.run.thermal = base.thermal
        if spike is not None:
            node.run.thermal = replace(base.thermal, ambient_c=spike.ambient_c)
        temperature = node.run.meter()
        node.headroom_c = base.thermal.headroom_c(temperature)
        quote = node.spot.spot(self.now_s, temperature, dt)
        if node.coupled is not None:
            quote = node.coupled.apply(quote, node.headroom_c)
        node.price = quote.spot
        node.sold_cores = thermal_capacity(base.cores, node.headroom_c)
        node.run.settle(quote.spot, node.sold_cores)
        if node.sold_cores < base.cores - CORES_EPSILON:
            self.derated_s[index] += dt
        if temperature > node.spot.controller.setpoint_c:
            self.over_setpoint_s[index] += dt
        if self.scenario.trace:
            self.temperature_c[self.tick - 1, index] = temperature
            self.price[self.tick - 1, index] = quote.spot

    def _spike(self, index: int, at_s: float) -> HeatSpike | None:
        for spike in self.scenario.spikes:
            if spike.node == index and spike.active(at_s):
                return spike
        return None

    def _publish(self, index: int, node: _Node, *, lag: bool = True) -> None:
        """`node`'s record now, on its way to every other node."""
        record = (float(self.tick), self.now_s, node.headroom_c, node.price, node.free_cores())
        n = self.scenario.nodes
        ticks = np.zeros(n, dtype=np.int64)
        if lag:
            row = self.bank[self.rng.integers(self.bank.shape[0])]
            lags = row[(np.arange(n) - index) % n]  # the bank's origin 0 is this node
            ticks = np.ceil(lags / self.scenario.node.tick_s - 1e-9).astype(np.int64)
        self.views.send(self.tick, index, ticks, record)

    def _place_arrivals(self) -> None:
        now = self.now_s
        while self.next_job < len(self.jobs) and self.jobs[self.next_job].arrives_s <= now:
            self.waiting.append(self.jobs[self.next_job])
            self.next_job += 1
        offers: dict[int, list[Offer]] = {}
        waiting, self.waiting = self.waiting, []
        for job in waiting:
            if job.submitter not in offers:
                offers[job.submitter] = self._offers(job.submitter)
            if self._place(job, offers[job.submitter]):
                self.wait_s += now - job.arrives_s
            elif now - job.arrives_s >= self.scenario.max_wait_s:
                self.dropped += 1
            else:
                self.waiting.append(job)

    def _offers(self, believer: int) -> list[Offer]:
        """Every node as `believer` believes it now (its own record is always its latest)."""
        views, now = self.views, self.now_s
        return [
            Offer(str(j), True, True, float(views.price[believer, j]),
                  float(views.free_cores[believer, j]), now - float(views.at_s[believer, j]))
            for j in range(self.scenario.nodes)
        ]  # fmt: skip

    def _place(self, job: Job, offers: list[Offer]) -> bool:
        """The placement rule on the submitter's offers; the chosen node admits only if it has
        room (its view may be stale), else the next is tried. The submitter learns what it
        did: a node that took the job has that much less room, one that refused has what it
        said it had."""
        demand = Demand(job.spec.behaviour.demand, job.spec.bid)
        for offer in rank(offers, demand).ranked[: self.scenario.tries]:
            index = int(offer.node)
            node = self.nodes[index]
            free = node.free_cores()
            taken = free >= demand.cores - CORES_EPSILON
            if taken:
                node.run.admit(job.spec)
                self.placed[index] += 1
                if self._spike(index, self.now_s) is not None:
                    self.placed_in_spike[index] += 1
                free = max(free - demand.cores, 0.0)
            else:
                self.refused += 1
            self.views.free_cores[job.submitter, index] = free
            offers[index] = replace(offer, free_cores=free)  # offers are in node order
            if taken:
                return True
        return False

    def outcome(self) -> ClusterOutcome:
        agents = [a for node in self.nodes for a in node.run.agents]
        peak = np.array([node.run.peak_c for node in self.nodes])
        ticks = np.arange(1, self.temperature_c.shape[0] + 1, dtype=np.float64)
        times = ticks * self.scenario.node.tick_s
        return ClusterOutcome(
            self.scenario, times, self.temperature_c, self.price, peak, self.derated_s,
            self.over_setpoint_s, self.placed, self.placed_in_spike, self.refused,
            self.dropped + len(self.waiting), self.wait_s,
            energy_j=sum(a.energy_j for a in agents),
            value=sum(a.units * a.spec.behaviour.value_per_unit for a in agents),
            jobs_done=sum(1 for a in agents if a.done), agents=len(agents),
        )  # fmt: skip


def simulate(scenario: ClusterScenario) -> ClusterOutcome:
    """`scenario` run to its end."""
    cluster = Cluster(scenario)
    for _ in range(round(scenario.duration_s / scenario.node.tick_s)):
        cluster.step()
    return cluster.outcome()


def poisson_jobs(
    rng: np.random.Generator,
    *,
    nodes: int,
    node: Scenario,
    duration_s: float,
    utilisation: float,
    job_s: tuple[float, float] = (60.0, 300.0),
    bids: tuple[float, float] = (1.0, 3.0),
    head_start: int = 0,
) -> tuple[Job, ...]:
    """One-core useful jobs arriving as a Poisson process that offers `utilisation` of the
    cluster's cores on average: each runs `job_s` seconds (uniform) if it gets its core, bids
    uniformly in `bids` and is funded for its whole job at its bid, 1.5 times over; submitted
    from a node drawn at random. `head_start` jobs arrive at 0 (a cluster already busy)."""
    mean_s = sum(job_s) / 2
    rate = utilisation * nodes * node.cores / mean_s
    count = int(rng.poisson(rate * duration_s)) + head_start
    arrivals = np.sort(rng.uniform(0.0, duration_s, count - head_start))
    arrivals = np.concatenate([np.zeros(head_start), arrivals])
    lengths, bid = rng.uniform(*job_s, count), rng.uniform(*bids, count)
    submitters = rng.integers(0, nodes, count)
    jobs = []
    for i in range(count):
        behaviour = replace(USEFUL_JOB, job_units=round(float(lengths[i]) * 10.0, 3))
        fund = float(bid[i]) * float(lengths[i]) * node.w_per_core * 1.5
        spec = AgentSpec(f"job{i:06d}", behaviour, round(fund, 3), round(float(bid[i]), 4))
        jobs.append(Job(float(arrivals[i]), spec, int(submitters[i])))
    return tuple(jobs)
