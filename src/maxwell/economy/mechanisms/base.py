"""What every mechanism shares: the interface, the result, and the walk from the top of the book.

Rules (pure: no clock, no file; randomness only from the `rng` passed in):

- `Mechanism.clear(bids, capacity, reserve, rng)` sells `capacity` cores to `bids` and returns a
  `Clearing`. It never serves more than `capacity` in total, nor an agent more than its demand,
  nor an agent whose price is below `reserve`.
- Units. A price is $J per J. An allocation is in cores. A payment is price x cores, in
  "$J per J x cores": multiplied by the joules one core burns over the tick it is the $JOULE the
  agent is charged (1 $J buys 1 J at spot price 1.0). Welfare (sum of limit price x cores
  served, the value bidders put on what they get) and revenue (sum of payments) are in the same
  unit.
- Book order is descending price, then lower `seq`, then agent id. No mechanism sorts all n
  bids: `price_at_position` finds the price at a given cumulative demand by a weighted
  quickselect (O(n) expected); everything priced above it is served in full whatever its
  order, and only the few bids in the window around the margin are sorted into book order.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from maxwell.economy.orderbook import BidSet, FloatArray
from maxwell.errors import UsageError

IndexArray = NDArray[np.intp]
ExtraValue = float | int | str | None
FULL_SORT_BELOW = 512  # below this many candidates, a full sort is as cheap as partitioning


def dot(a: FloatArray, b: FloatArray) -> float:
    """Sum of a x b without BLAS: its threads spin after a call and bill this process for CPU."""
    return float(np.einsum("i,i->", a, b))


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one agent got: `cores`, at `price_per_joule` ($J per J), for `payment` in total."""

    agent: str
    cores: float
    price_per_joule: float
    payment: float


@dataclass(frozen=True, eq=False)
class Clearing:
    """The result of one clearing, held as arrays so that clearing 10^6 bids stays cheap.

    `winners` are indices into `bids` of the agents served (cores > 0), in no promised order;
    `cores[j]`, `payments[j]` and `unit_prices[j]` belong to `bids.agents[winners[j]]`.
    `allocations` builds the per-agent objects on first use.
    """

    mechanism: str
    bids: BidSet
    capacity: float
    reserve: float
    clearing_price: float
    winners: IndexArray
    cores: FloatArray
    payments: FloatArray
    unit_prices: FloatArray  # what each winner pays per joule of its cores ($J per J)
    welfare: float
    revenue: float
    extra: Mapping[str, ExtraValue] = field(default_factory=dict)

    @cached_property
    def allocations(self) -> tuple[Allocation, ...]:
        """One `Allocation` per agent served, in bid order (arrival order of `bids`)."""
        order = np.argsort(self.winners, kind="stable")
        agents = self.bids.agents
        return tuple(
            Allocation(
                agent=agents[int(self.winners[j])],
                cores=float(self.cores[j]),
                price_per_joule=float(self.unit_prices[j]),
                payment=float(self.payments[j]),
            )
            for j in order
        )

    @cached_property
    def _by_agent(self) -> dict[str, Allocation]:
        return {allocation.agent: allocation for allocation in self.allocations}

    def allocation(self, agent: str) -> Allocation:
        """The agent's allocation; zero cores at price 0 if it was not served."""
        found = self._by_agent.get(agent)
        return found or Allocation(agent=agent, cores=0.0, price_per_joule=0.0, payment=0.0)

    def all_allocations(self) -> list[Allocation]:
        """An allocation for every bid, in bid order; those not served get 0 cores at price 0."""
        return [self.allocation(agent) for agent in self.bids.agents]

    def cores_by_bid(self) -> FloatArray:
        """Cores for every bid, aligned with `bids` (0 for those not served)."""
        dense = np.zeros(len(self.bids), dtype=np.float64)
        dense[self.winners] = self.cores
        return dense

    def payments_by_bid(self) -> FloatArray:
        dense = np.zeros(len(self.bids), dtype=np.float64)
        dense[self.winners] = self.payments
        return dense


