"""RAPL through the powercap sysfs interface: `<sysfs>/class/powercap/intel-rapl:N[:M]/`.

Each zone directory (a symlink into `/sys/devices/virtual/powercap/...` on a real kernel) holds
`name` (package-N, core, uncore, dram, psys), `energy_uj` (cumulative µJ), `max_energy_range_uj`
(where `energy_uj` wraps) and optionally `constraint_0_max_power_uw`. AMD Zen exposes its package
zones here too, under the same `intel-rapl` names.

`energy_uj` is readable by root only since the CVE-2020-8694 fix: that becomes a
`SensorPermissionError` saying so, in one line. A `class/powercap` this user may not list is a
`SensorPermissionError` too; a zone that cannot say its name or range is left out and named in
`skipped`.

Node energy, each joule counted once (`node_zones`):

- `psys` (platform) covers the whole SoC, package included: when a psys zone exists it is used
  alone.
- Otherwise node energy = every `package-N` zone + every `dram` zone. `core` (PP0) and `uncore`
  (PP1) are parts of their package and are never added; DRAM is a separate domain even where sysfs
  lists it as a sub-zone of a package (servers), so it is added.
- `intel-rapl-mmio:N` zones duplicate the MSR-backed `intel-rapl:N` package zone of the same name:
  the `intel-rapl` one is used and the mmio one is reported as a duplicate only. An mmio zone with
  no `intel-rapl` twin is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from maxwell.errors import SensorError, SensorPermissionError
from maxwell.sensors._sysfs import is_dir, list_dir, read_int, read_optional_int, read_text
from maxwell.sensors.counters import (
    DEFAULT_PACKAGE_MAX_POWER_W,
    POWER_LIMIT_HEADROOM,
)

_ZONE_RE = re.compile(r"^(intel-rapl(?:-mmio)?):(\d+(?::\d+)*)$")


@dataclass(frozen=True)
class PowercapZone:
    zone_id: str  # "intel-rapl:0", "intel-rapl:0:1", "intel-rapl-mmio:0"
    name: str  # "package-0", "core", "uncore", "dram", "psys"
    path: Path
    max_energy_range_uj: int
    max_power_uw: int | None
    mmio: bool
    duplicate_of: str | None = None  # the intel-rapl zone an mmio zone duplicates

    @property
    def is_subzone(self) -> bool:
        return self.zone_id.count(":") > 1

    @property
    def plausible_max_power_w(self) -> float:
        """A power this zone should not exceed, for deciding whether a counter wrapped twice."""
        if self.max_power_uw is not None and self.max_power_uw > 0:
            return self.max_power_uw / 1e6 * POWER_LIMIT_HEADROOM
        return DEFAULT_PACKAGE_MAX_POWER_W


def _zone_sort_key(zone_id: str) -> tuple[int, tuple[int, ...]]:
    match = _ZONE_RE.match(zone_id)
    assert match is not None
    return (
        1 if match.group(1).endswith("mmio") else 0,
        tuple(int(n) for n in match.group(2).split(":")),
    )


def find_zones(
    sysfs_root: str | Path = "/sys", *, skipped: list[str] | None = None
) -> list[PowercapZone]:
    """Every RAPL zone under `<sysfs>/class/powercap`; raises `SensorError` (the reason) if none.

    A zone that cannot be read is left out, and a line saying why is appended to `skipped`.
    """
    base = Path(sysfs_root) / "class" / "powercap"
    if not is_dir(base):
        raise SensorError(f"no {base}", path=str(base))
    zone_ids = sorted(
        (e.name for e in list_dir(base) if _ZONE_RE.match(e.name)), key=_zone_sort_key
    )
    if not zone_ids:
        raise SensorError(f"no intel-rapl zones in {base}", path=str(base))
    zones: list[PowercapZone] = []
    errors: list[SensorError] = []
    for zone_id in zone_ids:
        path = base / zone_id  # may be a symlink into devices/virtual/powercap: Path follows it
        try:
            name = read_text(path / "name")
            max_range = read_int(path / "max_energy_range_uj")
        except SensorError as error:  # a zone that cannot even say what it is cannot be used
            errors.append(error)
            if skipped is not None:
                skipped.append(f"{zone_id} ({error})")
            continue
        if max_range <= 0:
            continue
        zones.append(
            PowercapZone(
                zone_id=zone_id,
                name=name,
                path=path,
                max_energy_range_uj=max_range,
                max_power_uw=read_optional_int(path / "constraint_0_max_power_uw"),
                mmio=zone_id.startswith("intel-rapl-mmio"),
            )
        )
    if not zones and errors:
        raise type(errors[0])(f"no readable intel-rapl zone: {errors[0]}", path=errors[0].path)
    if not zones:
        raise SensorError(f"no readable intel-rapl zones in {base}", path=str(base))
    return _mark_mmio_duplicates(zones)


def _mark_mmio_duplicates(zones: list[PowercapZone]) -> list[PowercapZone]:
    msr_backed = {z.name: z.zone_id for z in zones if not z.mmio and not z.is_subzone}
    marked: list[PowercapZone] = []
    for zone in zones:
        twin = msr_backed.get(zone.name) if zone.mmio and not zone.is_subzone else None
        if twin is not None:
            zone = PowercapZone(
                zone_id=zone.zone_id,
                name=zone.name,
                path=zone.path,
                max_energy_range_uj=zone.max_energy_range_uj,
                max_power_uw=zone.max_power_uw,
                mmio=True,
                duplicate_of=twin,
            )
        marked.append(zone)
    return marked


def node_zones(zones: list[PowercapZone]) -> list[PowercapZone]:
    """The zones whose sum is node energy, each package once (the rule in the module docstring)."""
    usable = [z for z in zones if z.duplicate_of is None]
    psys = [z for z in usable if z.name == "psys"]
    if psys:
        return psys[:1]
    return [z for z in usable if z.name.startswith("package") or z.name == "dram"]


def read_energy_uj(zone: PowercapZone) -> int:
    """The zone's cumulative `energy_uj`; a root-only file is a clear `SensorPermissionError`."""
    path = zone.path / "energy_uj"
    try:
        return read_int(path)
    except SensorPermissionError as exc:
        raise SensorPermissionError(
            f"cannot read {path}: root-only since CVE-2020-8694; "
            "run as root or use the model fallback",
            path=str(path),
        ) from exc
