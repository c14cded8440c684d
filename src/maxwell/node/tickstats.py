"""Tick statistics: how many ticks committed and failed, how long they took, the last error.

The daemon feeds a `TickRecorder` (`record_tick` after each committed tick, `record_failure` for
each tick that raised) and publishes `snapshot(ledger_rows)`, a frozen `TickStats`, in its
`NodeStatus`; `/status`, `/metrics` and `maxwell status` read that snapshot.

Rules and invariants:

- No clock, no I/O: durations and the time of a failure are passed in.
- Memory is bounded whatever the uptime: counts and the histogram are fixed-size, the durations
  the median and p99 are taken over live in a deque of the last `window` ticks, and the last error
  is one line of at most `MAX_ERROR_CHARS` characters.
- The histogram is Prometheus-shaped: `duration_counts[i]` counts ticks with
  `duration_bounds_s[i-1] < duration <= duration_bounds_s[i]` (not cumulative; the metrics page
  accumulates), plus one last count for +Inf. In a recorder's snapshot the counts sum to `ticks`.
- Percentiles are nearest-rank over the window, so `median_ms <= p99_ms` always, and both are
  durations that were actually recorded (0.0 before the first tick).
- Thread-safe: the tick thread records while the API thread takes snapshots.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DURATION_BOUNDS_S",
    "DEFAULT_WINDOW",
    "MAX_ERROR_CHARS",
    "TickRecorder",
    "TickStats",
    "error_line",
]

# Ticks run from ~1 ms (a few agents, no cgroups) to seconds (thousands of agents, a slow disk);
# the configured interval is 10 ms to 1 s, so the buckets are densest there.
DEFAULT_DURATION_BOUNDS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
DEFAULT_WINDOW = 1000  # ticks the median and p99 are taken over
MAX_ERROR_CHARS = 500  # an exception's message can be a whole SQL statement or a traceback


@dataclass(frozen=True)
class TickStats:
    """A snapshot of the tick loop's health.

    `duration_counts` has one entry per bound plus one for +Inf; it is empty (and
    `duration_bounds_s` too) when the snapshot carries no histogram, as one read back from
    `/status` does: the API serves the summary figures, `/metrics` the histogram. Read back,
    `ticks` is the node's tick count (which survives restarts), not this recorder's.
    """

    ticks: int  # committed ticks recorded
    failures: int  # ticks that raised
    last_error: str | None  # one line: "ExceptionType: message"
    last_error_at: float | None  # Unix seconds
    duration_bounds_s: tuple[float, ...]  # histogram bucket upper bounds, increasing
    duration_counts: tuple[int, ...]  # per bucket (not cumulative), then +Inf
    duration_sum_s: float  # of every committed tick's duration
    median_ms: float  # over the window
    p99_ms: float  # over the window
    ledger_rows: int  # rows the ledger holds (its journal)


def error_line(error: BaseException) -> str:
    """`error` as one line of at most `MAX_ERROR_CHARS`: its type, then its message if any."""
    message = " ".join(str(error).split())
    line = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def _nearest_rank(ordered: Sequence[float], quantile: float) -> float:
    """The smallest recorded value with at least `quantile` of the values at or below it."""
    if not ordered:
        return 0.0
    rank = max(math.ceil(quantile * len(ordered)), 1)
    return ordered[rank - 1]


class TickRecorder:
    """Counts the daemon's ticks; see the module comment for the rules."""

    def __init__(
        self,
        bounds_s: Sequence[float] = DEFAULT_DURATION_BOUNDS_S,
        *,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        bounds = tuple(float(bound) for bound in bounds_s)
        if not all(math.isfinite(bound) and bound > 0 for bound in bounds):
            raise ValueError(f"bucket bounds must be positive and finite, got {bounds}")
        if any(later <= earlier for earlier, later in itertools.pairwise(bounds)):
            raise ValueError(f"bucket bounds must increase, got {bounds}")
        if window < 1:
            raise ValueError(f"the window must hold at least one tick, got {window}")
        self._lock = threading.Lock()
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum_s = 0.0
        self._ticks = 0
        self._recent: deque[float] = deque(maxlen=window)
        self._failures = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    def record_tick(self, duration_s: float) -> None:
        """A tick committed after `duration_s` seconds of work (a monotonic clock's difference)."""
        if not (math.isfinite(duration_s) and duration_s >= 0):
            raise ValueError(f"a tick's duration must be finite and >= 0, got {duration_s!r}")
        bucket = bisect.bisect_left(self._bounds, duration_s)  # `le` bounds are inclusive
        with self._lock:
            self._counts[bucket] += 1
            self._sum_s += duration_s
            self._ticks += 1
            self._recent.append(duration_s)

    def record_failure(self, error: BaseException, at: float) -> None:
        """A tick raised `error` at Unix time `at`; it becomes the last error."""
        line = error_line(error)
        with self._lock:
            self._failures += 1
            self._last_error = line
            self._last_error_at = at

    def snapshot(self, ledger_rows: int) -> TickStats:
        """The figures so far, with the ledger's row count (the caller reads it from the store)."""
        if ledger_rows < 0:
            raise ValueError(f"the ledger cannot hold {ledger_rows} rows")
        with self._lock:
            ordered = sorted(self._recent)
            return TickStats(
                ticks=self._ticks,
                failures=self._failures,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                duration_bounds_s=self._bounds,
                duration_counts=tuple(self._counts),
                duration_sum_s=self._sum_s,
                median_ms=_nearest_rank(ordered, 0.5) * 1e3,
                p99_ms=_nearest_rank(ordered, 0.99) * 1e3,
                ledger_rows=ledger_rows,
            )
