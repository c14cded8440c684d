"""The inputs the `overhead` experiment times: n agents on one node, as the daemon's pure tick
(`maxwell.node.tick.plan_tick`), the mechanisms, the order book and fair share see them.

Pure and deterministic: everything is drawn from `numpy.random.default_rng([seed, n])`, nothing
reads a clock. Each `Case` holds the arguments of one call and makes it (`Case.call`); the
experiment times the calls (`maxwell.experiments.overhead`). Every call but the bid updates
(which move their own book) is pure, so each repeat does the same work.

The node: `CAPACITY_CORES` cores sold at reserve = spot = `SPOT_PRICE`, the daemon's default
tick. Agent i (`agent-00000`...) bids uniform in [0.5, 3) $J per J (about a fifth below the
reserve: frozen) for uniform [0.05, 1) cores, arrived i-th, funded so that nobody goes
insolvent. The tick scenarios, each the way the daemon's ticker calls `plan_tick`
(`maxwell.node.ticker`: a standing `OrderBook`, the last plan's `Standing`, `Resting` agents):

- `busy`: a first tick has left every agent in its state (served, running on idle cores, or
  frozen: bid below the reserve), and every one that runs used energy since: bills, apoptosis,
  the clearing (from the standing book) and enforcement for all n. The node's heaviest tick.
- `idle`: every agent is quiet and resting and the market stands (the steady state of an idle
  node: the ticker hands the resting agents to the plan, which reuses the standing clearing).
- `rebid`: as `idle`, but one agent changed its bid (re-queued in the book): the market moves,
  so the whole book is cleared again and every agent is planned.

Beside them, parts of the busy tick alone: `clear_market` (its clearing step: the auctioneer)
and `billing` (its n bills); each mechanism clearing the n bids; `UPDATES_PER_CALL` bid updates
in the standing book.

Fair share (the baseline) gets the same agents' demands: the twin's CFS-like max-min water
fill (`maxwell.sim.engine.water_fill`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from maxwell.economy.billing import Bill, bill
from maxwell.economy.mechanisms import MECHANISM_NAMES, Uniform, make_mechanism
from maxwell.economy.mechanisms.base import Clearing
from maxwell.economy.orderbook import BidSet, OrderBook
from maxwell.node.config import NodeConfig
from maxwell.node.facade import AgentState
from maxwell.node.tick import (
    AgentTickInput,
    Resting,
    Standing,
    TickInput,
    TickPlan,
    clear_market,
    plan_tick,
)
from maxwell.sim.engine import water_fill
from maxwell.units import Money

CAPACITY_CORES = 2.0  # what the node sells: this (CI) machine's 2 cores
TICK_S = NodeConfig().tick_s  # the daemon's default tick (1 s)
SPOT_PRICE = 1.0  # $J per J: the reserve
W_PER_CORE = 10.0  # the power a busy core draws, for the energy to bill
FUNDS = Money(10**12)  # µ$J (a million $J): nobody goes insolvent in a tick
BID_RANGE = (0.5, 3.0)  # $J per J
DEMAND_RANGE = (0.05, 1.0)  # cores
UPDATES_PER_CALL = 1_000  # bid updates in one `orderbook_update` call (the cost is per update)
TICKS = ("plan_tick_busy", "plan_tick_idle", "plan_tick_rebid")  # the tick scenarios' cases
AUCTIONEER = "clear_market"  # the tick's clearing step, as `plan_tick` calls it
BOOK_CLEARING = "uniform_book"  # `Uniform.clear_book`: the walk of the standing book alone
UPDATE = "orderbook_update"
BILLS = "billing"  # the busy tick's n bills alone (`maxwell.economy.billing.bill`)
FAIR_SHARE = "fair_share"


@dataclass(frozen=True)
class Agents:
    """n agents' bids as the node's standing book holds them, and their tick inputs."""

    n: int
    busy: tuple[AgentTickInput, ...]  # every one ran last interval: energy to bill
    bids: BidSet  # id, bid, demand and arrival number of each, in arrival order


def agents(seed: int, n: int) -> Agents:
    """n agents drawn from (seed, n) (see the module)."""
    if n < 1:
        raise ValueError(f"the experiment needs at least one agent, got {n}")
    rng = np.random.default_rng([seed, n])
    bids = rng.uniform(*BID_RANGE, n).round(4)
    demands = rng.uniform(*DEMAND_RANGE, n).round(4)
    used = rng.uniform(0.2, 1.0, n)  # of its demand, what it burned last interval
    ids = tuple(f"agent-{i:05d}" for i in range(n))
    busy = tuple(
        AgentTickInput(
            agent=ids[i], state=AgentState.RUNNING, balance=FUNDS, bid=float(bids[i]),
            demand=float(demands[i]), bid_seq=i,
            energy_uj=round(float(demands[i] * used[i]) * TICK_S * W_PER_CORE * 1e6),
            burn_per_s=float(demands[i] * used[i]) * W_PER_CORE,
        )
        for i in range(n)
    )  # fmt: skip
    bid_set = BidSet(agents=ids, prices=bids, demands=demands, seqs=np.arange(n, dtype=np.int64))
    return Agents(n, busy, bid_set)


def tick_input(agents: Sequence[AgentTickInput], tick: int = 2) -> TickInput:
    """The node's tick over `agents` (it sells every core: `share_idle`, as the daemon does)."""
    return TickInput(
        tick=tick, now_s=1_000.0 + tick * TICK_S, interval_s=TICK_S, tick_s=TICK_S,
        spot_price=SPOT_PRICE, temperature_c=50.0, capacity_cores=CAPACITY_CORES,
        landauer_multiplier=1.0, grace_s=NodeConfig().grace_s, agents=tuple(agents),
        share_idle=True,
    )  # fmt: skip


