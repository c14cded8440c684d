"""The order book: one standing bid per agent, kept in price order.

Rules and invariants (a pure core: no clock, no file; `now` is an argument):

- A bid is (agent, limit price in $J per J, demand in cores, expiry or None, arrival sequence).
  Price is finite and >= 0, demand finite and > 0, expiry finite or None.
- Book order is descending price, then the earlier arrival (lower `seq`), then agent id. Every
  mechanism that walks bids "from the top" walks them in this order.
- One bid per agent: `_bids[agent]`, `_by_seq[seq]` and the key in `_by_price` always describe
  the same bid; a bid with an expiry also has `(expiry, seq, agent)` in `_by_expiry`.
- `seq` is unique and increasing, so the agent id never decides an order inside the book. The
  key is one int, `(bits(+inf) - bits(price)) << 48 | seq`: for prices >= 0 the IEEE-754 bit
  pattern orders like the value, so ints sort as (-price, seq) do, and an int compares about
  twice as fast as a tuple (the update is the hot path).
- Changing a bid's price re-queues it (a new `seq`, as an exchange does when a price changes);
  changing only its demand or expiry keeps its place.
- A bid with expiry `e` is live while `now < e`; `expire(now)` removes those with `e <= now`.
- insert / update / cancel cost O(log n); `best(k)` and `marginal_price` walk from the top and
  cost O(log n + k) for the k bids they visit, never a sort of the whole book.

`BidSet` is the array export the mechanisms clear: numpy arrays of prices, demands and arrival
sequences beside a tuple of agent ids, in book order or in any order (the mechanisms re-order).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from sortedcontainers import SortedList

from maxwell.errors import MaxwellError, UsageError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class InvalidBidError(UsageError):
    """A bid's price, demand, expiry or agent id is out of range (NaN, negative, empty...)."""


class BookError(MaxwellError):
    """The order book was asked something inconsistent with what it holds."""


class DuplicateBidError(BookError):
    """`insert` for an agent that already has a standing bid (use `update` or `place`)."""


class UnknownBidError(BookError):
    """`update` or `cancel` for an agent with no standing bid."""


def check_price(price: float) -> float:
    value = float(price)
    if not math.isfinite(value) or value < 0:
        raise InvalidBidError(f"price must be a finite number >= 0, got {price!r}")
    return value + 0.0  # -0.0 becomes 0.0: the book key needs the positive zero


def check_demand(demand: float) -> float:
    value = float(demand)
    if not math.isfinite(value) or value <= 0:
        raise InvalidBidError(f"demand must be a finite number of cores > 0, got {demand!r}")
    return value


def check_expiry(expiry: float | None) -> float | None:
    if expiry is None:
        return None
    value = float(expiry)
    if not math.isfinite(value):
        raise InvalidBidError(f"expiry must be a finite time or None, got {expiry!r}")
    return value


def check_agent(agent: str) -> str:
    if not isinstance(agent, str) or not agent:
        raise InvalidBidError(f"agent must be a non-empty string, got {agent!r}")
    return agent


class Bid(NamedTuple):
    """A standing bid: up to `demand` cores at up to `price` $J per J, until `expiry`.

    A named tuple, not a dataclass: a bid is built on every update, and this is the cheap way
    (the update builds it with `tuple.__new__`, skipping the generated `__new__`'s call).
    """

    agent: str
    price: float
    demand: float
    expiry: float | None
    seq: int

    @property
    def key(self) -> int:
        """The book-order key: higher price first, then earlier arrival (see the module)."""
        return book_key(self.price, self.seq)


_DOUBLE = struct.Struct("<d")
_INT64 = struct.Struct("<q")
_INF_BITS = 0x7FF0000000000000
SEQ_BITS = 48
_SEQ_MASK = (1 << SEQ_BITS) - 1


_pack_double = _DOUBLE.pack
_unpack_int64 = _INT64.unpack


def book_key(price: float, seq: int) -> int:
    """An int that sorts as (-price, seq) does, for finite prices >= 0 (not -0.0)."""
    bits: int = _unpack_int64(_pack_double(price))[0]
    return ((_INF_BITS - bits) << SEQ_BITS) | seq


# sortedcontainers' load factor for the price list (its default is 1,000). At 10^6 bids the
# update is bound by cache misses: each probe of a bisect reads a key object somewhere in memory.
# Shorter sublists move probes from the cold sublists to the list of sublist maxima, which is
# small enough to stay in cache (measured: ~5-10% off an update at 10^6, nothing lost at 10^3).
PRICE_LIST_LOAD = 100

_KEEP = object()  # `update(expiry=_KEEP)`: leave the expiry as it is (None means "never")


