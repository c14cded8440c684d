"""Every sensor's live reading, for `maxwell sensors`: `Reading`, and one lister per backend.

`list_readings()` reads every sensor that detection found (`detection.Backends`), not only those
chosen for the node, and normalises each to J (cumulative), W or °C with the facts that explain it
(`extra`: ranges, units, trip points, whether it counts toward node energy). The model's readings
follow where it stands in for a sensor, labelled modelled. A sensor that cannot be read now is
skipped with a warning appended to the caller's list, never an exception. GPU energy is listed but
never counted toward node energy.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from maxwell.errors import SensorError
from maxwell.sensors import hwmon, msr, powercap, thermal
from maxwell.sensors._types import Kind, Source
from maxwell.sensors.detection import Backends
from maxwell.sensors.model import PowerModel
from maxwell.units import UJ_PER_J

if TYPE_CHECKING:
    from maxwell.sensors import NodeSample

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


def list_readings(
    backends: Backends,
    node: NodeSample,
    model: PowerModel,
    *,
    hwmon_node_ids: Set[str],
    warnings: list[str],
) -> list[Reading]:
    """Every found sensor's reading now, then the model's where it stands in for one.

    `node` is the sample just taken (the model's figures come from it); `hwmon_node_ids` are the
    hwmon channels summed into node energy, if any.
    """
    out: list[Reading] = []
    out += powercap_readings(backends, warnings)
    out += msr_readings(backends, warnings)
    out += hwmon_readings(backends, hwmon_node_ids, warnings)
    out += thermal_readings(backends, warnings)
    out += nvml_readings(backends)
    out += model_readings(node, model)
    return out


def powercap_readings(backends: Backends, warnings: list[str]) -> list[Reading]:
    out: list[Reading] = []
    for zone in backends.powercap_zones:
        try:
            energy_uj = powercap.read_energy_uj(zone)
        except SensorError as error:
            warnings.append(f"{zone.zone_id}: {error}; skipped")
            continue
        extra: dict[str, ExtraValue] = {
            "max_energy_range_j": zone.max_energy_range_uj / UJ_PER_J,
            "in_node_energy": zone.zone_id in backends.powercap_node_ids,
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


def msr_readings(backends: Backends, warnings: list[str]) -> list[Reading]:
    out: list[Reading] = []
    for domain in backends.msr_domains:
        try:
            units = msr.read_energy_units(domain, backends.dev_root)
        except SensorError as error:
            warnings.append(f"{domain.domain_id}: {error}; skipped")
            continue
        extra: dict[str, ExtraValue] = {
            "max_energy_range_j": msr.ENERGY_RANGE_UNITS * domain.joules_per_unit,
            "energy_unit_uj": domain.uj_per_unit,
            "in_node_energy": domain.domain_id in backends.msr_node_ids,
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


def hwmon_readings(backends: Backends, node_ids: Set[str], warnings: list[str]) -> list[Reading]:
    out: list[Reading] = []
    for channel in backends.hwmon_channels:
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


def thermal_readings(backends: Backends, warnings: list[str]) -> list[Reading]:
    out: list[Reading] = []
    for zone in backends.thermal_zones:
        try:
            celsius = thermal.read_temperature_c(zone)
        except SensorError as error:
            warnings.append(f"{zone.zone_id}: {error}; skipped")
            continue
        extra: dict[str, ExtraValue] = {f"trip_{t}_c": c for t, c in sorted(zone.trips_c.items())}
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


def nvml_readings(backends: Backends) -> list[Reading]:
    if backends.nvml is None:
        return []
    out: list[Reading] = []
    for gpu in backends.nvml.read():
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


def model_readings(node: NodeSample, model: PowerModel) -> list[Reading]:
    """The model's energy and power where nothing measures them, its die where nothing reads it."""
    out: list[Reading] = []
    parameters = model.parameters
    if not node.energy_measured:
        extra: dict[str, ExtraValue] = {
            "cpu_family": parameters.coefficients.family,
            "vcpus": parameters.vcpus,
            "utilisation": model.utilisation,
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
            "CPU die (RC model on measured power)" if node.energy_measured else "CPU die (RC model)"
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
