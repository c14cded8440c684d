"""Smoke tests of `maxwell bench daemon`'s pure part: timings in, report out. No timing asserted."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from maxwell.bench.daemon import (
    AGENT_COUNTS,
    FD_RESERVE,
    QUICK_AGENT_COUNTS,
    TARGET_AUCTIONEER_FRACTION_AT_1S,
    TickPhase,
    _database_bytes,
    add_arguments,
    auctioneer_fraction,
    baseline_argv,
    build_report,
    check_targets,
    compare,
    descriptors_short,
    idle_rows_per_agent_per_min,
    known_flags,
    per_agent_rate,
    percentile,
    ratio,
    with_baseline,
)

HOST = {"cpus": 2, "cpu_model": "AMD EPYC", "cgroup": "v1", "energy_source": "model"}


def test_percentile_interpolates_and_tolerates_nothing() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([float(i) for i in range(101)], 99) == pytest.approx(99.0)
    assert percentile([1.0, 2.0], 100) == 2.0


def test_auctioneer_fraction_is_clearing_cpu_over_allocated_cpu() -> None:
    assert auctioneer_fraction(0.002, 2.0, 1.0) == pytest.approx(0.001)
    assert auctioneer_fraction(0.002, 2.0, 0.1) == pytest.approx(0.01)
    assert auctioneer_fraction(None, 2.0, 1.0) is None
    assert auctioneer_fraction(0.002, 0.0, 1.0) is None


def test_the_report_has_the_issue_s_shape() -> None:
    small = TickPhase(
        agents=100, tick_s=0.1, wall_s=10.0, process_cpu_s=0.5, tick_s_each=[0.004] * 99 + [0.02]
    )
    large = TickPhase(
        agents=1000,
        tick_s=0.1,
        wall_s=10.0,
        process_cpu_s=4.0,
        tick_s_each=[0.04, 0.05, 0.06],
    )
    auction = TickPhase(
        agents=1000,
        tick_s=1.0,
        clearing_cpu_s=[0.001, 0.001, 0.003],
        plan_cpu_s=[0.01, 0.01, 0.01],
    )
    report = build_report(
        [small, large],
        auction=auction,
        capacity_cores=2.0,
        api_bid_s=[0.002, 0.003, 0.004],
        host=HOST,
    )
    assert json.loads(json.dumps(report)) == report  # plain JSON
    assert {
        "agents",
        "auctioneer_fraction",
        "auctioneer",
        "api_bid_ms",
        "target",
        "host",
    } <= set(report)  # the fields of earlier releases stay, under the same names
    first, second = report["agents"]
    assert {"n", "tick_s", "daemon_cpu_per_s", "tick_ms_median", "tick_ms_p99"} <= set(first)
    assert (first["n"], first["tick_s"], first["daemon_cpu_per_s"]) == (100, 0.1, 0.05)
    assert first["tick_ms_median"] == 4.0
    assert 4.0 < first["tick_ms_p99"] <= 20.0
    assert (second["n"], second["daemon_cpu_per_s"], second["tick_ms_median"]) == (1000, 0.4, 50.0)
    # Median clearing 1 ms over 2 cores x 1 s, and over 2 cores x 100 ms.
    assert report["auctioneer_fraction"] == {"1s": 0.0005, "100ms": 0.005}
    assert report["auctioneer"]["agents"] == 1000
    assert report["auctioneer"]["clearing_us_median"] == 1000.0
    assert report["api_bid_ms"] == {"n": 3, "median": 3.0, "p99": pytest.approx(3.98)}
    assert report["target"]["auctioneer_fraction_1s_max"] == TARGET_AUCTIONEER_FRACTION_AT_1S
    assert report["target"]["met"] is True
    assert report["host"] == HOST


def test_a_report_without_an_auction_or_api_phase() -> None:
    report = build_report([], auction=None, capacity_cores=2.0, api_bid_s=[], host={})
    assert report["agents"] == []
    assert report["auctioneer_fraction"] == {"1s": None, "100ms": None}
    assert report["api_bid_ms"] == {"n": 0, "median": None, "p99": None}
    assert report["target"]["met"] is None


def test_the_arguments_default_to_every_agent_count_and_no_baseline() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.quick, defaults.json, defaults.seconds) == (False, False, 10.0)
    assert defaults.baseline is None
    assert parser.parse_args(["--quick", "--json"]).quick is True
    assert parser.parse_args(["--baseline", "8f5477e"]).baseline == "8f5477e"
    assert (AGENT_COUNTS, QUICK_AGENT_COUNTS) == ((100, 1000, 5000), (100,))


def test_rates_are_per_agent_per_minute_and_per_hour() -> None:
    # 4 busy agents settled once a second for 30 s: 120 rows, 60 a minute each.
    assert per_agent_rate(120, 4, 30.0, 60.0) == pytest.approx(60.0)
    # 1 MB over 36 s for 10 agents: 100 kB each per 36 s, 10 MB each per hour.
    assert per_agent_rate(1_000_000, 10, 36.0, 3600.0) == pytest.approx(10_000_000.0)
    assert per_agent_rate(0, 5000, 10.0, 60.0) == 0.0
    assert per_agent_rate(None, 4, 30.0, 60.0) is None
    assert per_agent_rate(10, 0, 30.0, 60.0) is None
    assert per_agent_rate(10, 4, 0.0, 60.0) is None


def _phase(agents: int, **figures: Any) -> TickPhase:
    defaults: dict[str, Any] = {"wall_s": 10.0, "process_cpu_s": 0.5, "tick_s_each": [0.005]}
    return TickPhase(agents=agents, tick_s=0.1, **{**defaults, **figures})


def test_an_agent_count_reports_rows_bytes_and_bids() -> None:
    phase = _phase(
        1000,
        ledger_rows=0,
        db_bytes=0,
        bid_s=[0.0005, 0.0007, 0.002],
        report_s=[0.0004, 0.0009],
        fund_s=[0.003, 0.001, 0.002, 0.012],
        requested=1000,
    )
    row = phase.report()
    assert (row["ledger_rows"], row["ledger_rows_by_kind"]) == (0, {})
    assert row["ledger_rows_per_agent_per_min"] == 0.0
    assert row["db_bytes_per_agent_per_hour"] == 0.0
    assert (row["bid_n"], row["bid_ms_median"]) == (3, 0.7)
    assert row["bid_ms_p99"] == pytest.approx(1.974)
    assert (row["report_n"], row["report_ms_median"]) == (2, 0.65)
    assert row["report_ms_p99"] == pytest.approx(0.895)
    assert (row["fund_n"], row["fund_ms_median"]) == (4, 2.5)
    assert row["fund_ms_p99"] == pytest.approx(11.73)
    assert (row["requested"], row["limit"], row["bid_error"]) == (1000, None, None)
    assert (row["tick_failures"], row["tick_error"], row["spawn_s"]) == (0, None, None)


def test_a_count_cut_short_by_a_limit_says_so() -> None:
    phase = _phase(3999, requested=5000, limit="3999 of 5000 agents spawned, then OSError: ...")
    row = phase.report()
    assert (row["n"], row["requested"]) == (3999, 5000)
    assert str(row["limit"]).startswith("3999 of 5000")
    assert row["ledger_rows_per_agent_per_min"] is None  # not measured
    assert (row["bid_n"], row["bid_ms_median"]) == (0, None)


def test_spawning_stops_before_the_open_files_limit() -> None:
    # 20,000 descriptors, 5 per agent: 50 more agents fit while 250 + the reserve are free.
    assert not descriptors_short(20_000, 18_000, 5.0, batch=50)
    assert descriptors_short(20_000, 20_000 - FD_RESERVE - 249, 5.0, batch=50)
    assert not descriptors_short(20_000, 20_000 - FD_RESERVE - 250, 5.0, batch=50)
    assert not descriptors_short(None, 10**9, 5.0)  # no limit


def test_the_idle_figure_is_every_idle_row_over_every_agent_minute() -> None:
    phases = [_phase(100, ledger_rows=0), _phase(1000, ledger_rows=0)]
    assert idle_rows_per_agent_per_min(phases) == 0.0
    # 11 rows over 100 x 1/6 + 1000 x 1/6 agent-minutes.
    phases = [_phase(100, ledger_rows=1), _phase(1000, ledger_rows=10)]
    assert idle_rows_per_agent_per_min(phases) == pytest.approx(11 / (1100 / 6))
    assert idle_rows_per_agent_per_min([_phase(100)]) is None  # rows not counted
    assert idle_rows_per_agent_per_min([]) is None


def _full_report() -> dict[str, Any]:
    def sized(agents: int, cpu_s: float, tick_s: float, bid_s: float) -> TickPhase:
        return _phase(
            agents,
            process_cpu_s=cpu_s,
            tick_s_each=[tick_s] * 10,
            ledger_rows=0,
            db_bytes=0,
            bid_s=[bid_s] * 5,
        )

    # 38 rows in 10 s: 57 a minute each.
    busy = _phase(4, ledger_rows=38, ledger_kinds={"bill": 38}, db_bytes=40_960)
    return build_report(
        [sized(100, 0.3, 0.006, 0.0008), sized(1000, 0.9, 0.03, 0.004), sized(5000, 4, 0.2, 0.1)],
        auction=None,
        capacity_cores=2.0,
        api_bid_s=[0.003],
        host={},
        busy=busy,
    )


def test_the_report_adds_the_idle_and_busy_figures_and_the_targets() -> None:
    report = _full_report()
    assert json.loads(json.dumps(report)) == report
    assert report["idle_ledger_rows_per_agent_per_min"] == 0.0
    assert report["busy_ledger_rows_per_agent_per_min"] == pytest.approx(57.0)
    assert (report["busy"]["n"], report["busy"]["ledger_rows_by_kind"]) == (4, {"bill": 38})
    assert report["busy"]["db_bytes_per_agent_per_hour"] == pytest.approx(3_686_400.0)
    met = {(t["figure"], t["agents"]): (t["measured"], t["met"]) for t in report["targets"]}
    assert met[("daemon_cpu_per_s", 1000)] == (0.09, True)
    assert met[("tick_ms_p99", 1000)] == (30.0, False)
    assert met[("tick_ms_p99", 5000)] == (200.0, False)
    assert met[("idle_ledger_rows_per_agent_per_min", None)] == (0.0, True)
    assert met[("busy_ledger_rows_per_agent_per_min", None)] == (57.0, True)
    assert met[("bid_ms_median", 100)] == (0.8, True)
    assert met[("bid_ms_median", 1000)] == (4.0, False)


def test_a_target_measured_at_fewer_agents_than_it_names_is_not_called_met() -> None:
    cut = _phase(3750, requested=5000, tick_s_each=[0.05] * 100, ledger_rows=0)
    report = build_report([cut], auction=None, capacity_cores=2.0, api_bid_s=[], host={})
    checked = {(t["figure"], t["agents"]): t for t in check_targets(report)}
    five = checked[("tick_ms_p99", 5000)]
    assert (five["measured"], five["measured_agents"], five["met"]) == (50.0, 3750, None)
    assert checked[("idle_ledger_rows_per_agent_per_min", None)]["measured_agents"] is None


def test_targets_not_measured_are_neither_met_nor_missed() -> None:
    report = build_report(
        [_phase(100, ledger_rows=0)], auction=None, capacity_cores=2.0, api_bid_s=[], host={}
    )
    checked = {(t["figure"], t["agents"]): t for t in check_targets(report)}
    assert checked[("tick_ms_p99", 5000)]["measured"] is None
    assert checked[("tick_ms_p99", 5000)]["met"] is None
    assert checked[("busy_ledger_rows_per_agent_per_min", None)]["met"] is None
    assert checked[("idle_ledger_rows_per_agent_per_min", None)]["met"] is True


# What release 8f5477e's `maxwell bench daemon --json` printed: none of the new figures.
BASELINE = {
    "agents": [
        {"n": 100, "daemon_cpu_per_s": 0.06, "tick_ms_median": 7.0, "tick_ms_p99": 9.0},
        {"n": 1000, "daemon_cpu_per_s": 0.45, "tick_ms_median": 40.0, "tick_ms_p99": 0.0},
    ],
    "auctioneer_fraction": {"1s": 0.0008, "100ms": 0.008},
    "auctioneer": {"agents": 1000},
    "api_bid_ms": {"n": 300, "median": 3.0, "p99": 12.0},
}


def test_ratio_is_current_over_baseline_when_both_are_numbers() -> None:
    assert ratio(0.3, 0.6) == 0.5
    assert ratio(3, 2) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0) is None
    assert ratio(True, 1.0) is None


def test_ratios_compare_the_counts_both_measured() -> None:
    ratios = compare(_full_report(), BASELINE)
    by_count = {row["n"]: row for row in ratios["agents"]}
    assert set(by_count) == {100, 1000}  # 5,000: no baseline figure
    assert by_count[100]["daemon_cpu_per_s"] == 0.5  # 0.03 / 0.06
    assert by_count[100]["tick_ms_median"] == pytest.approx(6.0 / 7.0, abs=1e-3)
    assert by_count[1000]["tick_ms_p99"] is None  # the baseline's is 0
    assert by_count[1000]["ledger_rows_per_agent_per_min"] is None  # the baseline has none
    assert ratios["api_bid_ms"] == {"median": 1.0, "p99": 0.25}
    assert ratios["auctioneer_fraction_1s"] is None  # the current run had no auction phase


def test_a_report_with_its_baseline_keeps_both() -> None:
    report = _full_report()
    combined = with_baseline(report, BASELINE, revision="8f5477e", commit="8f5477e" + "0" * 33)
    assert combined["baseline"]["revision"] == "8f5477e"
    assert combined["baseline"]["report"] == BASELINE
    assert combined["ratios"] == compare(report, BASELINE)
    assert {key: combined[key] for key in report} == report


def test_the_baseline_gets_only_the_flags_its_help_lists() -> None:
    old_help = "usage: maxwell bench daemon [-h] [--quick] [--seconds SECONDS] [--json]"
    flags = known_flags(old_help)
    assert flags == ["--json", "--quick", "--seconds"]
    argv = baseline_argv(flags, quick=True, seconds=10.0, auction_seconds=5.0, api_rounds=300)
    assert argv == ["bench", "daemon", "--json", "--quick", "--seconds", "10"]
    argv = baseline_argv(
        known_flags("--json --quick --seconds S --auction-seconds A --api-rounds N"),
        quick=False,
        seconds=2.5,
        auction_seconds=5.0,
        api_rounds=300,
    )
    assert argv == [
        "bench", "daemon", "--json", "--seconds", "2.5", "--auction-seconds", "5",
        "--api-rounds", "300",
    ]  # fmt: skip


def test_database_bytes_count_what_the_database_keeps(tmp_path: Path) -> None:
    database = tmp_path / "maxwell.db"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE entries (detail TEXT)")
    before = _database_bytes(tmp_path)
    with sqlite3.connect(database) as connection:
        connection.executemany("INSERT INTO entries VALUES (?)", [("x" * 1000,)] * 100)
    after = _database_bytes(tmp_path)
    assert not (tmp_path / "maxwell.db-wal").exists() or (
        (tmp_path / "maxwell.db-wal").stat().st_size == 0
    )  # checkpointed into the database
    assert 100_000 <= after - before <= 150_000
    assert _database_bytes(tmp_path / "nothing") == 0