class OrderBook:
    """Bids kept in book order; O(log n) insert / update / cancel (see the module docstring)."""

    def __init__(self) -> None:
        self._by_price: SortedList[int] = SortedList()
        self._by_price._reset(PRICE_LIST_LOAD)
        self._by_seq: dict[int, Bid] = {}
        self._by_expiry: SortedList[tuple[float, int, str]] = SortedList()
        self._bids: dict[str, Bid] = {}
        self._next_seq = 0

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, float, float, float | None]]) -> OrderBook:
        """A book holding (agent, price, demand, expiry) rows, arriving in row order.

        One sort of all the keys, not n inserts: the way to load a large book at once.
        """
        book = cls()
        for agent, price, demand, expiry in rows:
            if agent in book._bids:
                raise DuplicateBidError(f"agent {agent!r} appears twice: one bid per agent")
            bid = Bid(
                check_agent(agent), check_price(price), check_demand(demand),
                check_expiry(expiry), book._take_seq(),
            )  # fmt: skip
            book._bids[agent] = bid
            book._by_seq[bid.seq] = bid
        book._by_price.update([bid.key for bid in book._bids.values()])
        book._by_expiry = SortedList(
            (bid.expiry, bid.seq, bid.agent)
            for bid in book._bids.values()
            if bid.expiry is not None
        )
        return book

    def __len__(self) -> int:
        return len(self._bids)

    def __contains__(self, agent: object) -> bool:
        return agent in self._bids

    def __iter__(self) -> Iterator[Bid]:
        """Bids in book order."""
        by_seq = self._by_seq
        return (by_seq[key & _SEQ_MASK] for key in self._by_price)

    def get(self, agent: str) -> Bid | None:
        return self._bids.get(agent)

    def insert(
        self,
        agent: str,
        price: float,
        demand: float,
        expiry: float | None = None,
        *,
        seq: int | None = None,
    ) -> Bid:
        """Add the agent's bid; `DuplicateBidError` if it already has one.

        `seq`: the bid's arrival number, when the caller numbers arrivals itself (a standing
        book kept beside a journal of bids: the journal's number is the arrival order). It must
        be an int in [0, 2^48) no standing bid holds (`BookError` otherwise); later arrivals the
        book numbers itself come after it. None: the next number.
        """
        if agent in self._bids:
            raise DuplicateBidError(f"agent {agent!r} already has a bid: update or cancel it")
        checked = (check_agent(agent), check_price(price), check_demand(demand))
        new_expiry = check_expiry(expiry)
        if seq is None:
            seq = self._take_seq()
        else:
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _SEQ_MASK:
                raise BookError(f"seq must be an int in [0, 2^{SEQ_BITS}), got {seq!r}")
            if seq in self._by_seq:
                raise BookError(f"seq {seq} is already held by agent {self._by_seq[seq].agent!r}")
            self._next_seq = max(self._next_seq, seq + 1)
        bid = Bid(*checked, new_expiry, seq)
        self._add(bid)
        return bid

    def update(
        self,
        agent: str,
        *,
        price: float | None = None,
        demand: float | None = None,
        expiry: object = _KEEP,
    ) -> Bid:
        """Change the agent's bid; a new price re-queues it, demand or expiry keep its place."""
        old = self._bids.get(agent)
        if old is None:
            raise UnknownBidError(f"agent {agent!r} has no bid to update")
        new_price = old.price if price is None else check_price(price)
        new_demand = old.demand if demand is None else check_demand(demand)
        if expiry is _KEEP:
            new_expiry = old.expiry
        elif expiry is None or isinstance(expiry, int | float):
            new_expiry = check_expiry(expiry)
        else:
            raise InvalidBidError(f"expiry must be a finite time or None, got {expiry!r}")
        # The hot path: touch only what changed. A price change moves the key in the sorted
        # list (and takes a new seq); demand or expiry alone leave the price order untouched.
        if new_price != old.price:
            seq = self._take_seq()
            bid = tuple.__new__(Bid, (agent, new_price, new_demand, new_expiry, seq))
            by_price = self._by_price
            by_price.remove(book_key(old.price, old.seq))
            by_price.add(book_key(new_price, seq))
            del self._by_seq[old.seq]
        else:
            seq = old.seq
            bid = tuple.__new__(Bid, (agent, new_price, new_demand, new_expiry, seq))
        self._by_seq[seq] = bid
        self._bids[agent] = bid
        if old.expiry is not None and (new_expiry != old.expiry or seq != old.seq):
            self._by_expiry.remove((old.expiry, old.seq, agent))
            if new_expiry is not None:
                self._by_expiry.add((new_expiry, seq, agent))
        elif old.expiry is None and new_expiry is not None:
            self._by_expiry.add((new_expiry, seq, agent))
        return bid

    def place(self, agent: str, price: float, demand: float, expiry: float | None = None) -> Bid:
        """Insert the agent's bid, or replace its standing one (as `update` would)."""
        if agent in self._bids:
            return self.update(agent, price=price, demand=demand, expiry=expiry)
        return self.insert(agent, price, demand, expiry)

    def cancel(self, agent: str) -> Bid:
        """Remove and return the agent's bid; `UnknownBidError` if it has none."""
        bid = self._bids.get(agent)
        if bid is None:
            raise UnknownBidError(f"agent {agent!r} has no bid to cancel")
        self._remove(bid)
        return bid

    def expire(self, now: float) -> list[Bid]:
        """Remove and return every bid whose expiry is <= `now`, earliest expiry first."""
        expired: list[Bid] = []
        while self._by_expiry and self._by_expiry[0][0] <= now:
            bid = self._bids[self._by_expiry[0][2]]
            self._remove(bid)
            expired.append(bid)
        return expired

    def best(self, k: int) -> list[Bid]:
        """The top `k` bids in book order (fewer if the book is smaller)."""
        if k <= 0:
            return []
        by_seq = self._by_seq
        return [by_seq[key & _SEQ_MASK] for key in islice(self._by_price, k)]

    def marginal_price(self, capacity: float) -> float | None:
        """Price of the first bid, from the top, that `capacity` cores cannot fill completely.

        That is the bid at which cumulative demand first exceeds `capacity`: the marginal,
        partially filled bid, or the first unserved one. None when every bid fits.
        """
        cumulative = 0.0
        for bid in self:
            cumulative += bid.demand
            if cumulative > capacity:
                return bid.price
        return None

    def to_bidset(self, *, ordered: bool = True) -> BidSet:
        """The bids as arrays: in book order, or (cheaper) in the order agents first bid."""
        rows = list(self) if ordered else list(self._bids.values())
        if not rows:
            return BidSet.from_rows([])
        agents, prices, demands, _, seqs = zip(*rows, strict=True)  # one pass, in C
        return BidSet(
            agents=agents,
            prices=np.array(prices, dtype=np.float64),
            demands=np.array(demands, dtype=np.float64),
            seqs=np.array(seqs, dtype=np.int64),
        )

    def _take_seq(self) -> int:
        seq = self._next_seq
        if seq > _SEQ_MASK:
            raise BookError(f"the book has used all 2^{SEQ_BITS} arrival numbers: rebuild it")
        self._next_seq += 1
        return seq

    def _add(self, bid: Bid) -> None:
        self._bids[bid.agent] = bid
        self._by_seq[bid.seq] = bid
        self._by_price.add(bid.key)
        if bid.expiry is not None:
            self._by_expiry.add((bid.expiry, bid.seq, bid.agent))

    def _remove(self, bid: Bid) -> None:
        del self._bids[bid.agent]
        del self._by_seq[bid.seq]
        self._by_price.remove(bid.key)
        if bid.expiry is not None:
            self._by_expiry.remove((bid.expiry, bid.seq, bid.agent))


