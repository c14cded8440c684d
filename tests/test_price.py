"""Grid price sources, the thermal PI controller on its own, and the spot price combining them."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.economy.price import (
    ConstantPrice,
    DailySchedule,
    GridPrice,
    SpotPrice,
    SpotQuote,
    TariffSeries,
    ThermalPriceController,
    load_tariff_csv,
    parse_tariff_csv,
    price_elastic_utilisation,
)
from maxwell.errors import UsageError
from maxwell.physics import ThermalRC

DAY_S = 86_400
# 2024-03-10T00:00:00Z, a midnight in Unix seconds.
MIDNIGHT = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())


def hhmm(hours: int, minutes: int = 0) -> int:
    return MIDNIGHT + hours * 3600 + minutes * 60


# --- constant -------------------------------------------------------------------------------


def test_constant_price_is_constant() -> None:
    grid: GridPrice = ConstantPrice(0.3)
    assert grid.at(0.0) == grid.at(1e9) == 0.3


@pytest.mark.parametrize("price", [-0.1, math.nan, math.inf])
def test_constant_price_rejects_bad_prices(price: float) -> None:
    with pytest.raises(UsageError):
        ConstantPrice(price)


def test_zero_price_is_allowed() -> None:
    assert ConstantPrice(0.0).at(5.0) == 0.0


# --- daily schedule ---------------------------------------------------------------------------


def test_schedule_steps_at_each_start_and_wraps_at_midnight() -> None:
    schedule = DailySchedule([("07:00", 0.25), ("22:00", 0.12), ("17:30", 0.40)])
    # Before the first start of the day: the previous evening's tariff (22:00) still holds.
    assert schedule.at(hhmm(0)) == 0.12
    assert schedule.at(hhmm(6, 59) + 59) == 0.12
    assert schedule.at(hhmm(7)) == 0.25
    assert schedule.at(hhmm(17, 29)) == 0.25
    assert schedule.at(hhmm(17, 30)) == 0.40
    assert schedule.at(hhmm(21, 59)) == 0.40
    assert schedule.at(hhmm(22)) == 0.12
    assert schedule.at(hhmm(23, 59) + 59.999) == 0.12
    # The next day repeats; so did the one before (and times before 1970 work too).
    assert schedule.at(hhmm(7) + DAY_S) == 0.25
    assert schedule.at(hhmm(7) - 3 * DAY_S) == 0.25
    assert schedule.at(-1.0) == 0.12
    assert schedule.entries == [("07:00", 0.25), ("17:30", 0.40), ("22:00", 0.12)]


def test_schedule_with_a_single_entry_is_constant() -> None:
    schedule = DailySchedule([("12:00", 0.5)])
    assert {schedule.at(hhmm(h)) for h in range(24)} == {0.5}


def test_schedule_utc_offset_shifts_the_local_day() -> None:
    # A tariff written in UTC+2: its 07:00 is 05:00 UTC.
    schedule = DailySchedule([("00:00", 0.1), ("07:00", 0.3)], utc_offset_s=2 * 3600)
    assert schedule.at(hhmm(4, 59)) == 0.1
    assert schedule.at(hhmm(5)) == 0.3
    # Local midnight is 22:00 UTC.
    assert schedule.at(hhmm(21, 59)) == 0.3
    assert schedule.at(hhmm(22)) == 0.1


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [("7:00", 0.1)],
        [("24:00", 0.1)],
        [("12:60", 0.1)],
        [("noon", 0.1)],
        [("12:00", -1.0)],
        [("12:00", math.nan)],
        [("12:00", 0.1), ("12:00", 0.2)],
    ],
)
def test_schedule_rejects_bad_entries(entries: list[tuple[str, float]]) -> None:
    with pytest.raises(UsageError):
        DailySchedule(entries)


@given(st.floats(min_value=-1e10, max_value=1e10, allow_nan=False))
def test_schedule_price_is_one_of_its_entries(t_s: float) -> None:
    schedule = DailySchedule([("06:00", 0.2), ("18:00", 0.5)])
    assert schedule.at(t_s) in (0.2, 0.5)


# --- tariff series (CSV) ------------------------------------------------------------------------

TARIFF_CSV = """\
time,price
# day-ahead tariffs, $J per J
2024-03-10T00:00:00Z,0.10
2024-03-10T07:00:00+00:00,0.30

