"""Price coupling (issue 12, 4): the pure rule's bounds, direction, robustness to a liar and
rate limit, with hypothesis (`maxwell.economy.coupling`)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.economy.coupling import Coupling
from maxwell.errors import UsageError
from maxwell.physics import ThermalRC

RULE = Coupling()
headroom = st.floats(-20.0, 80.0)
any_headroom = st.floats(allow_nan=True, allow_infinity=True)
neighbours = st.lists(headroom, min_size=0, max_size=12)


@given(headroom, st.lists(any_headroom, max_size=12), st.floats(0.0, 1.0))
def test_the_price_stays_within_its_bounds_and_moves_by_at_most_a_step(
    own: float, others: list[float], start: float
) -> None:
    target = RULE.target(own, others)
    assert 1.0 - RULE.max_discount <= target <= 1.0
    moved = RULE.step(start, own, others)
    assert 1.0 - RULE.max_discount <= moved <= 1.0
    inside = min(max(start, 1.0 - RULE.max_discount), 1.0)
    assert abs(moved - inside) <= RULE.max_step + 1e-12


@given(headroom, st.lists(headroom, min_size=2, max_size=12), st.floats(0.0, 30.0))
def test_hotter_neighbours_never_make_a_node_dearer(
    own: float, others: list[float], cooler_by: float
) -> None:
    hotter = [h - cooler_by for h in others]
    assert RULE.target(own, hotter) <= RULE.target(own, others)


@given(headroom, st.lists(headroom, min_size=2, max_size=12))
def test_a_node_as_hot_as_its_neighbours_keeps_its_own_price(
    own: float, others: list[float]
) -> None:
    if RULE.heat(own) >= max(RULE.heat(h) for h in others):
        assert RULE.target(own, others) == 1.0


def test_a_cool_node_beside_hot_ones_sells_cheaper_and_fewer_neighbours_do_not_couple() -> None:
    assert RULE.target(40.0, [2.0, 3.0, 4.0]) == pytest.approx(1.0 - RULE.max_discount)
    assert RULE.target(40.0, [10.0, 10.0]) == pytest.approx(1.0 - RULE.gain * 0.5)
    assert RULE.target(40.0, []) == 1.0  # alone: nothing couples
    assert Coupling(min_neighbours=2).target(40.0, [0.0]) == 1.0


@given(headroom, st.lists(headroom, min_size=0, max_size=11), headroom, any_headroom)
def test_one_liar_among_n_neighbours_moves_a_price_by_at_most_gain_over_n(
    own: float, honest: list[float], truth: float, lie: float
) -> None:
    n = len(honest) + 1
    told_true = RULE.target(own, [*honest, truth])
    told_false = RULE.target(own, [*honest, lie])
    assert abs(told_false - told_true) <= RULE.gain / n + 1e-12


def _closed_loop(seconds: int) -> list[tuple[list[float], list[float], list[float]]]:
    """Five modelled nodes (`ThermalRC`, 4 cores, 20 W idle + 30 W a busy core); node 0 cools
    worse and runs 3 cores of work that cannot move. The other 8.5 cores of work go by price:
    each second 0.1 core moves from the dearest node to the cheapest with room, when the first
    is more than 5 % dearer. Each node's price is its own heat's (1 + h) times its coupled
    multiplier. Returns each second's temperatures, multipliers and movable loads."""
    nodes = [ThermalRC(resistance_k_per_w=0.6)] + [ThermalRC() for _ in range(4)]
    temps, pinned = [25.0] * 5, [3.0, 0.0, 0.0, 0.0, 0.0]
    load, multipliers = [0.5, 2.0, 2.0, 2.0, 2.0], [1.0] * 5
    seen = []
    for _ in range(seconds):
        busy = [p + x for p, x in zip(pinned, load, strict=True)]
        temps = [
            n.step(t, 20.0 + 30.0 * b, 1.0) for n, t, b in zip(nodes, temps, busy, strict=True)
        ]
        heads = [n.headroom_c(t) for n, t in zip(nodes, temps, strict=True)]
        multipliers = [
            RULE.step(m, heads[i], heads[:i] + heads[i + 1 :]) for i, m in enumerate(multipliers)
        ]
        price = [(1 + RULE.heat(h)) * m for h, m in zip(heads, multipliers, strict=True)]
        dear = max((i for i in range(5) if load[i] > 0), key=lambda i: price[i])
        cheap = min((i for i in range(5) if busy[i] < 4), key=lambda i: price[i])
        if price[dear] > 1.05 * price[cheap]:
            moved = min(0.1, load[dear], 4 - busy[cheap])
            load[dear] -= moved
            load[cheap] += moved
        seen.append((temps, multipliers, list(load)))
    return seen


def test_in_a_closed_loop_load_leaves_the_hot_node_and_prices_settle_without_oscillating() -> None:
    seen = _closed_loop(900)
    temps, multipliers, load = seen[-1]
    assert temps[0] > max(temps[1:]) and RULE.heat(95.0 - temps[0]) > 0.5  # node 0 runs hot
    assert load[0] == 0.0  # its movable work went where it is cheaper
    assert multipliers[0] == 1.0 and all(m < 1.0 for m in multipliers[1:])  # its neighbours
    for node in range(5):
        steps = [b[1][node] - a[1][node] for a, b in itertools.pairwise(seen[450:])]
        moving = [d for d in steps if abs(d) > 1e-12]
        flips = sum((a > 0) != (b > 0) for a, b in itertools.pairwise(moving))
        assert flips == 0, (node, flips)  # settled: no multiplier changes direction
        assert max(abs(d) for d in steps[-100:]) < 1e-9


def test_the_rule_s_constants_are_checked() -> None:
    for bad in ({"hot_below_c": 0.0}, {"gain": 1.5}, {"max_step": -0.1}, {"min_neighbours": 0}):
        with pytest.raises(UsageError, match="coupling"):
            Coupling(**bad)  # type: ignore[arg-type]
