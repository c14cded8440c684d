"""The tick on real sensors, cgroups and the ledger: an adapter that carries out the pure plan
(`maxwell.node.tick.plan_tick`) and settles it (`maxwell.node.policy.settlement`).

One tick: read the meter and the agents' exits, price the interval, plan, accrue the bills,
settle the agents that are due, commit, then enforce the plan on the cgroups.

Rules:

- A tick reads the clocks once (`Now`): wall time for what is recorded (journal, rows),
  monotonic time for intervals (billing, price, settlement).
- Each tick accrues every agent's bill in memory and decides apoptosis on the accrued balance
  (ledger balance less what it has accrued). The ledger takes an agent's accrual as one `bill`
  entry at most once per `settlement_s`, at once when an event needs it (funding, a bid, a kill,
  apoptosis, an exit, an audit, a bond, a bounty, shutdown), and never for an agent that used
  nothing. A tick with nothing to write writes nothing.
- A tick that settles commits, in one unit of work, the settled agents' counters (the absolute
  CPU time and bytes freed they are now billed up to), their claims, the state of every agent
  whose state changed (only the fields that changed), and the ledger entries it plans (keys
  `bill:<tick>:<agent>`, `event:<tick>:<agent>:<kind>`): all or none.
- A tick that fails before it commits rolls the agents' live views back and keeps the energy the
  meter attributed (its interval is consumed) for the next tick: billed once, never lost. The
  failure is counted (`TickRecorder`) and raised; the next tick retries.
- The plan is carried out on the cgroups only once committed; quotas and weights are written
  only when they change. An agent that ended is finished after its last interval is billed.
- Ticks that keep failing (a full disk) freeze every agent until one commits again
  (`maxwell.node.hold`): none runs unbilled.
- Agents that ended long ago are reclaimed after a committed tick (`maxwell.node.retention`).
- Idle agents rest (`maxwell.node.resting`): a tick that left one out of its plan as quiet
  keeps it apart on its input, and the next ticks read its counter and nothing else about it
  until something wakes it.
- The standing order book holds one bid per live agent with a group, at its arrival number: a
  tick first stores the bids (and reports) queued since the last one and places them
  (`maxwell.node.inbox`),
  adds the agents it lacks (spawned, recovered) and cancels the dead and exited (insolvent
  agents keep their place: the plan skips them).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from maxwell.clock import Clock
from maxwell.economy.coupling import CoupledPrice
from maxwell.economy.ledger import GRID, LANDAUER
from maxwell.economy.mechanisms import make_mechanism
from maxwell.economy.orderbook import BookError, InvalidBidError, OrderBook
from maxwell.economy.price import (
    ConstantPrice,
    GridPrice,
    SpotPrice,
    SpotQuote,
    ThermalPriceController,
    describe_grid,
)
from maxwell.meter import LiveMeter
from maxwell.node import tick as ticks
from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry
from maxwell.node.audits import Auditor
from maxwell.node.claims import OptimisticBilling
from maxwell.node.config import NodeConfig
from maxwell.node.facade import AgentState, PriceInfo
from maxwell.node.hold import Hold
from maxwell.node.inbox import Inbox
from maxwell.node.policy.settlement import Accrual, accrue, due, settlement_entry
from maxwell.node.processes import AgentProcesses
from maxwell.node.resting import RestingAgents, unchanged_input
from maxwell.node.retention import Retention
from maxwell.node.state import PendingEntry
from maxwell.node.store import NodeStore
from maxwell.node.supervisor import Supervisor
from maxwell.node.tickstats import TickRecorder
from maxwell.sensors import NodeSample
from maxwell.units import Money

log = logging.getLogger(__name__)
_UNSET = object()  # a row field not yet written by this daemon


@dataclass(frozen=True)
class Now:
    """A tick's one reading of the clocks: wall time for what is recorded (journal, rows),
    monotonic time for intervals (billing, price, settlement)."""

    wall: float
    mono: float


@dataclass(frozen=True)
class OpeningPrice:
    """The spot price as the daemon opens it (the grid's, 1 $J/J without a feed, times the
    thermal factor of a controller set 15 °C below critical), its first quote, and the monotonic
    time of that quote, where the first tick's interval starts."""

    spot: SpotPrice
    quote: SpotQuote
    mono: float
    coupling: CoupledPrice | None = None  # the neighbours' heat, with gossip

    @classmethod
    def open(
        cls, grid: GridPrice | None, sample: NodeSample, wall: Callable[[], float], clock: Clock
    ) -> OpeningPrice:
        spot = SpotPrice(
            grid if grid is not None else ConstantPrice(1.0),
            ThermalPriceController(setpoint_c=sample.critical_c - 15.0),
        )
        quote = spot.spot(wall(), sample.temperature_c, 0.0)
        return cls(spot, quote, clock.monotonic())


