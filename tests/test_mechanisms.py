"""Mechanisms against brute-force references, their invariants, and their incentive claims."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.economy.mechanisms import (
    MECHANISM_NAMES,
    Clearing,
    Kelly,
    Lottery,
    Posted,
    Uniform,
    Vcg,
    make_mechanism,
)
from maxwell.economy.orderbook import BidSet, OrderBook
from maxwell.errors import UsageError

TOL = 1e-9

Rows = list[tuple[str, float, float]]


def _rows(prices_demands: list[tuple[float, float]]) -> Rows:
    return [(f"a{i:03d}", p, d) for i, (p, d) in enumerate(prices_demands)]


# Prices from a small grid so that ties (broken by arrival) are common.
price_st = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), st.floats(0.0, 10.0, allow_subnormal=False)
)
demand_st = st.one_of(st.sampled_from([0.25, 0.5, 1.0, 2.0]), st.floats(0.01, 4.0))
rows_st = st.lists(st.tuples(price_st, demand_st), max_size=25).map(_rows)
capacity_st = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 4.0]), st.floats(0.0, 30.0, allow_subnormal=False)
)
reserve_st = st.one_of(
    st.just(0.0), st.sampled_from([0.5, 1.0, 2.0]), st.floats(0.0, 5.0, allow_subnormal=False)
)


def _clear(name: str, rows: Rows, capacity: float, reserve: float = 0.0, seed: int = 0) -> Clearing:
    return make_mechanism(name).clear(
        BidSet.from_rows(rows), capacity, reserve, np.random.default_rng(seed)
    )


def _cores(clearing: Clearing) -> dict[str, float]:
    return {a.agent: a.cores for a in clearing.all_allocations()}


# --- brute-force references -------------------------------------------------------------------


def _greedy(rows: Rows, capacity: float, reserve: float) -> tuple[dict[str, float], int | None]:
    """Fill in book order (price desc, arrival); returns cores and the first not filled."""
    order = sorted(
        (i for i, (_, p, _) in enumerate(rows) if p >= reserve), key=lambda i: (-rows[i][1], i)
    )
    left = capacity
    cores = {agent: 0.0 for agent, _, _ in rows}
    margin = None
    for i in order:
        agent, _, demand = rows[i]
        take = min(demand, max(left, 0.0))
        cores[agent] = take
        left -= take
        if margin is None and take < demand:
            margin = i
    return cores, margin


def _welfare(rows: Rows, cores: dict[str, float], reserve: float, capacity: float) -> float:
    """Reported value of an allocation, the seller valuing each unsold core at the reserve."""
    value = sum(p * cores[a] for a, p, _ in rows)
    return value + reserve * (capacity - sum(cores.values()))


def _water_fill(rows: Rows, capacity: float, reserve: float) -> dict[str, float]:
    """Kelly's shares by repeated capping (the textbook loop)."""
    live = {a: (p * d, d) for a, p, d in rows if p > 0 and p >= reserve}
    cores = {agent: 0.0 for agent, _, _ in rows}
    if sum(d for _, d in live.values()) <= capacity:
        cores.update({a: d for a, (_, d) in live.items()})
        return cores
    left = capacity
    while live:
        total = sum(b for b, _ in live.values())
        capped = {a for a, (b, d) in live.items() if left * b / total >= d}
        if not capped:
            cores.update({a: left * b / total for a, (b, _) in live.items()})
            break
        for agent in capped:
            cores[agent] = live[agent][1]
            left -= live[agent][1]
            del live[agent]
    return cores


# --- every mechanism --------------------------------------------------------------------------


