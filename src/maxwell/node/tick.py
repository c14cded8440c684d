"""One tick of one node, as a plan of effects. Pure: no clock, no file, no database, no cgroup.

The daemon's ticker (`maxwell.node.ticker`) reads the sensors and the cgroup counters, calls
`plan_tick` with what it read, then carries the plan out: ledger entries, journal events, cgroup
writes.

Rules and invariants:

- Bills. Each agent is billed for the interval just metered with `maxwell.economy.billing.bill`
  (energy x its price + Landauer tax), capped at its balance. Its price is what the clearing
  that granted that interval set (`AgentTickInput.price`): if it was served, the mechanism's
  unit price (uniform: the clearing price; vcg: its externality; lottery, posted: the price
  posted) capped at its bid (kelly's market price is above the bid of every agent it does not
  fully serve: they pay their bid) and never below that clearing's reserve (the spot price
  then); the reserve if it was not served; the spot price before its first clearing. So a bid
  is not free: under scarcity winners pay more than spot. The energy part is paid first, the tax
  from what is left; what cannot be paid is the `shortfall`, and an agent with a shortfall is
  insolvent (its balance is then 0). No agent is ever billed more than its balance, so a planned
  bill always applies.
- Ledger. One batch entry per agent per tick that moves money: `agent:<id>` -> `grid` for the
  energy and `agent:<id>` -> `landauer` for the tax, under the key `bill:<tick>:<agent>`, so a
  tick that is retried (the daemon crashed while posting it) never bills twice. Money is conserved:
  what leaves the agents equals what enters grid + landauer, to the µ$J. Events are keyed
  `event:<tick>:<agent>:<kind>` likewise.
- Apoptosis (`maxwell.economy.apoptosis.decide`): insolvent -> frozen; frozen for `grace_s` and
  still insolvent -> killed; funded again -> may run again. Being frozen for losing the auction is
  not insolvency and never leads to a kill.
- Market. Among agents that are alive and solvent after this tick's decisions, capacity (cores)
  is cleared with reserve = the spot price: the uniform auction walks a book built from the bids
  (in bid arrival order, then agent id) by default; any other `Mechanism` clears the bid set
  (randomness seeded with the tick number, so a tick is reproducible). Granted cores never sum
  above the capacity and no agent gets more than its demand.
- Enforcement. An agent granted cores runs with a CPU quota of exactly those cores (never
  unlimited) and a weight of 100 per core; one that was frozen and is granted cores again is
  thawed; an apoptosis decision kills it. One insolvent, or bidding below the reserve, is frozen.
- Work conservation. A solvent bidder at or above the reserve that the auction did not serve
  (no capacity left) is not frozen while the node sells every core the machine has
  (`share_idle`): it runs throttled, with a quota of its demand and the least weight there is
  (`IDLE_WEIGHT`), so the kernel gives it only what the winners leave idle, within the same
  tick. Granted cores stay the winners' (their weight outbids it at once), and it pays the
  reserve for what it burns. Ten idle agents that won every core cannot starve a busy one. A
  node derated for heat, or capped below the machine's cores, freezes it instead: the cores it
  does not sell must stay idle.
  States: running (got all it asked for), throttled (got less), frozen, dead, exited.
- Agents already dead or exited are billed for their last interval (their final energy) and get
  no decision, no cores and no enforcement.
- Determinism: the plan is a function of the arguments only; agents are handled in id order.
- Quiet agents (`is_quiet`: live, not held for insolvency, nothing to bill, a burn this tick
  leaves as it is, solvent) get no bill, no decision, no event and keep their state, so long as
  the market clears as it did: then they are left out of the plan. A uniform clearing depends
  only on its `MarketKey` (capacity, reserve and the bidders' terms), so the plan leaves the
  clearing `Standing` for the next tick; given it back and finding the same key, `plan_tick`
  reuses it and plans only the agents that are not quiet. The plan is then the full plan less
  the quiet agents' entries, which would change nothing. Any other mechanism plans everyone.
- Resting agents (`Resting`) are quiet agents the caller keeps out of `TickInput.agents`,
  vouching that each is quiet and that its input is the one it had when a plan last left it
  out: the plan is the same as with them among the agents (a property test checks it), and
  while the market stands the tick does no work at all for them. The node's ticker keeps its
  idle agents resting that way, so an idle agent costs a tick one counter read.

`plan_tick` takes the steps above in order, one pure function each: bills (`_bill_agents`),
apoptosis (`_apoptosis_decisions`, `_insolvent_since`), market (`_Market.clear`, over
`clear_market`), then per agent enforcement (`_enforce`) and its journal events (`_agent_events`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

import numpy as np

from maxwell.economy import apoptosis
from maxwell.economy.billing import Bill, bill, charged_price
from maxwell.economy.ledger import GRID, LANDAUER, Movement, agent_account
from maxwell.economy.mechanisms import Mechanism, Uniform
from maxwell.economy.mechanisms.base import Clearing
from maxwell.economy.orderbook import BidSet, OrderBook
from maxwell.node.facade import AgentState
from maxwell.units import Money

# A hot node sells fewer cores (ARCHITECTURE: "capacity (cores x tick, reduced when hot)"): all of
# them while the headroom to the thermal limit is at least this, then linearly fewer, down to the
# floor fraction at no headroom. The price controller holds the die 15 °C below the limit, so the
# derating only starts once the price alone has failed to cool the node.
DERATE_BELOW_HEADROOM_C = 10.0
MIN_CAPACITY_FRACTION = 0.25

# Granted cores within this of the demand count as "all it asked for" (float sums in the auction).
CORES_EPSILON = 1e-9
DEFAULT_WEIGHT = 100  # cgroup v2 cpu.weight of one core; weights are 100 x granted cores
MAX_WEIGHT = 10_000
IDLE_WEIGHT = 1  # the least there is: a bidder not served runs only on what others leave idle


class Enforcement(enum.StrEnum):
    NONE = "none"
    FREEZE = "freeze"
    THAW = "thaw"
    KILL = "kill"


_LIVE = (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN)


@dataclass(frozen=True)
class AgentTickInput:
    """One agent as the tick sees it.

    `state` is the state enforced since the last tick (frozen: its cgroup is frozen now).
    `insolvent_since_s` is set while apoptosis holds it frozen for insolvency (its grace runs from
    then). `burn_per_s` is its recent burn when running (µ$J per second). `bid_seq` orders bids of
    equal price: lower first (arrival order).
    """

    agent: str
    state: AgentState
    balance: Money
    bid: float
    demand: float
    energy_uj: int = 0
    bytes_freed: int = 0
    burn_per_s: float = 0.0
    insolvent_since_s: float | None = None
    bid_seq: int = 0
    # $J per J agreed for the interval metered: the price its last clearing set (the mechanism's
    # unit price if it was served, else the reserve); 0 before its first clearing (then: spot).
    price: float = 0.0
    bytes_rewritten: int = 0  # pages its processes re-wrote (the optional erasure meter)

    @functools.cached_property
    def terms(self) -> tuple[str, float, float, int]:
        """What the market clears of this agent: its id, bid, demand and arrival number."""
        return (self.agent, self.bid, self.demand, self.bid_seq)


@dataclass(frozen=True)
class TickInput:
    tick: int  # this tick's number (1, 2, ...): the ledger keys derive from it
    now_s: float  # Unix seconds
    interval_s: float  # seconds metered by this tick (for the burn rate)
    tick_s: float  # configured tick length (for solvency: does a balance cover the next tick?)
    spot_price: float  # $J per J; also the market's reserve
    temperature_c: float  # die temperature, for the Landauer cost
    capacity_cores: float
    landauer_multiplier: float
    grace_s: float
    agents: Sequence[AgentTickInput]
    # The node sells every core the machine has (not derated for heat, no cap below it): then a
    # bidder the auction did not serve runs on what the winners leave idle (see the module).
    share_idle: bool = False


@dataclass(frozen=True)
class LedgerPost:
    """A batch entry to post: movements applied together, under an idempotency key."""

    key: str
    kind: str
    movements: tuple[Movement, ...]
    detail: Mapping[str, object]


@dataclass(frozen=True)
class PlannedEvent:
    """A journal event (an entry that moves no money) to record under `key`."""

    key: str
    kind: str
    agent: str
    detail: Mapping[str, object]


@dataclass(frozen=True)
class AgentPlan:
    agent: str
    state: AgentState
    balance: Money  # after this tick's bill
    bill: Bill | None
    paid_energy: Money
    paid_landauer: Money
    shortfall: Money
    burn_per_s: float
    insolvent_since_s: float | None
    cores: float  # granted for the next tick
    quota_cores: float | None  # the CPU quota to hold (None: leave the group's quota alone)
    weight: int | None
    enforcement: Enforcement
    price: float = 0.0  # $J per J it pays for the next interval (its `AgentTickInput.price`)

    @property
    def paid(self) -> Money:
        return Money(self.paid_energy + self.paid_landauer)


@dataclass(frozen=True)
class TickPlan:
    tick: int
    now_s: float
    spot_price: float
    clearing_price: float
    capacity_cores: float
    agents: Mapping[str, AgentPlan]
    posts: tuple[LedgerPost, ...]
    events: tuple[PlannedEvent, ...]
    decisions: tuple[apoptosis.Decision, ...] = field(default=())
    # The clearing to give the next tick (None: not reusable, a mechanism other than uniform).
    standing: Standing | None = field(default=None, compare=False)

    @property
    def granted_cores(self) -> float:
        """The cores granted to the agents planned (all of them unless some were quiet)."""
        return sum(plan.cores for plan in self.agents.values())


@dataclass(frozen=True)
class MarketKey:
    """What a uniform clearing is a function of: capacity, reserve, the bidders' terms."""

    capacity: float
    reserve: float
    bidders: frozenset[tuple[str, float, float, int]]


