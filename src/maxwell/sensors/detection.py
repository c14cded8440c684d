"""What this machine has: probe every backend once, then choose the node's energy and temperature.

`probe_backends()` asks each backend (powercap, msr, hwmon, thermal, nvml) what it finds under
the given roots and returns a `Backends`: the sensors found and one `describe()` line per
backend. A backend that is absent, or that this user may not read, is a line ("absent (why)",
"unreadable (why)"), never an exception. `choose_energy()` and `choose_temperature()` then pick,
from what was found, the counters summed into node energy and the sensors that set the node's
temperature; both take the first reading of every candidate here, so a sensor that cannot be
read at start is never chosen.

Preference for node energy: rapl-powercap > rapl-msr > hwmon (CPU socket energy) > model (no
counters). Preference for temperature: a CPU thermal zone > a hwmon CPU channel > any other
thermal zone > the model (no probes). The facade (`maxwell.sensors.Sensors`) drives these once, in
`detect()`, and samples what they chose.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from maxwell.errors import SensorError, SensorPermissionError
from maxwell.sensors import hwmon, msr, nvml, powercap, thermal
from maxwell.sensors._types import Source
from maxwell.sensors.counters import DEFAULT_PACKAGE_MAX_POWER_W, EnergyCounter
from maxwell.sensors.model import ModelParameters

_A = TypeVar("_A")
_R = TypeVar("_R")


class _TryImport(enum.Enum):
    TOKEN = "try import pynvml"


TRY_IMPORT = _TryImport.TOKEN


@dataclass
class Backends:
    """Every sensor the probes found, and one `describe()` line per backend (in probe order)."""

    dev_root: Path = field(default_factory=lambda: Path("/dev"))
    powercap_zones: list[powercap.PowercapZone] = field(default_factory=list)
    powercap_node_ids: set[str] = field(default_factory=set)
    msr_domains: list[msr.MsrDomain] = field(default_factory=list)
    msr_node_ids: set[str] = field(default_factory=set)
    hwmon_channels: list[hwmon.HwmonChannel] = field(default_factory=list)
    thermal_zones: list[thermal.ThermalZone] = field(default_factory=list)
    nvml: nvml.NvmlBackend | None = None
    describe: list[str] = field(default_factory=list)


@dataclass
class NodeCounter:
    """One counter summed into node energy, and how to read its raw value."""

    counter: EnergyCounter
    read_raw: Callable[[], int]


@dataclass(frozen=True)
class NodeEnergy:
    """The counters summed into node energy: none, and `Source.MODEL`, when nothing measures it."""

    counters: tuple[NodeCounter, ...] = ()
    source: Source = Source.MODEL

    @property
    def measured(self) -> bool:
        return bool(self.counters)

    @property
    def counter_ids(self) -> set[str]:
        return {n.counter.name for n in self.counters}


@dataclass(frozen=True)
class TemperatureProbe:
    """One sensor that may set the node's temperature, with the critical point it is judged by."""

    id: str
    source: Source
    read_c: Callable[[], float]
    critical_c: float


@dataclass(frozen=True)
class NodeTemperature:
    """The sensors of the chosen tier: none, and `Source.MODEL`, when none could be read."""

    probes: tuple[TemperatureProbe, ...] = ()
    source: Source = Source.MODEL

    @property
    def measured(self) -> bool:
        return bool(self.probes)


# --- probing -------------------------------------------------------------------------------


def probe_backends(
    *,
    sysfs_root: str | Path,
    dev_root: str | Path,
    procfs_root: str | Path,
    nvml_module: object | None,
    use_msr: bool,
) -> Backends:
    """Ask every backend what it finds; `nvml_module` as `Sensors.detect`'s `nvml`."""
    backends = Backends(dev_root=Path(dev_root))
    _probe_powercap(backends, sysfs_root)
    if use_msr:
        _probe_msr(backends, dev_root=dev_root, procfs_root=procfs_root, sysfs_root=sysfs_root)
    else:
        backends.describe.append(f"{Source.RAPL_MSR}: disabled")
    _probe_hwmon(backends, sysfs_root)
    _probe_thermal(backends, sysfs_root)
    _probe_nvml(backends, nvml_module)
    return backends


