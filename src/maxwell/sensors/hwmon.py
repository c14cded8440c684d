"""hwmon devices: `<sysfs>/class/hwmon/hwmonN/`.

Each device has a `name` and channels named `<type><N>_<item>`:

- `energyN_input`: cumulative µJ. Each driver's counter has its own range (`energy_range_uj`):
  i915, amdgpu and unknown drivers report a 32-bit counter that wraps (`ENERGY_RANGE_UJ`);
  amd_energy and zenergy fold the hardware's 32-bit counter into a 64-bit µJ accumulator in the
  driver, which does not wrap in practice (2^64 µJ is ~580,000 years at 1 kW): a decrease there is
  a reset (driver reload), never a wrap.
- `powerN_average` (µW, averaged over `powerN_average_interval` ms) or `powerN_input` (µW); when a
  channel has both, `_average` is used.
- `tempN_input` (m°C) with optional `tempN_crit` and `tempN_max` (m°C).
- `<type>N_label` names the channel; `<type>N_enable` = 0 means disabled: the channel is skipped.

Several devices may share a name (`k10temp` once per socket), so a channel's id is
`hwmonN/<name>/<label>`, unique because `hwmonN` is. A channel that fails to read (EIO/ENODATA
from dead hardware, a garbage value) is skipped with a warning, never a crash. A device
directory this user may not list is left out and named in `skipped`; an unlistable
`class/hwmon` is a `SensorPermissionError` (the facade reports the backend as unreadable).

Node energy from hwmon: the per-socket channels (`Esocket*`) of CPU energy drivers (amd_energy,
zenergy) only. GPU energy (amdgpu, i915, xe) is reported but is not CPU node energy.
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
    read_text,
)
from maxwell.sensors._types import Kind

ENERGY_RANGE_UJ = 2**32
CPU_ENERGY_DRIVERS = frozenset({"amd_energy", "zenergy"})
# Drivers whose energyN_input is a 64-bit µJ accumulator kept by the driver (amd_energy's and
# zenergy's accumulate-on-read of the 32-bit MSR): it does not wrap, so it has no range.
NON_WRAPPING_ENERGY_DRIVERS = CPU_ENERGY_DRIVERS
# Drivers whose temperature channel is the CPU package's, and the label preferred on each.
CPU_TEMPERATURE_DRIVERS: dict[str, tuple[str, ...]] = {
    "k10temp": ("Tctl", "Tdie"),
    "zenpower": ("Tdie", "Tctl"),
    "coretemp": ("Package id",),
    "cpu_thermal": ("",),
}

_CHANNEL_RE = re.compile(r"^(energy|power|temp)(\d+)_(input|average)$")
_KINDS = {"energy": Kind.ENERGY, "power": Kind.POWER, "temp": Kind.TEMPERATURE}


def energy_range_uj(driver: str) -> int | None:
    """Where `driver`'s energy counter wraps, µJ; None for a 64-bit accumulator that does not."""
    return None if driver in NON_WRAPPING_ENERGY_DRIVERS else ENERGY_RANGE_UJ


@dataclass(frozen=True)
class HwmonChannel:
    channel_id: str  # "hwmon2/k10temp/Tctl"
    device: str  # "hwmon2"
    driver: str  # the device's `name`: "k10temp"
    kind: Kind
    index: int
    label: str
    path: Path  # the value file
    extra: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def is_cpu_socket_energy(self) -> bool:
        return (
            self.kind == Kind.ENERGY
            and self.driver in CPU_ENERGY_DRIVERS
            and self.label.lower().startswith("esocket")
        )

    @property
    def is_cpu_temperature(self) -> bool:
        if self.kind != Kind.TEMPERATURE or self.driver not in CPU_TEMPERATURE_DRIVERS:
            return False
        return any(self.label.startswith(p) for p in CPU_TEMPERATURE_DRIVERS[self.driver])

    @property
    def energy_range_uj(self) -> int | None:
        """Where this energy channel's counter wraps, µJ (None: it does not wrap)."""
        return energy_range_uj(self.driver)


def read_value(channel: HwmonChannel) -> int:
    """The channel's raw value: µJ, µW or m°C. Raises `SensorError` for a dead channel."""
    return read_int(channel.path)


def _temperature_limits(device: Path, prefix: str) -> dict[str, float]:
    extra: dict[str, float] = {}
    for item, key in (("crit", "critical_c"), ("max", "max_c")):
        value = read_optional_int(device / f"{prefix}_{item}")
        if value is not None:
            extra[key] = value / 1000.0
    return extra


def _device_channels(device: Path) -> list[HwmonChannel]:
    """The device's enabled channels; `SensorError` when its directory cannot be listed."""
    entries = list_dir(device)
    try:
        driver = read_text(device / "name")
    except SensorError:
        driver = device.name
    found: dict[tuple[str, int], str] = {}
    for entry in entries:
        match = _CHANNEL_RE.match(entry.name)
        if match is None:
            continue
        kind, index, item = match.group(1), int(match.group(2)), match.group(3)
        if (kind, index) not in found or item == "average":
            found[(kind, index)] = entry.name
    channels: list[HwmonChannel] = []
    used_ids: set[str] = set()
    for (kind, index), filename in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        prefix = f"{kind}{index}"
        if read_optional_int(device / f"{prefix}_enable") == 0:
            continue
        label = read_optional_text(device / f"{prefix}_label") or prefix
        channel_id = f"{device.name}/{driver}/{label}"
        if channel_id in used_ids:
            channel_id = f"{channel_id}#{prefix}"
        used_ids.add(channel_id)
        extra: dict[str, float] = {}
        if kind == "temp":
            extra = _temperature_limits(device, prefix)
        elif kind == "power" and filename.endswith("_average"):
            interval = read_optional_int(device / f"{prefix}_average_interval")
            if interval is not None:
                extra["average_interval_s"] = interval / 1000.0
        elif kind == "energy":
            range_uj = energy_range_uj(driver)
            if range_uj is not None:
                extra["max_energy_range_j"] = range_uj / 1e6
        channels.append(
            HwmonChannel(
                channel_id=channel_id,
                device=device.name,
                driver=driver,
                kind=_KINDS[kind],
                index=index,
                label=label,
                path=device / filename,
                extra=extra,
            )
        )
    return channels


def _hwmon_number(path: Path) -> int:
    digits = path.name.removeprefix("hwmon")
    return int(digits) if digits.isdigit() else 1 << 30


def find_channels(
    sysfs_root: str | Path = "/sys", *, skipped: list[str] | None = None
) -> list[HwmonChannel]:
    """Every enabled hwmon channel; raises `SensorError` (the reason) when there are none.

    A device that cannot be read is left out, and a line saying why is appended to `skipped`.
    """
    base = Path(sysfs_root) / "class" / "hwmon"
    if not is_dir(base):
        raise SensorError(f"no {base}", path=str(base))
    devices = sorted((e for e in list_dir(base) if e.name.startswith("hwmon")), key=_hwmon_number)
    channels: list[HwmonChannel] = []
    errors: list[SensorError] = []
    for device in devices:
        try:
            if is_dir(device):
                channels += _device_channels(device)
        except SensorError as error:
            errors.append(error)
            if skipped is not None:
                skipped.append(f"{device.name} ({error})")
    if not channels and errors:  # say why (unreadable), not merely that nothing was found
        raise type(errors[0])(f"no readable hwmon device: {errors[0]}", path=errors[0].path)
    if not channels:
        raise SensorError(f"no energy, power or temperature channels in {base}", path=str(base))
    return channels