@dataclass(frozen=True)
class Resting:
    """Quiet agents left out of `TickInput.agents` (see the module): their inputs by id, and
    their terms as one set (the caller keeps it, so a tick need not walk them to key the
    market)."""

    agents: Mapping[str, AgentTickInput]
    terms: frozenset[tuple[str, float, float, int]]

    @classmethod
    def of(cls, agents: Iterable[AgentTickInput]) -> Resting:
        inputs = {agent.agent: agent for agent in agents}
        return cls(inputs, frozenset(agent.terms for agent in inputs.values()))

    def __bool__(self) -> bool:
        return bool(self.agents)


NO_RESTING = Resting({}, frozenset())


@dataclass(frozen=True)
class Standing:
    """A tick's uniform clearing with its key, for the next tick to reuse while it holds."""

    key: MarketKey
    clearing: Clearing


def thermal_capacity(
    cores: float,
    headroom_c: float,
    *,
    derate_below_c: float = DERATE_BELOW_HEADROOM_C,
    floor: float = MIN_CAPACITY_FRACTION,
) -> float:
    """The cores a node with `cores` sells at `headroom_c` degrees below its thermal limit: all
    of them from `derate_below_c` up, `floor` x cores at no headroom (or less), linear between.
    A headroom that is not a number (no temperature) sells everything."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"the capacity floor must be a fraction in [0, 1], got {floor!r}")
    if not derate_below_c > 0:
        raise ValueError(f"the derating band must be positive, got {derate_below_c!r}")
    if math.isnan(headroom_c) or headroom_c >= derate_below_c:
        return cores
    fraction = floor + (1.0 - floor) * max(headroom_c, 0.0) / derate_below_c
    return cores * fraction


def bill_key(tick: int, agent: str) -> str:
    return f"bill:{tick}:{agent}"


def event_key(tick: int, agent: str, kind: str) -> str:
    return f"event:{tick}:{agent}:{kind}"


def is_quiet(agent: AgentTickInput, tick_s: float) -> bool:
    """Whether the tick leaves `agent` as it is when the market clears as before: live and not
    held for insolvency, nothing to bill, a burn the tick keeps (frozen, or already 0), and a
    balance that covers the next tick (no apoptosis decision)."""
    return (
        agent.energy_uj == 0
        and agent.bytes_freed == 0
        and agent.bytes_rewritten == 0
        and agent.insolvent_since_s is None
        and agent.state in _LIVE
        and (agent.burn_per_s == 0.0 or agent.state is AgentState.FROZEN)
        and agent.balance >= apoptosis.required_balance(agent.burn_per_s, tick_s)
    )


def weight_for(cores: float) -> int:
    """cpu.weight for `cores` granted: 100 per core, within the kernel's 1..10000."""
    return max(1, min(MAX_WEIGHT, round(cores * DEFAULT_WEIGHT)))