def _probe_powercap(backends: Backends, sysfs_root: str | Path) -> None:
    skipped: list[str] = []
    try:
        zones = powercap.find_zones(sysfs_root, skipped=skipped)
        node = powercap.node_zones(zones)
        if not node:
            raise SensorError("no package, dram or psys zone")
        for zone in node:
            powercap.read_energy_uj(zone)  # root-only since CVE-2020-8694: fail here, once
    except SensorError as error:
        backends.describe.append(_absent(Source.RAPL_POWERCAP, error))
        return
    backends.powercap_zones = zones
    backends.powercap_node_ids = {z.zone_id for z in node}
    names = ", ".join(
        f"{z.zone_id} {z.name}" + (f" (duplicates {z.duplicate_of})" if z.duplicate_of else "")
        for z in zones
    )
    node_names = " + ".join(z.name for z in node)
    backends.describe.append(
        f"{Source.RAPL_POWERCAP}: found {names}; node energy = {node_names}" + _skipped(skipped)
    )


def _probe_msr(
    backends: Backends, *, dev_root: str | Path, procfs_root: str | Path, sysfs_root: str | Path
) -> None:
    try:
        domains = msr.find_domains(
            dev_root=dev_root, procfs_root=procfs_root, sysfs_root=sysfs_root
        )
        node = msr.node_domains(domains)
        if not node:
            raise SensorError("no package energy register")
    except SensorError as error:
        backends.describe.append(_absent(Source.RAPL_MSR, error))
        return
    backends.msr_domains = domains
    backends.msr_node_ids = {d.domain_id for d in node}
    unit_uj = domains[0].uj_per_unit  # the package's: the units register's ESU
    fixed = {d.domain: d.uj_per_unit for d in domains if d.uj_per_unit != unit_uj}
    units = "".join(f"; {name} {uj:.3g} uJ (fixed for this CPU)" for name, uj in fixed.items())
    backends.describe.append(
        f"{Source.RAPL_MSR}: found {', '.join(d.label for d in domains)} "
        f"(energy unit {unit_uj:.3g} uJ{units}); "
        f"node energy = {' + '.join(d.label for d in node)}"
    )


def _probe_hwmon(backends: Backends, sysfs_root: str | Path) -> None:
    skipped: list[str] = []
    try:
        channels = hwmon.find_channels(sysfs_root, skipped=skipped)
    except SensorError as error:
        backends.describe.append(_absent(Source.HWMON, error))
        return
    backends.hwmon_channels = channels
    devices = list(dict.fromkeys(f"{c.device} {c.driver}" for c in channels))
    backends.describe.append(
        f"{Source.HWMON}: found {len(channels)} channels on {', '.join(devices)}"
        + _skipped(skipped)
    )


def _probe_thermal(backends: Backends, sysfs_root: str | Path) -> None:
    skipped: list[str] = []
    try:
        zones = thermal.find_zones(sysfs_root, skipped=skipped)
    except SensorError as error:
        backends.describe.append(_absent(Source.THERMAL, error))
        return
    backends.thermal_zones = zones
    backends.describe.append(
        f"{Source.THERMAL}: found {', '.join(f'{z.zone_id} {z.zone_type}' for z in zones)}"
        + _skipped(skipped)
    )


def _probe_nvml(backends: Backends, module: object | None) -> None:
    try:
        if module is None:
            raise SensorError("disabled")
        loaded: Any = nvml.import_nvml() if module is TRY_IMPORT else module
        gpus = nvml.NvmlBackend(loaded)
    except SensorError as error:
        backends.describe.append(_absent(Source.NVML, error))
        return
    backends.nvml = gpus
    backends.describe.append(f"{Source.NVML}: found {', '.join(gpus.names)}")


def _absent(source: Source, error: SensorError) -> str:
    state = "unreadable" if isinstance(error, SensorPermissionError) else "absent"
    return f"{source}: {state} ({error})"


def _skipped(skipped: list[str]) -> str:
    """The tail of a backend's describe() line naming what it could not read, if anything."""
    return f"; skipped {', '.join(skipped)}" if skipped else ""


# --- choosing ------------------------------------------------------------------------------


def choose_energy(backends: Backends, now: float) -> NodeEnergy:
    """The best tier's node counters that give a first reading now (the baseline).

    A counter that fails its first read is dropped, with a line in `backends.describe`.
    """
    source, counters = _energy_candidates(backends)
    baseline: list[NodeCounter] = []
    for node_counter in counters:
        try:
            node_counter.counter.observe(node_counter.read_raw(), now)
        except SensorError as error:
            backends.describe.append(f"{source}: {node_counter.counter.name} dropped ({error})")
            continue
        baseline.append(node_counter)
    if not baseline:
        return NodeEnergy()
    return NodeEnergy(tuple(baseline), source)


