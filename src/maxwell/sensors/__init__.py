"""`maxwell.sensors`: one facade (`Sensors`) over per-source backends, psutil-style.

Map of the package:

- `powercap`: RAPL through `<sysfs>/class/powercap/intel-rapl:*` (and the mmio duplicates).
- `msr`: RAPL through `<dev>/cpu/N/msr` (Intel and AMD registers).
- `hwmon`: `<sysfs>/class/hwmon/hwmonN` energy, power and temperature channels.
- `thermal`: `<sysfs>/class/thermal/thermal_zoneN` temperatures and trip points.
- `nvml`: NVIDIA GPUs through an injected NVML module.
- `model`: the labelled fallback (Cloud Carbon Footprint power, RC die temperature). Pure.
- `counters`: wraparound-safe energy counters. Pure.
- `detection`: probes every backend once and chooses the node's energy counters and temperature
  sensors (`Sensors.detect()` drives it).
- `listing`: `Reading`, and every found sensor's live reading (`Sensors.readings()`).
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

from dataclasses import dataclass
from pathlib import Path

from maxwell.clock import Clock, SystemClock
from maxwell.errors import SensorError
from maxwell.procfs import CpuTimes, CpuTimesReader, read_cpu_model
from maxwell.sensors._types import Kind, Source
from maxwell.sensors.detection import (
    TRY_IMPORT,
    Backends,
    NodeEnergy,
    NodeTemperature,
    choose_energy,
    choose_temperature,
    probe_backends,
    rated_power_w,
)
from maxwell.sensors.listing import Reading, list_readings
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
        self._config = ModelConfig()
        self._backends = Backends()
        self._node_energy = NodeEnergy()
        self._node_temperature = NodeTemperature()
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
        self._config = model_config if model_config is not None else ModelConfig()
        self._cpu_times = CpuTimesReader(procfs_root)
        cpu = self._cpu_times.read()
        now = self._clock.monotonic()
        backends = probe_backends(
            sysfs_root=sysfs_root,
            dev_root=dev_root,
            procfs_root=procfs_root,
            nvml_module=nvml,
            use_msr=use_msr,
        )
        self._backends = backends
        parameters = resolve(self._config, cpu_model=read_cpu_model(procfs_root), cpus=cpu.cpus)
        self._model = PowerModel(parameters, cpu, now)
        self._node_energy = choose_energy(backends, now)
        self.energy_source = self._node_energy.source
        self.energy_measured = self._node_energy.measured
        full_load_power_w = rated_power_w(backends, self.energy_source, parameters)
        self._measured_die = DieTemperature(
            thermal_model(self._config, full_load_power_w=full_load_power_w)
        )
        self._node_temperature = choose_temperature(backends, self._config.critical_c)
        self.temperature_source = self._node_temperature.source
        self.temperature_measured = self._node_temperature.measured
        self._describe = [*backends.describe, self._model_line(parameters)]
        self._last_cpu = cpu
        self._last_at_s = now
        self._last_energy_uj = 0
        self._last_power_w = parameters.idle_power_w
        self._idle_energy_uj = 0.0
        return self

    def _model_line(self, parameters: ModelParameters) -> str:
        """describe()'s line for the model: its parameters, and what it stands in for."""
        if not self.energy_measured:
            role = "used for energy" + ("" if self.temperature_measured else " and temperature")
        elif not self.temperature_measured:
            role = "used for temperature (RC driven by measured power)"
        else:
            role = "not used (measured sources found)"
        return f"{Source.MODEL}: {parameters.describe()}; {role}"

    # --- sampling --------------------------------------------------------------------------

    def sample(self) -> NodeSample:
        """Node energy, idle energy and temperature now. Cheap enough for 10 calls a second."""
        now = self._clock.monotonic()
        cpu = self._read_cpu_times()
        seconds = now - self._last_at_s
        warnings: list[str] = []
        self._model.advance(cpu, now)
        if self.energy_measured:
            energy_uj = self._read_node_energy_uj(now, warnings)
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

    def _read_node_energy_uj(self, now: float, warnings: list[str]) -> int:
        """Read every node counter; the node's energy is their sum (µJ since detection)."""
        counters = self._node_energy.counters
        for node_counter in counters:
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
        return sum(n.counter.total_uj for n in counters)

    def _read_cpu_times(self) -> CpuTimes:
        if self._cpu_times is None:
            raise SensorError("sensors are closed (or were not made by Sensors.detect)")
        return self._cpu_times.read()

    def _temperature(self, warnings: list[str]) -> tuple[float, float, bool, Source]:
        best: tuple[float, float, Source] | None = None
        probes = self._node_temperature.probes
        for probe in probes:
            try:
                celsius = probe.read_c()
            except SensorError as error:
                warnings.append(f"{probe.id}: {error}; skipped")
                continue
            if best is None or probe.critical_c - celsius < best[1] - best[0]:
                best = (celsius, probe.critical_c, probe.source)
        if best is not None:
            return best[0], best[1], True, best[2]
        if probes:
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
        hwmon_node_ids = (
            self._node_energy.counter_ids if self.energy_source == Source.HWMON else set()
        )
        out = list_readings(
            self._backends, node, self._model, hwmon_node_ids=hwmon_node_ids, warnings=warnings
        )
        self._warnings = tuple(dict.fromkeys(warnings))
        return out

    def describe(self) -> list[str]:
        """One line per backend: found (and what for) or absent, and why."""
        return list(self._describe)

    def close(self) -> None:
        if self._cpu_times is not None:
            self._cpu_times.close()
            self._cpu_times = None
        if self._backends.nvml is not None:
            self._backends.nvml.close()
            self._backends.nvml = None

    def __enter__(self) -> Sensors:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