def _check(inputs: TickInput, resting: Resting) -> None:
    for name in ("now_s", "interval_s", "tick_s", "spot_price", "temperature_c", "grace_s"):
        value = getattr(inputs, name)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if inputs.tick < 1:
        raise ValueError(f"tick numbers start at 1, got {inputs.tick}")
    if inputs.tick_s <= 0 or inputs.interval_s < 0:
        raise ValueError("tick_s must be > 0 and interval_s >= 0")
    if not math.isfinite(inputs.capacity_cores) or inputs.capacity_cores < 0:
        raise ValueError(f"capacity must be finite and >= 0, got {inputs.capacity_cores!r}")
    seen: set[str] = set()
    for agent in inputs.agents:
        if agent.agent in seen:
            raise ValueError(f"agent {agent.agent!r} appears twice")
        seen.add(agent.agent)
        if agent.balance < 0:
            raise ValueError(f"{agent.agent}: balance {agent.balance} is negative")
        if agent.energy_uj < 0 or agent.bytes_freed < 0 or agent.bytes_rewritten < 0:
            raise ValueError(f"{agent.agent}: energy and bytes freed or re-written must be >= 0")
        if not math.isfinite(agent.price) or agent.price < 0:
            raise ValueError(f"{agent.agent}: price must be finite and >= 0, got {agent.price!r}")
    if resting and not resting.agents.keys().isdisjoint(seen):
        raise ValueError("an agent is both resting and among the agents")


