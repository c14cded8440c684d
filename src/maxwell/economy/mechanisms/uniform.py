"""Uniform-price auction with the (k+1)-th price and a reserve.

Rules: bids below the reserve are ignored; the rest are filled in book order (descending price,
earlier bid, agent id) until the capacity runs out. Everyone served pays the same clearing
price: the highest price among bids not completely filled (the marginal, partially filled bid,
or the first one left unserved), or the reserve when all eligible demand fits. The price is
never below the reserve.

Cost: `clear` (a `BidSet`) is O(n) expected. The marginal price t comes from a weighted
quickselect; every bid priced above t is filled in full (their order does not matter), and only
the bids priced exactly t are sorted into book order to share what is left. `clear_book` (a
standing `OrderBook`, already in book order) walks it from the top and stops at the margin:
O(k) for the k bids it visits, whatever the size of the book. Both give the same clearing.
"""

from __future__ import annotations

from collections.abc import Container

import numpy as np

from maxwell.economy.mechanisms.base import (
    Clearing,
    Mechanism,
    check_terms,
    eligible,
    fill_in_order,
    in_book_order,
    price_at_position,
)
from maxwell.economy.orderbook import BidSet, OrderBook


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

    def clear_book(
        self,
        book: OrderBook,
        capacity: float,
        reserve: float = 0.0,
        *,
        only: Container[str] | None = None,
    ) -> Clearing:
        """Clear a standing order book by walking it from the top (the per-tick auctioneer).

        The same clearing as `clear(book.to_bidset(), capacity, reserve)`: same cores for every
        agent, same price, same marginal bid. The book is already in book order, so the walk
        fills each bid in turn and stops at the first one not completely filled (the marginal
        bid, the price) or at the first one below the reserve (all demand fits: the reserve).
        Cost O(k) for the k bids visited; nothing is exported or sorted.

        The result's `bids` holds only the visited bids, in book order (the winners and the
        marginal bid); the agents never reached got nothing, which `allocation(agent)` reports.

        `only`: clear just the bids of these agents (the others are skipped, as if cancelled, and
        keep their place in the book): a standing book holds agents that may not bid this tick.
        """
        capacity, reserve = check_terms(capacity, reserve)
        agents: list[str] = []
        prices: list[float] = []
        demands: list[float] = []
        seqs: list[int] = []
        cores: list[float] = []
        filled = 0.0
        price = reserve
        marginal_bid: str | None = None
        for bid in book:
            if bid.price < reserve:
                break  # book order: every bid after this one is below the reserve too
            if only is not None and bid.agent not in only:
                continue
            agents.append(bid.agent)
            prices.append(bid.price)
            demands.append(bid.demand)
            seqs.append(bid.seq)
            if filled + bid.demand > capacity:
                cores.append(max(0.0, capacity - filled))
                price = max(reserve, bid.price)
                marginal_bid = bid.agent
                break
            filled += bid.demand
            cores.append(bid.demand)
        visited = BidSet(
            agents=tuple(agents),
            prices=np.array(prices, dtype=np.float64),
            demands=np.array(demands, dtype=np.float64),
            seqs=np.array(seqs, dtype=np.int64),
        )
        return self._result(
            visited, capacity, reserve, price,
            np.arange(len(agents), dtype=np.intp), np.array(cores, dtype=np.float64),
            extra={"marginal_bid": marginal_bid},
        )  # fmt: skip
