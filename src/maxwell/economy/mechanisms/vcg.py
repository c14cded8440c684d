"""VCG for linear values up to a demand cap.

Rules: bidder i values each core at its price p_i, up to its demand d_i; the seller values an
unsold core at the reserve. The allocation is uniform's (the efficient one for these values:
fill in book order). Each winner pays the externality it imposes on the others: their welfare
were it absent minus their welfare now. Removing winner i frees its x_i cores, which flow to the
demand just past the margin, so on the axis of cumulative demand in book order its payment is
the integral of the value curve V over [max(C, end_i), max(C, end_i) + x_i), where C is the
capacity and end_i the cumulative demand through bid i; beyond the last eligible bid V is the
reserve. Only the window of bids from the margin to capacity + the largest demand is sorted;
with prefix sums over it each payment costs O(log k), and the whole clearing O(n) expected.
"""

from __future__ import annotations

import numpy as np

from maxwell.economy.mechanisms.base import (
    Clearing,
    Mechanism,
    eligible,
    fill_in_order,
    in_book_order,
    price_at_position,
)
from maxwell.economy.orderbook import BidSet, FloatArray


class Vcg(Mechanism):
    """Vickrey-Clarke-Groves: allocation as uniform, each winner pays its externality.

    Incentive property: truthful. For bidders with linear values up to a (truthfully known)
    demand cap, reporting one's true price per core is a best response whatever the others bid:
    the payment does not depend on one's own report, and the allocation maximises reported
    welfare, so misreporting can only move one to an allocation worth less to oneself net of
    the same externality. Payments lie between the reserve and the winner's own price per core;
    they are not budget-balanced (revenue can be far below welfare).

    `clearing_price` is the marginal price as in uniform; what each winner pays per core
    (`Allocation.price_per_joule`) is its own externality divided by its cores.
    """

    name = "vcg"

    def _clear(
        self, bids: BidSet, capacity: float, reserve: float, rng: np.random.Generator
    ) -> Clearing:
        market = eligible(bids, reserve)
        if market.total_demand <= capacity:
            # Nobody displaces anyone: each core freed would go unsold, worth the reserve.
            winners = market.all_bids()
            cores = bids.demands[winners].copy()
            return self._result(
                bids, capacity, reserve, reserve, winners, cores,
                extra={"marginal_price": reserve},
            )  # fmt: skip
        marginal = price_at_position(market.prices, market.demands, capacity)
        # The window: bids from the margin down to where the largest winner's cores would go.
        reach = capacity + float(market.demands.max())
        floor = (
            price_at_position(market.prices, market.demands, reach)
            if market.total_demand > reach
            else -np.inf
        )
        ahead = market.to_bids(np.flatnonzero(market.prices > marginal))
        window_mask = (market.prices <= marginal) & (market.prices >= floor)
        window = in_book_order(bids, market.to_bids(np.flatnonzero(window_mask)))
        ahead_cores = bids.demands[ahead]
        ahead_demand = float(ahead_cores.sum())
        window_cores, _, window_ends = fill_in_order(bids.demands[window], capacity - ahead_demand)
        window_prices = bids.prices[window]
        values = np.cumsum(window_prices * bids.demands[window])
        # Positions on the cumulative-demand axis, measured from the window's start.
        ends = window_ends
        room = capacity - ahead_demand
        ahead_lower = np.full(len(ahead), room)
        window_lower = np.maximum(room, ends)

        def externality(lower: FloatArray, cores: FloatArray) -> FloatArray:
            upper = lower + cores
            return _value_integral(upper, ends, values, window_prices, reserve) - (
                _value_integral(lower, ends, values, window_prices, reserve)
            )

        winners = np.concatenate((ahead, window))
        cores = np.concatenate((ahead_cores, window_cores))
        payments = np.concatenate(
            (externality(ahead_lower, ahead_cores), externality(window_lower, window_cores))
        )
        price = max(reserve, marginal)
        return self._result(
            bids, capacity, reserve, price, winners, cores, payments,
            extra={"marginal_price": price},
        )  # fmt: skip


def _value_integral(
    q: FloatArray, ends: FloatArray, values: FloatArray, prices: FloatArray, reserve: float
) -> FloatArray:
    """F(q) = integral from 0 to q of the value curve: the bid whose demand covers each core
    in book order values it at its price; past the last bid, the seller values it at `reserve`.
    """
    k = np.searchsorted(ends, q, side="right")  # index of the bid containing position q
    inside = k < len(ends)
    k_in = np.minimum(k, len(ends) - 1)
    start_end = np.where(k_in > 0, ends[np.maximum(k_in - 1, 0)], 0.0)
    start_value = np.where(k_in > 0, values[np.maximum(k_in - 1, 0)], 0.0)
    within = start_value + prices[k_in] * (q - start_end)
    past = values[-1] + reserve * (q - ends[-1])
    result: FloatArray = np.where(inside, within, past)
    return result