def standing_book(bids: BidSet) -> OrderBook:
    """The daemon's standing order book: one bid per agent at its arrival number."""
    return OrderBook.from_rows(
        zip(bids.agents, bids.prices.tolist(), bids.demands.tolist(), [None] * len(bids),
            strict=True)
    )  # fmt: skip


def carried(agents: Sequence[AgentTickInput], plan: TickPlan) -> tuple[AgentTickInput, ...]:
    """The agents in the state and at the price `plan` left them in, as the next tick sees them:
    those that run used what they asked for (energy to bill), the frozen used nothing."""
    moved = []
    for agent in agents:
        planned = plan.agents[agent.agent]
        ran = planned.state is not AgentState.FROZEN
        moved.append(dataclasses.replace(
            agent, state=planned.state, price=planned.price,
            energy_uj=agent.energy_uj if ran else 0, burn_per_s=agent.burn_per_s if ran else 0.0,
        ))  # fmt: skip
    return tuple(moved)


def quiet(agents: Sequence[AgentTickInput]) -> tuple[AgentTickInput, ...]:
    """The agents idle since: nothing to bill, no burn (the inputs the ticker rests them on)."""
    return tuple(dataclasses.replace(agent, energy_uj=0, burn_per_s=0.0) for agent in agents)


@dataclass(frozen=True)
class Case:
    """One timed call: `plan_tick` (a tick scenario), a clearing, bid updates or a water fill."""

    name: str
    call: Callable[[], object]


@dataclass(frozen=True)
class Ticks:
    """The tick scenarios' inputs over n agents (see the module), each as the ticker builds it."""

    book: OrderBook  # the standing book, every agent's bid at its arrival number
    busy: TickInput  # every agent billed, after a first tick left them in their states
    busy_plan: TickPlan
    idle: tuple[AgentTickInput, ...]  # resting, the market standing (`standing`)
    standing: Standing
    moved: AgentTickInput  # `rebid`: idle[0] with a new bid, re-queued in `moved_book`
    moved_book: OrderBook


def ticks(drawn: Agents) -> Ticks:
    """A first tick settles the agents into their states; the busy tick bills them all; the
    idle ones then stand in a market that a second idle tick leaves standing."""
    book = standing_book(drawn.bids)
    first = plan_tick(tick_input(drawn.busy, tick=1), book=book)
    busy = tick_input(carried(drawn.busy, first), tick=2)
    busy_plan = plan_tick(busy, book=book)
    idle = quiet(carried(busy.agents, busy_plan))
    standing = plan_tick(tick_input(idle, tick=3), book=book).standing
    if standing is None:
        raise AssertionError("a uniform clearing always leaves a standing market")
    mover = idle[0]
    moved = dataclasses.replace(mover, bid=round(mover.bid + 0.5, 4), bid_seq=drawn.n)
    moved_book = standing_book(drawn.bids)
    moved_book.update(mover.agent, price=moved.bid)  # re-queued: the next arrival number
    return Ticks(book, busy, busy_plan, idle, standing, moved, moved_book)


