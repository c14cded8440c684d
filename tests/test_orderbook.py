"""The order book: book order, one bid per agent, expiry, best-k and the marginal price."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from maxwell.economy.orderbook import (
    BidSet,
    DuplicateBidError,
    InvalidBidError,
    OrderBook,
    UnknownBidError,
)


def _book(*rows: tuple[str, float, float]) -> OrderBook:
    book = OrderBook()
    for agent, price, demand in rows:
        book.insert(agent, price, demand)
    return book


def test_book_order_is_price_then_arrival_then_agent() -> None:
    book = _book(("late", 2.0, 1.0), ("cheap", 1.0, 1.0), ("rich", 3.0, 1.0), ("early", 2.0, 1.0))
    assert [bid.agent for bid in book] == ["rich", "late", "early", "cheap"]
    assert [bid.agent for bid in book.best(2)] == ["rich", "late"]
    assert book.best(0) == []
    assert len(book.best(10)) == 4


def test_price_change_requeues_but_demand_change_keeps_place() -> None:
    book = _book(("a", 2.0, 1.0), ("b", 2.0, 1.0))
    book.update("a", demand=3.0)
    assert [bid.agent for bid in book] == ["a", "b"]
    assert book.get("a") is not None and book.get("a").demand == 3.0  # type: ignore[union-attr]
    book.update("a", price=2.0)  # same price: keeps its place
    assert [bid.agent for bid in book] == ["a", "b"]
    book.update("a", price=2.5)
    book.update("a", price=2.0)  # back to 2.0, but now it arrived after b
    assert [bid.agent for bid in book] == ["b", "a"]


def test_one_bid_per_agent_and_unknown_agents() -> None:
    book = _book(("a", 1.0, 1.0))
    with pytest.raises(DuplicateBidError):
        book.insert("a", 2.0, 1.0)
    with pytest.raises(UnknownBidError):
        book.update("zed", price=1.0)
    with pytest.raises(UnknownBidError):
        book.cancel("zed")
    assert book.place("a", 5.0, 2.0).price == 5.0
    assert len(book) == 1
    assert book.cancel("a").demand == 2.0
    assert len(book) == 0 and "a" not in book


@pytest.mark.parametrize(
    ("price", "demand", "expiry"),
    [(-1.0, 1.0, None), (math.nan, 1.0, None), (math.inf, 1.0, None), (1.0, 0.0, None),
     (1.0, -2.0, None), (1.0, math.nan, None), (1.0, 1.0, math.nan)],
)  # fmt: skip
def test_bad_bids_are_refused(price: float, demand: float, expiry: float | None) -> None:
    book = OrderBook()
    with pytest.raises(InvalidBidError):
        book.insert("a", price, demand, expiry)
    assert len(book) == 0


def test_empty_agent_is_refused() -> None:
    with pytest.raises(InvalidBidError):
        OrderBook().insert("", 1.0, 1.0)


def test_expire_removes_bids_at_or_past_their_expiry() -> None:
    book = OrderBook()
    book.insert("never", 1.0, 1.0)
    book.insert("soon", 1.0, 1.0, expiry=5.0)
    book.insert("later", 1.0, 1.0, expiry=10.0)
    assert book.expire(4.9) == []
    assert [bid.agent for bid in book.expire(5.0)] == ["soon"]
    book.update("later", expiry=None)
    assert book.expire(100.0) == []
    assert sorted(bid.agent for bid in book) == ["later", "never"]
    book.update("never", expiry=1.0)
    assert [bid.agent for bid in book.expire(2.0)] == ["never"]


def test_marginal_price_is_the_first_bid_not_completely_filled() -> None:
    book = _book(("a", 5.0, 1.0), ("b", 4.0, 1.0), ("c", 3.0, 1.0))
    assert book.marginal_price(1.5) == 4.0  # b partially filled
    assert book.marginal_price(2.0) == 3.0  # b exactly filled: c is the first unserved
    assert book.marginal_price(3.0) is None  # everything fits
    assert book.marginal_price(0.0) == 5.0


def test_bidset_export_in_book_order_and_arrival_order() -> None:
    book = _book(("a", 1.0, 1.0), ("b", 3.0, 2.0), ("c", 2.0, 0.5))
    ordered = book.to_bidset()
    assert list(ordered.agents) == ["b", "c", "a"]
    assert ordered.prices.tolist() == [3.0, 2.0, 1.0]
    assert ordered.demands.tolist() == [2.0, 0.5, 1.0]
    arrival = book.to_bidset(ordered=False)
    assert list(arrival.agents) == ["a", "b", "c"]
    assert arrival.seqs.tolist() == [0, 1, 2]


def test_bidset_checks_its_arrays() -> None:
    with pytest.raises(InvalidBidError):
        BidSet(agents=("a",), prices=np.array([-1.0]), demands=np.array([1.0]), seqs=np.zeros(1))
    with pytest.raises(InvalidBidError):
        BidSet(agents=("a",), prices=np.array([1.0]), demands=np.array([0.0]), seqs=np.zeros(1))
    with pytest.raises(InvalidBidError):
        BidSet(agents=("a", "b"), prices=np.ones(1), demands=np.ones(1), seqs=np.zeros(1))
    with pytest.raises(InvalidBidError):
        BidSet.from_rows([("a", 1.0, 1.0), ("a", 2.0, 1.0)])
    assert len(BidSet.from_rows([])) == 0


class BookMachine(RuleBasedStateMachine):
    """The book against a plain dict, under any interleaving of the operations."""

    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook()
        self.model: dict[str, tuple[float, float, float | None]] = {}

    agents = st.sampled_from([f"agent-{i}" for i in range(8)])
    prices = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])
    demands = st.floats(0.1, 3.0)
    expiries = st.none() | st.floats(0.0, 10.0)

    @rule(agent=agents, price=prices, demand=demands, expiry=expiries)
    def place(self, agent: str, price: float, demand: float, expiry: float | None) -> None:
        self.book.place(agent, price, demand, expiry)
        self.model[agent] = (price, demand, expiry)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(sorted(self.model)))
        self.book.cancel(agent)
        del self.model[agent]

    @rule(now=st.floats(0.0, 10.0))
    def expire(self, now: float) -> None:
        expired = {bid.agent for bid in self.book.expire(now)}
        gone = {a for a, (_, _, e) in self.model.items() if e is not None and e <= now}
        assert expired == gone
        for agent in gone:
            del self.model[agent]

    @invariant()
    def same_bids_in_book_order(self) -> None:
        bids = list(self.book)
        assert {b.agent: (b.price, b.demand, b.expiry) for b in bids} == self.model
        keys = [(-b.price, b.seq, b.agent) for b in bids]
        assert keys == sorted(keys)
        assert len({b.seq for b in bids}) == len(bids)

    @invariant()
    def indexes_describe_the_same_bids(self) -> None:
        """The module's invariant: the update touches only what changed, and misses nothing."""
        bids = list(self.book)
        assert self.book._by_seq == {b.seq: b for b in bids}
        assert list(self.book._by_expiry) == sorted(
            (b.expiry, b.seq, b.agent) for b in bids if b.expiry is not None
        )

    @invariant()
    def marginal_price_matches_a_full_walk(self) -> None:
        bids = list(self.book)
        for capacity in (0.0, 1.0, 2.5, 100.0):
            cumulative, expected = 0.0, None
            for bid in bids:
                cumulative += bid.demand
                if cumulative > capacity:
                    expected = bid.price
                    break
            assert self.book.marginal_price(capacity) == expected


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0.01, 4)), max_size=40), st.integers(0, 50))
def test_best_k_is_the_head_of_book_order(rows: list[tuple[float, float]], k: int) -> None:
    book = OrderBook()
    for i, (price, demand) in enumerate(rows):
        book.insert(f"a{i}", price, demand)
    everything = list(book)
    assert book.best(k) == everything[:k]