def _settle(
    agent: AgentTickInput, inputs: TickInput
) -> tuple[Bill | None, Money, Money, Money, LedgerPost | None]:
    """The agent's bill, what it pays of each part, its shortfall and the entry to post."""
    if agent.energy_uj == 0 and agent.bytes_freed == 0 and agent.bytes_rewritten == 0:
        return None, Money(0), Money(0), Money(0), None
    price = agent.price or inputs.spot_price
    charged = bill(
        energy_uj=agent.energy_uj,
        spot_price=price,
        bytes_freed=agent.bytes_freed,
        temperature_c=inputs.temperature_c,
        landauer_multiplier=inputs.landauer_multiplier,
        bytes_rewritten=agent.bytes_rewritten,
    )
    paid_energy = Money(min(charged.energy_cost, agent.balance))
    paid_landauer = Money(min(charged.landauer_cost, agent.balance - paid_energy))
    shortfall = Money(charged.total - paid_energy - paid_landauer)
    account = agent_account(agent.agent)
    movements = tuple(
        Movement(account, sink, amount)
        for sink, amount in ((GRID, paid_energy), (LANDAUER, paid_landauer))
        if amount > 0
    )
    post = None
    if movements:
        post = LedgerPost(
            key=bill_key(inputs.tick, agent.agent),
            kind="bill",
            movements=movements,
            detail={
                "agent": agent.agent,
                "tick": inputs.tick,
                "energy_uj": agent.energy_uj,
                "bytes_freed": agent.bytes_freed,
                "spot_price": inputs.spot_price,
                "price": price,
                "temperature_c": inputs.temperature_c,
                "energy_cost": int(charged.energy_cost),
                "landauer_cost": int(charged.landauer_cost),
                "physical_landauer_j": charged.physical_landauer_j,
                "taxed_landauer_j": charged.taxed_landauer_j,
                "shortfall": int(shortfall),
            }
            | ({"bytes_rewritten": agent.bytes_rewritten} if agent.bytes_rewritten else {}),
        )
    return charged, paid_energy, paid_landauer, shortfall, post