@pytest.mark.parametrize("name", MECHANISM_NAMES)
@settings(max_examples=150, deadline=None)
@given(rows=rows_st, capacity=capacity_st, reserve=reserve_st, seed=st.integers(0, 3))
def test_invariants_of_every_mechanism(
    name: str, rows: Rows, capacity: float, reserve: float, seed: int
) -> None:
    clearing = _clear(name, rows, capacity, reserve, seed)
    demand = {a: d for a, _, d in rows}
    price = {a: p for a, p, _ in rows}
    assert float(clearing.cores.sum()) <= capacity + TOL * max(1.0, capacity)
    assert (clearing.cores > 0).all()
    assert (clearing.payments >= -TOL).all()
    for allocation in clearing.allocations:
        assert allocation.cores <= demand[allocation.agent] * (1 + TOL)
        assert price[allocation.agent] >= reserve  # nobody below the reserve is served
        assert allocation.payment == pytest.approx(
            allocation.price_per_joule * allocation.cores, rel=1e-9, abs=1e-12
        )
    assert clearing.clearing_price >= reserve
    assert clearing.welfare == pytest.approx(
        sum(price[a.agent] * a.cores for a in clearing.allocations), rel=1e-9, abs=1e-9
    )
    assert clearing.revenue == pytest.approx(
        sum(a.payment for a in clearing.allocations), rel=1e-9, abs=1e-9
    )
    again = _clear(name, rows, capacity, reserve, seed)
    assert _cores(again) == _cores(clearing)  # deterministic given the seed
    assert again.clearing_price == clearing.clearing_price
    assert [a.agent for a in clearing.all_allocations()] == [a for a, _, _ in rows]


@pytest.mark.parametrize("name", MECHANISM_NAMES)
def test_no_bids_and_zero_capacity(name: str) -> None:
    empty = _clear(name, [], 2.0, 0.5)
    assert empty.allocations == () and empty.welfare == 0.0 and empty.revenue == 0.0
    assert empty.clearing_price == 0.5
    nothing = _clear(name, [("a", 1.0, 1.0)], 0.0)
    assert nothing.allocations == ()


@pytest.mark.parametrize("name", MECHANISM_NAMES)
def test_bad_capacity_or_reserve_is_a_usage_error(name: str) -> None:
    bids = BidSet.from_rows([("a", 1.0, 1.0)])
    for capacity, reserve in ((-1.0, 0.0), (float("nan"), 0.0), (1.0, -0.1), (1.0, float("inf"))):
        with pytest.raises(UsageError):
            make_mechanism(name).clear(bids, capacity, reserve)


def test_unknown_mechanism() -> None:
    with pytest.raises(UsageError, match="unknown mechanism 'dutch'"):
        make_mechanism("dutch")


# --- uniform ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(rows=rows_st, capacity=capacity_st, reserve=reserve_st)
def test_uniform_matches_the_greedy_fill_and_its_price_rule(
    rows: Rows, capacity: float, reserve: float
) -> None:
    clearing = _clear("uniform", rows, capacity, reserve)
    expected, margin = _greedy(rows, capacity, reserve)
    got = _cores(clearing)
    for agent in expected:
        assert got[agent] == pytest.approx(expected[agent], abs=1e-9)
    expected_price = reserve if margin is None else max(reserve, rows[margin][1])
    assert clearing.clearing_price == expected_price
    for allocation in clearing.allocations:
        assert allocation.price_per_joule == expected_price
    eligible = sum(d for _, p, d in rows if p >= reserve)
    assert float(clearing.cores.sum()) == pytest.approx(min(capacity, eligible), abs=1e-9)


def test_uniform_worked_example() -> None:
    rows = [("a", 5.0, 1.0), ("b", 4.0, 1.0), ("c", 3.0, 1.0), ("d", 2.0, 1.0)]
    clearing = _clear("uniform", rows, 2.5)
    assert _cores(clearing) == {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.0}
    assert clearing.clearing_price == 3.0  # c, the partially filled bid
    assert clearing.welfare == 5.0 + 4.0 + 1.5
    assert clearing.revenue == 7.5
    exact = _clear("uniform", rows, 2.0)
    assert exact.clearing_price == 3.0  # c, the first unserved
    fits = _clear("uniform", rows, 10.0, reserve=1.5)
    assert fits.clearing_price == 1.5  # everything fits: the reserve
    below = _clear("uniform", rows, 10.0, reserve=2.5)
    assert _cores(below)["d"] == 0.0


