from __future__ import annotations

from pathlib import Path

import pytest

from maxwell.errors import SensorError
from maxwell.procfs import CpuTimesReader, clock_ticks_per_second, parse_proc_stat, read_cpu_times
from maxwell.sensors.model import utilisation

STAT = """cpu  100 5 50 1000 20 3 2 1 0 0
cpu0 50 2 25 500 10 1 1 0 0 0
cpu1 50 3 25 500 10 2 1 1 0 0
intr 12345 0 0
ctxt 999
"""


def test_busy_excludes_idle_and_iowait() -> None:
    times = parse_proc_stat(STAT, ticks_per_second=100)
    # busy = user + nice + system + irq + softirq = 160 ticks of 10 ms. Steal (1 tick) is not
    # busy: the hypervisor ran someone else. It stays in the total as time that passed.
    assert times.busy_ns == 160 * 10_000_000
    assert times.total_ns == (160 + 1000 + 20 + 1) * 10_000_000
    assert times.cpus == 2


def test_steal_is_not_busy_but_is_time_that_passed() -> None:
    # One vCPU for 1 s (100 ticks): 20 user + 5 system busy, 25 idle, 50 stolen by the hypervisor.
    before = parse_proc_stat("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n", 100)
    after = parse_proc_stat("cpu  20 0 5 25 0 0 0 50 0 0\ncpu0 20 0 5 25 0 0 0 50 0 0\n", 100)
    assert after.busy_ns == 25 * 10_000_000
    assert after.total_ns == 100 * 10_000_000  # the whole second: steal stays in the total
    assert after.idle_ns == 75 * 10_000_000
    # Busy a quarter of the time that passed, not 75% (steal counted as work) nor 50% (steal
    # dropped from the total, which would charge the busy quarter again for the stolen half).
    assert utilisation(before, after) == 0.25


def test_kept_reader_sees_rewrites_and_agrees_with_the_one_shot_reader(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text(STAT)
    reader = CpuTimesReader(tmp_path)
    try:
        assert reader.read() == read_cpu_times(tmp_path)
        (tmp_path / "stat").write_text(STAT.replace("cpu  100", "cpu  300", 1))
        later = reader.read()
        assert later.busy_ns - read_cpu_times(tmp_path).busy_ns == 0
        assert later.busy_ns == 360 * (1_000_000_000 // clock_ticks_per_second())
        assert later.cpus == 2
    finally:
        reader.close()
    with pytest.raises(SensorError, match="closed"):
        reader.read()


def test_missing_proc_stat_is_a_sensor_error(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="cannot read"):
        CpuTimesReader(tmp_path)


def test_real_proc_stat_reads() -> None:
    times = CpuTimesReader().read()
    assert times.total_ns >= times.busy_ns > 0
    assert times.cpus >= 1
