"""Thermal zones: `<sysfs>/class/thermal/thermal_zoneN/`.

Each zone has `type` (x86_pkg_temp, acpitz, cpu-thermal, ...), `temp` (m°C) and trip points
`trip_point_K_temp` (m°C) with `trip_point_K_type` (critical, hot, passive, active).

The critical temperature used for headroom is the LOWEST of the zone's `critical` and `hot` trip
points: `hot` is where the platform starts emergency action, before `critical` shuts it down, so
headroom runs out at whichever comes first. A zone with neither has no critical temperature here
(the facade falls back to the configured one). The lowest trip of each type is reported too.

A machine may have `/sys/class/thermal` holding only cooling devices and no zones (a VM): that
is "absent". A zone whose `temp` fails to read (some ACPI zones return EIO/ENODATA) is skipped by
the facade with a warning. A zone directory this user may not list is left out and named in
`skipped`; an unlistable `class/thermal` is a `SensorPermissionError` (the facade reports the
backend as unreadable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from maxwell.errors import SensorError
from maxwell.sensors._sysfs import (
    is_dir,
    list_dir,
    read_int,
    read_optional_int,
    read_optional_text,
)

CRITICAL_TRIP_TYPES = ("critical", "hot")
# Zone types that measure the CPU package, in order of preference.
_CPU_ZONE_RE = re.compile(r"x86_pkg_temp|cpu|pkg|soc|k10temp|tcpu", re.IGNORECASE)

_ZONE_RE = re.compile(r"^thermal_zone(\d+)$")
_TRIP_RE = re.compile(r"^trip_point_(\d+)_type$")


@dataclass(frozen=True)
class ThermalZone:
    zone_id: str  # "thermal_zone0"
    zone_type: str  # "x86_pkg_temp"
    path: Path
    trips_c: dict[str, float] = field(default_factory=dict, compare=False)  # lowest per type

    @property
    def critical_c(self) -> float | None:
        limits = [self.trips_c[t] for t in CRITICAL_TRIP_TYPES if t in self.trips_c]
        return min(limits) if limits else None

    @property
    def is_cpu(self) -> bool:
        return _CPU_ZONE_RE.search(self.zone_type) is not None

    @property
    def preference(self) -> int:
        """Lower is better: x86_pkg_temp, then other CPU-ish zones, then the rest."""
        if self.zone_type == "x86_pkg_temp":
            return 0
        return 1 if self.is_cpu else 2


def _trip_points(path: Path) -> dict[str, float]:
    trips: dict[str, float] = {}
    for entry in list_dir(path):
        match = _TRIP_RE.match(entry.name)
        if match is None:
            continue
        trip_type = read_optional_text(entry)
        millidegrees = read_optional_int(path / f"trip_point_{match.group(1)}_temp")
        # Disabled trips read as 0 or negative on some platforms; they are not limits.
        if trip_type is None or millidegrees is None or millidegrees <= 0:
            continue
        celsius = millidegrees / 1000.0
        trips[trip_type] = min(celsius, trips.get(trip_type, celsius))
    return trips


def _zone(entry: Path) -> ThermalZone:
    """The zone in directory `entry`; `SensorError` when the directory cannot be listed."""
    trips_c = _trip_points(entry)
    zone_type = read_optional_text(entry / "type") or entry.name
    return ThermalZone(zone_id=entry.name, zone_type=zone_type, path=entry, trips_c=trips_c)


def find_zones(
    sysfs_root: str | Path = "/sys", *, skipped: list[str] | None = None
) -> list[ThermalZone]:
    """Every thermal zone, best CPU zone first; raises `SensorError` (the reason) when none.

    A zone that cannot be read is left out, and a line saying why is appended to `skipped`.
    """
    base = Path(sysfs_root) / "class" / "thermal"
    if not is_dir(base):
        raise SensorError(f"no {base}", path=str(base))
    zones: list[ThermalZone] = []
    errors: list[SensorError] = []
    for entry in list_dir(base):
        if _ZONE_RE.match(entry.name) is None:
            continue
        try:
            if is_dir(entry):
                zones.append(_zone(entry))
        except SensorError as error:
            errors.append(error)
            if skipped is not None:
                skipped.append(f"{entry.name} ({error})")
    if not zones and errors:  # say why (unreadable), not merely that nothing was found
        raise type(errors[0])(f"no readable thermal zone: {errors[0]}", path=errors[0].path)
    if not zones:
        raise SensorError(f"no thermal zones in {base}", path=str(base))
    return sorted(zones, key=lambda z: (z.preference, int(z.zone_id.removeprefix("thermal_zone"))))


def read_temperature_c(zone: ThermalZone) -> float:
    """The zone's temperature in °C; raises `SensorError` when the zone cannot be read."""
    return read_int(zone.path / "temp") / 1000.0