def _energy_candidates(backends: Backends) -> tuple[Source, list[NodeCounter]]:
    counters: list[NodeCounter] = []
    if backends.powercap_node_ids:
        for zone in backends.powercap_zones:
            if zone.zone_id in backends.powercap_node_ids:
                counter = EnergyCounter(
                    zone.zone_id,
                    range_units=zone.max_energy_range_uj,
                    max_power_w=zone.plausible_max_power_w,
                )
                counters.append(NodeCounter(counter, _bind(powercap.read_energy_uj, zone)))
        return Source.RAPL_POWERCAP, counters
    if backends.msr_node_ids:
        for domain in backends.msr_domains:
            if domain.domain_id in backends.msr_node_ids:
                counter = EnergyCounter(
                    domain.domain_id,
                    range_units=msr.ENERGY_RANGE_UNITS,
                    uj_per_unit=domain.uj_per_unit,
                    max_power_w=DEFAULT_PACKAGE_MAX_POWER_W,
                )
                counters.append(NodeCounter(counter, _bind_msr(domain, backends.dev_root)))
        return Source.RAPL_MSR, counters
    sockets = [c for c in backends.hwmon_channels if c.is_cpu_socket_energy]
    for channel in sockets:
        counter = EnergyCounter(
            channel.channel_id,
            range_units=channel.energy_range_uj,
            max_power_w=DEFAULT_PACKAGE_MAX_POWER_W,
        )
        counters.append(NodeCounter(counter, _bind(hwmon.read_value, channel)))
    return (Source.HWMON if sockets else Source.MODEL), counters


def rated_power_w(backends: Backends, energy_source: Source, parameters: ModelParameters) -> float:
    """The power at which an RC die driven by measured power settles at full_load_c.

    The packages' sustained limits (powercap constraint_0, their TDP) when every package
    states one, else the model's full-load power.
    """
    packages = [
        z
        for z in backends.powercap_zones
        if z.name.startswith("package") and z.duplicate_of is None and not z.is_subzone
    ]
    if energy_source == Source.RAPL_POWERCAP and packages:
        limits = [z.max_power_uw or 0 for z in packages]
        if all(limit > 0 for limit in limits):
            return sum(limits) / 1e6
    return parameters.max_power_w


def choose_temperature(backends: Backends, default_critical_c: float) -> NodeTemperature:
    """The best tier's temperature sensors that can be read now; a sensor without a critical
    trip is judged against `default_critical_c`."""
    cpu_zones: list[TemperatureProbe] = []
    other_zones: list[TemperatureProbe] = []
    for zone in backends.thermal_zones:
        critical = zone.critical_c if zone.critical_c is not None else default_critical_c
        probe = TemperatureProbe(
            zone.zone_id, Source.THERMAL, _bind(thermal.read_temperature_c, zone), critical
        )
        (cpu_zones if zone.preference <= 1 else other_zones).append(probe)
    cpu_channels: list[TemperatureProbe] = []
    for channel in backends.hwmon_channels:
        if channel.is_cpu_temperature:
            critical = channel.extra.get(
                "critical_c", channel.extra.get("max_c", default_critical_c)
            )
            cpu_channels.append(
                TemperatureProbe(
                    channel.channel_id, Source.HWMON, _bind(_hwmon_celsius, channel), critical
                )
            )
    for tier in (cpu_zones, cpu_channels, other_zones):
        working = [probe for probe in tier if _readable(probe)]
        if working:
            return NodeTemperature(tuple(working), working[0].source)
    return NodeTemperature()


def _bind(function: Callable[[_A], _R], argument: _A) -> Callable[[], _R]:
    return lambda: function(argument)


def _bind_msr(domain: msr.MsrDomain, dev_root: Path) -> Callable[[], int]:
    return lambda: msr.read_energy_units(domain, dev_root)


def _hwmon_celsius(channel: hwmon.HwmonChannel) -> float:
    return hwmon.read_value(channel) / 1000.0


def _readable(probe: TemperatureProbe) -> bool:
    try:
        probe.read_c()
    except SensorError:
        return False
    return True