def test_uniform_ties_go_to_the_earlier_bid_then_the_agent_id() -> None:
    rows = [("z", 2.0, 1.0), ("a", 2.0, 1.0), ("m", 3.0, 1.0)]
    assert _cores(_clear("uniform", rows, 2.0)) == {"z": 1.0, "a": 0.0, "m": 1.0}
    same_seq = BidSet(
        agents=("z", "a"), prices=np.array([2.0, 2.0]), demands=np.ones(2), seqs=np.zeros(2)
    )
    clearing = Uniform().clear(same_seq, 1.0)
    assert [a.agent for a in clearing.allocations] == ["a"]


def _utility(clearing: Clearing, agent: str, value: float) -> float:
    allocation = clearing.allocation(agent)
    return value * allocation.cores - allocation.payment


@settings(max_examples=400, deadline=None)
@given(
    others=st.lists(price_st, max_size=12),
    value=price_st,
    report=price_st,
    units=st.integers(0, 8),
    reserve=reserve_st,
    position=st.integers(0, 12),
)
def test_uniform_is_truthful_for_unit_demand(
    others: list[float], value: float, report: float, units: int, reserve: float, position: int
) -> None:
    """No unit-demand bidder gains by misreporting its price (whole-core capacity)."""

    def market(bid: float) -> Rows:
        rows = [(f"o{i}", p, 1.0) for i, p in enumerate(others)]
        rows.insert(min(position, len(rows)), ("me", bid, 1.0))
        return rows

    truthful = _utility(_clear("uniform", market(value), float(units), reserve), "me", value)
    lying = _utility(_clear("uniform", market(report), float(units), reserve), "me", value)
    assert lying <= truthful + 1e-9


def test_uniform_is_not_truthful_for_the_partially_filled_bidder() -> None:
    """The documented limit: a bidder left partially filled sets its own price and shades."""
    rows = [("a", 5.0, 1.0), ("b", 4.0, 1.0), ("me", 3.0, 1.0)]
    truthful = _utility(_clear("uniform", rows, 2.5), "me", 3.0)
    shaded = _utility(_clear("uniform", [*rows[:2], ("me", 1.0, 1.0)], 2.5), "me", 3.0)
    assert truthful == 0.0 and shaded == 1.0


@pytest.mark.parametrize("layout", ["random", "ascending", "descending"])
def test_uniform_large_book_matches_a_full_sort(layout: str) -> None:
    """Exercises the sampled quickselect (big n) with ties, against a plain argsort.

    Sorted layouts make the strided sample a perfect quantile sample (the steering's best
    case); ties and any layout must give the same answer.
    """
    rng = np.random.default_rng(7)
    n = 60_000
    prices = np.round(rng.random(n) * 50) / 10  # 51 price levels: many ties
    if layout != "random":
        prices = np.sort(prices)
        prices = prices if layout == "ascending" else prices[::-1].copy()
    demands = rng.uniform(0.01, 2.0, n)
    bids = BidSet(agents=[f"a{i}" for i in range(n)], prices=prices, demands=demands,
                  seqs=rng.permutation(n))  # fmt: skip
    order = np.lexsort((bids.seqs, -prices))
    for capacity, reserve in ((2.0, 0.0), (1000.0, 1.0), (float(demands.sum()) * 0.6, 0.0)):
        eligible = order[prices[order] >= reserve]
        cumulative = np.cumsum(demands[eligible])
        margin = int(np.searchsorted(cumulative, capacity, side="right"))
        clearing = Uniform().clear(bids, capacity, reserve)
        assert clearing.clearing_price == max(reserve, prices[eligible[margin]])
        dense = clearing.cores_by_bid()
        np.testing.assert_allclose(dense[eligible[:margin]], demands[eligible[:margin]])
        assert (dense[eligible[margin + 1 :]] == 0).all()
        assert float(dense.sum()) == pytest.approx(capacity, rel=1e-12)