@dataclass(frozen=True, eq=False)
class BidSet:
    """Bids as parallel arrays, the input every mechanism clears.

    `agents[i]` bid `prices[i]` $J per J for up to `demands[i]` cores and arrived `seqs[i]`-th
    (ties in price go to the lower seq, then the lower agent id). Treat the arrays as read-only:
    they are shared, not copied.
    Prices and demands are checked (vectorised); one bid per agent is the caller's promise,
    checked by `from_rows` and kept by `OrderBook`.
    """

    agents: Sequence[str]
    prices: FloatArray
    demands: FloatArray
    seqs: IntArray

    def __post_init__(self) -> None:
        prices = np.ascontiguousarray(self.prices, dtype=np.float64)
        demands = np.ascontiguousarray(self.demands, dtype=np.float64)
        seqs = np.ascontiguousarray(self.seqs, dtype=np.int64)
        n = len(self.agents)
        if not (prices.shape == demands.shape == seqs.shape == (n,)):
            raise InvalidBidError(
                f"a bid set needs one price, demand and seq per agent: {n} agents, "
                f"{prices.shape}, {demands.shape}, {seqs.shape}"
            )
        if n and not (np.isfinite(prices).all() and prices.min() >= 0):
            raise InvalidBidError("every price must be a finite number >= 0")
        if n and not (np.isfinite(demands).all() and demands.min() > 0):
            raise InvalidBidError("every demand must be a finite number of cores > 0")
        object.__setattr__(self, "prices", prices)
        object.__setattr__(self, "demands", demands)
        object.__setattr__(self, "seqs", seqs)

    def __len__(self) -> int:
        return len(self.agents)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, float, float]]) -> BidSet:
        """Bids from (agent, price, demand) rows; arrival order is row order."""
        agents: list[str] = []
        prices: list[float] = []
        demands: list[float] = []
        seen: set[str] = set()
        for agent, price, demand in rows:
            check_agent(agent)
            if agent in seen:
                raise InvalidBidError(f"duplicate agent {agent!r}: one bid per agent")
            seen.add(agent)
            agents.append(agent)
            prices.append(check_price(price))
            demands.append(check_demand(demand))
        return cls(
            agents=tuple(agents),
            prices=np.array(prices, dtype=np.float64),
            demands=np.array(demands, dtype=np.float64),
            seqs=np.arange(len(agents), dtype=np.int64),
        )
