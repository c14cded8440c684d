"""The modelled fallback: coefficients by CPU model, config validation, exact energy, RC heat."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import UsageError
from maxwell.procfs import CpuTimes
from maxwell.sensors import Sensors, Source
from maxwell.sensors.model import (
    CASCADE_LAKE,
    EPYC_2ND_GEN,
    EPYC_3RD_GEN,
    EPYC_4TH_GEN,
    ICE_LAKE,
    SAPPHIRE_RAPIDS,
    SKYLAKE,
    UNKNOWN_CPU,
    ModelConfig,
    PowerModel,
    coefficients_for,
    resolve,
)
from sensors_support import copy_fixture, ticks, write_stat, write_text


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("AMD EPYC 7R32", EPYC_2ND_GEN),
        ("AMD EPYC 7742 64-Core Processor", EPYC_2ND_GEN),
        ("AMD EPYC 7763 64-Core Processor", EPYC_3RD_GEN),
        ("AMD EPYC 7R13 Processor", EPYC_3RD_GEN),
        ("AMD EPYC 9654 96-Core Processor", EPYC_4TH_GEN),
        ("AMD EPYC-Rome Processor", EPYC_2ND_GEN),
        ("AMD EPYC-Milan Processor", EPYC_3RD_GEN),
        ("Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz", SKYLAKE),
        ("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", CASCADE_LAKE),
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", CASCADE_LAKE),
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ICE_LAKE),
        ("Intel(R) Xeon(R) Platinum 8488C", SAPPHIRE_RAPIDS),
        ("Intel Xeon Processor (Cascadelake)", CASCADE_LAKE),
        ("Intel Xeon Processor (Icelake)", ICE_LAKE),
        ("AMD EPYC", UNKNOWN_CPU),  # this build machine: too vague to choose a generation
        ("AMD EPYC 7601 32-Core Processor", UNKNOWN_CPU),  # 1st gen: not in the table
        ("11th Gen Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", UNKNOWN_CPU),
        ("", UNKNOWN_CPU),
    ],
)
def test_coefficients_by_model_string(model_name: str, expected: object) -> None:
    assert coefficients_for(model_name) == expected


def test_table_values_from_the_reference() -> None:
    assert (EPYC_2ND_GEN.idle_w_per_vcpu, EPYC_2ND_GEN.max_w_per_vcpu) == (0.47, 1.69)
    assert (SAPPHIRE_RAPIDS.idle_w_per_vcpu, SAPPHIRE_RAPIDS.max_w_per_vcpu) == (1.04, 4.16)
    assert (UNKNOWN_CPU.idle_w_per_vcpu, UNKNOWN_CPU.max_w_per_vcpu) == (0.74, 3.5)


def test_config_from_mapping_validates() -> None:
    config = ModelConfig.from_mapping({"vcpus": 8, "ambient_c": 30, "max_w_per_vcpu": 4})
    assert (config.vcpus, config.ambient_c, config.max_w_per_vcpu) == (8, 30.0, 4.0)
    with pytest.raises(UsageError, match=r"unknown model setting.*ambient"):
        ModelConfig.from_mapping({"ambiant_c": 20})
    with pytest.raises(UsageError, match="must be a number"):
        ModelConfig.from_mapping({"ambient_c": "hot"})
    with pytest.raises(UsageError, match="whole number"):
        ModelConfig.from_mapping({"vcpus": 2.5})
    with pytest.raises(UsageError, match="at least 1"):
        ModelConfig.from_mapping({"vcpus": 0})
    with pytest.raises(UsageError, match="must not exceed"):
        ModelConfig.from_mapping({"idle_w_per_vcpu": 5, "max_w_per_vcpu": 1})
    with pytest.raises(UsageError, match="full_load_c must be above"):
        ModelConfig(ambient_c=90.0)
    with pytest.raises(UsageError, match="must be a number"):
        ModelConfig.from_mapping({"vcpus": True})


def test_default_rc_reaches_80_c_at_full_modelled_load() -> None:
    parameters = resolve(ModelConfig(), cpu_model="AMD EPYC", cpus=2)
    assert parameters.max_power_w == pytest.approx(7.0)
    assert parameters.thermal.steady_state_c(parameters.max_power_w) == pytest.approx(80.0)
    assert parameters.thermal.time_constant_s == pytest.approx(20.0)
    assert parameters.thermal.critical_c == 95.0


def _cpu(busy_s: float, total_s: float, cpus: int = 2) -> CpuTimes:
    return CpuTimes(busy_ns=round(busy_s * 1e9), total_ns=round(total_s * 1e9), cpus=cpus)


def test_power_model_energy_is_exact_and_idle_is_the_static_part() -> None:
    parameters = resolve(ModelConfig(), cpu_model="AMD EPYC 7742", cpus=2)
    model = PowerModel(parameters, _cpu(0, 0), at_s=0.0)
    model.advance(_cpu(busy_s=6.0, total_s=20.0), at_s=10.0)  # 2 CPUs x 10 s, 30% busy
    expected_w = 2 * (0.47 + 0.3 * (1.69 - 0.47))
    assert model.utilisation == pytest.approx(0.3)
    assert model.power_w == pytest.approx(expected_w)
    assert abs(model.energy_uj - expected_w * 10 * 1e6) <= 1
    assert abs(model.idle_energy_uj - 2 * 0.47 * 10 * 1e6) <= 1


def test_rc_temperature_rises_toward_steady_state_and_stays_below_it() -> None:
    parameters = resolve(ModelConfig(), cpu_model="AMD EPYC", cpus=2)
    model = PowerModel(parameters, _cpu(0, 0), at_s=0.0)
    temperatures = []
    for second in range(1, 121):  # full load for two minutes
        model.advance(_cpu(busy_s=2.0 * second, total_s=2.0 * second), at_s=float(second))
        temperatures.append(model.temperature_c)
    assert all(b > a for a, b in itertools.pairwise(temperatures))
    assert temperatures[19] == pytest.approx(25 + 55 * (1 - math.exp(-1)), abs=1e-6)  # one tau
    assert 79.0 < temperatures[-1] < 80.0


def test_facade_model_on_a_fake_proc_tree_matches_the_formula(tmp_path: Path) -> None:
    root = copy_fixture("vm", tmp_path)
    proc = root / "proc"
    write_stat(proc, busy_ticks=ticks(100), idle_ticks=ticks(900), cpus=2)
    clock = FakeClock(1000.0)
    sensors = Sensors.detect(
        sysfs_root=root / "sys", dev_root=root / "dev", procfs_root=proc, clock=clock, nvml=None
    )
    assert (sensors.energy_source, sensors.energy_measured) == (Source.MODEL, False)
    # 10 s on 2 vCPUs = 20 CPU-seconds, 5 of them busy: 25%.
    write_stat(proc, busy_ticks=ticks(105), idle_ticks=ticks(915), cpus=2)
    clock.advance(10.0)
    sample = sensors.sample()
    watts = 2 * (0.74 + 0.25 * (3.5 - 0.74))
    assert abs(sample.energy_uj - watts * 10 * 1e6) <= 1
    assert abs(sample.idle_energy_uj - 2 * 0.74 * 10 * 1e6) <= 1
    assert sample.power_w == pytest.approx(watts)
    assert sample.at_s == 1010.0
    steady = 25 + watts * (55 / 7.0)
    assert sample.temperature_c == pytest.approx(steady + (25 - steady) * math.exp(-0.5))
    assert (sample.temperature_source, sample.temperature_measured) == (Source.MODEL, False)
    assert sample.critical_c == 95.0
    assert sample.headroom_c == pytest.approx(95.0 - sample.temperature_c)


def test_configured_model_overrides_the_table(tmp_path: Path) -> None:
    root = copy_fixture("vm", tmp_path)
    config = ModelConfig(idle_w_per_vcpu=1.0, max_w_per_vcpu=2.0, vcpus=4, critical_c=90.0)
    clock = FakeClock()
    sensors = Sensors.detect(
        sysfs_root=root / "sys",
        dev_root=root / "dev",
        procfs_root=root / "proc",
        clock=clock,
        nvml=None,
        model_config=config,
    )
    clock.advance(2.0)  # /proc/stat unchanged: utilisation stays 0, idle power only
    sample = sensors.sample()
    assert sample.energy_uj == 4 * 1.0 * 2.0 * 1_000_000
    assert sample.idle_energy_uj == sample.energy_uj
    assert sample.critical_c == 90.0


def test_modelled_power_of_a_vm_whose_vcpus_are_mostly_stolen(tmp_path: Path) -> None:
    root = copy_fixture("vm", tmp_path)
    proc = root / "proc"
    write_stat(proc, busy_ticks=0, idle_ticks=0, cpus=2)
    clock = FakeClock()
    sensors = Sensors.detect(
        sysfs_root=root / "sys", dev_root=root / "dev", procfs_root=proc, clock=clock, nvml=None
    )
    # 10 s on 2 vCPUs = 20 CPU-seconds: 5 busy, 5 idle, 10 stolen by the hypervisor.
    busy, idle, steal = ticks(5), ticks(5), ticks(10)
    write_text(proc / "stat", f"cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0\ncpu1 0")
    clock.advance(10.0)
    sample = sensors.sample()
    assert sample.power_w == pytest.approx(2 * (0.74 + 0.25 * (3.5 - 0.74)))  # 25% busy, not 75%