@dataclass(frozen=True)
class TickParts:
    """What a `Ticker` works with; the daemon makes each part and shares it."""

    config: NodeConfig
    clock: Clock
    wall: Callable[[], float]
    store: NodeStore
    meter: LiveMeter
    supervisor: Supervisor
    registry: AgentRegistry
    processes: AgentProcesses
    billing: OptimisticBilling
    auditor: Auditor


def exited_event(tick: int, agent: AgentRecord, reason: str) -> PendingEntry:
    """The `exited` event of an agent whose command ended."""
    return PendingEntry(
        key=ticks.event_key(tick, agent.id, "exited"),
        tick=tick,
        kind="exited",
        movements=(),
        detail={"agent": agent.id, "exit_code": agent.exit_code, "reason": reason},
    )


def row_updates(
    plan: ticks.TickPlan, agents: AgentRegistry, settled: Set[str]
) -> dict[str, dict[str, object]]:
    """The row fields a tick writes: an agent's state when it changed; its counters (billed up
    to) and figures only with its settlement, so that a restart bills from them exactly once.
    Each agent's `written` becomes a new dict (a roll-back keeps the old). A resting agent is
    not planned, but may be settled (its settlement came due): its counters go with it too."""
    updates: dict[str, dict[str, object]] = {}
    for agent_id in sorted(plan.agents.keys() | settled):
        agent = agents[agent_id]
        fields: dict[str, object] = {
            "state": str(agent.state),
            "insolvent_since": agent.insolvent_since,
            "exit_code": agent.exit_code,
            "ended_at": agent.ended_at,
        }
        if agent_id in settled:
            fields.update(
                energy_uj=agent.energy_uj, cpu_ns=agent.cpu_ns,
                freed_bytes=agent.freed_bytes, cores=agent.cores, power_w=agent.power_w,
                burn_per_s=agent.burn_per_s,
            )  # fmt: skip
        changed = {k: v for k, v in fields.items() if agent.written.get(k, _UNSET) != v}
        if changed:
            updates[agent_id] = changed
            agent.written = {**agent.written, **changed}
    return updates


def price_info(
    quote: SpotQuote, sample: NodeSample, clearing: float | None, grid: GridPrice
) -> PriceInfo:
    """The price read model: a quote, the node's reading it was quoted on, the last clearing,
    where the grid price comes from."""
    source, age_s = describe_grid(grid)
    return PriceInfo(
        spot=quote.spot,
        grid=quote.grid,
        thermal_factor=quote.thermal_factor,
        temperature_c=sample.temperature_c,
        headroom_c=sample.headroom_c,
        measured=sample.energy_measured and sample.temperature_measured,
        energy_source=str(sample.energy_source),
        temperature_source=str(sample.temperature_source),
        clearing=clearing,
        grid_source=source,
        grid_age_s=age_s,
        coupling=quote.coupling,
        power_w=sample.power_w,
    )


