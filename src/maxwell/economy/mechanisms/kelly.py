"""Kelly proportional share (Tycoon-like), capped at demand with the surplus water-filled.

Rules. A bid's budget is b_i = p_i x d_i (its limit price times its demand: the most it would
spend, per joule of each core, if it were fully served at its limit). Only bids priced > 0 and
at or above the reserve take part; a zero budget buys a zero share.

- If their total demand fits the capacity, each gets its demand, at the reserve price. With no
  capacity at all, nobody gets anything and the price is the highest bid.
- Otherwise each gets the share its budget buys at one market price p:
  x_i = min(d_i, b_i / p), with p set so the shares add up to the capacity. With no cap
  binding, p = (sum of budgets) / capacity and x_i = capacity x b_i / sum b (Kelly's rule,
  Tycoon's price). A bid whose share would exceed its demand is capped, and the capacity it
  leaves is redistributed to the rest in proportion to their budgets (water-filling), which
  lowers the price: p = (sum of uncapped budgets) / (capacity - capped demand). Bid i is
  capped exactly when p_i >= p, so the water level is found by a quickselect on price, O(n).
- Everyone pays p per core: an uncapped bid spends exactly its budget, a capped one less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from maxwell.economy.mechanisms.base import (
    FULL_SORT_BELOW,
    MIN_SAMPLE,
    Clearing,
    IndexArray,
    Mechanism,
    dot,
    eligible,
)
from maxwell.economy.orderbook import BidSet, FloatArray


class Kelly(Mechanism):
    """Proportional share of bid budgets (b_i = price x demand), water-filled at demand caps.

    Incentive property: not truthful. A price-taking bidder's share grows with its budget, so
    each bidder trades share against spend; with price-anticipating bidders the equilibrium
    loses at most 25% of the optimal welfare (Johari-Tsitsiklis), and Tycoon used it per host
    because it is fast and always gives every positive bid something. A bidder can gain by
    shading its price (shown in the tests).
    """

    name = "kelly"

    def _clear(
        self, bids: BidSet, capacity: float, reserve: float, rng: np.random.Generator
    ) -> Clearing:
        share = kelly_shares(bids, capacity, reserve)
        return self._result(
            bids, capacity, reserve, share.price, share.winners, share.cores,
            extra={
                "capped": share.capped,
                "total_bids_over_capacity": share.budget / capacity if capacity > 0 else None,
            },
        )  # fmt: skip


@dataclass(frozen=True)
class KellyShare:
    """The water-filled proportional shares: who, how many cores, at what price per core."""

    winners: IndexArray
    cores: FloatArray
    price: float
    capped: int
    budget: float


def kelly_shares(bids: BidSet, capacity: float, reserve: float) -> KellyShare:
    """Kelly's shares of `capacity` (see the module docstring), also the lottery's means."""
    market = eligible(bids, reserve, positive=True)
    winners = market.all_bids()
    budgets = market.prices * market.demands
    budget = float(budgets.sum())
    if market.total_demand <= capacity:
        return KellyShare(winners, market.demands.copy(), reserve, len(winners), budget)
    price = water_level(market.prices, market.demands, capacity) if capacity > 0 else math.inf
    if not math.isfinite(price):  # nothing (or next to nothing) to share
        nobody = np.empty(0, dtype=np.intp)
        return KellyShare(nobody, np.empty(0), float(market.prices.max()), 0, budget)
    capped = market.prices >= price
    cores = market.demands.copy()
    uncapped = ~capped  # divided alone: a capped budget over a tiny price would overflow
    cores[uncapped] = budgets[uncapped] / price
    return KellyShare(winners, cores, price, int(np.count_nonzero(capped)), budget)


def water_level(
    prices: FloatArray, demands: FloatArray, capacity: float, *, steer: bool = True
) -> float:
    """The price p with sum of min(d_i, p_i d_i / p) = capacity (prices > 0, demand > capacity).

    Demand at p is continuous and decreasing, and bid i is capped exactly when p_i >= p, so a
    quickselect on price finds p in O(n) expected: at a pivot price t, if demand(t) > capacity
    then p > t and every bid priced <= t is uncapped (only its budget matters from then on);
    otherwise p <= t and every bid priced >= t is capped (only its demand matters). The first
    two pivots bracket the level as estimated on a strided sample (`steer`); then medians.
    """
    pivots = _sampled_brackets(prices, demands, capacity) if steer else []
    capped_demand = 0.0  # demand of bids set aside as capped
    uncapped_budget = 0.0  # budget of bids set aside as uncapped
    while len(prices) > FULL_SORT_BELOW:
        if pivots:
            pivot = pivots.pop()
        else:
            middle = len(prices) // 2
            pivot = float(np.partition(prices, middle)[middle])
        at_or_above = prices >= pivot
        below = ~at_or_above
        demand = (
            capped_demand
            + float(demands.sum(where=at_or_above))
            + (uncapped_budget + dot(prices[below], demands[below])) / pivot
        )
        if demand > capacity:
            keep = prices > pivot
            settled = ~keep
            uncapped_budget += dot(prices[settled], demands[settled])
        else:
            keep = below
            capped_demand += float(demands.sum(where=at_or_above))
        prices, demands = prices[keep], demands[keep]
    # Few left: walk them from the top, capping while the highest is above the level.
    order = np.argsort(-prices, kind="stable")
    prices, demands = prices[order], demands[order]
    budgets = prices * demands
    above_demand = capped_demand + np.concatenate(([0.0], np.cumsum(demands)))
    rest_budget = uncapped_budget + np.concatenate(([0.0], np.cumsum(budgets[::-1])))[::-1]
    room = capacity - above_demand
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        level = np.where(room > 0, rest_budget / room, np.inf)
    next_price = np.concatenate((prices, [-np.inf]))  # past the last: nothing left to cap
    # At p_j == level the bid gets b / p = d either way: capped or not is the same share.
    settles = np.flatnonzero((next_price <= level) & (room > 0))
    if len(settles) == 0:  # rounding only: take the last level with room left
        settles = np.flatnonzero(room > 0)[-1:]
    return float(level[settles[0]])


def _sampled_brackets(prices: FloatArray, demands: FloatArray, capacity: float) -> list[float]:
    """Two prices likely to bracket the water level, from a strided sample of the bids."""
    n = len(prices)
    size = max(MIN_SAMPLE, int(2 * math.sqrt(n)))
    if n < 8 * size:
        return []
    step = n // size
    sample_prices = prices[::step]
    sample_demands = demands[::step]
    scaled = capacity * len(sample_prices) / n
    if float(sample_demands.sum()) <= scaled or float(sample_prices.min()) <= 0:
        return []
    level = water_level(sample_prices, sample_demands, scaled, steer=False)
    slack = 3 / math.sqrt(size)
    return [level * (1 + slack), level * (1 - slack)]
