"""Uniform-price auction with the (k+1)-th price and a reserve.

Rules: bids below the reserve are ignored; the rest are filled in book order (descending price,
earlier bid, agent id) until the capacity runs out. Everyone served pays the same clearing
price: the highest price among bids not completely filled (the marginal, partially filled bid,
or the first one left unserved), or the reserve when all eligible demand fits. The price is
never below the reserve.

Cost: O(n) expected. The marginal price t comes from a weighted quickselect; every bid priced
above t is filled in full (their order does not matter), and only the bids priced exactly t
are sorted into book order to share what is left.
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
from maxwell.economy.orderbook import BidSet


class Uniform(Mechanism):
    """Uniform price = the highest price not completely filled, or the reserve.

    Incentive property: truthful for unit demand. When every bid asks for one core and the
    capacity is a whole number k of cores, the k highest bids win and all pay the (k+1)-th
    highest price (or the reserve): a winner's report does not set its price and a loser could
    only win by paying at least its value, so bidding one's true value is a dominant strategy
    (Vickrey). With multi-unit demand it is not: bidders gain by shading demand, and a bidder
    left partially filled sets the price it pays, so it gains by shading its price too (both
    are shown in the tests).
    """

    name = "uniform"

    def _clear(
        self, bids: BidSet, capacity: float, reserve: float, rng: np.random.Generator
    ) -> Clearing:
        market = eligible(bids, reserve)
        if market.total_demand <= capacity:
            winners = market.all_bids()
            cores = bids.demands[winners].copy()
            return self._result(
                bids, capacity, reserve, reserve, winners, cores,
                extra={"marginal_bid": None},
            )  # fmt: skip
        marginal = price_at_position(market.prices, market.demands, capacity)
        ahead = market.to_bids(np.flatnonzero(market.prices > marginal))
        tied = in_book_order(bids, market.to_bids(np.flatnonzero(market.prices == marginal)))
        ahead_cores = bids.demands[ahead]
        tied_cores, margin, _ = fill_in_order(
            bids.demands[tied], capacity - float(ahead_cores.sum())
        )
        price = max(reserve, marginal)
        winners = np.concatenate((ahead, tied))
        cores = np.concatenate((ahead_cores, tied_cores))
        return self._result(
            bids, capacity, reserve, price, winners, cores,
            extra={"marginal_bid": None if margin is None else bids.agents[int(tied[margin])]},
        )  # fmt: skip
