"""The modelled fallback for machines without an energy sensor (VMs), and the die's RC temperature.

Power follows the Cloud Carbon Footprint method: W = vCPUs x (min + util x (max - min)), with
per-vCPU min/max watts chosen from the CPU model string in /proc/cpuinfo (Cloud Carbon Footprint
methodology, coefficients via shared/REFERENCE.md). Utilisation is the node's busy share of CPU
time between two samples (`maxwell.procfs.CpuTimes`); energy is that power integrated over the
injected clock's interval. The idle part (vCPUs x min, integrated) is tracked separately: it is the
static power the meter gives to the house account.

Temperature comes from the first-order RC die model (`maxwell.physics.ThermalRC`) driven by the
modelled power, or by measured power when energy is measured but no temperature sensor exists.
Defaults: ambient 25 °C; R chosen so that full load settles at 80 °C, i.e.
R = (80 - 25) / full_load_power, where full_load_power is the modelled maximum (or, for measured
power, the packages' powercap limits when they state them: see `thermal_model`); time constant
20 s; critical 95 °C. Every figure from here is labelled modelled.

This module does no I/O: the facade reads /proc and the clock and passes them in.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from maxwell.errors import UsageError
from maxwell.physics import ThermalRC
from maxwell.procfs import CpuTimes, read_cpu_model
from maxwell.units import UJ_PER_J


@dataclass(frozen=True)
class CpuCoefficients:
    """Per-vCPU power at idle and at full load, watts, for one CPU family."""

    family: str
    idle_w_per_vcpu: float
    max_w_per_vcpu: float


# Cloud Carbon Footprint methodology, coefficients via shared/REFERENCE.md (Energy sensors).
EPYC_2ND_GEN = CpuCoefficients("AMD EPYC 2nd gen (Rome)", 0.47, 1.69)
EPYC_3RD_GEN = CpuCoefficients("AMD EPYC 3rd gen (Milan)", 0.46, 1.96)
EPYC_4TH_GEN = CpuCoefficients("AMD EPYC 4th gen (Genoa)", 0.74, 2.28)
SKYLAKE = CpuCoefficients("Intel Skylake", 0.61, 4.10)
CASCADE_LAKE = CpuCoefficients("Intel Cascade Lake", 0.69, 4.06)
ICE_LAKE = CpuCoefficients("Intel Ice Lake", 0.77, 3.76)
SAPPHIRE_RAPIDS = CpuCoefficients("Intel Sapphire Rapids", 1.04, 4.16)
UNKNOWN_CPU = CpuCoefficients("unknown CPU", 0.74, 3.5)

_EPYC_BY_GENERATION = {"2": EPYC_2ND_GEN, "3": EPYC_3RD_GEN, "4": EPYC_4TH_GEN}
_XEON_BY_GENERATION = {"1": SKYLAKE, "2": CASCADE_LAKE, "3": ICE_LAKE, "4": SAPPHIRE_RAPIDS}
# Model numbers: EPYC 7742, 7R32 (AWS), 9654: the last digit is the generation. Xeon Scalable
# Platinum 8175M, Gold 6248: the second digit is the generation.
_EPYC_NUMBER_RE = re.compile(r"\bEPYC\s+[0-9][0-9A-Z]{2}([0-9])\b", re.IGNORECASE)
_XEON_NUMBER_RE = re.compile(
    r"\b(?:Platinum|Gold|Silver|Bronze)\s+[0-9]([0-9])[0-9]{2}", re.IGNORECASE
)
# Hypervisors name virtual CPU models after the family: "AMD EPYC-Rome Processor",
# "Intel Xeon Processor (Cascadelake)".
_FAMILY_NAMES: tuple[tuple[re.Pattern[str], CpuCoefficients], ...] = (
    (re.compile(r"EPYC-Rome", re.IGNORECASE), EPYC_2ND_GEN),
    (re.compile(r"EPYC-Milan", re.IGNORECASE), EPYC_3RD_GEN),
    (re.compile(r"EPYC-Genoa", re.IGNORECASE), EPYC_4TH_GEN),
    (re.compile(r"Skylake", re.IGNORECASE), SKYLAKE),
    (re.compile(r"Cascade\s*lake", re.IGNORECASE), CASCADE_LAKE),
    (re.compile(r"Ice\s*lake", re.IGNORECASE), ICE_LAKE),
    (re.compile(r"Sapphire\s*Rapids", re.IGNORECASE), SAPPHIRE_RAPIDS),
)


def coefficients_for(cpu_model: str) -> CpuCoefficients:
    """The CCF coefficients for a /proc/cpuinfo `model name`; unknown models get the default."""
    match = _EPYC_NUMBER_RE.search(cpu_model)
    if match is not None and match.group(1) in _EPYC_BY_GENERATION:
        return _EPYC_BY_GENERATION[match.group(1)]
    match = _XEON_NUMBER_RE.search(cpu_model)
    if match is not None and "xeon" in cpu_model.lower() and match.group(1) in _XEON_BY_GENERATION:
        return _XEON_BY_GENERATION[match.group(1)]
    for pattern, coefficients in _FAMILY_NAMES:
        if pattern.search(cpu_model):
            return coefficients
    return UNKNOWN_CPU


@dataclass(frozen=True)
class ModelConfig:
    """Parameters of the fallback model; every one may be overridden from the config file.

    idle_w_per_vcpu, max_w_per_vcpu: watts per vCPU at 0% and 100% busy (None: by CPU model).
    vcpus: how many vCPUs draw power (None: the CPUs counted in /proc/stat).
    ambient_c: the air the die cools into, °C.
    full_load_c: the die's steady temperature at full modelled load; sets R unless
        resistance_k_per_w is given.
    resistance_k_per_w: die-to-ambient thermal resistance R, K/W (None: from full_load_c).
    time_constant_s: the RC time constant, seconds.
    critical_c: the temperature at which headroom is zero, °C; also the fallback critical
        temperature of a measured sensor that states none.
    """

    idle_w_per_vcpu: float | None = None
    max_w_per_vcpu: float | None = None
    vcpus: int | None = None
    ambient_c: float = 25.0
    full_load_c: float = 80.0
    resistance_k_per_w: float | None = None
    time_constant_s: float = 20.0
    critical_c: float = 95.0

    def __post_init__(self) -> None:
        for name in ("idle_w_per_vcpu", "max_w_per_vcpu", "resistance_k_per_w"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UsageError(f"model.{name} must be a finite number >= 0, got {value!r}")
        if self.resistance_k_per_w == 0:
            raise UsageError("model.resistance_k_per_w must be above 0")
        if self.vcpus is not None and self.vcpus < 1:
            raise UsageError(f"model.vcpus must be at least 1, got {self.vcpus!r}")
        for name in ("ambient_c", "full_load_c", "critical_c"):
            if not math.isfinite(getattr(self, name)):
                raise UsageError(f"model.{name} must be a finite temperature")
        if not (math.isfinite(self.time_constant_s) and self.time_constant_s > 0):
            raise UsageError(f"model.time_constant_s must be above 0, got {self.time_constant_s!r}")
        if self.full_load_c <= self.ambient_c:
            raise UsageError("model.full_load_c must be above model.ambient_c")
        if self.critical_c <= self.ambient_c:
            raise UsageError("model.critical_c must be above model.ambient_c")
        idle, peak = self.idle_w_per_vcpu, self.max_w_per_vcpu
        if idle is not None and peak is not None and idle > peak:
            raise UsageError("model.idle_w_per_vcpu must not exceed model.max_w_per_vcpu")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ModelConfig:
        """Build from a parsed TOML table; unknown keys and ill-typed values are `UsageError`s."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise UsageError(
                f"unknown model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"model.{key} must be a number, got {value!r}")
            if key == "vcpus":
                if not isinstance(value, int):
                    raise UsageError(f"model.vcpus must be a whole number, got {value!r}")
                values[key] = value
            else:
                values[key] = float(value)
        return cls(**values)


