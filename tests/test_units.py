from __future__ import annotations

import math

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import UsageError
from maxwell.physics import ThermalRC, landauer_joules, landauer_joules_per_bit
from maxwell.units import parse_energy, uj_to_joules


@pytest.mark.parametrize(
    ("text", "joules"),
    [
        ("10", 10.0),
        ("10J", 10.0),
        ("2.5kJ", 2500.0),
        ("300mWh", 1080.0),
        ("1Wh", 3600.0),
        ("0.01kWh", 36000.0),
        (" 4 J ", 4.0),
        ("1e-3", 0.001),
    ],
)
def test_parse_energy_units(text: str, joules: float) -> None:
    assert uj_to_joules(parse_energy(text)) == pytest.approx(joules)


@pytest.mark.parametrize("text", ["", "J", "-5J", "0", "nan", "inf", "5 parsecs", "5j", "1e-9"])
def test_parse_energy_rejects_nonsense_with_reason(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_energy(text)
    assert "\n" not in str(caught.value)


def test_landauer_bound_matches_reference_figures() -> None:
    # shared/REFERENCE.md: ~2.9e-21 J per bit at 300 K; 1 GiB ~2.5e-11 J.
    at_300k = 300 - 273.15
    assert landauer_joules_per_bit(at_300k) == pytest.approx(2.87e-21, rel=1e-2)
    assert landauer_joules(2**30, at_300k) == pytest.approx(2.47e-11, rel=1e-2)


def test_landauer_one_gib_at_350_kelvin_by_hand() -> None:
    expected = 2**30 * 8 * 1.380649e-23 * 350 * math.log(2)
    assert landauer_joules(2**30, 350 - 273.15) == pytest.approx(expected, rel=1e-12)


def test_thermal_rc_approaches_steady_state_without_overshoot() -> None:
    rc = ThermalRC(ambient_c=25.0, resistance_k_per_w=0.5, capacitance_j_per_k=40.0)
    temperature = 25.0
    previous = temperature
    for _ in range(200):
        temperature = rc.step(temperature, power_w=100.0, seconds=1.0)
        assert previous <= temperature <= rc.steady_state_c(100.0)
        previous = temperature
    assert temperature == pytest.approx(75.0, abs=0.01)
    # One time constant reaches 1 - 1/e of the step.
    one_tau = rc.step(25.0, 100.0, rc.time_constant_s)
    assert one_tau == pytest.approx(25.0 + 50.0 * (1 - math.exp(-1)), rel=1e-9)


def test_fake_clock_only_moves_forward() -> None:
    clock = FakeClock(10.0)
    clock.sleep(2.5)
    assert clock.monotonic() == 12.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_money_is_integer_micro_joule_tokens() -> None:
    from maxwell.units import money_to_tokens, tokens_to_money

    assert tokens_to_money(1.5) == 1_500_000
    assert tokens_to_money(2.0000004) == 2_000_000  # rounded to the nearest µ$J
    assert tokens_to_money(-0.25) == -250_000
    assert money_to_tokens(2_500_000) == 2.5
    with pytest.raises(UsageError):
        tokens_to_money(float("nan"))
