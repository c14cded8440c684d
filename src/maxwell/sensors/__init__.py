"""`maxwell.sensors`: one facade (`Sensors`) over per-source backends, psutil-style.

Map of the package:

- `powercap`: RAPL through `<sysfs>/class/powercap/intel-rapl:*` (and the mmio duplicates).
- `msr`: RAPL through `<dev>/cpu/N/msr` (Intel and AMD registers).
- `hwmon`: `<sysfs>/class/hwmon/hwmonN` energy, power and temperature channels.
- `thermal`: `<sysfs>/class/thermal/thermal_zoneN` temperatures and trip points.
- `nvml`: NVIDIA GPUs through an injected NVML module.
- `model`: the labelled fallback (Cloud Carbon Footprint power, RC die temperature). Pure.
- `counters`: wraparound-safe energy counters. Pure.
- `_sysfs`: attribute-file and directory readers; the one place `OSError` becomes `SensorError`.
- `_types`: `Source` and `Kind`, the labels on every reading (re-exported here).
- `cli`: `maxwell sensors`.

Backends return raw readings; this facade picks sources, normalises units (J, W, °C; integer µJ
for the node's energy), labels every figure measured or modelled, and turns failures into
warnings rather than silent fallbacks. A backend whose directory this user may not read is
reported by `describe()` as "unreadable (why)" and skipped, never a traceback; a single zone or
device that cannot be read is named on its backend's line ("skipped ...").

Preference for node energy: rapl-powercap > rapl-msr > hwmon (CPU socket energy) > model.
Preference for the node temperature: a CPU thermal zone (x86_pkg_temp first) > a hwmon CPU channel
(k10temp Tctl, coretemp Package) > any other thermal zone > the RC model. Among sensors of the
chosen tier, the one with the least headroom sets the node's temperature; a sensor without a
critical trip uses `ModelConfig.critical_c`. With measured energy and no temperature sensor, the RC
model is driven by the measured power (and still labelled modelled).

Node energy is integer µJ, wrap-corrected per counter and summed; a counter that fails to read
adds nothing that sample (with a warning) and is caught up at its next good read, since it is
cumulative. The idle part: modelled, vCPUs x idle watts integrated; measured, each interval's
energy x (1 - node CPU utilisation) (Kepler's split).
GPU energy (NVML, hwmon amdgpu/i915) is reported in `readings()` but never added to node energy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from maxwell.clock import Clock, SystemClock
from maxwell.errors import SensorError, SensorPermissionError
from maxwell.procfs import CpuTimes, CpuTimesReader, read_cpu_model
from maxwell.sensors import hwmon, msr, nvml, powercap, thermal
from maxwell.sensors._types import Kind, Source
from maxwell.sensors.counters import DEFAULT_PACKAGE_MAX_POWER_W, EnergyCounter
from maxwell.sensors.model import (
    DieTemperature,
    ModelConfig,
    ModelParameters,
    PowerModel,
    resolve,
    thermal_model,
    utilisation,
)
from maxwell.units import UJ_PER_J

__all__ = [
    "Kind",
    "ModelConfig",
    "NodeSample",
    "Reading",
    "Sensors",
    "Source",
]


_A = TypeVar("_A")
_R = TypeVar("_R")

_UNITS = {Kind.ENERGY: "J", Kind.POWER: "W", Kind.TEMPERATURE: "C"}
# The value and unit each hwmon kind's raw reading is scaled to: µJ -> J, µW -> W, m°C -> °C.
_HWMON_SCALE = {Kind.ENERGY: 1e6, Kind.POWER: 1e6, Kind.TEMPERATURE: 1e3}

# A reading's extra facts: numbers stay numbers, flags stay booleans (STYLE #4: never a string).
ExtraValue = float | int | str | bool


@dataclass(frozen=True)
class Reading:
    """One live reading of one sensor, for `maxwell sensors`. Energy is cumulative J.

    `to_json()` gives the documented keys (`id`, `source`, `kind`, `unit`, `value`, `measured`,
    `label`) and then `extra`'s, which can add facts but never replace a documented key.
    """

    id: str
    source: Source
    kind: Kind
    unit: str
    value: float
    measured: bool
    label: str
    extra: Mapping[str, ExtraValue] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {
            "id": self.id,
            "source": str(self.source),
            "kind": str(self.kind),
            "unit": self.unit,
            "value": self.value,
            "measured": self.measured,
            "label": self.label,
        }
        for key, value in self.extra.items():
            document.setdefault(key, value)
        return document


def _reading(
    id: str,
    source: Source,
    kind: Kind,
    value: float,
    *,
    measured: bool,
    label: str,
    extra: Mapping[str, ExtraValue] | None = None,
) -> Reading:
    return Reading(
        id=id,
        source=source,
        kind=kind,
        unit=_UNITS[kind],
        value=value,
        measured=measured,
        label=label,
        extra=MappingProxyType(dict(extra or {})),
    )


@dataclass(frozen=True)
class NodeSample:
    """What the meter consumes each interval. Energies are cumulative since the facade was made."""

    at_s: float
    energy_uj: int
    idle_energy_uj: int
    cpu: CpuTimes
    temperature_c: float
    critical_c: float
    energy_source: Source
    energy_measured: bool
    temperature_source: Source
    temperature_measured: bool
    warnings: tuple[str, ...] = ()
    power_w: float = 0.0  # node power over the interval since the previous sample

    @property
    def headroom_c(self) -> float:
        return self.critical_c - self.temperature_c


class _TryImport(enum.Enum):
    TOKEN = "try import pynvml"


TRY_IMPORT = _TryImport.TOKEN


@dataclass(frozen=True)
class _TemperatureProbe:
    id: str
    source: Source
    read_c: Callable[[], float]
    critical_c: float


@dataclass
class _NodeCounter:
    counter: EnergyCounter
    read_raw: Callable[[], int]


def _absent(source: Source, error: SensorError) -> str:
    state = "unreadable" if isinstance(error, SensorPermissionError) else "absent"
    return f"{source}: {state} ({error})"


def _skipped(skipped: list[str]) -> str:
    """The tail of a backend's describe() line naming what it could not read, if anything."""
    return f"; skipped {', '.join(skipped)}" if skipped else ""