@dataclass(frozen=True)
class ModelParameters:
    """A `ModelConfig` resolved against this machine's CPU model and CPU count."""

    cpu_model: str
    coefficients: CpuCoefficients
    vcpus: int
    thermal: ThermalRC

    @property
    def idle_power_w(self) -> float:
        return self.vcpus * self.coefficients.idle_w_per_vcpu

    @property
    def max_power_w(self) -> float:
        return self.vcpus * self.coefficients.max_w_per_vcpu

    def power_w(self, utilisation: float) -> float:
        c = self.coefficients
        return self.vcpus * (
            c.idle_w_per_vcpu + utilisation * (c.max_w_per_vcpu - c.idle_w_per_vcpu)
        )

    def describe(self) -> str:
        c = self.coefficients
        return (
            f"{self.cpu_model or 'CPU model unknown'} -> {c.family} "
            f"({c.idle_w_per_vcpu:g}-{c.max_w_per_vcpu:g} W/vCPU) x {self.vcpus} vCPUs = "
            f"{self.idle_power_w:.3g}-{self.max_power_w:.3g} W; "
            f"RC die: R {self.thermal.resistance_k_per_w:.3g} K/W, "
            f"tau {self.thermal.time_constant_s:.3g} s, critical {self.thermal.critical_c:g} C"
        )


