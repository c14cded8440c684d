"""Helpers for the sensor tests: fake trees, sparse MSR files, /proc/stat writers, a fake NVML."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from maxwell.procfs import clock_ticks_per_second

FIXTURES = Path(__file__).parent / "fixtures" / "sensors"


def fixture(name: str) -> Path:
    return FIXTURES / name


def copy_fixture(name: str, destination: Path) -> Path:
    """A private, mutable copy of a checked-in fake tree (symlinks kept as symlinks)."""
    target = destination / name
    shutil.copytree(FIXTURES / name, target, symlinks=True)
    return target


def write_text(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def write_stat(procfs: Path, *, busy_ticks: int, idle_ticks: int, cpus: int) -> None:
    """Rewrite <procfs>/stat with these node-wide totals, spread evenly over `cpus` lines."""
    lines = [f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0 0 0"]
    lines += [
        f"cpu{i} {busy_ticks // cpus} 0 0 {idle_ticks // cpus} 0 0 0 0 0 0" for i in range(cpus)
    ]
    lines += ["intr 0", "ctxt 0", "btime 1700000000", "processes 1"]
    write_text(procfs / "stat", "\n".join(lines))


def ticks(seconds: float) -> int:
    """USER_HZ ticks in `seconds` (what /proc/stat counts in)."""
    return round(seconds * clock_ticks_per_second())


def write_msr(dev_root: Path, cpu: int, registers: Mapping[int, int]) -> Path:
    """Write 8-byte little-endian values at offset = register into a sparse <dev>/cpu/N/msr.

    AMD registers sit near 3 GiB: seek + write keeps the file sparse (a few KiB on disk).
    """
    path = dev_root / "cpu" / str(cpu) / "msr"
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "r+b" if path.exists() else "wb"
    with path.open(mode) as handle:
        for register, value in registers.items():
            handle.seek(register)
            handle.write(value.to_bytes(8, "little"))
    return path


def write_msr_bytes(dev_root: Path, cpu: int, offset: int, data: bytes) -> Path:
    """Write raw bytes at `offset` of a sparse <dev>/cpu/N/msr.

    The real device returns each register's own 8 bytes at offset = register number, but in a
    flat file registers one apart (AMD's 0xC0010299, 0xC001029A, 0xC001029B) share bytes: a test
    of them writes one byte string and reads each register as the 8 bytes at its offset.
    """
    path = dev_root / "cpu" / str(cpu) / "msr"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("r+b" if path.exists() else "wb") as handle:
        handle.seek(offset)
        handle.write(data)
    return path


def write_cpuinfo(procfs: Path, vendor: str, model: str, packages: list[int]) -> None:
    blocks = [
        f"processor\t: {cpu}\nvendor_id\t: {vendor}\nmodel name\t: {model}\n"
        f"physical id\t: {package}\n"
        for cpu, package in enumerate(packages)
    ]
    write_text(procfs / "cpuinfo", "\n".join(blocks))


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


class FakeNvml:
    """The handful of pynvml functions Maxwell calls, backed by plain attributes."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1

    def __init__(self, gpus: list[dict[str, object]], *, init_error: str | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = False
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def _get(self, handle: int, key: str) -> object:
        value = self.gpus[handle].get(key)
        if value is None:
            raise NVMLError(f"{key}: Not Supported")
        return value

    def nvmlDeviceGetName(self, handle: int) -> object:
        return self._get(handle, "name")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> object:
        return self._get(handle, "energy_mj")

    def nvmlDeviceGetPowerUsage(self, handle: int) -> object:
        return self._get(handle, "power_mw")

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> object:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._get(handle, "temperature_c")

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> object:
        assert threshold == self.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        return self._get(handle, "slowdown_c")