2024-03-10T22:00:00,0.15
"""


def test_tariff_csv_is_a_step_function_holding_the_latest_row() -> None:
    series = parse_tariff_csv(TARIFF_CSV.splitlines())
    assert series.at(hhmm(0)) == 0.10
    assert series.at(hhmm(6, 59)) == 0.10
    assert series.at(hhmm(7)) == 0.30
    assert series.at(hhmm(21) + 3599.5) == 0.30
    assert series.at(hhmm(22)) == 0.15  # a timestamp without an offset is UTC
    assert series.at(hhmm(22) + 10 * DAY_S) == 0.15  # after the last row: the last price
    assert series.at(hhmm(0) - 1) == 0.10  # before the first row: the first price


def test_tariff_csv_accepts_unix_seconds_and_extra_columns_in_any_order() -> None:
    lines = ["price, region ,TIME", "0.2,eu,1000", "0.4,eu,2000.5"]
    series = parse_tariff_csv(lines)
    assert series.points == [(1000.0, 0.2), (2000.5, 0.4)]
    assert series.at(2000.4) == 0.2
    assert series.at(2000.5) == 0.4


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("when,price\n1,0.1\n", 1, "missing time"),
        ("time,cost\n1,0.1\n", 1, "missing price"),
        ("time,price\n1,0.1\nyesterday,0.2\n", 3, "neither Unix seconds nor ISO-8601"),
        ("time,price\n1,0.1\n2,cheap\n", 3, "not a number"),
        ("time,price\n1,0.1\n2,-0.2\n", 3, ">= 0"),
        ("time,price\n1,nan\n", 2, ">= 0"),
        ("time,price\n1,inf\n", 2, ">= 0"),
        ("time,price\ninf,0.1\n", 2, "finite"),
        ("time,price\n5,0.1\n\n5,0.2\n", 4, "not after line 2"),
        ("time,price\n5,0.1\n4,0.2\n", 3, "increase"),
        ("time,price\n5\n", 2, "at least 2 fields"),
    ],
)
def test_bad_tariff_lines_are_named(text: str, line: int, words: str) -> None:
    with pytest.raises(UsageError, match=rf"^tariffs\.csv:{line}: .*{words}"):
        parse_tariff_csv(text.splitlines(), source="tariffs.csv")


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "time,price\n"])
def test_empty_tariff_files_are_rejected(text: str) -> None:
    with pytest.raises(UsageError, match=r"tariffs\.csv"):
        parse_tariff_csv(text.splitlines(), source="tariffs.csv")


def test_load_tariff_csv_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "tariffs.csv"
    path.write_text("time,price\n10,0.5\nbad,0.1\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"tariffs\.csv:3:"):
        load_tariff_csv(path)
    path.write_text(TARIFF_CSV, encoding="utf-8")
    assert load_tariff_csv(path).at(hhmm(8)) == 0.30
    with pytest.raises(UsageError, match="cannot read tariff file"):
        load_tariff_csv(tmp_path / "missing.csv")


def test_tariff_series_validates_points() -> None:
    with pytest.raises(UsageError):
        TariffSeries([])
    with pytest.raises(UsageError):
        TariffSeries([(2.0, 0.1), (1.0, 0.1)])
    with pytest.raises(UsageError):
        TariffSeries([(1.0, -0.1)])


@given(
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30, unique=True),
    st.floats(min_value=-1e3, max_value=2e6, allow_nan=False),
)
def test_tariff_lookup_matches_a_linear_scan(times: list[int], t_s: float) -> None:
    times.sort()
    points = [(float(time_s), float(i)) for i, time_s in enumerate(times)]
    series = TariffSeries(points)
    at_or_before = [price for time_s, price in points if time_s <= t_s]
    expected = at_or_before[-1] if at_or_before else points[0][1]
    assert series.at(t_s) == expected


# --- the controller on its own ------------------------------------------------------------------


def test_controller_defaults_and_setpoint_below_critical() -> None:
    die = ThermalRC()
    controller = ThermalPriceController.for_die(die)
    assert controller.setpoint_c == die.critical_c - 15.0
    assert (controller.min_factor, controller.max_factor) == (1.0, 10.0)
    assert controller.kp_per_c == 0.1
    # Integral time kp/ki equals the default die's time constant.
    assert controller.kp_per_c / controller.ki_per_c_s == pytest.approx(die.time_constant_s)


def test_controller_is_neutral_at_the_setpoint_and_proportional_above_it() -> None:
    controller = ThermalPriceController(setpoint_c=80.0)
    assert controller.update(80.0, 0.0) == 1.0
    assert controller.update(85.0, 0.0) == pytest.approx(1.5)  # kp: +10% per °C, no integral yet
    assert controller.update(85.0, 2.0) == pytest.approx(1.5 + 0.005 * 5 * 2)
    assert controller.integral_c_s == pytest.approx(10.0)


def test_controller_output_stays_within_bounds() -> None:
    controller = ThermalPriceController(setpoint_c=80.0)
    assert controller.update(500.0, 1.0) == 10.0
    controller.reset()
    assert controller.update(-40.0, 1.0) == 1.0


def test_controller_may_discount_a_cool_node_when_configured() -> None:
    controller = ThermalPriceController(setpoint_c=80.0, min_factor=0.5)
    assert controller.update(77.0, 0.0) == pytest.approx(0.7)
    assert controller.update(20.0, 0.0) == 0.5


@pytest.mark.parametrize(
    "settings",
    [
        {"kp_per_c": -0.1},
        {"ki_per_c_s": -0.1},
        {"min_factor": 0.0},
        {"min_factor": 1.5},
        {"max_factor": 0.9},
        {"setpoint_c": math.nan},
        {"max_factor": math.inf},
    ],
)
def test_controller_rejects_bad_settings(settings: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        ThermalPriceController(**{"setpoint_c": 80.0, **settings})  # type: ignore[arg-type]


def test_controller_rejects_bad_readings() -> None:
    controller = ThermalPriceController(setpoint_c=80.0)
    with pytest.raises(ValueError):
        controller.update(math.nan, 1.0)
    with pytest.raises(ValueError):
        controller.update(70.0, -1.0)
    assert controller.integral_c_s == 0.0  # a rejected reading leaves no trace


def _saturate_then_cool(anti_windup: bool) -> tuple[int, int]:
    """5 minutes at an impossible 30 °C over the setpoint, then 5 °C below it; 1 s ticks.

    Returns (ticks saturated at the top during the hot spell, ticks until the output leaves the
    top after the error changes sign).
    """
    controller = ThermalPriceController(setpoint_c=80.0, anti_windup=anti_windup)
    saturated = sum(controller.update(110.0, 1.0) == controller.max_factor for _ in range(300))
    for tick in range(1, 10_000):
        if controller.update(75.0, 1.0) < controller.max_factor:
            return saturated, tick
    raise AssertionError("never left saturation")


def test_anti_windup_leaves_saturation_on_the_first_tick_the_error_changes_sign() -> None:
    saturated, recovery_ticks = _saturate_then_cool(anti_windup=True)
    assert saturated > 200
    assert recovery_ticks == 1
    saturated_plain, recovery_plain = _saturate_then_cool(anti_windup=False)
    assert saturated_plain == saturated
    # Without anti-windup the integral (300 s x 30 °C) must first unwind at 5 °C per second.
    assert recovery_plain > 1000


def test_anti_windup_holds_the_integral_while_saturated_and_lets_a_stale_one_bleed() -> None:
    controller = ThermalPriceController(setpoint_c=80.0)
    for _ in range(1000):
        controller.update(110.0, 1.0)
    # The integral stopped where the output first reached the ceiling: 1 + kp 30 + ki I <= 10.
    held_c_s = controller.integral_c_s
    assert held_c_s > 0
    assert 1.0 + 0.1 * 30 + controller.ki_per_c_s * held_c_s <= 10.0 + 1e-9
    # Cooled far below the setpoint the output sits at the floor; the integral may shrink toward
    # zero (that never winds up), and stops there rather than winding up negative.
    for _ in range(1000):
        assert controller.update(20.0, 1.0) == 1.0
    assert controller.integral_c_s == 0.0
    # So warming back to just under the setpoint carries no stale premium.
    assert controller.update(79.0, 1.0) == 1.0
    plain = ThermalPriceController(setpoint_c=80.0, anti_windup=False)
    for _ in range(1000):
        plain.update(20.0, 1.0)
    assert plain.integral_c_s == -60_000.0  # what anti-windup prevents


# --- spot price ---------------------------------------------------------------------------------


def test_spot_is_grid_times_thermal_factor() -> None:
    spot_price = SpotPrice(
        DailySchedule([("00:00", 0.2), ("12:00", 0.4)]), ThermalPriceController(setpoint_c=80.0)
    )
    assert spot_price.spot(hhmm(6), 70.0, 0.0) == SpotQuote(grid=0.2, thermal_factor=1.0, spot=0.2)
    quote = spot_price.spot(hhmm(13), 84.0, 0.0)
    assert quote.grid == 0.4
    assert quote.thermal_factor == pytest.approx(1.4)
    assert quote.spot == pytest.approx(0.56)


def test_spot_rejects_a_bad_price_from_a_custom_source() -> None:
    class Broken:
        def at(self, t_s: float) -> float:
            return -1.0

    with pytest.raises(UsageError):
        SpotPrice(Broken(), ThermalPriceController(setpoint_c=80.0)).spot(0.0, 50.0, 1.0)


@pytest.mark.parametrize(
    ("factor", "expected"), [(1.0, 0.8), (1.5, 0.4), (2.0, 0.0), (5.0, 0.0), (0.5, 0.8)]
)
def test_price_elastic_utilisation(factor: float, expected: float) -> None:
    assert price_elastic_utilisation(0.8, factor, elasticity=1.0) == pytest.approx(expected)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-50.0, max_value=200.0), st.floats(min_value=0.0, max_value=5.0)
        ),
        max_size=200,
    ),
    st.floats(min_value=0.1, max_value=1.0),
)
def test_controller_output_is_always_within_bounds_and_its_integral_bounded(
    readings: list[tuple[float, float]], min_factor: float
) -> None:
    controller = ThermalPriceController(setpoint_c=80.0, min_factor=min_factor)
    plain = ThermalPriceController(setpoint_c=80.0, min_factor=min_factor, anti_windup=False)
    for temperature_c, dt_s in readings:
        factor = controller.update(temperature_c, dt_s)
        assert min_factor <= factor <= controller.max_factor
        assert min_factor <= plain.update(temperature_c, dt_s) <= plain.max_factor
        # With anti-windup the integral term alone never strays far past what the bounds need
        # (the proportional term can contribute at most kp x 130 °C here).
        integral_term = controller.ki_per_c_s * controller.integral_c_s
        assert -13.0 - 1.0 <= integral_term <= controller.max_factor - 1.0 + 13.0 + 1e-9