def thermal_model(config: ModelConfig, *, full_load_power_w: float) -> ThermalRC:
    """The RC die for `config`: R from `resistance_k_per_w`, else so that `full_load_power_w`
    settles at `full_load_c`; C from the time constant."""
    if config.resistance_k_per_w is not None:
        resistance = config.resistance_k_per_w
    elif full_load_power_w > 0:
        resistance = (config.full_load_c - config.ambient_c) / full_load_power_w
    else:
        resistance = 1.0  # no power ever flows: any R leaves the die at ambient
    return ThermalRC(
        ambient_c=config.ambient_c,
        resistance_k_per_w=resistance,
        capacitance_j_per_k=config.time_constant_s / resistance,
        critical_c=config.critical_c,
    )


def resolve(config: ModelConfig, *, cpu_model: str, cpus: int) -> ModelParameters:
    table = coefficients_for(cpu_model)
    idle = config.idle_w_per_vcpu if config.idle_w_per_vcpu is not None else table.idle_w_per_vcpu
    peak = config.max_w_per_vcpu if config.max_w_per_vcpu is not None else table.max_w_per_vcpu
    if idle > peak:
        raise UsageError(f"model idle power {idle} W/vCPU exceeds its maximum {peak} W/vCPU")
    overridden = config.idle_w_per_vcpu is not None or config.max_w_per_vcpu is not None
    coefficients = CpuCoefficients(
        f"{table.family}, configured" if overridden else table.family, idle, peak
    )
    vcpus = config.vcpus if config.vcpus is not None else max(cpus, 1)
    thermal = thermal_model(config, full_load_power_w=vcpus * peak)
    return ModelParameters(
        cpu_model=cpu_model, coefficients=coefficients, vcpus=vcpus, thermal=thermal
    )


def active_w_per_core(config: ModelConfig | None = None, procfs_root: str = "/proc") -> float:
    """The power model's active watts per busy core on this machine (max - idle per vCPU)."""
    parameters = resolve(
        config or ModelConfig(), cpu_model=read_cpu_model(procfs_root), cpus=os.cpu_count() or 1
    )
    c = parameters.coefficients
    return max(c.max_w_per_vcpu - c.idle_w_per_vcpu, 0.0)


def utilisation(previous: CpuTimes, current: CpuTimes) -> float | None:
    """Busy share of CPU time between two /proc/stat samples; None when no time was counted."""
    total = current.total_ns - previous.total_ns
    if total <= 0:
        return None
    busy = current.busy_ns - previous.busy_ns
    return min(max(busy / total, 0.0), 1.0)


class DieTemperature:
    """The RC model's state: a die temperature stepped forward by a power over an interval."""

    def __init__(self, thermal: ThermalRC) -> None:
        self.thermal = thermal
        self.temperature_c = thermal.ambient_c

    def step(self, power_w: float, seconds: float) -> float:
        self.temperature_c = self.thermal.step(self.temperature_c, power_w, seconds)
        return self.temperature_c


class PowerModel:
    """Modelled node power, energy and die temperature, advanced sample by sample.

    Energies are exact float µJ sums exposed as ints, so rounding never accumulates.
    """

    def __init__(self, parameters: ModelParameters, cpu: CpuTimes, at_s: float) -> None:
        self.parameters = parameters
        self.die = DieTemperature(parameters.thermal)
        self.utilisation = 0.0
        self.power_w = parameters.idle_power_w
        self._energy_uj = 0.0
        self._idle_energy_uj = 0.0
        self._last_cpu = cpu
        self._last_at_s = at_s

    @property
    def energy_uj(self) -> int:
        return round(self._energy_uj)

    @property
    def idle_energy_uj(self) -> int:
        return round(self._idle_energy_uj)

    @property
    def temperature_c(self) -> float:
        return self.die.temperature_c

    def advance(self, cpu: CpuTimes, at_s: float) -> None:
        """Integrate power from the last sample to this one (`cpu` read at monotonic `at_s`)."""
        seconds = at_s - self._last_at_s
        if seconds <= 0:
            return
        measured = utilisation(self._last_cpu, cpu)
        if measured is not None:
            self.utilisation = measured
        self.power_w = self.parameters.power_w(self.utilisation)
        self._energy_uj += self.power_w * seconds * UJ_PER_J
        self._idle_energy_uj += self.parameters.idle_power_w * seconds * UJ_PER_J
        self.die.step(self.power_w, seconds)
        self._last_cpu, self._last_at_s = cpu, at_s