def check_terms(capacity: float, reserve: float) -> tuple[float, float]:
    """The capacity (cores) and reserve ($J per J) of a clearing, checked: finite and >= 0."""
    if not math.isfinite(capacity) or capacity < 0:
        raise UsageError(f"capacity must be a finite number of cores >= 0, got {capacity!r}")
    if not math.isfinite(reserve) or reserve < 0:
        raise UsageError(f"reserve must be a finite price >= 0, got {reserve!r}")
    return float(capacity), float(reserve)


class Mechanism(ABC):
    """A way to sell `capacity` cores to bids. Subclasses document their incentive property."""

    name: str = ""

    def clear(
        self,
        bids: BidSet,
        capacity: float,
        reserve: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> Clearing:
        """Clear `bids` against `capacity` cores, nobody served below `reserve` $J per J.

        `rng` is the only source of randomness (mechanisms that draw need it; None means a
        generator seeded with 0, so a clearing is always reproducible).
        """
        capacity, reserve = check_terms(capacity, reserve)
        if rng is None:
            rng = np.random.default_rng(0)
        return self._clear(bids, capacity, reserve, rng)

    @abstractmethod
    def _clear(
        self, bids: BidSet, capacity: float, reserve: float, rng: np.random.Generator
    ) -> Clearing: ...

    def _result(
        self,
        bids: BidSet,
        capacity: float,
        reserve: float,
        clearing_price: float,
        winners: IndexArray,
        cores: FloatArray,
        payments: FloatArray | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> Clearing:
        """Build the `Clearing`, keeping only agents served and summing welfare and revenue.

        Without `payments`, everyone served pays `clearing_price` per core.
        """
        served = cores > 0
        if not served.all():
            winners, cores = winners[served], cores[served]
            payments = None if payments is None else payments[served]
        if payments is None:
            unit_prices = np.full(len(cores), float(clearing_price))
            payments = cores * float(clearing_price)
        else:
            unit_prices = payments / cores
        welfare = dot(bids.prices[winners], cores) if len(winners) else 0.0
        return Clearing(
            mechanism=self.name,
            bids=bids,
            capacity=capacity,
            reserve=reserve,
            clearing_price=float(clearing_price),
            winners=winners,
            cores=cores,
            payments=payments,
            unit_prices=unit_prices,
            welfare=welfare,
            revenue=float(payments.sum()),
            extra=dict(extra or {}),
        )


@dataclass(frozen=True)
class Eligible:
    """The bids that may be served: priced at or above the reserve (and > 0 if asked).

    `prices` and `demands` are theirs; `index` maps their positions back to the bid set (None:
    every bid, same positions).
    """

    index: IndexArray | None
    prices: FloatArray
    demands: FloatArray
    total_demand: float

    def to_bids(self, local: IndexArray) -> IndexArray:
        """Positions among the eligible bids -> indices into the bid set."""
        return local if self.index is None else self.index[local]

    def all_bids(self) -> IndexArray:
        return np.arange(len(self.prices), dtype=np.intp) if self.index is None else self.index


def eligible(bids: BidSet, reserve: float, *, positive: bool = False) -> Eligible:
    prices = bids.prices
    if reserve > 0 or positive:
        index = np.flatnonzero(prices >= reserve) if reserve > 0 else np.flatnonzero(prices > 0)
        demands = bids.demands[index]
        return Eligible(index, prices[index], demands, float(demands.sum()))
    return Eligible(None, prices, bids.demands, float(bids.demands.sum()))


def price_at_position(prices: FloatArray, demands: FloatArray, position: float) -> float:
    """The price of the bid that holds cumulative demand `position` in book order.

    That is the highest price t with (demand priced >= t) > `position`, so that
    (demand priced > t) <= `position`. Needs total demand > `position`. A weighted quickselect:
    split at a pivot price, keep the side holding the position. The first two pivots bracket
    the answer as estimated on a strided sample (so a large book is cut to a thin band in two
    passes); later pivots are medians. O(n) expected; never a sort of more than
    `FULL_SORT_BELOW` prices. The sample only steers the speed, never the answer.
    """
    pivots = _sampled_brackets(prices, demands, position)
    skipped = 0.0  # demand of the higher-priced bids already set aside
    while len(prices) > FULL_SORT_BELOW:
        if pivots:
            pivot = pivots.pop()
        else:
            middle = len(prices) // 2
            pivot = float(np.partition(prices, middle)[middle])
        above = prices > pivot
        demand_above = float(demands.sum(where=above))
        if skipped + demand_above > position:
            prices, demands = prices[above], demands[above]
            continue
        at = prices == pivot
        demand_at = float(demands.sum(where=at))
        if skipped + demand_above + demand_at > position:
            return pivot
        skipped += demand_above + demand_at
        below = prices < pivot
        prices, demands = prices[below], demands[below]
    order = np.argsort(-prices, kind="stable")
    cumulative = skipped + np.cumsum(demands[order])
    crossing = int(np.searchsorted(cumulative, position, side="right"))
    if crossing == len(order):  # rounding: the position sits at the very end
        crossing -= 1
    return float(prices[order[crossing]])


MIN_SAMPLE = 256  # a sample smaller than this steers too badly to be worth its sort


def _sampled_brackets(prices: FloatArray, demands: FloatArray, position: float) -> list[float]:
    """Two prices likely to bracket `position`, the lower one to try first (popped last)."""
    n = len(prices)
    size = max(MIN_SAMPLE, int(2 * math.sqrt(n)))  # sorting it costs o(n)
    if n < 8 * size:
        return []
    step = n // size
    sample_prices = prices[::step]
    sample_demands = demands[::step]
    order = np.argsort(-sample_prices)
    cumulative = np.cumsum(sample_demands[order])
    scaled = position * float(cumulative[-1]) / float(demands.sum())
    # Sampling error of a demand quantile is about 1/sqrt(size): leave three times that.
    slack = 3 / math.sqrt(size) * scaled + 4 * float(sample_demands.max())
    brackets = []
    for target in (scaled - slack, scaled + slack):  # higher price first, popped last
        at = int(np.searchsorted(cumulative, target, side="right"))
        if target >= 0 and at < len(order):
            brackets.append(float(sample_prices[order[at]]))
    return brackets


def in_book_order(bids: BidSet, index: IndexArray) -> IndexArray:
    """`index` (into the bid set) sorted into book order: -price, then seq, then agent id."""
    prices = bids.prices[index]
    seqs = bids.seqs[index]
    order = np.lexsort((seqs, -prices))
    ordered = index[order]
    if len(order) > 1:
        sorted_prices = prices[order]
        sorted_seqs = seqs[order]
        tied = (sorted_prices[1:] == sorted_prices[:-1]) & (sorted_seqs[1:] == sorted_seqs[:-1])
        if tied.any():
            ordered = _break_ties_by_agent(bids, ordered, tied)
    return ordered


def _break_ties_by_agent(bids: BidSet, ordered: IndexArray, tied: NDArray[np.bool_]) -> IndexArray:
    """Order runs of equal (price, seq) by agent id: rare (only bid sets with repeated seqs)."""
    result = ordered.copy()
    agents = bids.agents
    start = 0
    n = len(ordered)
    while start < n - 1:
        if not tied[start]:
            start += 1
            continue
        end = start
        while end < n - 1 and tied[end]:
            end += 1
        run = result[start : end + 1]
        by_agent = sorted(range(len(run)), key=lambda j: agents[int(run[j])])
        result[start : end + 1] = run[by_agent]
        start = end + 1
    return result


def fill_in_order(
    demands: FloatArray, capacity: float
) -> tuple[FloatArray, int | None, FloatArray]:
    """Fill `capacity` down `demands` (already in book order).

    Returns (cores per bid, index of the first bid not completely filled or None, cumulative
    demand). Cores are the demand up to the margin, the remainder at it, zero after.
    """
    cumulative = np.cumsum(demands)
    margin = int(np.searchsorted(cumulative, capacity, side="right"))  # first cumulative > C
    cores = demands.copy()
    if margin == len(demands):
        return cores, None, cumulative
    before = float(cumulative[margin - 1]) if margin > 0 else 0.0
    cores[margin] = max(0.0, capacity - before)
    cores[margin + 1 :] = 0.0
    return cores, margin, cumulative
