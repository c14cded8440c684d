"""Thermal zones: types, temperatures, trip points, the critical temperature, and absence."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxwell.errors import SensorError
from maxwell.sensors import thermal
from sensors_support import copy_fixture, fixture, write_text

LAPTOP_SYS = fixture("intel_laptop") / "sys"


def test_zones_are_ordered_cpu_first() -> None:
    zones = thermal.find_zones(LAPTOP_SYS)
    assert [(z.zone_id, z.zone_type) for z in zones] == [
        ("thermal_zone1", "x86_pkg_temp"),
        ("thermal_zone2", "TCPU"),
        ("thermal_zone0", "acpitz"),
    ]
    assert thermal.read_temperature_c(zones[0]) == 52.0


def test_trip_points_and_critical_is_lowest_of_critical_and_hot() -> None:
    zones = {z.zone_id: z for z in thermal.find_zones(LAPTOP_SYS)}
    tcpu = zones["thermal_zone2"]
    assert tcpu.trips_c == {"critical": 105.0, "hot": 100.0, "passive": 95.0, "active": 80.0}
    assert tcpu.critical_c == 100.0  # hot comes before critical; passive/active are not limits
    assert zones["thermal_zone0"].critical_c == 119.0
    # x86_pkg_temp's only trip reads 0 (disabled): no trips, no critical temperature.
    assert zones["thermal_zone1"].trips_c == {}
    assert zones["thermal_zone1"].critical_c is None


def test_cooling_devices_only_is_absent() -> None:
    with pytest.raises(SensorError, match="no thermal zones in"):
        thermal.find_zones(fixture("vm") / "sys")


def test_unreadable_zone_temperature_is_a_sensor_error(tmp_path: Path) -> None:
    sysfs = copy_fixture("intel_laptop", tmp_path) / "sys"
    write_text(sysfs / "class" / "thermal" / "thermal_zone1" / "temp", "")
    zone = thermal.find_zones(sysfs)[0]
    with pytest.raises(SensorError, match="thermal_zone1/temp"):
        thermal.read_temperature_c(zone)
