"""`maxwell run` end to end: real processes, real cgroups where we are root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import NobodyPython
from helpers import (
    TIME_SCALE,
    last_json,
    maxwell,
    maxwell_cgroup_dirs,
    pids_with_tag,
    wait_until,
)
from maxwell.cgroups import open_workload_group
from maxwell.clock import SystemClock
from maxwell.runner.run import BudgetedRun, RunOptions
from maxwell.sensors import Sensors

IS_ROOT = os.geteuid() == 0
LOOPER = [sys.executable, "-m", "maxwell.samples.looper"]


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique label for the workload's processes; fails the test if any survive it."""
    label = f"mxtest-{uuid.uuid4().hex[:12]}"
    before = maxwell_cgroup_dirs()
    yield label
    survivors = pids_with_tag(label)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], f"processes left behind: {survivors}"
    assert maxwell_cgroup_dirs() - before == set(), "cgroups left behind"


def test_usage_errors_exit_2_with_one_line() -> None:
    for args in (
        ["run", "--budget", "5 parsecs", "--", "true"],
        ["run", "--budget", "5J"],
        ["run", "--budget", "5J", "--interval", "0", "--", "true"],
        ["run", "--budget", "5J", "--grace", "-1", "--", "true"],
        ["run", "--", "true"],
    ):
        result = maxwell(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "error" in result.stderr


def test_help_documents_exit_statuses() -> None:
    result = maxwell("run", "--help")
    assert result.returncode == 0
    for code in ("124", "125", "126", "127"):
        assert code in result.stdout


def test_command_not_found_is_127_and_not_executable_is_126(tmp_path: Path) -> None:
    missing = maxwell("run", "--budget", "1kJ", "--", "no-such-command-maxwell")
    assert missing.returncode == 127
    assert "not found" in missing.stderr
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    not_exec = maxwell("run", "--budget", "1kJ", "--", str(script))
    assert not_exec.returncode == 126
    assert "not executable" in not_exec.stderr


def test_command_exit_status_passes_through_with_json_report(tag: str) -> None:
    result = maxwell("run", "--budget", "1kJ", "--json", "--", "sh", "-c", f"exit 3 # {tag}")
    assert result.returncode == 3, result.stderr
    report = last_json(result.stdout)
    assert report["outcome"] == "exited"
    assert report["exit_code"] == 3
    for key in (
        "energy_j",
        "budget_j",
        "cpu_seconds",
        "wall_seconds",
        "peak_memory_bytes",
        "memory_freed_bytes",
        "landauer_j",
        "temperature_c",
        "energy_source",
        "measured",
        "cgroup",
    ):
        assert key in report, key
    assert report["budget_j"] == 1000.0
    assert report["cgroup"] in (("v1", "v2") if IS_ROOT else ("none",))
    assert isinstance(report["measured"], bool)


def test_command_killed_by_a_signal_is_reported_as_signalled(tag: str) -> None:
    result = maxwell("run", "--budget", "1kJ", "--json", "--", "sh", "-c", f"kill -USR1 $$ # {tag}")
    assert result.returncode == 128 + signal.SIGUSR1
    assert last_json(result.stdout)["outcome"] == "signalled"


def test_budget_exhaustion_is_apoptosis_within_one_interval(tag: str) -> None:
    result = maxwell(
        "run",
        "--budget",
        "3J",
        "--interval",
        "0.2",
        "--json",
        "--",
        *LOOPER,
        "--workers",
        "2",
        "--tag",
        tag,
        timeout=120,
    )
    assert result.returncode == 124, result.stderr
    report = last_json(result.stdout)
    assert report["outcome"] == "apoptosis"
    assert report["energy_at_apoptosis_j"] >= 3.0
    overshoot = report["energy_at_apoptosis_j"] - 3.0
    assert overshoot <= report["max_interval_energy_j"] + 1e-6
    assert report["cpu_seconds"] > 0.1
    assert report["energy_j"] >= report["energy_at_apoptosis_j"]
    # The workload allocates and frees memory: the Landauer figure is physical and tiny.
    if report["memory_freed_bytes"] > 0:
        assert 0 < report["landauer_j"] < 1e-6


def test_grace_period_delays_the_kill_of_a_sigterm_ignorer(tag: str) -> None:
    result = maxwell(
        "run",
        "--budget",
        f"{TIME_SCALE:g}J",
        "--interval",
        "0.1",
        "--grace",
        "1.5",
        "--json",
        "--",
        # SIGTERM ignored from the first instruction (an ignored signal stays so across exec),
        # not only once the looper has started: under emulation its start outlasted the budget.
        "sh",
        "-c",
        "trap '' TERM; exec \"$@\"",
        "sh",
        *LOOPER,
        "--workers",
        "1",
        "--tag",
        tag,
        timeout=120,
    )
    assert result.returncode == 124, result.stderr
    report = last_json(result.stdout)
    assert report["outcome"] == "apoptosis"
    # It ignored SIGTERM, so it ran through the whole grace period before the kill.
    assert report["energy_j"] > report["energy_at_apoptosis_j"]
    assert report["wall_seconds"] - report["apoptosis_after_s"] >= 1.5


def test_a_command_that_honours_sigterm_in_the_grace_period_is_still_apoptosis(tag: str) -> None:
    script = f"trap 'exit 0' TERM; while :; do :; done # {tag}"
    result = maxwell(
        "run",
        "--budget",
        "1J",
        "--interval",
        "0.1",
        "--grace",
        "5",
        "--json",
        "--",
        "sh",
        "-c",
        script,
        timeout=120,
    )
    assert result.returncode == 124, result.stderr
    report = last_json(result.stdout)
    assert report["outcome"] == "apoptosis"
    # It left on SIGTERM, well before the 5 s grace ran out.
    assert report["wall_seconds"] - report["apoptosis_after_s"] < 4.0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_maxwell_stopped_by_a_signal_leaves_nothing_behind(tag: str, signum: int) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "maxwell.cli.main",
            "run",
            "--budget",
            "1kJ",
            "--json",
            "--",
            *LOOPER,
            "--workers",
            "2",
            "--tag",
            tag,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: len(pids_with_tag(tag)) >= 2, what="the workload's two workers to start")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signum, stderr
    assert last_json(stdout)["outcome"] == "interrupted"


