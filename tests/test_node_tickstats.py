"""The tick loop's health figures: the histogram, the windowed percentiles, the last error, and
how they travel in `/status` (`maxwell.node.wire`)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.node.facade import NodeStatus, PriceInfo
from maxwell.node.tickstats import (
    DEFAULT_DURATION_BOUNDS_S,
    MAX_ERROR_CHARS,
    TickRecorder,
    TickStats,
    error_line,
)
from maxwell.node.wire import status_from_json, status_to_json

TICK_FIELDS = {
    "tick_failures",
    "last_error",
    "last_error_at",
    "tick_ms_median",
    "tick_ms_p99",
    "ledger_rows",
}
PRICE = PriceInfo(1.5, 1.0, 1.5, 62.5, 17.5, False, "model", "model")


def test_a_fresh_recorder_has_nothing_to_say() -> None:
    stats = TickRecorder().snapshot(ledger_rows=0)
    assert (stats.ticks, stats.failures) == (0, 0)
    assert (stats.last_error, stats.last_error_at) == (None, None)
    assert stats.duration_bounds_s == DEFAULT_DURATION_BOUNDS_S
    assert stats.duration_counts == (0,) * (len(DEFAULT_DURATION_BOUNDS_S) + 1)
    assert (stats.duration_sum_s, stats.median_ms, stats.p99_ms) == (0.0, 0.0, 0.0)


def test_default_buckets_span_a_millisecond_to_ten_seconds() -> None:
    bounds = DEFAULT_DURATION_BOUNDS_S
    assert bounds[0] == 0.001 and bounds[-1] == 10.0
    assert list(bounds) == sorted(set(bounds))


def test_durations_land_in_their_bucket_bounds_inclusive() -> None:
    recorder = TickRecorder(bounds_s=(0.01, 0.1, 1.0))
    for duration_s in (0.0, 0.01, 0.0100001, 0.1, 0.5, 1.0, 7.0):
        recorder.record_tick(duration_s)
    stats = recorder.snapshot(ledger_rows=42)
    # (-inf, 0.01], (0.01, 0.1], (0.1, 1], (1, +Inf): Prometheus' `le` is "less or equal".
    assert stats.duration_counts == (2, 2, 2, 1)
    assert stats.ticks == 7
    assert stats.duration_sum_s == pytest.approx(8.6200001)
    assert stats.ledger_rows == 42


def test_percentiles_are_nearest_rank_over_the_window() -> None:
    recorder = TickRecorder(window=100)
    for ms in range(1, 101):  # 1 ms .. 100 ms
        recorder.record_tick(ms / 1000)
    stats = recorder.snapshot(ledger_rows=0)
    assert stats.median_ms == pytest.approx(50.0)
    assert stats.p99_ms == pytest.approx(99.0)
    # The window forgets the old ticks; the histogram and the totals do not.
    for _ in range(100):
        recorder.record_tick(0.002)
    stats = recorder.snapshot(ledger_rows=0)
    assert stats.median_ms == pytest.approx(2.0) and stats.p99_ms == pytest.approx(2.0)
    assert stats.ticks == 200 and sum(stats.duration_counts) == 200


def test_one_slow_tick_shows_in_p99_not_in_the_median() -> None:
    recorder = TickRecorder()
    for _ in range(99):
        recorder.record_tick(0.004)
    recorder.record_tick(3.0)
    stats = recorder.snapshot(ledger_rows=0)
    assert stats.median_ms == pytest.approx(4.0)
    assert stats.p99_ms == pytest.approx(4.0)  # nearest rank: the 99th of 100
    recorder.record_tick(3.0)
    assert recorder.snapshot(ledger_rows=0).p99_ms == pytest.approx(3000.0)


def test_a_failure_is_counted_and_becomes_the_last_error() -> None:
    recorder = TickRecorder()
    recorder.record_failure(OSError(5, "Input/output error"), at=1_700_000_000.5)
    recorder.record_failure(RuntimeError("ledger\nlocked:\tretry"), at=1_700_000_001.0)
    stats = recorder.snapshot(ledger_rows=3)
    assert stats.failures == 2 and stats.ticks == 0
    assert stats.last_error == "RuntimeError: ledger locked: retry"
    assert stats.last_error_at == 1_700_000_001.0


def test_error_line_is_one_bounded_line() -> None:
    assert error_line(KeyError("a1")) == "KeyError: 'a1'"
    assert error_line(ValueError()) == "ValueError"
    long = error_line(ValueError("x\n" * 10_000))
    assert len(long) == MAX_ERROR_CHARS and "\n" not in long and long.endswith("...")


@pytest.mark.parametrize("duration_s", [-0.001, float("nan"), float("inf")])
def test_a_nonsense_duration_is_refused(duration_s: float) -> None:
    recorder = TickRecorder()
    with pytest.raises(ValueError, match="duration"):
        recorder.record_tick(duration_s)
    assert recorder.snapshot(ledger_rows=0).ticks == 0


@pytest.mark.parametrize(
    ("bounds", "window", "says"),
    [
        ((0.1, 0.1), 10, "increase"),
        ((0.2, 0.1), 10, "increase"),
        ((0.0, 1.0), 10, "positive"),
        ((float("inf"),), 10, "finite"),
        ((0.1,), 0, "window"),
    ],
)
def test_bad_configuration_is_refused(bounds: tuple[float, ...], window: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        TickRecorder(bounds_s=bounds, window=window)


def test_negative_ledger_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        TickRecorder().snapshot(ledger_rows=-1)


def test_recording_while_another_thread_snapshots() -> None:
    recorder = TickRecorder(window=50)
    stop = threading.Event()

    def snapshots() -> None:
        while not stop.is_set():
            stats = recorder.snapshot(ledger_rows=0)
            assert sum(stats.duration_counts) == stats.ticks

    reader = threading.Thread(target=snapshots)
    reader.start()
    try:
        for i in range(5_000):
            recorder.record_tick((i % 97) / 1000)
    finally:
        stop.set()
        reader.join()
    assert recorder.snapshot(ledger_rows=0).ticks == 5_000


durations = st.floats(min_value=0.0, max_value=60.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    ticks=st.lists(durations, max_size=300),
    failures=st.integers(min_value=0, max_value=5),
    window=st.integers(min_value=1, max_value=50),
)
def test_counts_sum_to_ticks_and_p99_is_at_least_the_median(
    ticks: list[float], failures: int, window: int
) -> None:
    recorder = TickRecorder(window=window)
    for duration_s in ticks:
        recorder.record_tick(duration_s)
    for i in range(failures):
        recorder.record_failure(RuntimeError(f"tick {i}"), at=float(i))
    stats = recorder.snapshot(ledger_rows=len(ticks))
    assert stats.ticks == len(ticks) == sum(stats.duration_counts)
    assert len(stats.duration_counts) == len(stats.duration_bounds_s) + 1
    assert stats.failures == failures
    assert stats.median_ms <= stats.p99_ms
    assert stats.duration_sum_s == pytest.approx(sum(ticks))
    recent = ticks[-window:]
    # The window is bounded: the percentiles are durations among the last `window` ticks only.
    assert len(recorder._recent) == len(recent) <= window
    if recent:
        recorded_ms = {duration_s * 1e3 for duration_s in recent}
        assert stats.median_ms in recorded_ms and stats.p99_ms in recorded_ms
        assert min(recent) * 1e3 <= stats.median_ms <= stats.p99_ms <= max(recent) * 1e3
    else:
        assert stats.median_ms == stats.p99_ms == 0.0


# --- on the wire -----------------------------------------------------------------------------


def _status(tick_stats: TickStats | None) -> NodeStatus:
    return NodeStatus(PRICE, [], 0.5, 0.003, 41, "uniform", "v2", 4.0, tick_stats=tick_stats)


def _stats() -> TickStats:
    recorder = TickRecorder()
    for duration_s in (0.002, 0.003, 0.25):
        recorder.record_tick(duration_s)
    recorder.record_failure(OSError(28, "No space left on device"), at=1_700_000_000.25)
    return recorder.snapshot(ledger_rows=987)


def test_status_json_carries_the_tick_figures_at_the_top_level() -> None:
    stats = _stats()
    body = status_to_json(_status(stats))
    assert {key: body[key] for key in TICK_FIELDS} == {
        "tick_failures": 1,
        "last_error": "OSError: [Errno 28] No space left on device",
        "last_error_at": 1_700_000_000.25,
        "tick_ms_median": stats.median_ms,
        "tick_ms_p99": 250.0,
        "ledger_rows": 987,
    }
    assert body["ticks"] == 41 and body["last_tick_duration_s"] == 0.003  # still there


def test_a_node_without_stats_says_null_and_zero() -> None:
    body = status_to_json(_status(None))
    assert {key: body[key] for key in TICK_FIELDS} == {
        "tick_failures": 0,
        "last_error": None,
        "last_error_at": None,
        "tick_ms_median": None,
        "tick_ms_p99": None,
        "ledger_rows": 0,
    }
    assert status_from_json(json.dumps(body)) == _status(None)


def test_reading_back_keeps_the_summary_not_the_histogram() -> None:
    stats = _stats()
    back = status_from_json(json.dumps(status_to_json(_status(stats))))
    assert back.tick_stats is not None
    assert back.tick_stats == TickStats(
        ticks=41,  # the node's tick count: the recorder's own is not on the wire
        failures=1,
        last_error=stats.last_error,
        last_error_at=stats.last_error_at,
        duration_bounds_s=(),
        duration_counts=(),
        duration_sum_s=0.0,
        median_ms=stats.median_ms,
        p99_ms=stats.p99_ms,
        ledger_rows=987,
    )
    assert status_to_json(back) == status_to_json(_status(stats))


def test_an_older_nodes_status_has_no_tick_stats() -> None:
    body = status_to_json(_status(None))
    for key in TICK_FIELDS:
        del body[key]
    assert status_from_json(json.dumps(body)).tick_stats is None


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("tick_failures", 1.5, "tick_failures: Input should be a valid integer"),
        ("last_error", 3, "last_error: Input should be a valid string"),
        ("last_error_at", "noon", "last_error_at: Input should be a valid number"),
        ("tick_ms_p99", None, "tick_ms_p99: must be a number"),
        ("ledger_rows", True, "ledger_rows: Input should be a valid integer"),
    ],
)
def test_malformed_tick_figures_are_refused(field: str, value: object, complaint: str) -> None:
    body = {**status_to_json(_status(_stats())), field: value}
    with pytest.raises(ValueError, match=complaint):
        status_from_json(json.dumps(body))


@settings(max_examples=50, deadline=None)
@given(
    ticks=st.lists(durations, max_size=20),
    errors=st.lists(st.text(max_size=40), max_size=3),
    ledger_rows=st.integers(min_value=0, max_value=2**62),
)
def test_the_status_json_is_a_fixed_point(
    ticks: list[float], errors: list[str], ledger_rows: int
) -> None:
    recorder = TickRecorder()
    for duration_s in ticks:
        recorder.record_tick(duration_s)
    for i, message in enumerate(errors):
        recorder.record_failure(RuntimeError(message), at=1e9 + i)
    body = status_to_json(_status(recorder.snapshot(ledger_rows)))
    assert status_to_json(status_from_json(json.dumps(body))) == body
