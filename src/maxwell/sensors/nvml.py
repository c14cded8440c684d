"""NVIDIA GPUs through NVML (optional extra `maxwell[gpu]`: package nvidia-ml-py, module `pynvml`).

The NVML module is injected (`nvml=`), so tests pass a small fake object with the same functions.
Per GPU: `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded; Volta and later),
`nvmlDeviceGetPowerUsage` (mW), `nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU)` (°C) and
`nvmlDeviceGetTemperatureThreshold(h, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)` (°C). A call that
raises `NVMLError` (energy is not supported before Volta) omits that reading.

GPU energy is reported as readings but is never added into the node's CPU energy: the meter
attributes CPU energy by CPU time, which says nothing about who used a GPU.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any

from maxwell.errors import SensorError

# NVML's enum values, used when the injected module does not define the names.
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1


def import_nvml() -> Any:
    """The `pynvml` module; raises `SensorError` (the reason) when it is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise SensorError("pynvml not installed (pip install 'maxwell[gpu]')") from exc


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    energy_mj: int | None
    power_mw: int | None
    temperature_c: float | None
    slowdown_c: float | None


class NvmlBackend:
    """An initialised NVML session over every GPU; `close()` shuts NVML down."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except self._error as exc:
            raise SensorError(f"NVML init failed: {exc}") from exc
        try:
            count = int(nvml.nvmlDeviceGetCount())
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self.names = [self._name(h, i) for i, h in enumerate(self._handles)]
        except self._error as exc:
            self.close()
            raise SensorError(f"NVML could not list GPUs: {exc}") from exc
        if not self._handles:
            self.close()
            raise SensorError("NVML found no GPUs")
        self._closed = False

    def _name(self, handle: Any, index: int) -> str:
        try:
            name = self._nvml.nvmlDeviceGetName(handle)
        except self._error:
            return f"GPU {index}"
        text = name.decode() if isinstance(name, bytes) else str(name)
        return f"GPU {index} {text}"

    def _call(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, function)(*args)
        except self._error:
            return None

    def read(self) -> list[GpuReading]:
        gpu_sensor = getattr(self._nvml, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU)
        slowdown = getattr(
            self._nvml, "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN", NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        )
        readings: list[GpuReading] = []
        for index, handle in enumerate(self._handles):
            energy = self._call("nvmlDeviceGetTotalEnergyConsumption", handle)
            power = self._call("nvmlDeviceGetPowerUsage", handle)
            temperature = self._call("nvmlDeviceGetTemperature", handle, gpu_sensor)
            threshold = self._call("nvmlDeviceGetTemperatureThreshold", handle, slowdown)
            readings.append(
                GpuReading(
                    index=index,
                    name=self.names[index],
                    energy_mj=None if energy is None else int(energy),
                    power_mw=None if power is None else int(power),
                    temperature_c=None if temperature is None else float(temperature),
                    slowdown_c=None if threshold is None else float(threshold),
                )
            )
        return readings

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        with contextlib.suppress(self._error):
            self._nvml.nvmlShutdown()