# Dyadic demands and capacities: every partial sum is exact, so the walk's running total and the
# vectorised clearing's numpy sums cannot round a bid to opposite sides of the capacity.
dyadic_st = st.integers(1, 256).map(lambda k: k / 64)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(price_st, dyadic_st), max_size=25),
    requeued=st.lists(st.tuples(st.integers(0, 24), price_st), max_size=6),
    capacity=st.one_of(st.just(0.0), dyadic_st, dyadic_st.map(lambda c: c * 8)),
    reserve=reserve_st,
)
def test_uniform_clear_book_walks_to_the_same_clearing_as_clear(
    rows: list[tuple[float, float]],
    requeued: list[tuple[int, float]],
    capacity: float,
    reserve: float,
) -> None:
    """The walk from the top of a standing book == the vectorised clearing of its export.

    Ties in price (from the grid) are ordered by arrival; re-priced bids go to the back of their
    new price level; capacities fall below, at and above the total demand.
    """
    book = OrderBook()
    for i, (price, demand) in enumerate(rows):
        book.insert(f"a{i:03d}", price, demand)
    for i, price in requeued:
        if i < len(rows):
            book.update(f"a{i:03d}", price=price)
    walked = Uniform().clear_book(book, capacity, reserve)
    exported = Uniform().clear(book.to_bidset(), capacity, reserve)
    assert walked.clearing_price == exported.clearing_price
    assert walked.extra == exported.extra  # the same marginal bid (or None)
    assert _cores(exported) == {bid.agent: walked.allocation(bid.agent).cores for bid in book}
    assert [a.agent for a in walked.allocations] == [a.agent for a in exported.allocations]
    assert walked.welfare == pytest.approx(exported.welfare, rel=1e-12, abs=1e-12)
    assert walked.revenue == pytest.approx(exported.revenue, rel=1e-12, abs=1e-12)
    # It visits only the winners and the bid at the margin, never the rest of the book.
    assert len(walked.bids) <= len(walked.winners) + 1
    if walked.extra["marginal_bid"] is None:
        assert float(walked.cores.sum()) == sum(b.demand for b in book if b.price >= reserve)
    else:
        assert float(walked.cores.sum()) == capacity


def test_uniform_clear_book_worked_example_and_bad_terms() -> None:
    book = OrderBook.from_rows(
        [("a", 5.0, 1.0, None), ("b", 4.0, 1.0, None), ("c", 3.0, 1.0, None),
         ("d", 2.0, 1.0, None)]
    )  # fmt: skip
    clearing = Uniform().clear_book(book, 2.5)
    assert {a.agent: a.cores for a in clearing.allocations} == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert clearing.allocation("d").cores == 0.0  # never visited, never served
    assert clearing.clearing_price == 3.0 and clearing.revenue == 7.5
    assert [bid for bid in clearing.bids.agents] == ["a", "b", "c"]
    fits = Uniform().clear_book(book, 10.0, reserve=2.5)
    assert fits.clearing_price == 2.5 and fits.extra == {"marginal_bid": None}
    assert set(fits.bids.agents) == {"a", "b", "c"}
    empty = Uniform().clear_book(OrderBook(), 2.0, reserve=0.5)
    assert empty.clearing_price == 0.5 and len(empty.winners) == 0
    for capacity, reserve in ((-1.0, 0.0), (float("nan"), 0.0), (1.0, -0.5)):
        with pytest.raises(UsageError):
            Uniform().clear_book(book, capacity, reserve)