def book_matches(book: OrderBook, bidders: Sequence[AgentTickInput]) -> bool:
    """Whether `book` holds every bidder's bid as it stands: price, demand, arrival number.

    Then the bidders' bids, walked in book order (price, then `bid_seq`; the book's numbers are
    unique), are in the order the rebuilt book would put them (price, then `bid_seq`, then id).
    """
    get = book.get
    for agent in bidders:
        bid = get(agent.agent)
        if (
            bid is None
            or bid.price != agent.bid
            or bid.demand != agent.demand
            or bid.seq != agent.bid_seq
        ):
            return False
    return True


def clear_market(
    bidders: Iterable[AgentTickInput],
    *,
    capacity: float,
    reserve: float,
    mechanism: Mechanism | None,
    seed: int,
    book: OrderBook | None = None,
) -> Clearing:
    """Clear `bidders` (in bid arrival order, then id) against `capacity` cores at `reserve`.

    `book`: a standing order book (uniform auction only) holding the bidders' bids with their
    `bid_seq` as arrival numbers, and possibly bids of agents not bidding now (frozen for
    insolvency, killed this tick: skipped, not cancelled). It is read, never changed. When it does
    not hold every bidder's bid as it stands, the book is rebuilt from the bidders instead, so the
    clearing is always the one the rebuilt book gives.
    """
    if (mechanism is None or isinstance(mechanism, Uniform)) and book is not None:
        current = bidders if isinstance(bidders, Sequence) else list(bidders)
        if book_matches(book, current):
            only = {agent.agent for agent in current}
            return Uniform().clear_book(book, capacity, reserve, only=only)
        bidders = current
    ordered = sorted(bidders, key=lambda agent: (agent.bid_seq, agent.agent))
    if mechanism is None or isinstance(mechanism, Uniform):
        book = OrderBook.from_rows((a.agent, a.bid, a.demand, None) for a in ordered)
        return Uniform().clear_book(book, capacity, reserve)
    bids = BidSet.from_rows((a.agent, a.bid, a.demand) for a in ordered)
    return mechanism.clear(bids, capacity, reserve, np.random.default_rng(seed))


def plan_tick(
    inputs: TickInput,
    *,
    mechanism: Mechanism | None = None,
    book: OrderBook | None = None,
    standing: Standing | None = None,
    resting: Resting = NO_RESTING,
) -> TickPlan:
    """This tick's bills, decisions, clearing and enforcement (see the module comment).

    `mechanism`: None (or a `Uniform`) clears from an order book; another mechanism clears the
    bid set. A stateful mechanism (posted price) carries its state from tick to tick itself.
    `book`: the daemon's standing order book, read (never changed) instead of building one from
    the bids each tick; see `clear_market`. The plan is the same with or without it.
    `standing`: the last plan's `standing`; while its key holds, the quiet agents are left out
    of the plan (see the module comment). `resting`: quiet agents kept out of `inputs.agents`.
    """
    _check(inputs, resting)
    market = _Market(inputs, mechanism, book)
    if resting and (standing is None or not market.uniform):  # planned like everyone else
        inputs = dataclasses.replace(inputs, agents=(*inputs.agents, *resting.agents.values()))
        resting = NO_RESTING
    agents = sorted(inputs.agents, key=_by_id)
    quiet = market.quiet(agents, standing)
    planned = agents
    if quiet:
        quiet_ids = {agent.agent for agent in quiet}
        planned = [agent for agent in agents if agent.agent not in quiet_ids]
    settled, posts = _bill_agents(planned, inputs)
    live = [agent for agent in planned if agent.state in _LIVE]
    decisions = _apoptosis_decisions(live, settled, inputs)
    by_agent = {decision.agent: decision for decision in decisions}
    insolvent_since = _insolvent_since(live, by_agent)
    killed = {a for a, d in by_agent.items() if d.action is apoptosis.Action.KILL}
    bidders = [a for a in live if a.agent not in killed and insolvent_since[a.agent] is None]
    clearing, next_standing = market.clear([*bidders, *quiet], standing, resting)
    if (quiet or resting) and next_standing is not standing:
        # The market moved: the quiet agents' grants may change, so they are planned too.
        quiet = sorted([*quiet, *resting.agents.values()], key=_by_id)
        settled.update(_bill_agents(quiet, inputs)[0])
        insolvent_since.update((agent.agent, None) for agent in quiet)
        planned = sorted([*agents, *resting.agents.values()], key=_by_id)
    plans, events = _plan_agents(
        planned, inputs, settled, by_agent, insolvent_since, killed, clearing
    )
    return TickPlan(
        tick=inputs.tick,
        now_s=inputs.now_s,
        spot_price=inputs.spot_price,
        clearing_price=clearing.clearing_price,
        capacity_cores=inputs.capacity_cores,
        agents=plans,
        posts=tuple(posts),
        events=tuple(events),
        decisions=tuple(decisions),
        standing=next_standing,
    )