def test_bulk_load_equals_one_insert_at_a_time() -> None:
    rows = [("c", 1.0, 1.0, None), ("a", 2.0, 0.5, 3.0), ("b", 2.0, 1.5, None)]
    bulk = OrderBook.from_rows(rows)
    one_by_one = OrderBook()
    for agent, price, demand, expiry in rows:
        one_by_one.insert(agent, price, demand, expiry)
    assert list(bulk) == list(one_by_one)
    assert [bid.agent for bid in bulk.expire(3.0)] == ["a"]
    bulk.insert("d", 9.0, 1.0)
    assert bulk.best(1)[0].agent == "d"
    with pytest.raises(DuplicateBidError):
        OrderBook.from_rows([("a", 1.0, 1.0, None), ("a", 1.0, 1.0, None)])
    with pytest.raises(InvalidBidError):
        OrderBook.from_rows([("a", -1.0, 1.0, None)])


@given(st.lists(st.tuples(st.floats(0, 1e300), st.integers(0, 2**48 - 1)), max_size=30))
def test_book_key_sorts_as_negated_price_then_seq(pairs: list[tuple[float, int]]) -> None:
    from maxwell.economy.orderbook import book_key

    assert sorted(pairs, key=lambda ps: book_key(*ps)) == sorted(
        pairs, key=lambda ps: (-ps[0], ps[1])
    )


def test_negative_zero_price_is_zero() -> None:
    book = _book(("a", 0.0, 1.0), ("b", -0.0, 1.0), ("c", 1e-300, 1.0))
    assert [bid.agent for bid in book] == ["c", "a", "b"]


def test_empty_book_exports_an_empty_bidset() -> None:
    assert len(OrderBook().to_bidset()) == 0
    assert len(OrderBook().to_bidset(ordered=False)) == 0