# --- vcg --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(rows=rows_st, capacity=capacity_st, reserve=reserve_st)
def test_vcg_payments_are_the_externality(rows: Rows, capacity: float, reserve: float) -> None:
    clearing = _clear("vcg", rows, capacity, reserve)
    cores, _ = _greedy(rows, capacity, reserve)
    got = _cores(clearing)
    for agent in cores:
        assert got[agent] == pytest.approx(cores[agent], abs=1e-9)
    for allocation in clearing.allocations:
        others = [row for row in rows if row[0] != allocation.agent]
        without, _ = _greedy(others, capacity, reserve)
        with_me = {a: c for a, c in cores.items() if a != allocation.agent}
        externality = _welfare(others, without, reserve, capacity) - _welfare(
            others, with_me, reserve, capacity - allocation.cores
        )
        assert allocation.payment == pytest.approx(externality, rel=1e-7, abs=1e-7)
        own_price = next(p for a, p, _ in rows if a == allocation.agent)
        slack = 1e-9 + 1e-12 / allocation.cores  # a payment over a sliver of a core is rough
        assert reserve - slack <= allocation.price_per_joule <= own_price + slack


def test_vcg_worked_example() -> None:
    rows = [("a", 5.0, 1.0), ("b", 4.0, 1.0), ("c", 3.0, 1.0), ("d", 2.0, 1.0)]
    clearing = _clear("vcg", rows, 2.5)
    paid = {a.agent: a.payment for a in clearing.allocations}
    # Without a (or b): c's other half at 3 and half of d at 2. Without c: half of d at 2.
    assert paid == pytest.approx({"a": 2.5, "b": 2.5, "c": 1.0})
    assert clearing.revenue == pytest.approx(6.0)
    assert clearing.welfare == pytest.approx(10.5)


@settings(max_examples=400, deadline=None)
@given(
    others=st.lists(st.tuples(price_st, demand_st), max_size=10),
    value=price_st,
    demand=demand_st,
    report=price_st,
    capacity=capacity_st,
    reserve=reserve_st,
)
def test_vcg_truthful_bidding_is_a_best_response(
    others: list[tuple[float, float]],
    value: float,
    demand: float,
    report: float,
    capacity: float,
    reserve: float,
) -> None:
    def market(bid: float) -> Rows:
        return [*_rows(others), ("me", bid, demand)]

    truthful = _utility(_clear("vcg", market(value), capacity, reserve), "me", value)
    lying = _utility(_clear("vcg", market(report), capacity, reserve), "me", value)
    assert lying <= truthful + 1e-7


def test_vcg_large_book_matches_uniform_allocation_and_bounds() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    bids = BidSet(agents=[f"a{i}" for i in range(n)], prices=rng.random(n),
                  demands=rng.uniform(0.01, 2.0, n), seqs=np.arange(n))  # fmt: skip
    for capacity in (2.0, 500.0, float(bids.demands.sum()) / 2):
        vcg = Vcg().clear(bids, capacity, 0.1)
        uniform = Uniform().clear(bids, capacity, 0.1)
        np.testing.assert_allclose(vcg.cores_by_bid(), uniform.cores_by_bid())
        per_core = vcg.payments / vcg.cores
        assert (per_core >= 0.1 - 1e-9).all()
        assert (per_core <= bids.prices[vcg.winners] + 1e-9).all()
        # Every full winner displaces demand priced no higher than the margin.
        assert (per_core <= uniform.clearing_price + 1e-9).all()


# --- kelly ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(rows=rows_st, capacity=capacity_st, reserve=reserve_st)
def test_kelly_is_water_filled_proportional_share(
    rows: Rows, capacity: float, reserve: float
) -> None:
    clearing = _clear("kelly", rows, capacity, reserve)
    expected = _water_fill(rows, capacity, reserve)
    got = _cores(clearing)
    for agent in expected:
        assert got[agent] == pytest.approx(expected[agent], rel=1e-7, abs=1e-9)
    live = sum(d for _, p, d in rows if p > 0 and p >= reserve)
    assert float(clearing.cores.sum()) == pytest.approx(min(capacity, live), rel=1e-9, abs=1e-9)
    if live > capacity:
        # One price for all: uncapped bids spend exactly their budget, capped ones less.
        for agent, price, demand in rows:
            if got[agent] > 0 and got[agent] < demand * (1 - 1e-9):
                assert got[agent] * clearing.clearing_price == pytest.approx(price * demand)


