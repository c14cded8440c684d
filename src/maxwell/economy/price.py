"""The spot price: a grid price source times a thermal factor from a PI controller on headroom.

Rules and invariants:

- Prices are floats in $JOULE per joule (1.0 = 1 $J buys 1 J); every price a source returns, and
  every price it is built from, is finite and >= 0. Money is never held here: billing turns a price
  and an integer µJ energy into integer µ$J.
- Time is a float `t_s` of Unix seconds (seconds since 1970-01-01T00:00:00 UTC, leap seconds not
  counted, as POSIX time). Sources are pure functions of `t_s`; nothing here reads a clock.
- `spot = grid.at(t) x thermal_factor`, and `min_factor <= thermal_factor <= max_factor` always.
- The controller's only state is its integral and its last output; `update(temperature, dt)` is a
  deterministic function of that state and its arguments. With anti-windup on, while the error
  pushes the output past a bound the integral grows no further than what puts it on the bound.
- The CSV tariff loader is the one adapter: `parse_tariff_csv` takes lines (pure);
  `load_tariff_csv` reads a file and hands its lines over.

The controller (in the spirit of Linux's power_allocator governor, shared/REFERENCE.md, Control):

    error_c  = temperature_c - setpoint_c                 (°C; > 0 when hotter than the setpoint)
    integral += error_c x dt_s                            (°C·s; limited while saturated, see below)
    factor   = clamp(1 + kp x error_c + ki x integral, min_factor, max_factor)

The bias 1.0 is the neutral factor: a node at its setpoint with no accumulated error sells at the
grid price. `kp` is in 1/°C (the default 0.1 means every °C above the setpoint adds 10% to the
price), `ki` in 1/(°C·s). The defaults put the integral time kp/ki at 20 s, the time constant of a
typical die (`ThermalRC`: R 0.5 K/W x C 40 J/K), so the PI zero cancels the die's pole and the loop
behaves like a first-order system whatever the demand's price sensitivity. Its loop gain is
L = kp x dT/dfactor, where dT/dfactor is how many °C the die's steady state falls per unit of
factor (for the price-elastic node of `simulate_thermal_loop`: R x (max_w - idle_w) x demand x
elasticity). Sampled every dt_s, the loop stays stable while L x dt_s / tau <= ~1 (checked in the
tests; it rings beyond ~1.5): very price-sensitive demand or a long tick needs a smaller kp. The
first peak after a load step is roughly (open-loop steady temperature - setpoint) / (1 + L) above
the setpoint, so the margin under critical must cover it.

Bounds: [1.0, 10.0] by default. The floor is 1.0 because energy is billed at the spot price and the
node pays the grid for it: a factor below 1 sells energy below cost. An operator who wants cool
nodes to attract load (the gossip layer's price coupling) may set `min_factor` in (0, 1); the bias
stays 1.0, so the discount is then `kp` per °C below the setpoint. The ceiling 10 is high enough to
price out almost any demand and low enough that a stuck sensor cannot make a node's price absurd.

Anti-windup is conditional integration (clamping): when the unclamped output would pass a bound
and the error pushes further past it, the integral grows only up to the value that puts the output
on the bound, no further. A saturated controller therefore leaves saturation on the first update
whose error has the other sign (unless the proportional term alone still holds it there), instead
of first unwinding everything a plain integrator would have piled up while saturated. One
refinement: in that case the integral may still move toward zero (never past it). Without it, a
node that saturated hot and then cooled far below its setpoint would sit at the floor with its old
integral frozen, and charge a stale premium as soon as it warmed again; the kernel's
power_allocator avoids the same trap by resetting its integral below its switch-on temperature.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from maxwell.economy.gridfeed import (
    DEFAULT_POLL_S,
    DEFAULT_TIMEOUT_S,
    HttpGridFeed,
    parse_feed_spec,
)
from maxwell.errors import UsageError
from maxwell.physics import ThermalRC

SECONDS_PER_DAY = 86_400

DEFAULT_SETPOINT_MARGIN_C = 15.0
DEFAULT_KP_PER_C = 0.1
DEFAULT_KI_PER_C_S = 0.005
DEFAULT_MIN_FACTOR = 1.0
DEFAULT_MAX_FACTOR = 10.0


def _check_price(price: float, where: str) -> float:
    if not math.isfinite(price) or price < 0:
        raise UsageError(f"{where}: a price must be finite and >= 0, got {price!r}")
    return float(price)


class GridPrice(Protocol):
    """A grid price feed: $J per J at Unix time `t_s`."""

    def at(self, t_s: float) -> float: ...


@dataclass(frozen=True)
class ConstantPrice:
    """The same grid price at every moment."""

    price: float

    def __post_init__(self) -> None:
        _check_price(self.price, "constant grid price")

    def at(self, t_s: float) -> float:
        return self.price


def _parse_hhmm(text: str) -> int:
    """`HH:MM` (00:00 to 23:59) to seconds since midnight."""
    hours, sep, minutes = text.strip().partition(":")
    if (
        not sep
        or len(hours) != 2
        or len(minutes) != 2
        or not hours.isdigit()
        or not minutes.isdigit()
        or int(hours) > 23
        or int(minutes) > 59
    ):
        raise UsageError(f"a schedule start must be HH:MM between 00:00 and 23:59, got {text!r}")
    return int(hours) * 3600 + int(minutes) * 60


class DailySchedule:
    """A price for each part of the day: `[("00:00", 0.10), ("07:00", 0.25), ("22:00", 0.12)]`.

    Each entry holds from its start until the next entry's start. The day wraps at midnight: before
    the earliest start the latest entry's price still holds (yesterday's evening tariff runs on
    until today's first start). The schedule's clock is UTC shifted by `utc_offset_s` (e.g. 3600
    for a tariff written in UTC+1 without daylight saving).
    """

    def __init__(self, entries: Iterable[tuple[str, float]], *, utc_offset_s: int = 0) -> None:
        slots: dict[int, float] = {}
        for start, price in entries:
            start_s = _parse_hhmm(start)
            if start_s in slots:
                raise UsageError(f"schedule start {start!r} appears twice")
            slots[start_s] = _check_price(price, f"schedule entry {start!r}")
        if not slots:
            raise UsageError("a daily schedule needs at least one entry")
        ordered = sorted(slots.items())
        self._starts_s = [start_s for start_s, _ in ordered]
        self._prices = [price for _, price in ordered]
        self.utc_offset_s = utc_offset_s

    @property
    def entries(self) -> list[tuple[str, float]]:
        return [
            (f"{start_s // 3600:02d}:{start_s % 3600 // 60:02d}", price)
            for start_s, price in zip(self._starts_s, self._prices, strict=True)
        ]

    def at(self, t_s: float) -> float:
        second_of_day = (t_s + self.utc_offset_s) % SECONDS_PER_DAY
        # Index -1 (before the first start) is the last entry: the wrap at midnight.
        return self._prices[bisect.bisect_right(self._starts_s, second_of_day) - 1]


class TariffSeries:
    """A step function over time: the price of the latest point at or before `t_s`.

    Before the first point the first point's price holds. Times (Unix seconds) must be strictly
    increasing, so a lookup is a binary search.
    """

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if not points:
            raise UsageError("a tariff series needs at least one point")
        times: list[float] = []
        prices: list[float] = []
        for time_s, price in points:
            if not math.isfinite(time_s):
                raise UsageError(f"a tariff time must be finite, got {time_s!r}")
            if times and time_s <= times[-1]:
                raise UsageError(f"tariff times must increase: {time_s!r} after {times[-1]!r}")
            times.append(float(time_s))
            prices.append(_check_price(price, f"tariff at {time_s!r}"))
        self._times_s = times
        self._prices = prices

    @property
    def points(self) -> list[tuple[float, float]]:
        return list(zip(self._times_s, self._prices, strict=True))

    def at(self, t_s: float) -> float:
        index = bisect.bisect_right(self._times_s, t_s) - 1
        return self._prices[max(index, 0)]


def _parse_time(text: str) -> float:
    """Unix seconds (`1700000000`, `1.7e9`) or ISO-8601 (`2024-01-01T07:00:00Z`); naive is UTC."""
    try:
        return float(text)
    except ValueError:
        pass  # not a number: try ISO-8601 below
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is neither Unix seconds nor ISO-8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_tariff_csv(lines: Iterable[str], *, source: str = "<tariffs>") -> TariffSeries:
    """Parse a CSV of tariffs with a `time,price` header (other columns are ignored).

    Blank lines and lines starting with `#` are skipped. Times are Unix seconds or ISO-8601
    (a timestamp without an offset is UTC) and must increase from row to row. Every error is a
    `UsageError` naming `source:line`.
    """
    columns: dict[str, int] | None = None
    points: list[tuple[float, float]] = []
    previous_line = 0
    for line_no, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = [cell.strip() for cell in next(csv.reader([text]))]
        where = f"{source}:{line_no}"
        if columns is None:
            names = [name.lower() for name in fields]
            missing = [name for name in ("time", "price") if name not in names]
            if missing:
                raise UsageError(
                    f"{where}: the header must name the columns time and price; "
                    f"missing {', '.join(missing)}"
                )
            columns = {name: names.index(name) for name in ("time", "price")}
            continue
        width = max(columns.values()) + 1
        if len(fields) < width:
            raise UsageError(f"{where}: expected at least {width} fields, got {len(fields)}")
        try:
            time_s = _parse_time(fields[columns["time"]])
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if not math.isfinite(time_s):
            raise UsageError(f"{where}: time must be finite, got {fields[columns['time']]!r}")
        try:
            price = float(fields[columns["price"]])
        except ValueError:
            raise UsageError(
                f"{where}: price {fields[columns['price']]!r} is not a number"
            ) from None
        if not math.isfinite(price) or price < 0:
            raise UsageError(f"{where}: price must be finite and >= 0, got {price!r}")
        if points and time_s <= points[-1][0]:
            raise UsageError(
                f"{where}: times must increase; this row is not after line {previous_line}"
            )
        points.append((time_s, price))
        previous_line = line_no
    if columns is None:
        raise UsageError(f"{source}: empty tariff file (expected a time,price header)")
    if not points:
        raise UsageError(f"{source}: no tariff rows after the header")
    return TariffSeries(points)


def describe_grid(grid: GridPrice) -> tuple[str, float | None]:
    """Where a grid price comes from, in words, and (a feed's) the age of its last reading."""
    if isinstance(grid, HttpGridFeed):
        return grid.describe(), grid.age_s()
    if isinstance(grid, ConstantPrice):
        return "constant", None
    if isinstance(grid, DailySchedule):
        return "daily schedule", None
    if isinstance(grid, TariffSeries):
        return "tariff series", None
    return type(grid).__name__, None


def load_tariff_csv(path: str | Path) -> TariffSeries:
    """Read a tariff CSV file (the one I/O in this module) and parse it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read tariff file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"tariff file {str(path)!r} is not UTF-8 text") from None
    return parse_tariff_csv(text.splitlines(), source=str(path))


def parse_grid(
    spec: str, *, poll_s: float = DEFAULT_POLL_S, timeout_s: float = DEFAULT_TIMEOUT_S
) -> GridPrice:
    """A grid price from its one-line spec, as `maxwell daemon --grid` takes it: a number (a
    constant, $J per J), `HH:MM=PRICE,...` (a daily schedule in UTC), an `http://` or `https://`
    URL of a JSON feed (`#FIELD` names the number, `price` by default; polled every `poll_s`,
    see `maxwell.economy.gridfeed`), or the path of a CSV series (`time,price`, see
    `parse_tariff_csv`). A `UsageError` says what is wrong. Nothing is fetched here."""
    text = spec.strip()
    if text.startswith(("http://", "https://")):
        return HttpGridFeed(parse_feed_spec(text), poll_s=poll_s, timeout_s=timeout_s)
    try:
        constant = float(text)
    except ValueError:
        constant = None
    if constant is not None:
        return ConstantPrice(constant)  # a negative or infinite one is refused
    if "=" in text:
        entries = []
        for part in text.split(","):
            start, sep, price = part.partition("=")
            try:
                entries.append((start.strip(), float(price) if sep else math.nan))
            except ValueError:
                raise UsageError(f"--grid {spec!r}: {part!r} is not HH:MM=PRICE") from None
        return DailySchedule(entries)
    return load_tariff_csv(text)


@dataclass
class ThermalPriceController:
    """PI controller from die temperature to a bounded thermal price factor (see module comment).

    Configuration: `setpoint_c` (°C; below the critical temperature), `kp_per_c` (1/°C),
    `ki_per_c_s` (1/(°C·s)), `min_factor`/`max_factor`, `anti_windup`. State: `integral_c_s`
    (°C·s of accumulated error) and `factor` (the last output).
    """

    setpoint_c: float
    kp_per_c: float = DEFAULT_KP_PER_C
    ki_per_c_s: float = DEFAULT_KI_PER_C_S
    min_factor: float = DEFAULT_MIN_FACTOR
    max_factor: float = DEFAULT_MAX_FACTOR
    anti_windup: bool = True
    integral_c_s: float = field(default=0.0, compare=False)
    factor: float = field(default=1.0, compare=False)

    def __post_init__(self) -> None:
        for name in ("setpoint_c", "kp_per_c", "ki_per_c_s", "min_factor", "max_factor"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise UsageError(f"controller {name} must be finite, got {value!r}")
        if self.kp_per_c < 0 or self.ki_per_c_s < 0:
            raise UsageError("controller gains must be >= 0")
        if not 0 < self.min_factor <= 1.0 <= self.max_factor:
            raise UsageError(
                "controller bounds must satisfy 0 < min_factor <= 1 <= max_factor, got "
                f"[{self.min_factor!r}, {self.max_factor!r}]"
            )
        self.factor = min(max(self.factor, self.min_factor), self.max_factor)

    @classmethod
    def for_die(
        cls,
        die: ThermalRC,
        *,
        margin_c: float = DEFAULT_SETPOINT_MARGIN_C,
        kp_per_c: float = DEFAULT_KP_PER_C,
        ki_per_c_s: float = DEFAULT_KI_PER_C_S,
        min_factor: float = DEFAULT_MIN_FACTOR,
        max_factor: float = DEFAULT_MAX_FACTOR,
        anti_windup: bool = True,
    ) -> ThermalPriceController:
        """A controller whose setpoint is `margin_c` (default 15 °C) below the die's critical."""
        if not math.isfinite(margin_c) or margin_c <= 0:
            raise UsageError(f"the setpoint margin must be a positive number of °C, got {margin_c}")
        return cls(
            setpoint_c=die.critical_c - margin_c,
            kp_per_c=kp_per_c,
            ki_per_c_s=ki_per_c_s,
            min_factor=min_factor,
            max_factor=max_factor,
            anti_windup=anti_windup,
        )

    def reset(self) -> None:
        self.integral_c_s = 0.0
        self.factor = 1.0

    def _output(self, error_c: float, integral_c_s: float) -> float:
        return 1.0 + self.kp_per_c * error_c + self.ki_per_c_s * integral_c_s

    def _anti_windup(self, error_c: float, candidate_c_s: float, unclamped: float) -> float:
        """The integral this update may keep when `candidate_c_s` would wind up.

        Past a bound with the error pushing further, the integral may still grow just up to the
        value that puts the output on the bound, and may move toward zero (never past it); any
        further growth is dropped.
        """
        held_c_s = self.integral_c_s
        if unclamped > self.max_factor and error_c > 0:
            at_bound_c_s = (self.max_factor - 1.0 - self.kp_per_c * error_c) / self.ki_per_c_s
            target_c_s = max(held_c_s, at_bound_c_s)
            if held_c_s < 0:
                target_c_s = max(target_c_s, 0.0)
            return min(candidate_c_s, target_c_s)
        if unclamped < self.min_factor and error_c < 0:
            at_bound_c_s = (self.min_factor - 1.0 - self.kp_per_c * error_c) / self.ki_per_c_s
            target_c_s = min(held_c_s, at_bound_c_s)
            if held_c_s > 0:
                target_c_s = min(target_c_s, 0.0)
            return max(candidate_c_s, target_c_s)
        return candidate_c_s

    def update(self, temperature_c: float, dt_s: float) -> float:
        """Fold in one reading taken `dt_s` after the previous one; return the new factor.

        `dt_s == 0` (the first reading) applies the proportional term without integrating.
        """
        if not math.isfinite(temperature_c):
            raise ValueError(f"temperature must be finite, got {temperature_c!r}")
        if not math.isfinite(dt_s) or dt_s < 0:
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        error_c = temperature_c - self.setpoint_c
        integral_c_s = self.integral_c_s + error_c * dt_s
        unclamped = self._output(error_c, integral_c_s)
        if self.anti_windup and self.ki_per_c_s > 0:
            integral_c_s = self._anti_windup(error_c, integral_c_s, unclamped)
            unclamped = self._output(error_c, integral_c_s)
        self.integral_c_s = integral_c_s
        self.factor = min(max(unclamped, self.min_factor), self.max_factor)
        return self.factor


@dataclass(frozen=True)
class SpotQuote:
    """One tick's price: the grid's, the thermal factor, the neighbours' coupling
    (`maxwell.economy.coupling`; 1 without gossip), and their product."""

    grid: float
    thermal_factor: float
    spot: float
    coupling: float = 1.0


@dataclass
class SpotPrice:
    """The spot price: `grid.at(t_s) x controller factor at the die's temperature`."""

    grid: GridPrice
    controller: ThermalPriceController

    def spot(self, t_s: float, temperature_c: float, dt_s: float) -> SpotQuote:
        grid = _check_price(self.grid.at(t_s), "grid price")
        factor = self.controller.update(temperature_c, dt_s)
        return SpotQuote(grid=grid, thermal_factor=factor, spot=grid * factor)


def price_elastic_utilisation(demand: float, thermal_factor: float, elasticity: float) -> float:
    """Utilisation a node gets when its price is `thermal_factor` x grid.

    `demand x clamp(1 - elasticity x (spot - grid) / grid, 0, 1)`, with (spot - grid) / grid =
    factor - 1 (so a zero grid price needs no special case). This is the share of agents still
    bidding when their limit prices are spread uniformly from the grid price to
    grid x (1 + 1/elasticity): each agent drops out once the spot price passes its limit.
    """
    markup = thermal_factor - 1.0
    return demand * min(max(1.0 - elasticity * markup, 0.0), 1.0)


@dataclass(frozen=True)
class LoopSample:
    """One tick of `simulate_thermal_loop`: the state at `t_s`, the price and power it then held."""

    t_s: float
    temperature_c: float
    thermal_factor: float
    spot: float
    utilisation: float
    power_w: float


def simulate_thermal_loop(
    *,
    die: ThermalRC,
    spot_price: SpotPrice,
    demand: Callable[[float], float],
    idle_w: float,
    max_w: float,
    elasticity: float,
    duration_s: float,
    dt_s: float,
    start_c: float | None = None,
) -> list[LoopSample]:
    """Close the loop die -> controller -> price -> demand -> power -> die, deterministically.

    Each tick reads the temperature, quotes the spot price, holds the resulting power
    `idle_w + (max_w - idle_w) x utilisation` for `dt_s` and advances the die exactly
    (`ThermalRC.step`). `start_c` defaults to the open-loop steady state at `demand(0)`.
    The controller inside `spot_price` is updated in place.
    """
    if not dt_s > 0 or not duration_s >= 0:
        raise ValueError("dt_s must be > 0 and duration_s >= 0")
    if start_c is None:
        start_c = die.steady_state_c(idle_w + (max_w - idle_w) * min(max(demand(0.0), 0.0), 1.0))
    temperature_c = start_c
    samples: list[LoopSample] = []
    for tick in range(round(duration_s / dt_s) + 1):
        t_s = tick * dt_s
        quote = spot_price.spot(t_s, temperature_c, dt_s if tick else 0.0)
        utilisation = price_elastic_utilisation(demand(t_s), quote.thermal_factor, elasticity)
        power_w = idle_w + (max_w - idle_w) * utilisation
        samples.append(
            LoopSample(t_s, temperature_c, quote.thermal_factor, quote.spot, utilisation, power_w)
        )
        temperature_c = die.step(temperature_c, power_w, dt_s)
    return samples
