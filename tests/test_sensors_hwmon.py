"""hwmon channels: labels, shared device names, disabled and dead channels, energy and power."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import SensorError
from maxwell.sensors import Kind, Sensors, Source, hwmon
from maxwell.sensors.counters import EnergyCounter
from sensors_support import copy_fixture, fixture, write_text

AMD = fixture("amd_2s")


def _by_id() -> dict[str, hwmon.HwmonChannel]:
    return {c.channel_id: c for c in hwmon.find_channels(AMD / "sys")}


def test_channels_named_by_device_driver_and_label() -> None:
    assert list(_by_id()) == [
        "hwmon0/k10temp/Tctl",
        "hwmon0/k10temp/Tccd1",
        "hwmon1/k10temp/Tctl",  # the second socket's k10temp: same name, its own id
        "hwmon1/k10temp/Tccd1",
        "hwmon2/amdgpu/power1",
        "hwmon2/amdgpu/edge",
        "hwmon2/amdgpu/junction",
        "hwmon3/nvme/Composite",
        "hwmon3/nvme/Sensor 1",
        "hwmon3/nvme/Sensor 2",  # temp4 ("Sensor 3") has temp4_enable = 0: skipped
        "hwmon5/amd_energy/Ecore000",
        "hwmon5/amd_energy/Esocket0",
        "hwmon5/amd_energy/Esocket1",
    ]


def test_values_and_limits() -> None:
    channels = _by_id()
    gpu_power = channels["hwmon2/amdgpu/power1"]
    assert gpu_power.kind is Kind.POWER and gpu_power.path.name == "power1_average"
    assert channels["hwmon1/k10temp/Tctl"].kind is Kind.TEMPERATURE  # the enum, not "temp"
    assert hwmon.read_value(gpu_power) == 35_000_000  # µW
    edge = channels["hwmon2/amdgpu/edge"]
    assert edge.extra == {"critical_c": 100.0}
    assert hwmon.read_value(channels["hwmon1/k10temp/Tctl"]) == 61_500
    assert channels["hwmon1/k10temp/Tctl"].is_cpu_temperature
    assert not channels["hwmon1/k10temp/Tccd1"].is_cpu_temperature
    assert not edge.is_cpu_temperature
    sockets = [c.channel_id for c in channels.values() if c.is_cpu_socket_energy]
    assert sockets == ["hwmon5/amd_energy/Esocket0", "hwmon5/amd_energy/Esocket1"]


def test_dead_channels_raise_sensor_errors() -> None:
    channels = _by_id()
    with pytest.raises(SensorError, match="not an integer"):
        hwmon.read_value(channels["hwmon3/nvme/Sensor 1"])
    with pytest.raises(SensorError, match="Is a directory"):
        hwmon.read_value(channels["hwmon3/nvme/Sensor 2"])


def test_power_average_interval_and_input_fallback(tmp_path: Path) -> None:
    sysfs = copy_fixture("amd_2s", tmp_path) / "sys"
    device = sysfs / "class" / "hwmon" / "hwmon2"
    write_text(device / "power1_average_interval", 1000)
    write_text(device / "power2_input", 12_500_000)
    channels = {c.channel_id: c for c in hwmon.find_channels(sysfs)}
    assert channels["hwmon2/amdgpu/power1"].extra == {"average_interval_s": 1.0}
    assert hwmon.read_value(channels["hwmon2/amdgpu/power2"]) == 12_500_000


def test_duplicate_labels_inside_one_device_stay_unique(tmp_path: Path) -> None:
    sysfs = copy_fixture("amd_2s", tmp_path) / "sys"
    write_text(sysfs / "class" / "hwmon" / "hwmon2" / "power1_label", "edge")
    ids = [c.channel_id for c in hwmon.find_channels(sysfs)]
    assert "hwmon2/amdgpu/edge" in ids and "hwmon2/amdgpu/edge#temp1" in ids
    assert len(ids) == len(set(ids))


def test_no_hwmon_is_absent(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="class/hwmon"):
        hwmon.find_channels(fixture("vm") / "sys")


def test_facade_reports_dead_channels_as_warnings_not_crashes() -> None:
    sensors = Sensors.detect(
        sysfs_root=AMD / "sys",
        dev_root=AMD / "dev",
        procfs_root=AMD / "proc",
        clock=FakeClock(),
        nvml=None,
    )
    readings = {r.id: r for r in sensors.readings()}
    assert "hwmon3/nvme/Composite" in readings
    assert "hwmon3/nvme/Sensor 1" not in readings and "hwmon3/nvme/Sensor 2" not in readings
    dead = [w for w in sensors.warnings if "dead channel" in w]
    assert len(dead) == 2
    assert any("hwmon3/nvme/Sensor 1" in w and "not an integer" in w for w in dead)
    gpu = readings["hwmon2/amdgpu/power1"]
    assert (gpu.kind, gpu.unit, gpu.value, gpu.measured) == (Kind.POWER, "W", 35.0, True)
    tctl = readings["hwmon1/k10temp/Tctl"]
    assert (tctl.kind, tctl.unit, tctl.value, tctl.label) == (Kind.TEMPERATURE, "C", 61.5, "Tctl")


def test_facade_uses_cpu_socket_energy_and_hottest_k10temp() -> None:
    sensors = Sensors.detect(
        sysfs_root=AMD / "sys",
        dev_root=AMD / "dev",
        procfs_root=AMD / "proc",
        clock=FakeClock(),
        nvml=None,
    )
    assert (sensors.energy_source, sensors.energy_measured) == (Source.HWMON, True)
    assert (sensors.temperature_source, sensors.temperature_measured) == (Source.HWMON, True)
    sample = sensors.sample()
    assert sample.temperature_c == 61.5  # the second socket, least headroom (no crit: 95 °C)
    assert sample.critical_c == 95.0
    readings = {r.id: r for r in sensors.readings()}
    assert readings["hwmon5/amd_energy/Esocket0"].extra["in_node_energy"] is True
    assert readings["hwmon5/amd_energy/Ecore000"].extra["in_node_energy"] is False
    assert readings["hwmon5/amd_energy/Esocket0"].value == 3000.0  # J


def _amd_sensors(root: Path, clock: FakeClock) -> Sensors:
    return Sensors.detect(
        sysfs_root=root / "sys",
        dev_root=root / "dev",
        procfs_root=root / "proc",
        clock=clock,
        nvml=None,
    )


def test_each_energy_driver_has_its_own_counter_range(tmp_path: Path) -> None:
    sysfs = copy_fixture("amd_2s", tmp_path) / "sys"
    gpu = sysfs / "class" / "hwmon" / "hwmon6"
    write_text(gpu / "name", "i915")
    write_text(gpu / "energy1_input", 2**32 - 1_000_000)
    channels = {c.channel_id: c for c in hwmon.find_channels(sysfs)}
    i915 = channels["hwmon6/i915/energy1"]
    assert i915.kind == Kind.ENERGY
    assert i915.energy_range_uj == 2**32 and i915.extra == {"max_energy_range_j": 4294.967296}
    socket = channels["hwmon5/amd_energy/Esocket0"]
    assert socket.energy_range_uj is None  # amd_energy: a 64-bit accumulator, no wrap
    assert "max_energy_range_j" not in socket.extra


def test_i915_style_32_bit_energy_wrap_is_counted() -> None:
    counter = EnergyCounter("hwmon6/i915/energy1", range_units=hwmon.energy_range_uj("i915"))
    counter.observe(2**32 - 1_000_000, at_s=0.0)
    update = counter.observe(4_000_000, at_s=1.0)
    assert (update.wrapped, update.delta_uj, update.warning) == (True, 5_000_000, None)


def test_amd_energy_long_interval_at_a_high_count_has_no_false_wrap_warning(
    tmp_path: Path,
) -> None:
    # amd_energy keeps a 64-bit µJ accumulator: 10 s at up to 1 kW is no reason to suspect that
    # it went round a 2^32 µJ (4.3 kJ) range it does not have.
    root = copy_fixture("amd_2s", tmp_path)
    device = root / "sys" / "class" / "hwmon" / "hwmon5"
    write_text(device / "energy2_input", 2**40)
    write_text(device / "energy3_input", 2**41)
    clock = FakeClock()
    sensors = _amd_sensors(root, clock)
    write_text(device / "energy2_input", 2**40 + 2_000_000_000)  # 200 W for 10 s
    write_text(device / "energy3_input", 2**41 + 1_500_000_000)  # 150 W for 10 s
    clock.advance(10.0)
    sample = sensors.sample()
    assert sample.energy_uj == 3_500_000_000
    assert sample.warnings == ()


def test_amd_energy_going_down_is_a_reset_not_a_wrap(tmp_path: Path) -> None:
    root = copy_fixture("amd_2s", tmp_path)
    socket0 = root / "sys" / "class" / "hwmon" / "hwmon5" / "energy2_input"
    write_text(socket0, 2**32 - 1_000_000)
    clock = FakeClock()
    sensors = _amd_sensors(root, clock)
    write_text(socket0, 4_000_000)  # the driver was reloaded: its accumulator restarted at 0
    clock.advance(1.0)
    sample = sensors.sample()
    assert sample.energy_uj == 4_000_000  # counted from zero, not 2^32 - prev + cur
    assert sample.warnings == (
        "hwmon5/amd_energy/Esocket0 energy counter went down from 4293967296 to 4000000, and "
        "it does not wrap: treated as a reset, counted from zero",
    )