def test_kelly_price_is_total_bids_over_capacity_when_no_cap_binds() -> None:
    rows = [("a", 5.0, 1.0), ("b", 4.0, 1.0), ("c", 3.0, 1.0), ("d", 2.0, 1.0), ("e", 1.0, 0.5)]
    clearing = _clear("kelly", rows, 2.5)
    assert clearing.clearing_price == pytest.approx(14.5 / 2.5)
    assert clearing.extra["capped"] == 0
    assert _cores(clearing)["a"] == pytest.approx(2.5 * 5 / 14.5)
    capped = _clear("kelly", [("big", 10.0, 0.5), ("small", 1.0, 10.0)], 2.0)
    assert _cores(capped) == pytest.approx({"big": 0.5, "small": 1.5})
    assert capped.clearing_price == pytest.approx(10.0 / 1.5)  # uncapped budget / room left


def test_kelly_shares_with_a_vanishing_bid_do_not_overflow() -> None:
    # Found by the tick's price property: the capped bid's budget over a water level of 3e-313
    # overflowed (a RuntimeWarning), though its share is its demand and never that quotient.
    clearing = _clear("kelly", [("a", 1.0, 0.25), ("b", 2.2250738585e-313, 1.0)], 1.0)
    assert _cores(clearing) == pytest.approx({"a": 0.25, "b": 0.75})


def test_kelly_is_not_truthful() -> None:
    """Shading one's price lowers one's spend faster than one's share (proportional share)."""
    others = [("x", 1.0, 10.0)]
    truthful = _utility(_clear("kelly", [("me", 1.0, 10.0), *others], 1.0), "me", 1.0)
    shaded = _utility(_clear("kelly", [("me", 0.4, 10.0), *others], 1.0), "me", 1.0)
    assert shaded > truthful + 0.1


@pytest.mark.parametrize("ascending", [False, True])
def test_kelly_large_book_matches_the_reference(ascending: bool) -> None:
    rng = np.random.default_rng(11)
    n = 40_000
    prices = np.sort(rng.random(n)) if ascending else rng.random(n)
    rows = _rows(list(zip(prices.tolist(), rng.uniform(0.01, 2.0, n).tolist(), strict=True)))
    bids = BidSet.from_rows(rows)
    for capacity in (2.0, 3000.0, 15_000.0):
        kelly = Kelly().clear(bids, capacity)
        expected = _water_fill(rows, capacity, 0.0)
        np.testing.assert_allclose(
            kelly.cores_by_bid(), [expected[a] for a, _, _ in rows], rtol=1e-7, atol=1e-12
        )


# --- lottery ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(rows=rows_st, capacity=capacity_st, reserve=reserve_st, seed=st.integers(0, 100))
def test_lottery_sells_min_of_capacity_and_demand(
    rows: Rows, capacity: float, reserve: float, seed: int
) -> None:
    clearing = _clear("lottery", rows, capacity, reserve, seed)
    live = sum(d for _, p, d in rows if p > 0 and p >= reserve)
    assert float(clearing.cores.sum()) == pytest.approx(min(capacity, live), rel=1e-9, abs=1e-9)
    assert clearing.clearing_price == _clear("kelly", rows, capacity, reserve).clearing_price


def test_lottery_depends_on_the_seed_only() -> None:
    rows = _rows([(1.0 + i % 3, 1.0) for i in range(20)])
    first = _cores(_clear("lottery", rows, 5.0, seed=1))
    assert _cores(_clear("lottery", rows, 5.0, seed=1)) == first
    assert _cores(_clear("lottery", rows, 5.0, seed=2)) != first


def _lottery_error(rows: Rows, capacity: float, quantum: float, seeds: range) -> float:
    """Root-mean-square error of the lottery's shares against Kelly's, over seeds."""
    bids = BidSet.from_rows(rows)
    kelly = Kelly().clear(bids, capacity).cores_by_bid()
    errors = [
        Lottery(quantum).clear(bids, capacity, 0.0, np.random.default_rng(seed)).cores_by_bid()
        - kelly
        for seed in seeds
    ]
    return float(np.sqrt(np.mean(np.square(errors))))


