"""Smoke tests of `maxwell bench daemon`'s pure part: timings in, report out. No timing asserted."""

from __future__ import annotations

import argparse
import json

import pytest

from maxwell.bench.daemon import (
    TARGET_AUCTIONEER_FRACTION_AT_1S,
    TickPhase,
    add_arguments,
    auctioneer_fraction,
    build_report,
    percentile,
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
    assert set(report) == {
        "agents",
        "auctioneer_fraction",
        "auctioneer",
        "api_bid_ms",
        "target",
        "host",
    }
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


def test_the_arguments_default_to_both_agent_counts() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.quick, defaults.json, defaults.seconds) == (False, False, 10.0)
    assert parser.parse_args(["--quick", "--json"]).quick is True
