"""Posted price moved by a tatonnement controller until demand meets supply.

Rules. Each agent decides alone, in O(1), from the posted price p: it asks for its whole demand
if p <= its limit price, nothing otherwise. The controller starts at the reserve (or, with a
zero reserve, at 1e-6 of the highest bid, since a multiplicative step cannot leave 0) and steps
p <- p x (1 + gain x (demand(p) - supply) / supply), each step's factor bounded to
[1/max_factor, max_factor] and p to [reserve, highest bid]. Demand is a step function, so there
may be no price where it equals supply: the gain halves every time excess demand changes sign,
and the walk stops when |excess| <= tolerance x supply, when the highest price seen with excess
demand and the lowest seen with excess supply are within `resolution` (relative) of each other
(then it posts the former: all capacity sold, rationed), when p is pinned at a bound, or at
`max_steps`. At the final price, if demand exceeds supply, every taker is rationed in the same
proportion supply / demand; everyone served pays p per core.

`extra` reports the steps taken and how far the result lands from uniform's exact clearing:
`uniform_price`, `price_gap` ((p - uniform) / uniform), `welfare_ratio` (welfare / uniform's),
and the final `excess_demand`.
"""

from __future__ import annotations

import math

import numpy as np

from maxwell.economy.mechanisms.base import Clearing, Mechanism, dot
from maxwell.economy.mechanisms.uniform import Uniform
from maxwell.economy.orderbook import BidSet, FloatArray
from maxwell.errors import UsageError

ZERO_RESERVE_START = 1e-6  # of the highest bid, when the reserve is 0


class Posted(Mechanism):
    """A posted price found by tatonnement; each agent takes it or leaves it.

    Incentive property: for a price-taking agent, reporting its true limit is optimal, since
    the agent does not set the price, it only answers it (take your demand iff p <= value).
    An agent large enough to move the price can gain by withholding demand, as under uniform
    pricing. The price converges towards uniform's clearing price; the gap and the welfare
    lost to rationing are reported in `extra`.
    """

    name = "posted"

    def __init__(
        self,
        gain: float = 0.5,
        max_steps: int = 200,
        tolerance: float = 1e-3,
        max_factor: float = 2.0,
        resolution: float = 1e-6,
    ) -> None:
        if not (math.isfinite(gain) and gain > 0):
            raise UsageError(f"the controller gain must be > 0, got {gain!r}")
        if max_steps < 1:
            raise UsageError(f"max_steps must be >= 1, got {max_steps!r}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise UsageError(f"tolerance must be >= 0, got {tolerance!r}")
        if not (math.isfinite(resolution) and resolution > 0):
            raise UsageError(f"resolution must be > 0, got {resolution!r}")
        if not (math.isfinite(max_factor) and max_factor > 1):
            raise UsageError(f"max_factor must be > 1, got {max_factor!r}")
        self.gain = gain
        self.max_steps = max_steps
        self.tolerance = tolerance
        self.max_factor = max_factor
        self.resolution = resolution

    def _clear(
        self, bids: BidSet, capacity: float, reserve: float, rng: np.random.Generator
    ) -> Clearing:
        prices, demands = bids.prices, bids.demands
        highest = float(prices.max()) if len(prices) else 0.0
        upper = max(reserve, highest)
        price = reserve if reserve > 0 else upper * ZERO_RESERVE_START
        steps = 0
        demand = _demand_at(prices, demands, price)
        if demand > capacity and capacity > 0:
            gain = self.gain
            last_sign = 0
            over: float | None = None  # highest price seen with demand above supply
            under: float | None = None  # lowest price seen with demand below supply
            while steps < self.max_steps:
                excess = (demand - capacity) / capacity
                if abs(excess) <= self.tolerance:
                    break
                if excess > 0:
                    over = price if over is None else max(over, price)
                else:
                    under = price if under is None else min(under, price)
                if (
                    over is not None
                    and under is not None
                    and under - over <= (self.resolution * under)
                ):
                    price = over  # the jump in demand is pinned: post just below it, ration
                    demand = _demand_at(prices, demands, price)
                    break
                sign = 1 if excess > 0 else -1
                if last_sign and sign != last_sign:
                    gain /= 2
                last_sign = sign
                factor = min(self.max_factor, max(1 / self.max_factor, 1 + gain * excess))
                moved = min(upper, max(reserve, price * factor))
                steps += 1
                if moved == price:
                    break  # pinned at a bound
                price = moved
                demand = _demand_at(prices, demands, price)
        elif capacity == 0:
            price = upper
            demand = _demand_at(prices, demands, price)
        takers = np.flatnonzero(prices >= price)
        wanted = demands[takers]
        ratio = 1.0 if demand <= capacity else (capacity / demand if demand > 0 else 0.0)
        cores = wanted * ratio
        exact = Uniform()._clear(bids, capacity, reserve, rng)
        welfare = dot(prices[takers], cores) if len(takers) else 0.0
        extra = {
            "steps": steps,
            "uniform_price": exact.clearing_price,
            "price_gap": _relative(price, exact.clearing_price),
            "welfare_ratio": welfare / exact.welfare if exact.welfare > 0 else None,
            "excess_demand": demand - capacity,
        }
        return self._result(bids, capacity, reserve, price, takers, cores, extra=extra)


def _demand_at(prices: FloatArray, demands: FloatArray, price: float) -> float:
    """Total demand at a posted price: each agent's take-it-or-leave-it answer, summed."""
    return float(demands.sum(where=prices >= price))


def _relative(value: float, reference: float) -> float:
    if reference == 0:
        return value - reference
    return (value - reference) / reference