def test_without_root_it_runs_degraded_and_says_so(tag: str, nobody_python: NobodyPython) -> None:
    python = nobody_python.python
    result = subprocess.run(
        [
            python,
            "-m",
            "maxwell.cli.main",
            "run",
            "--budget",
            "2J",
            "--interval",
            "0.2",
            "--json",
            "--",
            python,
            "-m",
            "maxwell.samples.looper",
            "--workers",
            "2",
            "--tag",
            tag,
        ],
        env=nobody_python.env,
        user=65534,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 124, result.stderr
    assert "degraded" in result.stderr
    report = last_json(result.stdout)
    assert report["cgroup"] == "none"
    assert report["outcome"] == "apoptosis"
    assert report["degraded"]


def test_config_file_overrides_the_model_and_bad_config_is_a_usage_error(
    tag: str, tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "maxwell.toml"
    ok = maxwell(
        "run",
        "--budget",
        "1kJ",
        "--json",
        "--config",
        str(example),
        "--",
        "sh",
        "-c",
        f"true # {tag}",
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nwatts_of_joy = 3\n")
    result = maxwell("run", "--budget", "1kJ", "--config", str(bad), "--", "true")
    assert result.returncode == 2
    assert "watts_of_joy" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\n")
    result = maxwell("run", "--budget", "1kJ", "--config", str(broken), "--", "true")
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr


def test_sysfs_root_that_is_not_a_directory_is_a_usage_error() -> None:
    result = maxwell("run", "--budget", "1J", "--sysfs-root", "/nonexistent", "--", "true")
    assert result.returncode == 2
    assert "--sysfs-root /nonexistent: no such directory" in result.stderr


@dataclass
class FiredStop:
    """A stop request that arrived while Maxwell was still setting up."""

    signum: int | None = signal.SIGTERM

    def fileno(self) -> int:
        return -1  # never waited on: the run stops before it starts anything


def test_a_stop_before_the_command_starts_starts_nothing_and_is_reported(tag: str) -> None:
    group, manager, degraded = open_workload_group("stopped-early")
    sensors = Sensors.detect(nvml=None)
    try:
        run = BudgetedRun(
            RunOptions(argv=["sh", "-c", f"sleep 30 # {tag}"], budget_uj=10**9),
            sensors=sensors,
            group=group,
            clock=SystemClock(),
            layout="test",
            degraded=degraded,
            stop=FiredStop(),
        )
        report = run.execute()
    finally:
        sensors.close()
        if manager is not None:
            manager.close()
    assert report.outcome == "interrupted"
    assert report.exit_code == 128 + signal.SIGTERM
    assert report.to_json()["command_started"] is False
    assert pids_with_tag(tag) == []