def tick_cases(scenario: Ticks) -> tuple[Case, ...]:
    """`plan_tick` in the three scenarios, and the auctioneer alone: `clear_market` over the
    busy tick's bidders from the standing book (checks the book holds them, walks it)."""
    s, book = scenario, scenario.book
    idle_input, resting = tick_input((), tick=4), Resting.of(s.idle)
    rebid_input, others = tick_input((s.moved,), tick=4), Resting.of(s.idle[1:])
    bidders = list(s.busy.agents)  # all live and solvent: the tick's bidders
    return (
        Case(TICKS[0], lambda: plan_tick(s.busy, book=book)),
        Case(TICKS[1], lambda: plan_tick(idle_input, book=book, standing=s.standing,
                                         resting=resting)),
        Case(TICKS[2], lambda: plan_tick(rebid_input, book=s.moved_book, standing=s.standing,
                                         resting=others)),
        Case(AUCTIONEER, lambda: clear_market(bidders, capacity=CAPACITY_CORES,
                                              reserve=SPOT_PRICE, mechanism=None, seed=2,
                                              book=book)),
    )  # fmt: skip


def bills_case(scenario: Ticks) -> Case:
    """The busy tick's bills alone, made as `plan_tick` makes them (the core equation in exact
    arithmetic, per agent that used energy): what of the tick is accounting, not the auction."""
    inputs = scenario.busy
    billed = [agent for agent in inputs.agents if agent.energy_uj > 0]

    def bills() -> list[Bill]:
        return [
            bill(energy_uj=agent.energy_uj, spot_price=agent.price or inputs.spot_price,
                 temperature_c=inputs.temperature_c,
                 landauer_multiplier=inputs.landauer_multiplier)
            for agent in billed
        ]  # fmt: skip

    return Case(BILLS, bills)


def clearing_cases(drawn: Agents, seed: int) -> tuple[Case, ...]:
    """Each mechanism clearing the n bids at the node's capacity, and the uniform auction
    walking the standing book (`clear_book`: what the daemon's tick clears)."""
    book = standing_book(drawn.bids)
    rng = np.random.default_rng(seed)
    cases = [Case(BOOK_CLEARING, lambda: Uniform().clear_book(book, CAPACITY_CORES, SPOT_PRICE))]
    for name in MECHANISM_NAMES:
        cases.append(Case(name, _clearer(name, drawn.bids, rng)))
    return tuple(cases)


def _clearer(name: str, bids: BidSet, rng: np.random.Generator) -> Callable[[], Clearing]:
    mechanism = make_mechanism(name)
    return lambda: mechanism.clear(bids, CAPACITY_CORES, SPOT_PRICE, rng)


def update_case(drawn: Agents, seed: int, book: OrderBook | None = None) -> Case:
    """`UPDATES_PER_CALL` price changes in the standing book of n bids (each re-queues a bid:
    a remove and an insert in the price-ordered list), agents and prices drawn beforehand.
    Calls alternate between prices in the bids' range and the same shifted above it, so every
    update of every call changes a price (one that did not would not move the bid). `book`: the
    standing book to update (None: a new one)."""
    book = standing_book(drawn.bids) if book is None else book
    rng = np.random.default_rng([seed, drawn.n, 1])
    chosen = [drawn.bids.agents[int(i)] for i in rng.integers(0, drawn.n, UPDATES_PER_CALL)]
    prices = rng.uniform(*BID_RANGE, UPDATES_PER_CALL).round(4).tolist()
    batches = (
        list(zip(chosen, prices, strict=True)),
        [(agent, price + BID_RANGE[1]) for agent, price in zip(chosen, prices, strict=True)],
    )
    calls = 0

    def updates() -> None:
        nonlocal calls
        pairs = batches[calls % 2]
        calls += 1
        update = book.update
        for agent, price in pairs:
            update(agent, price=price)

    return Case(UPDATE, updates)


def fair_share_case(drawn: Agents) -> Case:
    """Fair share on the same agents: every one wants its demand, the cores are water-filled."""
    demands = dict(zip(drawn.bids.agents, drawn.bids.demands.tolist(), strict=True))
    return Case(FAIR_SHARE, lambda: water_fill(CAPACITY_CORES, demands))


def outcome(plan: TickPlan) -> dict[str, float | int]:
    """What the busy tick decided (deterministic under the seed, unlike its cost): the clearing
    price, the cores granted, and how many agents were served, ran on idle cores or froze."""
    states = list(plan.agents.values())
    return {
        "clearing_price": plan.clearing_price,
        "granted_cores": round(plan.granted_cores, 9),
        "served": sum(1 for p in states if p.cores > 0),
        "on_idle_cores": sum(1 for p in states if p.cores == 0 and p.weight is not None),
        "frozen": sum(1 for p in states if p.state is AgentState.FROZEN),
    }