class Undo:
    """The live views a tick changed, as they were before (their fields: a tick replaces
    values, never mutates one in place), for a roll-back if it fails before it commits."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, object]] = {}

    def keep(self, agent: AgentRecord) -> AgentRecord:
        """Keep `agent` as it is now, unless this tick already kept it; returns it."""
        if agent.id not in self.views:
            self.views[agent.id] = dict(vars(agent))
        return agent


class Ticker:
    """Runs the node's ticks (see the module); called under the daemon's lock."""

    def __init__(
        self,
        parts: TickParts,
        price: OpeningPrice,
        *,
        capacity_cores: float,
        tick: int,
        machine_cores: float | None = None,
    ) -> None:
        self._parts = parts
        self._config = parts.config
        self._clock, self._wall = parts.clock, parts.wall
        self._store, self._meter = parts.store, parts.meter
        self._agents = parts.registry
        self._mechanism = (
            None if self._config.mechanism == "uniform" else make_mechanism(self._config.mechanism)
        )
        self._spot, self.quote, self._last_mono = price.spot, price.quote, price.mono
        self._coupling = price.coupling
        self.capacity_cores = capacity_cores
        self.sold_cores = capacity_cores  # this tick's capacity: fewer cores when hot
        # The machine's cores: selling all of them, the tick lets unserved bidders run on what
        # winners leave idle (`TickInput.share_idle`).
        self._machine_cores = float(machine_cores or os.cpu_count() or 1)
        # The standing order book (see the module); the pure tick reads it (and rebuilds it if
        # it ever disagrees with the bids).
        self._book = OrderBook()
        self.tick = tick  # the last committed tick
        self.last_tick_duration_s = 0.0
        self.stats = TickRecorder()
        # The meter's energy of the tick in flight, and what failed ticks metered and did not
        # bill (µJ per agent): the next tick bills it (see `_roll_back`).
        self._metered: dict[str, int] = {}
        self._unbilled: dict[str, int] = {}
        # The clearing the last committed tick left standing (`maxwell.node.tick.Standing`).
        self._standing: ticks.Standing | None = None
        self._undo = Undo()  # the tick in flight's: the live views it changed, as they were
        self.resting = RestingAgents()  # the idle agents a tick leaves be
        self.inbox = Inbox(  # bids and reports since the last tick
            store=parts.store, registry=parts.registry, billing=parts.billing, wall=self._wall,
            place=self.place, resting=self.resting,
        )  # fmt: skip
        self.hold = Hold(parts.supervisor, parts.registry)  # no agent runs while ticks fail
        self._retention = Retention(
            parts.config, parts.store, parts.registry, [parts.billing.forget]
        )
        self.clearing_price: float | None = None  # the last committed tick's
        self.touched: set[str] = set()  # changed by the last tick: to publish

    def read(self) -> dict[str, int]:
        """The meter's interval: every group's counters and the node's energy, attributed (µJ
        per agent). The daemon calls it outside its lock, so the API is served meanwhile; the
        interval is consumed, so `tick_once` must follow with what it returns."""
        try:
            return dict(self._meter.tick())
        except Exception as exc:
            self.stats.record_failure(exc, self._wall())
            raise

    def tick_once(
        self,
        settle_all: bool = False,
        reading: Mapping[str, int] | None = None,
        started: float | None = None,
    ) -> None:
        """Bill, decide, clear and enforce on `reading` (`read()` when None): one tick. A failure
        is counted and raised; the next tick retries. `settle_all` settles every agent whatever
        the settlement interval. `started`: when the tick began (its reading included)."""
        if started is None:
            started = self._clock.monotonic()
        if reading is None:
            reading = self.read()
        try:  # stored for good before the tick's own unit of work: a roll-back keeps them
            self.touched = self.inbox.take()
        except Exception as exc:
            self.stats.record_failure(exc, self._wall())
            self.hold.failed(exc)
            raise
        committed, self._undo = self.tick, Undo()
        optimistic = self._config.billing == "optimistic"
        for agent in self._agents:  # claims and audits change these too (bonds, audits)
            if optimistic or agent.bond:
                self._undo.keep(agent)
        try:
            self._tick_now(settle_all, reading)
        except Exception as exc:
            self.stats.record_failure(exc, self._wall())
            if self.tick == committed:
                self._roll_back(self._undo.views)
            self.resting.wake_all()
            self.hold.failed(exc)
            raise
        finally:
            self.touched.update(self._undo.views)
        self.hold.committed()
        self.touched.update(self._retention.sweep(self._wall()))
        self.last_tick_duration_s = self._clock.monotonic() - started
        self.stats.record_tick(self.last_tick_duration_s)

    def _roll_back(self, views: Mapping[str, dict[str, object]]) -> None:
        """A tick failed before it committed: the agents' live views go back to what they were,
        and the energy the meter attributed (read once: its interval is consumed) waits for the
        next tick, which bills it with its own. Nothing is billed twice, nothing never."""
        for agent_id, view in views.items():
            vars(self._agents[agent_id]).update(view)
        for agent_id, energy in self._metered.items():
            self._unbilled[agent_id] = self._unbilled.get(agent_id, 0) + energy
        self._metered = {}

    def _tick_now(self, settle_all: bool, reading: Mapping[str, int]) -> None:
        """Read the exits, then run the tick on the meter's reading."""
        self._metered = dict(reading)
        energies = dict(self._metered)
        for agent_id, energy in self._unbilled.items():  # metered by a tick that failed
            energies[agent_id] = energies.get(agent_id, 0) + energy
        if settle_all:
            self.resting.wake_all()
        self.resting.wake(self._meter.changed)
        freed: dict[str, int] = {}
        rewritten: dict[str, int] = {}
        for agent in self.resting.awake(self._agents):
            if agent.counted is None or agent.id not in energies:
                continue
            usage = self._meter.usage(agent.id)
            freed[agent.id] = max(usage.memory_freed_bytes - agent.freed_metered, 0)
            rewritten[agent.id] = max(usage.memory_rewritten_bytes - agent.rewritten_metered, 0)
            metered = (usage.memory_freed_bytes, usage.memory_rewritten_bytes, usage.power_w)
            if (agent.freed_metered, agent.rewritten_metered, agent.power_w) != metered:
                self._undo.keep(agent)
                agent.freed_metered, agent.rewritten_metered, agent.power_w = metered
        tick = self.tick + 1
        events: list[PendingEntry] = []
        now = self.now()  # the tick's one "now"
        for agent in self._parts.processes.exited(self._agents):
            self.resting.wake((agent.id,))
            self._undo.keep(agent)
            agent.exit_code = agent.popen.poll() if agent.popen is not None else None
            agent.state, agent.ended_at, agent.finished = AgentState.EXITED, now.wall, True
            events.append(exited_event(tick, agent, "its command ended"))
        self.run_tick(
            energies,
            freed,
            now,
            rewritten=rewritten,
            extra_events=events,
            interval_s=max(now.mono - self._last_mono, 0.0),
            optimistic=self._config.billing == "optimistic",
            force_all=settle_all,
        )

    def now(self) -> Now:
        return Now(wall=self._wall(), mono=self._clock.monotonic())

    def run_tick(
        self,
        energies: Mapping[str, int],
        freed: Mapping[str, int],
        now: Now,
        *,
        extra_events: Sequence[PendingEntry],
        interval_s: float,
        optimistic: bool = False,
        force_all: bool = False,
        rewritten: Mapping[str, int] | None = None,
    ) -> None:
        """Plan the tick on what was metered, accrue its bills, settle what is due, commit,
        post, enforce. `force_all` settles every agent (recovery, shutdown). `rewritten`: the
        erasure meter's bytes per agent, always billed as metered (no claim covers them)."""
        config, billing = self._config, self._parts.billing
        tick, at = self.tick + 1, now.wall
        sample = self._meter.node
        elapsed_s = max(now.mono - self._last_mono, 0.0)
        self.quote = self._spot.spot(at, sample.temperature_c, elapsed_s)
        if self._coupling is not None:
            self.quote = self._coupling.apply(self.quote, sample.headroom_c)
        ledger_balances = self._store.ledger.balances()
        self.resting.wake_moved(ledger_balances)
        awake = self.resting.awake(self._agents)
        balances = self._agents.available(ledger_balances, awake)
        stakes = billing.stakes(tick, balances, optimistic, self.quote.spot)
        # What the bills are made of: the meter's figures, or the claims of agents with a bond.
        billed_energy, billed_freed = energies, freed
        if optimistic:
            billed_energy, billed_freed = billing.claimed(
                energies, freed, sample.temperature_c, self.quote.spot, interval_s
            )
        if self.resting.verifying:
            self.resting.check(self._agents, balances, self._config.tick_s)
        agents = self._tick_inputs(
            awake, energies, (billed_energy, billed_freed, rewritten or {}), balances
        )
        tick_input = self._tick_input(tick, at, interval_s, sample, agents)
        plan = ticks.plan_tick(
            tick_input, mechanism=self._mechanism, book=self._book, standing=self._standing,
            resting=self.resting.resting(tick_input.tick_s),
        )  # fmt: skip
        audits: list[PendingEntry] = []
        if optimistic and config.audit_probability > 0:
            audits = self._parts.auditor.sampled(tick, plan)
        events = [PendingEntry(e.key, tick, e.kind, (), e.detail) for e in plan.events]
        forced = {e.detail.get("agent") for e in (*stakes, *events, *extra_events, *audits)}
        self._apply_plan(plan, energies, at)
        settled = self._settle(awake, tick, now.mono, plan, forced, force_all)
        # Bonds and releases first (the bills were capped without the bonds), then the
        # settlements, the events, and the audits (their claw-backs read settled balances).
        pending = [*stakes, *settled, *events, *extra_events, *audits]
        settled_ids = {str(entry.detail["agent"]) for entry in settled}
        updates = row_updates(plan, self._agents, settled_ids)
        self._commit(tick, now, updates, pending, settled_ids)
        self._standing = plan.standing
        self.clearing_price = plan.clearing_price
        self.resting.rest_left_out(agents, plan, self._undo.views, self._agents, tick_input.tick_s)
        self._carry_out(plan)

    def _tick_input(
        self,
        tick: int,
        at: float,
        interval_s: float,
        sample: NodeSample,
        agents: Sequence[ticks.AgentTickInput],
    ) -> ticks.TickInput:
        """What the pure tick plans on: this tick's capacity (fewer cores when hot), price and
        agents."""
        config = self._config
        self.sold_cores = ticks.thermal_capacity(
            self.capacity_cores, sample.headroom_c,
            derate_below_c=config.derate_below_c, floor=config.min_capacity_fraction,
        )  # fmt: skip
        return ticks.TickInput(
            tick=tick,
            now_s=at,
            interval_s=interval_s,
            tick_s=config.tick_s,
            spot_price=self.quote.spot,
            temperature_c=sample.temperature_c,
            capacity_cores=self.sold_cores,
            landauer_multiplier=config.landauer_multiplier,
            grace_s=config.grace_s,
            agents=agents,
            share_idle=self.sold_cores >= self._machine_cores - ticks.CORES_EPSILON,
        )

    def _tick_inputs(
        self,
        awake: Sequence[AgentRecord],
        energies: Mapping[str, int],
        billed: tuple[Mapping[str, int], Mapping[str, int], Mapping[str, int]],
        balances: Mapping[str, Money],
    ) -> list[ticks.AgentTickInput]:
        """Each agent the tick decides about but the resting ones, with the book brought up to
        date: live agents with a group stand in it, the others leave it. An agent's input is made
        again only when it differs from the last one (most agents, idle, are the same from tick
        to tick)."""
        inputs: list[ticks.AgentTickInput] = []
        book = self._book
        billed_energy, billed_freed, rewritten = billed
        for agent in awake:
            live = agent.state in LIVE
            if live and agent.group is not None:
                if agent.id not in book:
                    self.place(agent)
            elif agent.id in book:
                book.cancel(agent.id)
            if (agent.id not in energies and not live) or (live and agent.group is None):
                continue
            balance = balances.get(agent.account, Money(0))
            energy, freed = billed_energy.get(agent.id, 0), billed_freed.get(agent.id, 0)
            erased = rewritten.get(agent.id, 0)
            last = agent.tick_input
            billable = energy or freed or erased
            if billable or last is None or not unchanged_input(last, agent, balance):
                last = agent.tick_input = ticks.AgentTickInput(
                    agent=agent.id,
                    state=agent.state,
                    balance=balance,
                    bid=agent.bid,
                    demand=agent.demand,
                    energy_uj=energy,
                    bytes_freed=freed,
                    burn_per_s=agent.burn_per_s,
                    insolvent_since_s=agent.insolvent_since,
                    bid_seq=agent.bid_seq,
                    price=agent.price,
                    bytes_rewritten=erased,
                )
            inputs.append(last)
        return inputs

    def _settle(
        self,
        awake: Sequence[AgentRecord],
        tick: int,
        mono: float,
        plan: ticks.TickPlan,
        forced: Set[object],
        force_all: bool,
    ) -> list[PendingEntry]:
        """Accrue the tick's bills; the entries that settle the agents that are due (a resting
        agent has accrued nothing)."""
        for post in plan.posts:
            agent = self._undo.keep(self._agents[str(post.detail["agent"])])
            paid = (
                sum(m.amount for m in post.movements if m.credit == GRID),
                sum(m.amount for m in post.movements if m.credit == LANDAUER),
            )
            agent.accrual = accrue(agent.accrual, tick, dict(post.detail), paid)
        entries: list[PendingEntry] = []
        for agent in awake:
            if agent.accrual.empty:  # nothing to settle (`due` says so too, at more cost)
                continue
            must = force_all or agent.settle_next or agent.id in forced or agent.finished
            if not due(
                agent.accrual,
                now_s=mono,
                settled_at_s=agent.settled_at,
                interval_s=self._config.settlement_s,
                forced=must or agent.state not in LIVE,
            ):
                continue
            key, movements, detail = settlement_entry(agent.id, agent.accrual, tick)
            moves = tuple((m.debit, m.credit, m.amount) for m in movements)
            entries.append(PendingEntry(key, tick, "bill", moves, detail))
            self._undo.keep(agent)
            agent.accrual, agent.settled_at, agent.settle_next = Accrual(), mono, False
        return entries

    def _apply_plan(self, plan: ticks.TickPlan, energies: Mapping[str, int], at: float) -> None:
        """Update each planned agent's live view."""
        for agent_id, agent_plan in plan.agents.items():
            agent = self._undo.keep(self._agents[agent_id])
            agent.energy_uj += energies.get(agent_id, 0)
            if agent.counted is not None and agent.counted.cpu_ns_seen is not None:
                agent.cpu_ns = agent.counted.cpu_ns_seen
                agent.freed_bytes = max(agent.freed_bytes, agent.counted.freed_seen)
            agent.paid += agent_plan.paid_energy
            agent.landauer += agent_plan.paid_landauer
            agent.burn_per_s = agent_plan.burn_per_s
            agent.insolvent_since = agent_plan.insolvent_since_s
            agent.cores = agent_plan.cores
            agent.price = agent_plan.price
            if agent_plan.state is AgentState.DEAD and agent.state is not AgentState.DEAD:
                agent.ended_at = at
            agent.state = agent_plan.state

    def _commit(
        self,
        tick: int,
        now: Now,
        updates: Mapping[str, Mapping[str, object]],
        pending: Sequence[PendingEntry],
        settled: Set[str],
    ) -> None:
        """Commit the tick's rows, the claims of the agents it settled and its ledger entries,
        in one transaction (all or none); a tick with nothing to write writes nothing."""
        claims = self._parts.billing.claim_rows(settled)
        if updates or pending or claims:
            with self._store.unit_of_work():
                self._store.state.commit_tick(tick, now.wall, updates, (), claims)
                self._store.post(pending, at=now.wall)
        self._parts.billing.committed(claims)
        self.tick = tick
        self._last_mono = now.mono
        self._metered, self._unbilled = {}, {}  # billed by this tick's entries

    def _carry_out(self, plan: ticks.TickPlan) -> None:
        """The committed plan, on the cgroups; then finish the agents that ended."""
        for agent_id, agent_plan in plan.agents.items():
            self._parts.processes.enforce(self._agents[agent_id], agent_plan)
        for agent in self._agents:
            if agent.finished and agent.group is not None:
                self._parts.processes.finish(agent)
                self.touched.add(agent.id)

    def place(self, agent: AgentRecord) -> None:
        """Make the agent's bid its standing one in the book, at its arrival number."""
        book = self._book
        if agent.id in book:
            book.cancel(agent.id)
        # A bid the book refuses stays out of it: the tick then sees the book disagree with the
        # bids and clears a book rebuilt from them, as it always did.
        with contextlib.suppress(BookError, InvalidBidError):
            book.insert(agent.id, agent.bid, agent.demand, seq=agent.bid_seq)

    def price(self) -> PriceInfo:  # the last quote, on the reading it was made on
        return price_info(self.quote, self._meter.node, self.clearing_price, self._spot.grid)