def _by_id(agent: AgentTickInput) -> str:
    return agent.agent


def _plan_agents(
    planned: Sequence[AgentTickInput],
    inputs: TickInput,
    settled: Mapping[str, _Settlement],
    by_agent: Mapping[str, apoptosis.Decision],
    insolvent_since: Mapping[str, float | None],
    killed: Set[str],
    clearing: Clearing,
) -> tuple[dict[str, AgentPlan], list[PlannedEvent]]:
    """Each planned agent's enforcement, plan and journal events, in id order."""
    events: list[PlannedEvent] = []
    plans: dict[str, AgentPlan] = {}
    for agent in planned:
        decision = by_agent.get(agent.agent)
        enforced = _enforce(
            agent,
            killed=agent.agent in killed,
            insolvent=insolvent_since.get(agent.agent) is not None,
            decision=decision,
            clearing=clearing,
            inputs=inputs,
        )
        events += _agent_events(agent, settled[agent.agent], enforced, decision, inputs)
        since = insolvent_since.get(agent.agent) if enforced.state in _LIVE else None
        price = inputs.spot_price
        if enforced.cores > 0:
            unit = clearing.allocation(agent.agent).price_per_joule
            price = charged_price(unit, agent.bid, inputs.spot_price)
        plans[agent.agent] = _agent_plan(agent, settled[agent.agent], enforced, since, price)
    return plans, events


@dataclass(frozen=True)
class _Market:
    """How this tick clears: against its capacity at reserve = spot, by `mechanism`."""

    inputs: TickInput
    mechanism: Mechanism | None
    book: OrderBook | None

    @property
    def uniform(self) -> bool:
        return self.mechanism is None or isinstance(self.mechanism, Uniform)

    def quiet(
        self, agents: Sequence[AgentTickInput], standing: Standing | None
    ) -> list[AgentTickInput]:
        """The agents to leave out if `standing` still holds (none if it cannot be reused)."""
        if standing is None or not self.uniform:
            return []
        tick_s = self.inputs.tick_s
        return [agent for agent in agents if is_quiet(agent, tick_s)]

    def clear(
        self,
        bidders: Sequence[AgentTickInput],
        standing: Standing | None,
        resting: Resting = NO_RESTING,
    ) -> tuple[Clearing, Standing | None]:
        """The clearing of `bidders` and the `resting` agents, and the standing to leave:
        `standing` itself when its key holds (a uniform clearing is a function of its key),
        else a new one."""
        inputs = self.inputs
        key = None
        if self.uniform:
            terms = frozenset(agent.terms for agent in bidders) | resting.terms
            key = MarketKey(inputs.capacity_cores, inputs.spot_price, terms)
            if standing is not None and standing.key == key:
                return standing.clearing, standing
        clearing = clear_market(
            [*bidders, *resting.agents.values()],
            capacity=inputs.capacity_cores,
            reserve=inputs.spot_price,
            mechanism=self.mechanism,
            seed=inputs.tick,
            book=self.book,
        )
        return clearing, None if key is None else Standing(key, clearing)


