"""Helpers for the sensor tests: fake trees, sparse MSR files, /proc/stat writers, a fake NVML,
and running a check as an unprivileged user."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from maxwell.procfs import clock_ticks_per_second

FIXTURES = Path(__file__).parent / "fixtures" / "sensors"
NOBODY = 65534


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


def write_cpuinfo(
    procfs: Path,
    vendor: str,
    model: str,
    packages: list[int],
    *,
    signature: tuple[int, int] | None = None,
) -> None:
    """A /proc/cpuinfo with one block per CPU; `signature` adds `cpu family` and `model` lines."""
    family_model = f"cpu family\t: {signature[0]}\nmodel\t\t: {signature[1]}\n" if signature else ""
    blocks = [
        f"processor\t: {cpu}\nvendor_id\t: {vendor}\n{family_model}model name\t: {model}\n"
        f"physical id\t: {package}\n"
        for cpu, package in enumerate(packages)
    ]
    write_text(procfs / "cpuinfo", "\n".join(blocks))


@contextlib.contextmanager
def world_readable_copy(name: str) -> Iterator[Path]:
    """A copy of a fixture tree that user nobody can traverse (pytest's tmp_path is 0700).

    Everything is restored to owner-writable before removal, so a test may chmod parts to 000.
    """
    top = Path(tempfile.mkdtemp(prefix="maxwell-sensors-"))
    try:
        top.chmod(0o755)
        shutil.copytree(FIXTURES / name, top / name, symlinks=True)
        for path in (top / name).rglob("*"):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        yield top / name
    finally:
        for directory, subdirectories, _ in os.walk(top):  # top-down: open each before entering
            for subdirectory in subdirectories:
                child = Path(directory) / subdirectory
                if not child.is_symlink():
                    child.chmod(0o755)
        shutil.rmtree(top)


def as_nobody(action: Callable[[], str]) -> str:
    """Run `action` in a forked child that dropped root; returns its text (or its error's).

    An exception in `action` comes back as "TypeName: message" (a traceback would be a failure of
    the child, reported with its output).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                outcome = action()
            except Exception as error:
                outcome = f"{type(error).__name__}: {error}"
            os.write(write_end, outcome.encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, outcome
    return outcome


def unprivileged(action: Callable[[], str]) -> str:
    """Run `action` as a user that mode-000 directories keep out: nobody when we are root (root
    reads anything), else this user (the owner of a mode-000 directory cannot list it either)."""
    if os.geteuid() == 0:
        return as_nobody(action)
    try:
        return action()
    except Exception as error:
        return f"{type(error).__name__}: {error}"


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