def test_lottery_converges_to_proportional_shares_as_one_over_sqrt_draws() -> None:
    """No cap binds: each share is binomial, error ~ capacity x sqrt(s (1 - s) / draws)."""
    rows = _rows([(1.0, 100.0), (2.0, 100.0), (3.0, 100.0), (4.0, 100.0)])
    capacity = 10.0
    shares = np.array([1, 2, 3, 4]) / 10
    errors = {}
    for draws in (100, 10_000):
        rms = _lottery_error(rows, capacity, capacity / draws, range(30))
        bound = capacity * float(np.sqrt(np.mean(shares * (1 - shares)) / draws))
        assert rms <= 1.5 * bound, (draws, rms, bound)  # the binomial error, with slack
        assert rms >= 0.5 * bound, (draws, rms, bound)  # and it really is random
        errors[draws] = rms
    assert errors[100] / errors[10_000] == pytest.approx(10.0, rel=0.5)  # 1/sqrt(100x draws)


def test_lottery_converges_to_water_filled_shares_with_caps() -> None:
    rows = _rows([(10.0, 0.5), (5.0, 1.0), (1.0, 20.0), (0.5, 20.0)])
    coarse = _lottery_error(rows, 4.0, 0.04, range(20))
    fine = _lottery_error(rows, 4.0, 0.0004, range(20))
    assert fine < coarse / 5
    assert fine < 0.02


def test_lottery_quantum_must_be_positive() -> None:
    with pytest.raises(UsageError):
        Lottery(0.0)


# --- posted -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(rows=rows_st, capacity=capacity_st, reserve=reserve_st)
def test_posted_lands_near_uniform_and_never_beats_its_welfare(
    rows: Rows, capacity: float, reserve: float
) -> None:
    clearing = _clear("posted", rows, capacity, reserve)
    extra = clearing.extra
    uniform = _clear("uniform", rows, capacity, reserve)
    assert extra["uniform_price"] == uniform.clearing_price
    assert isinstance(extra["steps"], int) and 0 <= extra["steps"] <= 200
    assert clearing.welfare <= uniform.welfare + 1e-9  # uniform's allocation is efficient
    # Every taker is rationed in the same proportion: O(1) decision per agent.
    bids = {a: (p, d) for a, p, d in rows}
    ratios = {round(a.cores / bids[a.agent][1], 9) for a in clearing.allocations}
    assert len(ratios) <= 1
    for a in clearing.allocations:
        assert bids[a.agent][0] >= clearing.clearing_price


def test_posted_worked_example_reports_steps_and_gap() -> None:
    rows = [("a", 5.0, 1.0), ("b", 4.0, 1.0), ("c", 3.0, 1.0), ("d", 2.0, 1.0)]
    clearing = Posted().clear(BidSet.from_rows(rows), 2.5)
    assert 0 < int(clearing.extra["steps"]) < 100  # type: ignore[arg-type]
    assert clearing.clearing_price == pytest.approx(3.0, rel=1e-5)
    assert abs(float(clearing.extra["price_gap"])) < 1e-5  # type: ignore[arg-type]
    assert float(clearing.cores.sum()) == pytest.approx(2.5)
    assert clearing.extra["welfare_ratio"] == pytest.approx(10.0 / 10.5)


def test_posted_converges_on_a_large_smooth_book() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    bids = BidSet(agents=[f"a{i}" for i in range(n)], prices=rng.random(n),
                  demands=rng.uniform(0.01, 2.0, n), seqs=np.arange(n))  # fmt: skip
    clearing = Posted().clear(bids, float(bids.demands.sum()) / 3, 0.0)
    assert abs(float(clearing.extra["price_gap"])) < 1e-3  # type: ignore[arg-type]
    assert float(clearing.extra["welfare_ratio"]) > 0.999  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"gain": 0.0}, {"max_steps": 0}, {"max_factor": 1.0}])
def test_posted_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Posted(**kwargs)  # type: ignore[arg-type]
