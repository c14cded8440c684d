"""Readers for the few /proc files Maxwell needs; every reader takes `procfs_root`.

`/proc/stat`'s first line gives cumulative CPU time per state in USER_HZ ticks; we convert to
nanoseconds. Busy time is user + nice + system + irq + softirq (guest time is already counted in
user). Idle, iowait and steal are not busy.

Steal is time the hypervisor ran something else while this vCPU wanted to run: no work was done
for this guest, and no power drawn on its behalf, so it is not busy. It stays in the total, as
not-busy time: the meter and the model integrate power over wall-clock time, so utilisation must
be busy time over all the time that passed. Dropping steal from the total as well would scale the
busy share up to the time the vCPU actually ran (busy 0.5 s, stolen 0.5 s of 1 s would read as
100% busy for the whole second), charging the guest for the stolen half again. It also keeps busy
time comparable with per-process and per-cgroup CPU time, which exclude steal (the kernel's task
clock does not advance while a vCPU is preempted, with steal-time accounting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from maxwell.errors import SensorError

NS_PER_S = 1_000_000_000


def clock_ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative node CPU time, nanoseconds, summed over every CPU.

    `idle_ns` is everything not busy: idle, iowait and steal.
    """

    busy_ns: int
    total_ns: int
    cpus: int

    @property
    def idle_ns(self) -> int:
        return self.total_ns - self.busy_ns


def parse_proc_stat(text: str, ticks_per_second: int) -> CpuTimes:
    """Parse the aggregate `cpu` line of /proc/stat (and count the per-CPU lines)."""
    aggregate: list[int] | None = None
    cpus = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "cpu":
            aggregate = [int(value) for value in fields[1:]]
        elif fields[0].startswith("cpu") and fields[0][3:].isdigit():
            cpus += 1
    if aggregate is None or len(aggregate) < 4:
        raise SensorError("/proc/stat has no aggregate cpu line")
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user.
    states = (aggregate + [0] * 10)[:10]
    user, nice, system, idle, iowait, irq, softirq, steal = states[:8]
    busy = user + nice + system + irq + softirq
    total = busy + idle + iowait + steal  # steal: time that passed, not work done (see above)
    ns_per_tick = NS_PER_S // ticks_per_second
    return CpuTimes(busy_ns=busy * ns_per_tick, total_ns=total * ns_per_tick, cpus=max(cpus, 1))


def read_cpu_times(procfs_root: str | Path = "/proc") -> CpuTimes:
    path = Path(procfs_root) / "stat"
    try:
        text = path.read_text()
    except OSError as exc:
        raise SensorError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
    return parse_proc_stat(text, clock_ticks_per_second())


def read_cpu_model(procfs_root: str | Path = "/proc") -> str:
    """The first `model name` in /proc/cpuinfo, or '' when there is none (some ARM kernels)."""
    path = Path(procfs_root) / "cpuinfo"
    try:
        text = path.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


class CpuTimesReader:
    """/proc/stat through a kept descriptor: one `pread` and one parsed line per reading.

    The meter reads node CPU time up to ten times a second. Re-opening the file and parsing every
    line costs several times more than the kernel's own work, especially with cold caches after a
    sleep; the CPU count cannot change under a reading, so it is counted once.
    """

    _READ_BYTES = 4096  # the aggregate line is first; the kernel generates the rest regardless

    def __init__(self, procfs_root: str | Path = "/proc") -> None:
        self._path = Path(procfs_root) / "stat"
        try:
            self._fd: int | None = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SensorError(
                f"cannot read {self._path}: {exc.strerror}", path=str(self._path)
            ) from exc
        self._ticks_per_second = clock_ticks_per_second()
        self._cpus = self._read_all().cpus

    def _read_all(self) -> CpuTimes:
        chunks = []
        offset = 0
        while chunk := self._pread(offset):
            chunks.append(chunk)
            offset += len(chunk)
        return parse_proc_stat(b"".join(chunks).decode(), self._ticks_per_second)

    def _pread(self, offset: int) -> bytes:
        if self._fd is None:
            raise SensorError(f"{self._path} reader is closed", path=str(self._path))
        try:
            return os.pread(self._fd, self._READ_BYTES, offset)
        except OSError as exc:
            raise SensorError(
                f"cannot read {self._path}: {exc.strerror}", path=str(self._path)
            ) from exc

    def read(self) -> CpuTimes:
        head = self._pread(0)
        line = head.split(b"\n", 1)[0].decode()
        times = parse_proc_stat(line, self._ticks_per_second)
        return CpuTimes(busy_ns=times.busy_ns, total_ns=times.total_ns, cpus=self._cpus)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
