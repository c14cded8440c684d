"""Smoke tests of `maxwell bench meter`'s pure part: counts in, report out. No timing asserted."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from maxwell.bench.meter import (
    CODECARBON_SKIPPED,
    Ledger,
    RatePhase,
    add_arguments,
    attribution_summary,
    build_report,
    codecarbon_summary,
    codecarbon_version,
    render_table,
    run_meter_bench,
)
from maxwell.errors import UsageError

HOST = {
    "cpus": 2,
    "cpu_model": "AMD EPYC",
    "cgroup": "v1",
    "energy_source": "model",
    "measured": False,
}
TRACKED = {
    "window_wall_s": 20.0,
    "window_cpu_s": 0.12,
    "startup_wall_s": 1.8,
    "startup_cpu_s": 0.6,
    "version": "3.3.2",
    "mode": "process",
    "duration_s": 21.0,
    "energy_j": 210.0,
    "cpu_energy_j": 0.0,
    "ram_energy_j": 210.0,
    "cpu_power_w": 4.0,
    "ram_power_w": 10.0,
    "cpu_tdp_w": 8,
}
UNTRACKED = {"window_wall_s": 20.0, "window_cpu_s": 0.02}


def phase(hz: float, ticks: int, meter_cpu_s: float, baseline_cpu_s: float) -> RatePhase:
    return RatePhase(
        hz=hz,
        workloads=100,
        ticks=ticks,
        wall_s=ticks / hz,
        meter_cpu_s=meter_cpu_s,
        baseline_cpu_s=baseline_cpu_s,
        process_cpu_s=meter_cpu_s + baseline_cpu_s,
    )


def test_rate_report_divides_cpu_by_wall_and_by_workload_samples() -> None:
    report = phase(10.0, 100, meter_cpu_s=0.05, baseline_cpu_s=0.01).report()
    assert report["ticks"] == 100
    assert report["cpu_fraction_of_core"] == pytest.approx(0.005)
    assert report["us_per_workload_sample"] == pytest.approx(5.0)
    assert report["baseline_us_per_workload_read"] == pytest.approx(1.0)
    assert report["ratio_to_baseline"] == pytest.approx(5.0)


def test_rate_report_with_no_ticks_has_no_ratios_rather_than_a_division_error() -> None:
    report = RatePhase(hz=1.0, workloads=100).report()
    assert report["us_per_workload_sample"] is None
    assert report["cpu_fraction_of_core"] is None


def test_codecarbon_cost_is_the_tracker_minus_the_same_work_without_it() -> None:
    summary = codecarbon_summary(TRACKED, UNTRACKED)
    assert summary["cpu_ms_per_s"] == pytest.approx(5.0)  # (0.12 - 0.02) / 20 s
    assert summary["us_per_workload_sample"] == pytest.approx(5000.0)  # one tree at 1 Hz
    assert summary["startup_s"] == pytest.approx(1.8)
    assert summary["assumed"]["ram_power_w"] == 10.0


def test_report_shape_and_ratio_to_codecarbon_at_the_same_rate() -> None:
    ledger = Ledger(
        workloads_uj={"cc-tracked": 5_000_000, "idle-000": 0},
        house_uj=15_000_000,
        total_uj=20_000_000,
        idle_uj=10_000_000,
        window_s=20.0,
    )
    codecarbon = codecarbon_summary(TRACKED, UNTRACKED)
    attribution = attribution_summary(
        ledger, workload="cc-tracked", energy_source="model", measured=False, codecarbon=codecarbon
    )
    report = build_report(
        host=HOST,
        rates=[phase(10.0, 100, 0.05, 0.01), phase(1.0, 10, 0.01, 0.001)],
        codecarbon=codecarbon,
        attribution=attribution,
    )
    assert set(report) >= {"benchmark", "host", "rates", "codecarbon", "attribution", "target"}
    assert report["benchmark"] == "meter"
    # CodeCarbon 5000 µs per sample; Maxwell at 1 Hz: 0.01 s / 1000 samples = 10 µs.
    assert report["ratio_codecarbon_to_maxwell_per_workload_sample"] == pytest.approx(500.0)
    assert report["target"] == {
        "cpu_fraction_of_core_at_10hz_max": 0.01,
        "workloads": 100,
        "met": True,
    }
    assert attribution["maxwell"]["energy_j"] == 5.0
    # CodeCarbon's 210 J over its 21 s, scaled to the 20 s window.
    assert attribution["codecarbon"]["energy_j_scaled_to_window"] == pytest.approx(200.0)
    assert attribution["ratio_codecarbon_to_maxwell"] == pytest.approx(40.0)
    json.dumps(report)  # the --json output must serialise as is


def test_skipped_codecarbon_renders_and_serialises() -> None:
    from rich.console import Console

    report = build_report(
        host=HOST,
        rates=[phase(10.0, 100, 0.05, 0.01)],
        codecarbon={"skipped": CODECARBON_SKIPPED},
        attribution=attribution_summary(
            Ledger(), workload="busy-0", energy_source="model", measured=False, codecarbon=None
        ),
    )
    assert "ratio_codecarbon_to_maxwell_per_workload_sample" not in report
    out = io.StringIO()
    Console(file=out, width=120).print(render_table(report))
    assert "pip install maxwell[bench]" in " ".join(out.getvalue().split())
    json.dumps(report)


def test_flags_and_their_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.workloads, args.seconds, args.json, args.no_codecarbon) == (
        100,
        10.0,
        False,
        False,
    )
    args = parser.parse_args(["--workloads", "5", "--seconds", "0.5", "--json", "--no-codecarbon"])
    assert (args.workloads, args.seconds, args.json, args.no_codecarbon) == (5, 0.5, True, True)


def test_too_few_workloads_is_a_usage_error_before_touching_the_machine() -> None:
    with pytest.raises(UsageError):
        run_meter_bench(workloads=1)


def test_codecarbon_version_is_found_without_importing_it() -> None:
    import sys

    version = codecarbon_version()
    assert version is None or isinstance(version, str)
    assert "codecarbon" not in sys.modules


def test_the_target_is_not_judged_on_another_workload_count() -> None:
    few = phase(10.0, 100, 0.001, 0.001)
    few.workloads = 10
    report = build_report(host=HOST, rates=[few], codecarbon={"skipped": "x"}, attribution={})
    assert "met" not in report["target"]
