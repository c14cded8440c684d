"""`maxwell bench audit`: the report's shape from a real `--quick` run, and its arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import last_json, maxwell
from maxwell.audit import PtraceDeniedError, UnsupportedArchitectureError, sample_threads
from maxwell.bench.audit import agent_stall_fraction, auditor_fraction, percentile
from maxwell.bench.honest import honest_audits


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0


def test_extrapolation_to_a_thousand_agents() -> None:
    # p = 0.001 per agent per 100 ms tick, 1,000 agents: 10 audits a second. At 500 µs of CPU
    # each, 5 ms a second, over 2 cores: 0.25%.
    assert auditor_fraction(500_000, cores=2) == pytest.approx(0.0025)
    # An agent is audited 0.01 times a second; 100 µs of pause each: 1 µs a second.
    assert agent_stall_fraction(100_000) == pytest.approx(1e-6)


def _skip_unless_ptrace_allowed() -> None:
    # The child's sleep is only there to keep a process alive to sample; it is killed at once.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            sample_threads(child.pid)
        except (PtraceDeniedError, UnsupportedArchitectureError) as exc:
            pytest.skip(f"instruction-pointer sampling not possible here: {exc}")
        finally:
            child.kill()


def test_quick_run_reports_pauses_and_auditor_cost() -> None:
    _skip_unless_ptrace_allowed()
    result = maxwell("bench", "audit", "--quick", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert {"ip_sample", "auditor_cpu", "setup", "detection", "cheater_profit"} <= set(report)
    detection = report["detection"]
    assert [point["ticks"] for point in detection["points"]] == [100, 693, 2000, 4603]
    for point in detection["points"]:  # 400 trials: within 4 standard errors
        assert abs(point["measured"] - point["expected"]) < 0.1
    profit = report["cheater_profit"]
    assert profit["bond_j"] == 999.0 and profit["mean_profit_j"][-1] < 0
    assert profit["negative_from_tick"] is not None

    ip = report["ip_sample"]
    assert ip["samples"] > 0 and ip["threads"] >= 3
    assert 0 < ip["pause_us_median"] <= ip["pause_us_p99"]
    assert set(ip["by_workload"]) == {"python_loop", "numpy_matmul", "python_threads"}
    for row in ip["by_workload"].values():
        assert {"pause_us_median", "pause_us_p99", "samples", "threads", "histogram"} <= set(row)
        assert sum(row["histogram"].values()) <= 1.0 + 1e-9
    assert next(iter(ip["by_workload"]["python_loop"]["histogram"])).startswith(
        ("libpython", "python")
    )
    assert "openblas" in next(iter(ip["by_workload"]["numpy_matmul"]["histogram"]))

    cpu = report["auditor_cpu"]
    assert cpu["audit_probability"] == 0.001 and cpu["agents"] == 1000 and cpu["tick_s"] == 0.1
    assert cpu["node_cores"] >= 1 and "cores" in cpu["node_cores_source"]
    assert 0 < cpu["fraction_of_node_cpu"] < 1
    for row in cpu["by_workload"].values():
        assert row["audits"] > 0 and row["audits_failed"] == 0  # honest workloads pass
        assert row["audit_cpu_us_median"] > 0 and row["manifest_pages"] > 0
    assert report["setup"]["quick"] is True
    erasure = report["erasure_meter"]
    assert [row["resident_mb"] for row in erasure["rows"]] == [64]
    assert erasure["ms_per_mb"] == erasure["rows"][-1]["ms_per_mb"] > 0


def test_human_output_is_a_table() -> None:
    _skip_unless_ptrace_allowed()
    result = maxwell("bench", "audit", "--quick", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pause p50" in result.stdout and "python_loop" in result.stdout


@pytest.mark.root
def test_honest_families_audited_after_every_tick_are_never_slashed() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the honest agents run in real cgroups")
    found = honest_audits(agents=2, rounds=8)
    assert found["cgroup"] != "none"
    audits = found["audits"]
    assert isinstance(audits, int) and audits >= 8  # most rounds audit both agents
    assert found["falsely_slashed"] == 0, found["first_findings"]