@dataclass(frozen=True)
class _Settlement:
    """One agent after this tick's bill: charged, paid of each part, owed, left, burning."""

    bill: Bill | None
    paid_energy: Money
    paid_landauer: Money
    shortfall: Money
    balance: Money  # after the bill
    burn_per_s: float


def _bill_agents(
    agents: Sequence[AgentTickInput], inputs: TickInput
) -> tuple[dict[str, _Settlement], list[LedgerPost]]:
    """Bills: every agent's settlement (ended ones too) and the entries to post."""
    posts: list[LedgerPost] = []
    settled: dict[str, _Settlement] = {}
    for agent in agents:
        charged, paid_energy, paid_landauer, shortfall, post = _settle(agent, inputs)
        if post is not None:
            posts.append(post)
        ran = agent.state in (AgentState.RUNNING, AgentState.THROTTLED)
        # A frozen agent keeps the burn it had when it last ran (apoptosis needs that rate).
        if ran and inputs.interval_s > 0:
            total = charged.total if charged is not None else 0
            burn_per_s = total / inputs.interval_s
        else:
            burn_per_s = agent.burn_per_s
        settled[agent.agent] = _Settlement(
            bill=charged,
            paid_energy=paid_energy,
            paid_landauer=paid_landauer,
            shortfall=shortfall,
            balance=Money(agent.balance - paid_energy - paid_landauer),
            burn_per_s=burn_per_s,
        )
    return settled, posts


def _apoptosis_decisions(
    live: Sequence[AgentTickInput], settled: Mapping[str, _Settlement], inputs: TickInput
) -> list[apoptosis.Decision]:
    """Apoptosis: the policy's transitions for the live agents, on their new balances."""
    policy_states = [
        apoptosis.AgentState(
            agent=agent.agent,
            balance=settled[agent.agent].balance,
            burn_per_s=settled[agent.agent].burn_per_s,
            phase=apoptosis.Phase.FROZEN
            if agent.insolvent_since_s is not None
            else apoptosis.Phase.RUNNING,
            frozen_since_s=agent.insolvent_since_s,
        )
        for agent in live
    ]
    return apoptosis.decide(
        policy_states, now_s=inputs.now_s, tick_s=inputs.tick_s, grace_s=inputs.grace_s
    )


def _insolvent_since(
    live: Sequence[AgentTickInput], by_agent: Mapping[str, apoptosis.Decision]
) -> dict[str, float | None]:
    """Since when each live agent is held frozen for insolvency after the decisions (None: not)."""
    insolvent_since: dict[str, float | None] = {}
    for agent in live:
        since = agent.insolvent_since_s
        decision = by_agent.get(agent.agent)
        if decision is not None:
            if decision.action is apoptosis.Action.FREEZE:
                since = decision.at_s
            elif decision.action is apoptosis.Action.THAW:
                since = None
        insolvent_since[agent.agent] = since
    return insolvent_since


@dataclass(frozen=True)
class _Enforced:
    """One agent's state for the next tick and what the daemon does to its cgroup."""

    state: AgentState
    enforcement: Enforcement = Enforcement.NONE
    cores: float = 0.0
    quota_cores: float | None = None
    weight: int | None = None
    reason: str = ""  # why a live agent is frozen