class Sensors:
    """Every sensor this machine has, and the model where it has none. Build with `detect()`."""

    # Set by detect(), which also takes the first readings.
    _model: PowerModel
    _measured_die: DieTemperature
    _last_cpu: CpuTimes
    _last_at_s: float
    _last_energy_uj: int
    _last_power_w: float
    _idle_energy_uj: float

    def __init__(self) -> None:  # use detect(); the fields are filled there
        self._clock: Clock = SystemClock()
        self._procfs_root = Path("/proc")
        self._cpu_times: CpuTimesReader | None = None
        self._dev_root = Path("/dev")
        self._config = ModelConfig()
        self._powercap_zones: list[powercap.PowercapZone] = []
        self._powercap_node_ids: set[str] = set()
        self._msr_domains: list[msr.MsrDomain] = []
        self._msr_node_ids: set[str] = set()
        self._hwmon_channels: list[hwmon.HwmonChannel] = []
        self._thermal_zones: list[thermal.ThermalZone] = []
        self._nvml: nvml.NvmlBackend | None = None
        self._node_counters: list[_NodeCounter] = []
        self._temperature_probes: list[_TemperatureProbe] = []
        self._describe: list[str] = []
        self._warnings: tuple[str, ...] = ()
        self.energy_source = Source.MODEL
        self.energy_measured = False
        self.temperature_source = Source.MODEL
        self.temperature_measured = False

    # --- detection -------------------------------------------------------------------------

    @classmethod
    def detect(
        cls,
        *,
        sysfs_root: str | Path = "/sys",
        dev_root: str | Path = "/dev",
        procfs_root: str | Path = "/proc",
        clock: Clock | None = None,
        model_config: ModelConfig | None = None,
        nvml: object | None = TRY_IMPORT,
        use_msr: bool = True,
    ) -> Sensors:
        """Probe every backend under the given roots and choose the node's sources.

        `nvml`: an NVML module (or a fake with its functions), None to skip GPUs, or by default
        `import pynvml` if installed. Raises `SensorError` only when `<proc>/stat` is unreadable:
        without CPU times neither the model nor the idle split can work.
        """
        self = cls()
        self._clock = clock if clock is not None else SystemClock()
        self._procfs_root = Path(procfs_root)
        self._dev_root = Path(dev_root)
        self._config = model_config if model_config is not None else ModelConfig()
        self._cpu_times = CpuTimesReader(procfs_root)
        cpu = self._cpu_times.read()
        now = self._clock.monotonic()
        self._probe_powercap(sysfs_root)
        if use_msr:
            self._probe_msr(dev_root=dev_root, procfs_root=procfs_root, sysfs_root=sysfs_root)
        else:
            self._describe.append(f"{Source.RAPL_MSR}: disabled")
        self._probe_hwmon(sysfs_root)
        self._probe_thermal(sysfs_root)
        self._probe_nvml(nvml)
        parameters = resolve(self._config, cpu_model=read_cpu_model(procfs_root), cpus=cpu.cpus)
        self._model = PowerModel(parameters, cpu, now)
        self._choose_energy(now)
        self._measured_die = DieTemperature(
            thermal_model(self._config, full_load_power_w=self._rated_power_w(parameters))
        )
        self._choose_temperature()
        if not self.energy_measured:
            role = "used for energy" + ("" if self.temperature_measured else " and temperature")
        elif not self.temperature_measured:
            role = "used for temperature (RC driven by measured power)"
        else:
            role = "not used (measured sources found)"
        self._describe.append(f"{Source.MODEL}: {parameters.describe()}; {role}")
        self._last_cpu = cpu
        self._last_at_s = now
        self._last_energy_uj = 0
        self._last_power_w = parameters.idle_power_w
        self._idle_energy_uj = 0.0
        return self

    def _probe_powercap(self, sysfs_root: str | Path) -> None:
        skipped: list[str] = []
        try:
            zones = powercap.find_zones(sysfs_root, skipped=skipped)
            node = powercap.node_zones(zones)
            if not node:
                raise SensorError("no package, dram or psys zone")
            for zone in node:
                powercap.read_energy_uj(zone)  # root-only since CVE-2020-8694: fail here, once
        except SensorError as error:
            self._describe.append(_absent(Source.RAPL_POWERCAP, error))
            return
        self._powercap_zones = zones
        self._powercap_node_ids = {z.zone_id for z in node}
        names = ", ".join(
            f"{z.zone_id} {z.name}" + (f" (duplicates {z.duplicate_of})" if z.duplicate_of else "")
            for z in zones
        )
        node_names = " + ".join(z.name for z in node)
        self._describe.append(
            f"{Source.RAPL_POWERCAP}: found {names}; node energy = {node_names}" + _skipped(skipped)
        )

    def _probe_msr(
        self, *, dev_root: str | Path, procfs_root: str | Path, sysfs_root: str | Path
    ) -> None:
        try:
            domains = msr.find_domains(
                dev_root=dev_root, procfs_root=procfs_root, sysfs_root=sysfs_root
            )
            node = msr.node_domains(domains)
            if not node:
                raise SensorError("no package energy register")
        except SensorError as error:
            self._describe.append(_absent(Source.RAPL_MSR, error))
            return
        self._msr_domains = domains
        self._msr_node_ids = {d.domain_id for d in node}
        unit_uj = domains[0].uj_per_unit  # the package's: the units register's ESU
        fixed = {d.domain: d.uj_per_unit for d in domains if d.uj_per_unit != unit_uj}
        units = "".join(f"; {name} {uj:.3g} uJ (fixed for this CPU)" for name, uj in fixed.items())
        self._describe.append(
            f"{Source.RAPL_MSR}: found {', '.join(d.label for d in domains)} "
            f"(energy unit {unit_uj:.3g} uJ{units}); "
            f"node energy = {' + '.join(d.label for d in node)}"
        )

    def _probe_hwmon(self, sysfs_root: str | Path) -> None:
        skipped: list[str] = []
        try:
            channels = hwmon.find_channels(sysfs_root, skipped=skipped)
        except SensorError as error:
            self._describe.append(_absent(Source.HWMON, error))
            return
        self._hwmon_channels = channels
        devices = list(dict.fromkeys(f"{c.device} {c.driver}" for c in channels))
        self._describe.append(
            f"{Source.HWMON}: found {len(channels)} channels on {', '.join(devices)}"
            + _skipped(skipped)
        )

    def _probe_thermal(self, sysfs_root: str | Path) -> None:
        skipped: list[str] = []
        try:
            zones = thermal.find_zones(sysfs_root, skipped=skipped)
        except SensorError as error:
            self._describe.append(_absent(Source.THERMAL, error))
            return
        self._thermal_zones = zones
        self._describe.append(
            f"{Source.THERMAL}: found {', '.join(f'{z.zone_id} {z.zone_type}' for z in zones)}"
            + _skipped(skipped)
        )

    def _probe_nvml(self, module: object | None) -> None:
        try:
            if module is None:
                raise SensorError("disabled")
            loaded: Any = nvml.import_nvml() if module is TRY_IMPORT else module
            self._nvml = nvml.NvmlBackend(loaded)
        except SensorError as error:
            self._describe.append(_absent(Source.NVML, error))
            return
        self._describe.append(f"{Source.NVML}: found {', '.join(self._nvml.names)}")

    def _choose_energy(self, now: float) -> None:
        counters: list[_NodeCounter] = []
        source = Source.MODEL
        if self._powercap_node_ids:
            source = Source.RAPL_POWERCAP
            for zone in self._powercap_zones:
                if zone.zone_id in self._powercap_node_ids:
                    counter = EnergyCounter(
                        zone.zone_id,
                        range_units=zone.max_energy_range_uj,
                        max_power_w=zone.plausible_max_power_w,
                    )
                    counters.append(_NodeCounter(counter, _bind(powercap.read_energy_uj, zone)))
        elif self._msr_node_ids:
            source = Source.RAPL_MSR
            for domain in self._msr_domains:
                if domain.domain_id in self._msr_node_ids:
                    counter = EnergyCounter(
                        domain.domain_id,
                        range_units=msr.ENERGY_RANGE_UNITS,
                        uj_per_unit=domain.uj_per_unit,
                        max_power_w=DEFAULT_PACKAGE_MAX_POWER_W,
                    )
                    counters.append(_NodeCounter(counter, _bind_msr(domain, self._dev_root)))
        else:
            sockets = [c for c in self._hwmon_channels if c.is_cpu_socket_energy]
            if sockets:
                source = Source.HWMON
                for channel in sockets:
                    counter = EnergyCounter(
                        channel.channel_id,
                        range_units=channel.energy_range_uj,
                        max_power_w=DEFAULT_PACKAGE_MAX_POWER_W,
                    )
                    counters.append(_NodeCounter(counter, _bind(hwmon.read_value, channel)))
        baseline: list[_NodeCounter] = []
        for node_counter in counters:
            try:
                node_counter.counter.observe(node_counter.read_raw(), now)
            except SensorError as error:
                self._describe.append(f"{source}: {node_counter.counter.name} dropped ({error})")
                continue
            baseline.append(node_counter)
        if baseline:
            self._node_counters = baseline
            self.energy_source, self.energy_measured = source, True

    def _rated_power_w(self, parameters: ModelParameters) -> float:
        """The power at which an RC die driven by measured power settles at full_load_c.

        The packages' sustained limits (powercap constraint_0, their TDP) when every package
        states one, else the model's full-load power.
        """
        packages = [
            z
            for z in self._powercap_zones
            if z.name.startswith("package") and z.duplicate_of is None and not z.is_subzone
        ]
        if self.energy_source == Source.RAPL_POWERCAP and packages:
            limits = [z.max_power_uw or 0 for z in packages]
            if all(limit > 0 for limit in limits):
                return sum(limits) / 1e6
        return parameters.max_power_w

    def _choose_temperature(self) -> None:
        default_critical = self._config.critical_c
        cpu_zones: list[_TemperatureProbe] = []
        other_zones: list[_TemperatureProbe] = []
        for zone in self._thermal_zones:
            critical = zone.critical_c if zone.critical_c is not None else default_critical
            probe = _TemperatureProbe(
                zone.zone_id, Source.THERMAL, _bind(thermal.read_temperature_c, zone), critical
            )
            (cpu_zones if zone.preference <= 1 else other_zones).append(probe)
        cpu_channels: list[_TemperatureProbe] = []
        for channel in self._hwmon_channels:
            if channel.is_cpu_temperature:
                critical = channel.extra.get(
                    "critical_c", channel.extra.get("max_c", default_critical)
                )
                cpu_channels.append(
                    _TemperatureProbe(
                        channel.channel_id, Source.HWMON, _bind(_hwmon_celsius, channel), critical
                    )
                )
        for tier in (cpu_zones, cpu_channels, other_zones):
            working = [probe for probe in tier if _readable(probe)]
            if working:
                self._temperature_probes = working
                self.temperature_source = working[0].source
                self.temperature_measured = True
                return

    # --- sampling --------------------------------------------------------------------------

    def sample(self) -> NodeSample:
        """Node energy, idle energy and temperature now. Cheap enough for 10 calls a second."""
        now = self._clock.monotonic()
        cpu = self._read_cpu_times()
        seconds = now - self._last_at_s
        warnings: list[str] = []
        self._model.advance(cpu, now)
        if self.energy_measured:
            for node_counter in self._node_counters:
                try:
                    raw = node_counter.read_raw()
                except SensorError as error:
                    warnings.append(
                        f"{node_counter.counter.name}: {error}; "
                        "its energy is counted at the next good read"
                    )
                    continue
                update = node_counter.counter.observe(raw, now)
                if update.warning is not None:
                    warnings.append(update.warning)
            energy_uj = sum(n.counter.total_uj for n in self._node_counters)
            interval_uj = energy_uj - self._last_energy_uj
            busy = utilisation(self._last_cpu, cpu)
            node_utilisation = busy if busy is not None else self._model.utilisation
            self._idle_energy_uj += interval_uj * (1.0 - node_utilisation)
            idle_energy_uj = min(round(self._idle_energy_uj), energy_uj)
            power_w = interval_uj / UJ_PER_J / seconds if seconds > 0 else self._last_power_w
            self._measured_die.step(power_w, seconds)
        else:
            energy_uj = self._model.energy_uj
            idle_energy_uj = self._model.idle_energy_uj
            power_w = self._model.power_w
        temperature_c, critical_c, measured, source = self._temperature(warnings)
        self._last_cpu, self._last_at_s = cpu, now
        self._last_energy_uj, self._last_power_w = energy_uj, power_w
        self._warnings = tuple(warnings)
        return NodeSample(
            at_s=now,
            energy_uj=energy_uj,
            idle_energy_uj=idle_energy_uj,
            cpu=cpu,
            temperature_c=temperature_c,
            critical_c=critical_c,
            energy_source=self.energy_source,
            energy_measured=self.energy_measured,
            temperature_source=source,
            temperature_measured=measured,
            warnings=self._warnings,
            power_w=power_w,
        )

    def _read_cpu_times(self) -> CpuTimes:
        if self._cpu_times is None:
            raise SensorError("sensors are closed (or were not made by Sensors.detect)")
        return self._cpu_times.read()

    def _temperature(self, warnings: list[str]) -> tuple[float, float, bool, Source]:
        best: tuple[float, float, Source] | None = None
        for probe in self._temperature_probes:
            try:
                celsius = probe.read_c()
            except SensorError as error:
                warnings.append(f"{probe.id}: {error}; skipped")
                continue
            if best is None or probe.critical_c - celsius < best[1] - best[0]:
                best = (celsius, probe.critical_c, probe.source)
        if best is not None:
            return best[0], best[1], True, best[2]
        if self._temperature_probes:
            warnings.append("no temperature sensor could be read; using the RC model")
        die = self._measured_die if self.energy_measured else self._model.die
        return die.temperature_c, die.thermal.critical_c, False, Source.MODEL

    # --- readings --------------------------------------------------------------------------

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings from the latest `sample()` or `readings()` (dead channels, ambiguous wraps)."""
        return self._warnings

    def readings(self) -> list[Reading]:
        """Every detected sensor's live reading, then the model's where it stands in for one."""
        node = self.sample()
        warnings = list(node.warnings)
        out: list[Reading] = []
        out += self._powercap_readings(warnings)
        out += self._msr_readings(warnings)
        out += self._hwmon_readings(warnings)
        out += self._thermal_readings(warnings)
        out += self._nvml_readings()
        out += self._model_readings(node)
        self._warnings = tuple(dict.fromkeys(warnings))
        return out

    def _powercap_readings(self, warnings: list[str]) -> list[Reading]:
        out: list[Reading] = []
        for zone in self._powercap_zones:
            try:
                energy_uj = powercap.read_energy_uj(zone)
            except SensorError as error:
                warnings.append(f"{zone.zone_id}: {error}; skipped")
                continue
            extra: dict[str, ExtraValue] = {
                "max_energy_range_j": zone.max_energy_range_uj / UJ_PER_J,
                "in_node_energy": zone.zone_id in self._powercap_node_ids,
            }
            if zone.max_power_uw is not None:
                extra["max_power_w"] = zone.max_power_uw / 1e6
            if zone.duplicate_of is not None:
                extra["duplicate_of"] = zone.duplicate_of
            out.append(
                _reading(
                    zone.zone_id,
                    Source.RAPL_POWERCAP,
                    Kind.ENERGY,
                    energy_uj / UJ_PER_J,
                    measured=True,
                    label=zone.name,
                    extra=extra,
                )
            )
        return out

    def _msr_readings(self, warnings: list[str]) -> list[Reading]:
        out: list[Reading] = []
        for domain in self._msr_domains:
            try:
                units = msr.read_energy_units(domain, self._dev_root)
            except SensorError as error:
                warnings.append(f"{domain.domain_id}: {error}; skipped")
                continue
            extra: dict[str, ExtraValue] = {
                "max_energy_range_j": msr.ENERGY_RANGE_UNITS * domain.joules_per_unit,
                "energy_unit_uj": domain.uj_per_unit,
                "in_node_energy": domain.domain_id in self._msr_node_ids,
            }
            if domain.scope == "core":
                extra["cpu"] = domain.cpu  # one core's energy: the core of this CPU
            out.append(
                _reading(
                    domain.domain_id,
                    Source.RAPL_MSR,
                    Kind.ENERGY,
                    units * domain.joules_per_unit,
                    measured=True,
                    label=domain.label,
                    extra=extra,
                )
            )
        return out

    def _hwmon_readings(self, warnings: list[str]) -> list[Reading]:
        node_ids = (
            {n.counter.name for n in self._node_counters}
            if self.energy_source == Source.HWMON
            else set()
        )
        out: list[Reading] = []
        for channel in self._hwmon_channels:
            try:
                raw = hwmon.read_value(channel)
            except SensorError as error:
                warnings.append(f"{channel.channel_id}: dead channel ({error}); skipped")
                continue
            extra: dict[str, ExtraValue] = dict(channel.extra)
            if channel.kind == Kind.ENERGY:
                extra["in_node_energy"] = channel.channel_id in node_ids
            out.append(
                _reading(
                    channel.channel_id,
                    Source.HWMON,
                    channel.kind,
                    raw / _HWMON_SCALE[channel.kind],
                    measured=True,
                    label=channel.label,
                    extra=extra,
                )
            )
        return out

    def _thermal_readings(self, warnings: list[str]) -> list[Reading]:
        out: list[Reading] = []
        for zone in self._thermal_zones:
            try:
                celsius = thermal.read_temperature_c(zone)
            except SensorError as error:
                warnings.append(f"{zone.zone_id}: {error}; skipped")
                continue
            extra: dict[str, ExtraValue] = {
                f"trip_{t}_c": c for t, c in sorted(zone.trips_c.items())
            }
            if zone.critical_c is not None:
                extra["critical_c"] = zone.critical_c
            out.append(
                _reading(
                    zone.zone_id,
                    Source.THERMAL,
                    Kind.TEMPERATURE,
                    celsius,
                    measured=True,
                    label=zone.zone_type,
                    extra=extra,
                )
            )
        return out

    def _nvml_readings(self) -> list[Reading]:
        if self._nvml is None:
            return []
        out: list[Reading] = []
        for gpu in self._nvml.read():
            base = f"nvml:{gpu.index}"
            if gpu.energy_mj is not None:
                out.append(
                    _reading(
                        base,
                        Source.NVML,
                        Kind.ENERGY,
                        gpu.energy_mj / 1e3,
                        measured=True,
                        label=gpu.name,
                        extra={"in_node_energy": False},
                    )
                )
            if gpu.power_mw is not None:
                out.append(
                    _reading(
                        f"{base}/power",
                        Source.NVML,
                        Kind.POWER,
                        gpu.power_mw / 1e3,
                        measured=True,
                        label=gpu.name,
                    )
                )
            if gpu.temperature_c is not None:
                extra: dict[str, ExtraValue] = {}
                if gpu.slowdown_c is not None:
                    extra["slowdown_c"] = gpu.slowdown_c
                out.append(
                    _reading(
                        f"{base}/temp",
                        Source.NVML,
                        Kind.TEMPERATURE,
                        gpu.temperature_c,
                        measured=True,
                        label=gpu.name,
                        extra=extra,
                    )
                )
        return out

    def _model_readings(self, node: NodeSample) -> list[Reading]:
        out: list[Reading] = []
        parameters = self._model.parameters
        if not self.energy_measured:
            extra: dict[str, ExtraValue] = {
                "cpu_family": parameters.coefficients.family,
                "vcpus": parameters.vcpus,
                "utilisation": self._model.utilisation,
                "idle_w": parameters.idle_power_w,
                "max_w": parameters.max_power_w,
            }
            out.append(
                _reading(
                    "model:cpu",
                    Source.MODEL,
                    Kind.ENERGY,
                    node.energy_uj / UJ_PER_J,
                    measured=False,
                    label="CPU package (model)",
                    extra=extra,
                )
            )
            out.append(
                _reading(
                    "model:cpu/power",
                    Source.MODEL,
                    Kind.POWER,
                    node.power_w,
                    measured=False,
                    label="CPU package (model)",
                    extra=extra,
                )
            )
        if node.temperature_source == Source.MODEL:
            label = (
                "CPU die (RC model on measured power)"
                if self.energy_measured
                else "CPU die (RC model)"
            )
            out.append(
                _reading(
                    "model:cpu/temp",
                    Source.MODEL,
                    Kind.TEMPERATURE,
                    node.temperature_c,
                    measured=False,
                    label=label,
                    extra={"critical_c": node.critical_c},
                )
            )
        return out

    def describe(self) -> list[str]:
        """One line per backend: found (and what for) or absent, and why."""
        return list(self._describe)

    def close(self) -> None:
        if self._cpu_times is not None:
            self._cpu_times.close()
            self._cpu_times = None
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None

    def __enter__(self) -> Sensors:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _bind(function: Callable[[_A], _R], argument: _A) -> Callable[[], _R]:
    return lambda: function(argument)


def _bind_msr(domain: msr.MsrDomain, dev_root: Path) -> Callable[[], int]:
    return lambda: msr.read_energy_units(domain, dev_root)


def _hwmon_celsius(channel: hwmon.HwmonChannel) -> float:
    return hwmon.read_value(channel) / 1000.0


def _readable(probe: _TemperatureProbe) -> bool:
    try:
        probe.read_c()
    except SensorError:
        return False
    return True
