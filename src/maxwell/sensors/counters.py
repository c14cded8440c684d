"""Cumulative energy counters that wrap: delta computation and ambiguity detection. Pure.

Rules and invariants:

- A hardware energy counter counts up in fixed units and wraps to zero at its range (powercap:
  `max_energy_range_uj`; RAPL MSRs: 2^32 energy units; hwmon/i915/amdgpu: 2^32 µJ).
- A counter with no range (`range_units=None`: amd_energy's and zenergy's 64-bit accumulators)
  never wraps: a decrease is a reset, and no interval is ambiguous.
- When a reading is below the previous one, the counter wrapped once: the delta is
  `range - prev + cur`. The interval is never dropped (Scaphandre drops it; shared/REFERENCE.md).
- A counter whose previous reading was already at or above its stated range cannot have wrapped
  at that range: a decrease then means it was reset (driver reload); the delta is `cur`, flagged.
- Several wraps between two readings look exactly like one, or none. Given the elapsed time and a
  plausible maximum power, if `elapsed x max_power >= range` the delta is AMBIGUOUS: it is still
  counted (as the least energy consistent with the readings) but flagged with a warning, never
  silently.
- Totals are kept in raw counter units (ints) and converted to µJ on the way out, so a counter
  whose unit is not a whole µJ (RAPL MSRs: 1/2^ESU J) accumulates no rounding error.
"""

from __future__ import annotations

from dataclasses import dataclass

from maxwell.units import UJ_PER_J

# A package rarely draws more than this; used when the zone states no limit (documented default).
DEFAULT_PACKAGE_MAX_POWER_W = 1000.0
# powercap's constraint_0_max_power_uw is a sustained limit (PL1); bursts (PL2) run above it.
POWER_LIMIT_HEADROOM = 2.0
COUNTER_32_BIT = 2**32


@dataclass(frozen=True)
class CounterDelta:
    """The energy between two readings of one counter, in raw counter units."""

    units: int
    wrapped: bool = False
    reset: bool = False
    ambiguous: bool = False


def counter_delta(previous: int, current: int, range_units: int | None) -> CounterDelta:
    """Delta between two raw readings of a counter that wraps at `range_units` (None: never)."""
    if current >= previous:
        return CounterDelta(units=current - previous)
    if range_units is None or previous >= range_units:
        return CounterDelta(units=current, reset=True)
    return CounterDelta(units=range_units - previous + current, wrapped=True)


def may_wrap_more_than_once(elapsed_s: float, max_power_w: float, range_j: float) -> bool:
    """True when, at `max_power_w`, the counter could have gone round its range in `elapsed_s`."""
    return elapsed_s * max_power_w >= range_j


def format_joules(joules: float) -> str:
    if joules >= 1e6:
        return f"{joules / 1e6:.3g} MJ"
    if joules >= 1e3:
        return f"{joules / 1e3:.3g} kJ"
    return f"{joules:.3g} J"


@dataclass(frozen=True)
class CounterUpdate:
    """What one observation of a counter added to its running total."""

    delta_units: int
    delta_uj: int
    wrapped: bool
    ambiguous: bool
    warning: str | None


class EnergyCounter:
    """Tracks one wrapping counter and its running total since the first observation."""

    def __init__(
        self,
        name: str,
        *,
        range_units: int | None,
        uj_per_unit: float = 1.0,
        max_power_w: float = DEFAULT_PACKAGE_MAX_POWER_W,
    ) -> None:
        if range_units is not None and range_units <= 0:
            raise ValueError(f"{name}: counter range must be positive, got {range_units}")
        if uj_per_unit <= 0:
            raise ValueError(f"{name}: counter unit must be positive, got {uj_per_unit}")
        self.name = name
        self.range_units = range_units
        self.uj_per_unit = uj_per_unit
        self.max_power_w = max_power_w
        self.total_units = 0
        self._previous: int | None = None
        self._previous_at_s = 0.0

    @property
    def range_j(self) -> float | None:
        """Where the counter wraps, J; None when it never does."""
        if self.range_units is None:
            return None
        return self.range_units * self.uj_per_unit / UJ_PER_J

    @property
    def total_uj(self) -> int:
        return round(self.total_units * self.uj_per_unit)

    def observe(self, raw: int, at_s: float) -> CounterUpdate:
        """Fold in a raw reading taken at monotonic time `at_s`; the first one sets the baseline."""
        if self._previous is None:
            self._previous, self._previous_at_s = raw, at_s
            return CounterUpdate(0, 0, wrapped=False, ambiguous=False, warning=None)
        elapsed_s = at_s - self._previous_at_s
        previous = self._previous
        delta = counter_delta(previous, raw, self.range_units)
        before_uj = self.total_uj
        self.total_units += delta.units
        self._previous, self._previous_at_s = raw, at_s
        warning: str | None = None
        range_j = self.range_j
        ambiguous = False
        if range_j is not None and may_wrap_more_than_once(elapsed_s, self.max_power_w, range_j):
            ambiguous = True
            warning = (
                f"{self.name} energy counter range {format_joules(range_j)} may have wrapped "
                f"more than once in {elapsed_s:.3g} s (at up to {self.max_power_w:.0f} W); "
                "reading flagged: counted as the least energy consistent with it"
            )
        elif delta.reset and self.range_units is None:
            warning = (
                f"{self.name} energy counter went down from {previous} to {raw}, and it does not "
                "wrap: treated as a reset, counted from zero"
            )
        elif delta.reset:
            warning = (
                f"{self.name} energy counter went down from {previous} to {raw}, and {previous} "
                f"is beyond its range {self.range_units}: treated as a reset, counted from zero"
            )
        return CounterUpdate(
            delta_units=delta.units,
            delta_uj=self.total_uj - before_uj,
            wrapped=delta.wrapped,
            ambiguous=ambiguous,
            warning=warning,
        )
