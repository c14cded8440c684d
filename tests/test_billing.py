"""The core equation, checked against figures computed by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.economy.billing import bill

GIB = 2**30
# 1 GiB freed at 350 K, by hand: k_B T = 1.380649e-23 x 350 = 4.8322715e-21 J; x ln 2 =
# 3.349489e-21 J per bit; x 2^33 bits = 2.8771774e-11 J.
ONE_GIB_AT_350_K_J = 2**30 * 8 * 1.380649e-23 * 350 * math.log(2)


def test_the_hand_figure_itself() -> None:
    assert pytest.approx(2.8771774e-11, rel=1e-7) == ONE_GIB_AT_350_K_J


def test_one_gib_freed_at_350_kelvin_physical_figure() -> None:
    result = bill(energy_uj=0, spot_price=1.0, bytes_freed=GIB, temperature_c=76.85)
    assert result.physical_landauer_j == pytest.approx(ONE_GIB_AT_350_K_J, rel=1e-12)
    # The default multiplier is the physical one: 2.9e-11 $J is 0.000029 µ$J, which rounds to 0.
    assert result.landauer_multiplier == 1.0
    assert result.taxed_landauer_j == result.physical_landauer_j
    assert result.physical_landauer_cost == 0
    assert result.landauer_cost == 0
    assert result.total == 0


def test_energy_at_spot_price() -> None:
    # 10 J at 1.5 $J per J = 15 $J = 15_000_000 µ$J.
    result = bill(energy_uj=10_000_000, spot_price=1.5, temperature_c=60.0)
    assert result.energy_cost == 15_000_000
    assert result.landauer_cost == 0
    assert result.total == 15_000_000


def test_a_multiplier_that_makes_the_tax_bite() -> None:
    # 1 GiB at 350 K x 1e12 = 28.771774 J taxed, charged at 1 $J per J: 28_771_774 µ$J.
    result = bill(
        energy_uj=10_000_000,
        spot_price=1.5,
        bytes_freed=GIB,
        temperature_c=76.85,
        landauer_multiplier=1e12,
    )
    assert result.physical_landauer_j == pytest.approx(ONE_GIB_AT_350_K_J, rel=1e-12)
    assert result.taxed_landauer_j == pytest.approx(28.771774, rel=1e-7)
    assert result.physical_landauer_cost == 0  # always reported beside the taxed figure
    assert result.landauer_cost == 28_771_774
    assert result.energy_cost == 15_000_000
    assert result.total == 15_000_000 + 28_771_774


def test_the_landauer_tax_ignores_the_spot_price() -> None:
    cheap = bill(
        energy_uj=0, spot_price=0.1, bytes_freed=GIB, temperature_c=76.85, landauer_multiplier=1e12
    )
    dear = bill(
        energy_uj=0, spot_price=9.0, bytes_freed=GIB, temperature_c=76.85, landauer_multiplier=1e12
    )
    assert cheap.landauer_cost == dear.landauer_cost == 28_771_774


def test_the_tax_scales_with_absolute_temperature() -> None:
    cold = bill(energy_uj=0, spot_price=1.0, bytes_freed=GIB, temperature_c=-273.15 + 175)
    hot = bill(energy_uj=0, spot_price=1.0, bytes_freed=GIB, temperature_c=76.85)
    assert hot.physical_landauer_j == pytest.approx(2 * cold.physical_landauer_j, rel=1e-12)


def test_zero_inputs_cost_nothing() -> None:
    result = bill(energy_uj=0, spot_price=0.0, bytes_freed=0, temperature_c=25.0)
    assert (result.energy_cost, result.landauer_cost, result.total) == (0, 0, 0)
    assert result.physical_landauer_j == result.taxed_landauer_j == 0.0
    free_energy = bill(energy_uj=5_000_000, spot_price=0.0, temperature_c=25.0)
    assert free_energy.total == 0


@pytest.mark.parametrize(
    ("energy_uj", "spot_price", "expected"),
    [
        (1, 0.5, 0),  # 0.5 rounds to even: 0
        (3, 0.5, 2),  # 1.5 -> 2
        (5, 0.5, 2),  # 2.5 -> 2
        (7, 0.5, 4),  # 3.5 -> 4
        (1, 0.4, 0),
        (1, 0.6, 1),
        (1_000_000, 0.1, 100_000),  # 0.1 is not exact in binary; the result still is
    ],
)
def test_rounding_is_half_to_even_per_component(
    energy_uj: int, spot_price: float, expected: int
) -> None:
    assert bill(energy_uj=energy_uj, spot_price=spot_price, temperature_c=25.0).energy_cost == (
        expected
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"energy_uj": -1},
        {"bytes_freed": -1},
        {"spot_price": -0.01},
        {"spot_price": math.nan},
        {"spot_price": math.inf},
        {"temperature_c": math.nan},
        {"temperature_c": -300.0},
        {"landauer_multiplier": -1.0},
        {"landauer_multiplier": math.inf},
    ],
)
def test_bad_inputs_are_rejected(arguments: dict[str, float]) -> None:
    base: dict[str, float] = {
        "energy_uj": 1,
        "spot_price": 1.0,
        "bytes_freed": 1,
        "temperature_c": 25.0,
        "landauer_multiplier": 1.0,
    }
    with pytest.raises(ValueError):
        bill(**{**base, **arguments})  # type: ignore[arg-type]


@given(
    energy_uj=st.integers(min_value=0, max_value=10**15),
    spot_price=st.floats(min_value=0, max_value=1e3, allow_nan=False),
    bytes_freed=st.integers(min_value=0, max_value=2**45),
    temperature_c=st.floats(min_value=-50, max_value=150),
    multiplier=st.floats(min_value=0, max_value=1e13, allow_nan=False),
)
def test_components_add_up_and_round_to_the_nearest_micro_joule(
    energy_uj: int, spot_price: float, bytes_freed: int, temperature_c: float, multiplier: float
) -> None:
    result = bill(
        energy_uj=energy_uj,
        spot_price=spot_price,
        bytes_freed=bytes_freed,
        temperature_c=temperature_c,
        landauer_multiplier=multiplier,
    )
    assert result.total == result.energy_cost + result.landauer_cost
    assert all(
        isinstance(amount, int)
        for amount in (result.energy_cost, result.landauer_cost, result.physical_landauer_cost)
    )
    assert abs(result.energy_cost - Fraction(energy_uj) * Fraction(spot_price)) <= Fraction(1, 2)
    assert abs(result.landauer_cost - Fraction(result.taxed_landauer_j) * 10**6) <= Fraction(1, 2)
    assert result.taxed_landauer_j == result.physical_landauer_j * multiplier
    assert result.energy_cost >= 0
    assert result.landauer_cost >= 0


@given(
    energy_uj=st.integers(min_value=0, max_value=10**15),
    spot_price=st.one_of(
        st.floats(min_value=0, max_value=1e3, allow_nan=False),
        st.integers(min_value=0, max_value=4000).map(lambda k: k / 4),  # ties: .5 exactly
    ),
)
def test_each_amount_is_the_exact_product_rounded_half_to_even(
    energy_uj: int, spot_price: float
) -> None:
    result = bill(energy_uj=energy_uj, spot_price=spot_price, temperature_c=25.0)
    assert result.energy_cost == round(Fraction(energy_uj) * Fraction(spot_price))


def test_a_tie_goes_to_the_even_micro_joule() -> None:
    assert bill(energy_uj=1, spot_price=0.5, temperature_c=25.0).energy_cost == 0
    assert bill(energy_uj=3, spot_price=0.5, temperature_c=25.0).energy_cost == 2
    assert bill(energy_uj=5, spot_price=0.5, temperature_c=25.0).energy_cost == 2
    assert bill(energy_uj=3, spot_price=0.25, temperature_c=25.0).energy_cost == 1  # 0.75
