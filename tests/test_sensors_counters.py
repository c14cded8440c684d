"""Wraparound-safe energy counters: deltas, resets, ambiguity, and the conservation property."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maxwell.sensors.counters import EnergyCounter, counter_delta, may_wrap_more_than_once

RANGE_UJ = 262_143_328_850  # a typical powercap max_energy_range_uj (~262 kJ)


def test_delta_without_wrap() -> None:
    delta = counter_delta(1_000, 4_500, RANGE_UJ)
    assert (delta.units, delta.wrapped, delta.reset) == (3_500, False, False)


def test_delta_across_one_wrap_keeps_the_interval() -> None:
    delta = counter_delta(RANGE_UJ - 100, 50, RANGE_UJ)
    assert delta.units == 150
    assert delta.wrapped


def test_a_decrease_from_beyond_the_range_is_a_reset() -> None:
    # A driver that extends a 32-bit counter to 64 bits, then reloads: prev is above 2^32.
    delta = counter_delta(2**40, 1_000, 2**32)
    assert delta.units == 1_000
    assert delta.reset and not delta.wrapped


def test_ambiguity_threshold() -> None:
    assert not may_wrap_more_than_once(elapsed_s=1.0, max_power_w=1000.0, range_j=262_143.0)
    assert may_wrap_more_than_once(elapsed_s=400.0, max_power_w=1000.0, range_j=262_143.0)


def test_counter_tracks_total_through_a_wrap() -> None:
    counter = EnergyCounter("intel-rapl:0", range_units=RANGE_UJ)
    assert counter.observe(RANGE_UJ - 2_000_000, at_s=0.0).delta_uj == 0  # baseline
    update = counter.observe(3_000_000, at_s=1.0)
    assert update.wrapped and not update.ambiguous and update.warning is None
    assert update.delta_uj == 5_000_000
    assert counter.total_uj == 5_000_000


def test_ambiguous_interval_is_counted_and_flagged() -> None:
    counter = EnergyCounter("intel-rapl:0", range_units=RANGE_UJ, max_power_w=1000.0)
    counter.observe(10, at_s=0.0)
    update = counter.observe(20, at_s=400.0)
    assert update.ambiguous
    assert update.delta_uj == 10  # the least energy consistent with the readings, not dropped
    assert update.warning is not None
    assert "intel-rapl:0 energy counter range 262 kJ may have wrapped more than once in 400 s" in (
        update.warning
    )


def test_units_that_are_not_whole_microjoules_do_not_drift() -> None:
    # ESU 16: 15.2587890625 µJ per count; 100 steps of 1 count must be 1525.9 µJ, not 1500.
    counter = EnergyCounter("msr:package-0", range_units=2**32, uj_per_unit=1e6 / 2**16)
    for step in range(101):
        counter.observe(step, at_s=step * 0.01)
    assert counter.total_uj == round(100 * 1e6 / 2**16)


@given(
    range_units=st.integers(min_value=2, max_value=2**40),
    start_fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    increments=st.lists(st.floats(min_value=0.0, max_value=1.0, exclude_max=True), max_size=60),
)
def test_tracked_total_equals_the_sum_of_true_increments(
    range_units: int, start_fraction: float, increments: list[float]
) -> None:
    steps = [int(f * range_units) for f in increments]  # each strictly below the range
    raw = int(start_fraction * range_units)
    counter = EnergyCounter("prop", range_units=range_units, max_power_w=0.0)
    counter.observe(raw, at_s=0.0)
    for i, step in enumerate(steps, start=1):
        raw = (raw + step) % range_units
        update = counter.observe(raw, at_s=float(i))
        assert not update.ambiguous
    assert counter.total_units == sum(steps)
    assert counter.total_uj == sum(steps)