def _enforce(
    agent: AgentTickInput,
    *,
    killed: bool,
    insolvent: bool,
    decision: apoptosis.Decision | None,
    clearing: Clearing,
    inputs: TickInput,
) -> _Enforced:
    """Enforcement: run (with a quota of the cores granted), run on what is left idle, freeze,
    thaw or kill."""
    if agent.state not in _LIVE:
        return _Enforced(agent.state)
    if killed:
        return _Enforced(AgentState.DEAD, Enforcement.KILL)
    cores = 0.0
    if not insolvent:
        cores = min(clearing.allocation(agent.agent).cores, agent.demand)
    if cores > 0:
        full = cores >= agent.demand - CORES_EPSILON
        thaw = agent.state is AgentState.FROZEN
        return _Enforced(
            state=AgentState.RUNNING if full else AgentState.THROTTLED,
            enforcement=Enforcement.THAW if thaw else Enforcement.NONE,
            cores=cores,
            quota_cores=cores,
            weight=weight_for(cores),
        )
    spot_price = inputs.spot_price
    if not insolvent and inputs.share_idle and agent.bid >= spot_price and agent.demand > 0:
        return _Enforced(
            state=AgentState.THROTTLED,
            enforcement=Enforcement.THAW if agent.state is AgentState.FROZEN else Enforcement.NONE,
            quota_cores=min(agent.demand, inputs.capacity_cores),
            weight=IDLE_WEIGHT,
        )
    if insolvent:
        reason = decision.reason if decision is not None else "insolvent"
    elif agent.bid < spot_price:
        reason = f"bid {agent.bid:g} is below the reserve {spot_price:g}"
    else:
        reason = f"no capacity left at clearing price {clearing.clearing_price:g}"
    frozen_already = agent.state is AgentState.FROZEN
    return _Enforced(
        state=AgentState.FROZEN,
        enforcement=Enforcement.NONE if frozen_already else Enforcement.FREEZE,
        reason=reason,
    )


def _agent_events(
    agent: AgentTickInput,
    settlement: _Settlement,
    enforced: _Enforced,
    decision: apoptosis.Decision | None,
    inputs: TickInput,
) -> list[PlannedEvent]:
    """The journal events of the agent's tick: its change of state, and its insolvency."""
    state = enforced.state
    detail: dict[str, object] = {
        "agent": agent.agent,
        "tick": inputs.tick,
        "balance": int(settlement.balance),
        "cores": enforced.cores,
        "demand": agent.demand,
        "bid": agent.bid,
        "spot_price": inputs.spot_price,
    }
    if decision is not None:
        detail["apoptosis"] = decision.to_journal()[1]
    kinds: list[tuple[str, dict[str, object]]] = []
    if state is AgentState.DEAD and enforced.enforcement is Enforcement.KILL:
        assert decision is not None
        kinds.append(("apoptosis", {**detail, "reason": decision.reason}))
    elif agent.state in _LIVE and state is not agent.state:
        if state is AgentState.FROZEN:
            kinds.append(("frozen", {**detail, "reason": enforced.reason}))
        elif agent.state is AgentState.FROZEN:
            kinds.append(("thawed", {**detail, "state": str(state)}))
        elif state is AgentState.THROTTLED:
            kinds.append(("throttled", detail))
        else:
            kinds.append(("running", detail))
    if settlement.shortfall > 0:
        kinds.append(("insolvent", {**detail, "shortfall": int(settlement.shortfall)}))
    return [
        PlannedEvent(event_key(inputs.tick, agent.agent, kind), kind, agent.agent, event_detail)
        for kind, event_detail in kinds
    ]


def _agent_plan(
    agent: AgentTickInput,
    settlement: _Settlement,
    enforced: _Enforced,
    insolvent_since_s: float | None,
    price: float,
) -> AgentPlan:
    return AgentPlan(
        agent=agent.agent,
        state=enforced.state,
        balance=settlement.balance,
        bill=settlement.bill,
        paid_energy=settlement.paid_energy,
        paid_landauer=settlement.paid_landauer,
        shortfall=settlement.shortfall,
        burn_per_s=settlement.burn_per_s,
        insolvent_since_s=insolvent_since_s,
        cores=enforced.cores,
        quota_cores=enforced.quota_cores,
        weight=enforced.weight,
        enforcement=enforced.enforcement,
        price=price,
    )
