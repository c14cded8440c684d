"""The facade: source preference, labels, wrap correction, ambiguity warnings, the idle split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.sensors import Kind, NodeSample, Reading, Sensors, Source, msr
from sensors_support import copy_fixture, fixture, ticks, write_msr, write_stat, write_text

RANGE_UJ = 262_143_328_850


def _detect(root: Path, clock: FakeClock | None = None, **kwargs: object) -> Sensors:
    return Sensors.detect(
        sysfs_root=root / "sys",
        dev_root=root / "dev",
        procfs_root=root / "proc",
        clock=clock or FakeClock(),
        nvml=None,
        **kwargs,  # type: ignore[arg-type]
    )


def test_intel_laptop_uses_psys_and_x86_pkg_temp() -> None:
    sensors = _detect(fixture("intel_laptop"))
    assert (sensors.energy_source, sensors.energy_measured) == (Source.RAPL_POWERCAP, True)
    assert (sensors.temperature_source, sensors.temperature_measured) == (Source.THERMAL, True)
    sample = sensors.sample()
    # x86_pkg_temp (52 °C, no trip: default 95) has less headroom than TCPU (50 °C, hot at 100).
    assert (sample.temperature_c, sample.critical_c, sample.headroom_c) == (52.0, 95.0, 43.0)
    describe = sensors.describe()
    assert describe[0] == (
        "rapl-powercap: found intel-rapl:0 package-0, intel-rapl:0:0 core, intel-rapl:0:1 uncore, "
        "intel-rapl:0:2 dram, intel-rapl:1 psys, intel-rapl-mmio:0 package-0 (duplicates "
        "intel-rapl:0); node energy = psys"
    )
    assert [line.split(":")[0] for line in describe] == [
        "rapl-powercap", "rapl-msr", "hwmon", "thermal", "nvml", "model",
    ]  # fmt: skip
    assert describe[-1].endswith("not used (measured sources found)")


def test_laptop_readings_are_labelled() -> None:
    readings = {r.id: r for r in _detect(fixture("intel_laptop")).readings()}
    package = readings["intel-rapl:0"]
    assert package == Reading(
        id="intel-rapl:0",
        source=Source.RAPL_POWERCAP,
        kind=Kind.ENERGY,
        unit="J",
        value=81_234.56789,
        measured=True,
        label="package-0",
        extra=package.extra,
    )
    assert dict(package.extra) == {
        "max_energy_range_j": 262_143.32885,
        "in_node_energy": False,
        "max_power_w": 28.0,
    }
    assert readings["intel-rapl:1"].extra["in_node_energy"] is True
    assert readings["intel-rapl-mmio:0"].extra["duplicate_of"] == "intel-rapl:0"
    zone = readings["thermal_zone2"]
    assert (zone.label, zone.value, zone.unit) == ("TCPU", 50.0, "C")
    assert dict(zone.extra) == {
        "trip_active_c": 80.0,
        "trip_critical_c": 105.0,
        "trip_hot_c": 100.0,
        "trip_passive_c": 95.0,
        "critical_c": 100.0,
    }
    assert readings["hwmon4/coretemp/Package id 0"].extra == {"critical_c": 100.0, "max_c": 100.0}
    assert not any(r.source == Source.MODEL for r in readings.values())  # all measured here
    ids = [r.id for r in _detect(fixture("intel_laptop")).readings()]
    assert len(ids) == len(set(ids))
    json.dumps([r.to_json() for r in readings.values()])  # serialisable as is
    assert package.to_json()["source"] == "rapl-powercap"
    assert package.to_json()["max_power_w"] == 28.0


def test_wrapped_counter_across_two_samples_keeps_the_interval(tmp_path: Path) -> None:
    root = copy_fixture("intel_laptop", tmp_path)
    psys = root / "sys" / "class" / "powercap" / "intel-rapl:1" / "energy_uj"
    write_stat(root / "proc", busy_ticks=0, idle_ticks=0, cpus=4)
    write_text(psys, RANGE_UJ - 1_000_000)
    clock = FakeClock(50.0)
    sensors = _detect(root, clock)
    write_text(psys, 2_000_000)  # wrapped: 1 J before the top, 2 J after
    write_stat(root / "proc", busy_ticks=ticks(1.0), idle_ticks=ticks(3.0), cpus=4)  # 25% busy
    clock.advance(1.0)
    sample = sensors.sample()
    assert sample.energy_uj == 3_000_000
    assert sample.idle_energy_uj == 2_250_000  # Kepler's split: energy x (1 - utilisation)
    assert sample.power_w == pytest.approx(3.0)
    assert sample.warnings == ()
    write_text(psys, 2_500_000)
    clock.advance(0.1)
    assert sensors.sample().energy_uj == 3_500_000  # cumulative since detect


def test_ambiguous_interval_is_flagged_with_a_warning(tmp_path: Path) -> None:
    root = copy_fixture("intel_laptop", tmp_path)
    psys = root / "sys" / "class" / "powercap" / "intel-rapl:1" / "energy_uj"
    clock = FakeClock()
    sensors = _detect(root, clock)
    write_text(psys, 150_000_000_000 + 10_000_000)
    clock.advance(400.0)
    sample = sensors.sample()
    assert sample.energy_uj == 10_000_000
    assert len(sample.warnings) == 1
    assert sample.warnings[0].startswith(
        "intel-rapl:1 energy counter range 262 kJ may have wrapped more than once in 400 s"
    )
    assert "reading flagged" in sample.warnings[0]


def test_two_socket_server_sums_packages_and_dram(tmp_path: Path) -> None:
    root = copy_fixture("intel_server_2s", tmp_path)
    clock = FakeClock()
    sensors = _detect(root, clock)
    zones = root / "sys" / "class" / "powercap"
    for zone, start, joules in (
        ("intel-rapl:0", 200_000_000_000, 100),
        ("intel-rapl:0:0", 30_000_000_000, 10),
        ("intel-rapl:1", 210_000_000_000, 120),
        ("intel-rapl:1:0", 31_000_000_000, 12),
    ):
        write_text(zones / zone / "energy_uj", start + joules * 1_000_000)
    clock.advance(1.0)
    sample = sensors.sample()
    assert sample.energy_uj == 242_000_000
    # No thermal zones: coretemp's Package id 1 (67 of 94 °C) has the least headroom.
    assert (sample.temperature_source, sample.temperature_c, sample.critical_c) == (
        Source.HWMON, 67.0, 94.0,
    )  # fmt: skip


def test_measured_energy_without_temperature_sensor_drives_the_rc_model(tmp_path: Path) -> None:
    root = copy_fixture("intel_server_2s", tmp_path)
    shutil.rmtree(root / "sys" / "class" / "hwmon")
    clock = FakeClock()
    sensors = _detect(root, clock)
    assert sensors.energy_measured and not sensors.temperature_measured
    assert sensors.temperature_source == Source.MODEL
    assert sensors.describe()[-1].endswith("used for temperature (RC driven by measured power)")
    package0 = root / "sys" / "class" / "powercap" / "intel-rapl:0" / "energy_uj"
    temperatures = []
    for step in range(1, 301):  # 410 W (both packages' TDP, 2 x 205 W) for 300 s
        write_text(package0, 200_000_000_000 + step * 410_000_000)
        clock.advance(1.0)
        sample = sensors.sample()
        temperatures.append(sample.temperature_c)
    assert sample.power_w == pytest.approx(410.0)
    assert (sample.temperature_measured, sample.temperature_source) == (False, Source.MODEL)
    assert temperatures[0] > 25.0
    assert 79.9 < temperatures[-1] <= 80.0  # R calibrated so that TDP settles at full_load_c
    labels = {r.id: r.label for r in sensors.readings()}
    assert labels["model:cpu/temp"] == "CPU die (RC model on measured power)"
    assert "model:cpu" not in labels  # energy is measured: no modelled energy reading


def _everything_tree(tmp_path: Path) -> Path:
    """The laptop tree plus Intel MSRs and an amd_energy hwmon device: every energy source."""
    root = copy_fixture("intel_laptop", tmp_path)
    write_msr(root / "dev", 0, {msr.INTEL_POWER_UNIT: 0xA1003, msr.INTEL_PKG_ENERGY: 77})
    shutil.copytree(
        fixture("amd_2s") / "sys" / "class" / "hwmon" / "hwmon5",
        root / "sys" / "class" / "hwmon" / "hwmon5",
    )
    return root


def test_energy_preference_powercap_then_msr_then_hwmon_then_model(tmp_path: Path) -> None:
    root = _everything_tree(tmp_path)
    assert _detect(root).energy_source == Source.RAPL_POWERCAP
    shutil.rmtree(root / "sys" / "class" / "powercap")
    assert _detect(root).energy_source == Source.RAPL_MSR
    assert _detect(root, use_msr=False).energy_source == Source.HWMON
    shutil.rmtree(root / "sys" / "class" / "hwmon" / "hwmon5")
    sensors = _detect(root, use_msr=False)
    assert (sensors.energy_source, sensors.energy_measured) == (Source.MODEL, False)
    readings = {r.id: r for r in sensors.readings()}
    assert readings["model:cpu"].measured is False
    assert readings["model:cpu"].label == "CPU package (model)"
    assert readings["model:cpu/power"].unit == "W"
    assert "model:cpu/temp" not in readings  # temperature is measured (thermal zones)


def test_temperature_preference_thermal_then_hwmon_cpu_then_other_zone(tmp_path: Path) -> None:
    root = copy_fixture("intel_laptop", tmp_path)
    thermal = root / "sys" / "class" / "thermal"
    sensors = _detect(root)
    assert sensors.temperature_source == Source.THERMAL
    shutil.rmtree(thermal / "thermal_zone1")
    shutil.rmtree(thermal / "thermal_zone2")
    sensors = _detect(root)  # acpitz only: coretemp Package id 0 is a better CPU sensor
    assert sensors.temperature_source == Source.HWMON
    assert sensors.sample().temperature_c == 52.0
    shutil.rmtree(root / "sys" / "class" / "hwmon")
    sample = _detect(root).sample()
    assert (sample.temperature_source, sample.temperature_c, sample.critical_c) == (
        Source.THERMAL, 27.8, 119.0,
    )  # fmt: skip


def test_a_temperature_sensor_dying_mid_run_falls_back_with_a_warning(tmp_path: Path) -> None:
    root = copy_fixture("intel_laptop", tmp_path)
    thermal = root / "sys" / "class" / "thermal"
    sensors = _detect(root)
    write_text(thermal / "thermal_zone1" / "temp", "garbage")
    sample = sensors.sample()
    assert (sample.temperature_c, sample.critical_c) == (50.0, 100.0)  # TCPU still reads
    assert any(w.startswith("thermal_zone1:") for w in sample.warnings)
    write_text(thermal / "thermal_zone2" / "temp", "garbage")
    sample = sensors.sample()
    assert (sample.temperature_source, sample.temperature_measured) == (Source.MODEL, False)
    assert "no temperature sensor could be read; using the RC model" in sample.warnings


def test_an_unreadable_energy_counter_is_caught_up_at_the_next_good_read(tmp_path: Path) -> None:
    root = copy_fixture("intel_laptop", tmp_path)
    psys = root / "sys" / "class" / "powercap" / "intel-rapl:1" / "energy_uj"
    clock = FakeClock()
    sensors = _detect(root, clock)
    write_text(psys, "")
    clock.advance(1.0)
    sample = sensors.sample()
    assert sample.energy_uj == 0 and "intel-rapl:1" in sample.warnings[0]
    write_text(psys, 150_000_000_000 + 7_000_000)
    clock.advance(1.0)
    assert sensors.sample().energy_uj == 7_000_000  # nothing lost


def test_this_host() -> None:
    """On the real machine: with no RAPL, hwmon or MSR here, the source must be the model."""
    with Sensors.detect(clock=FakeClock()) as sensors:
        sample = sensors.sample()
        assert isinstance(sample, NodeSample)
        has_sensor = (
            any(Path("/sys/class/powercap").glob("intel-rapl*"))
            or any(Path("/sys/class/hwmon").glob("hwmon*/energy*_input"))
            or any(Path("/dev/cpu").glob("*/msr"))
        )
        if not has_sensor:
            assert sensors.energy_source == Source.MODEL
            assert sensors.energy_measured is False
            assert sample.energy_measured is False
        assert len(sensors.describe()) == 6
        assert all(r.id for r in sensors.readings())


def test_extra_never_replaces_a_documented_json_key() -> None:
    reading = Reading(
        id="intel-rapl:0",
        source=Source.RAPL_POWERCAP,
        kind=Kind.ENERGY,
        unit="J",
        value=1.0,
        measured=True,
        label="package-0",
        extra={"measured": "maybe", "in_node_energy": True, "vcpus": 2},
    )
    document = reading.to_json()
    assert (document["measured"], document["in_node_energy"], document["vcpus"]) == (True, True, 2)
    assert list(document)[:7] == ["id", "source", "kind", "unit", "value", "measured", "label"]
    assert json.loads(json.dumps(document))["in_node_energy"] is True


def test_flags_and_counts_in_extra_are_booleans_and_ints_never_strings() -> None:
    sensors = _detect(fixture("amd_2s"), use_msr=False)
    for reading in sensors.readings():
        for key, value in reading.extra.items():
            if key == "in_node_energy":
                assert isinstance(value, bool), (reading.id, value)
            assert value not in ("yes", "no"), (reading.id, key)
