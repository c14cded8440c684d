"""A workload group on the cgroup v2 (unified) hierarchy.

Files: `cpu.max` ("$QUOTA $PERIOD" or "max $PERIOD"), `cpu.weight` (1..10000), `memory.max`,
`pids.max`, `cgroup.freeze` + `cgroup.events` ("frozen 1" when done), `cgroup.kill` (kernel 5.14+),
`cpu.stat` (`usage_usec`), `memory.current`, `memory.peak` (5.19+), `pids.current`.
The core files (procs, freeze, kill, events, cpu.stat) exist without any controller enabled,
which is what lets a hybrid host use the unified hierarchy for membership, freeze and kill.

Rules: a group's controllers are the ones its parent enabled for it (its `cgroup.controllers`,
read once when the object is built). Without one, the matching limits raise
`CgroupUnavailableError` (asking for no limit, `None`, is granted silently: that is what no
controller means); without memory, `stats()` reports 0 bytes with `memory_metered` False. CPU time
(`cpu.stat` `usage_usec`), freezing and killing need no controller.
"""

from __future__ import annotations

import os

from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import (
    CgroupGroup,
    CpuCounterFile,
    check_limit,
    check_period,
    check_weight,
    parse_flat_keyed,
    parse_int,
    quota_us,
)
from maxwell.cgroups.base import GroupStats
from maxwell.clock import Clock
from maxwell.errors import CgroupUnavailableError


def read_events(fs: CgroupFs, directory: str) -> dict[str, int]:
    return parse_flat_keyed(fs.read_text(os.path.join(directory, "cgroup.events")))


def v2_freeze(
    fs: CgroupFs, group: CgroupGroup, directory: str, frozen: bool, timeout_s: float
) -> None:
    """Write cgroup.freeze and wait until cgroup.events agrees (freezing is asynchronous)."""
    fs.write_text(os.path.join(directory, "cgroup.freeze"), "1" if frozen else "0")
    want = 1 if frozen else 0
    group.wait_until(
        lambda: read_events(fs, directory).get("frozen") == want,
        timeout_s,
        "freeze" if frozen else "thaw",
    )


class V2Group(CgroupGroup):
    """One cgroup v2 directory. Build it through `CgroupManager`, or directly over any v2
    directory (tests use the unified hierarchy of a hybrid host, and fake trees)."""

    kind = "v2"

    def __init__(
        self,
        name: str,
        directory: str,
        *,
        layout: str = "v2",
        fs: CgroupFs | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, directory, fs=fs, clock=clock)
        self.directory = directory
        self.layout = layout
        self.supports_freeze = self._fs.exists(self._file("cgroup.freeze"))
        # None when the file cannot be found (the group is gone): writes then fail as the kernel
        # says, rather than blaming a controller.
        listed = self._fs.read_text_or_none(self._file("cgroup.controllers"))
        self.controllers: frozenset[str] | None = (
            None if listed is None else frozenset(listed.split())
        )
        # State of the memory-freed lower bound (see `stats`).
        self._last_current: int | None = None
        self._drops = 0
        self._max_current = 0
        self._freed = 0

    def _file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def has_controller(self, controller: str) -> bool:
        """Whether the parent enabled `controller` for this group (True when unknown)."""
        return self.controllers is None or controller in self.controllers

    def _require(self, controller: str, name: str) -> str:
        if not self.has_controller(controller):
            raise CgroupUnavailableError(
                f"the cgroup v2 {controller} controller is not enabled for {self.directory} "
                f"(its parent did not delegate it); cannot set {name}",
                path=self.directory,
            )
        return self._file(name)

    def membership_dirs(self) -> list[str]:
        return [self.directory]

    def cpu_counter_file(self) -> CpuCounterFile:
        return CpuCounterFile(self._file("cpu.stat"), keyed=True)

    def set_cpu_quota(self, cores: float | None, period_us: int = 100_000) -> None:
        check_period(period_us)
        quota = "max" if cores is None else str(quota_us(cores, period_us))
        if cores is None and not self.has_controller("cpu"):
            return  # no quota is what no controller means
        self._fs.write_text(self._require("cpu", "cpu.max"), f"{quota} {period_us}")

    def set_cpu_weight(self, weight: int) -> None:
        checked = check_weight(weight)
        self._fs.write_text(self._require("cpu", "cpu.weight"), str(checked))

    def set_memory_max(self, limit_bytes: int | None) -> None:
        limit = check_limit(limit_bytes, "memory limit")
        if limit is None and not self.has_controller("memory"):
            return  # unlimited is what no controller means
        path = self._require("memory", "memory.max")
        self._fs.write_text(path, "max" if limit is None else str(limit))

    def set_pids_max(self, limit: int | None) -> None:
        checked = check_limit(limit, "pids limit")
        if checked is None and not self.has_controller("pids"):
            return  # unlimited is what no controller means
        path = self._require("pids", "pids.max")
        self._fs.write_text(path, "max" if checked is None else str(checked))

    def freeze(self, timeout_s: float = 5.0) -> None:
        self._require_freezer()
        v2_freeze(self._fs, self, self.directory, True, timeout_s)

    def thaw(self, timeout_s: float = 5.0) -> None:
        self._require_freezer()
        v2_freeze(self._fs, self, self.directory, False, timeout_s)

    def _require_freezer(self) -> None:
        if not self.supports_freeze:
            raise CgroupUnavailableError(
                f"{self._file('cgroup.freeze')} is missing (kernel older than 5.2)",
                path=self.directory,
            )

    def is_empty(self) -> bool:
        return read_events(self._fs, self.directory).get("populated", 0) == 0

    def kill(self, timeout_s: float = 5.0) -> None:
        """cgroup.kill (SIGKILL to the subtree, forks racing with it included), then wait until
        empty; on kernels without it, freeze + SIGKILL rounds."""
        if self._fs.exists(self._file("cgroup.kill")):
            self._fs.write_text(self._file("cgroup.kill"), "1")
            self.wait_until(self.is_empty, timeout_s, "empty after cgroup.kill")
            return
        if self.supports_freeze:
            self.kill_by_signals(timeout_s, lambda: self.freeze(1.0), lambda: self.thaw(1.0))
        else:
            self.kill_by_signals(timeout_s, None, None)

    def stats(self) -> GroupStats:
        """Memory and pids read from their files (`StatFiles`).

        `memory_freed_bytes` is a lower bound, never an over-count: cgroup v2 keeps no counter of
        uncharged memory (memory.stat has no pgpgout). Two lower bounds are kept and the larger is
        reported, never decreasing: (a) the sum of the drops of `memory.current` between
        consecutive readings (misses memory allocated and freed between two readings), and
        (b) `memory.peak - memory.current` (all that was freed since the high-water mark must have
        been released). Memory freed and re-allocated repeatedly between readings is missed.
        `memory_freed_exact` is therefore False. CPU is read as `cpu_ns()` reads it, through the
        same descriptor. Without the memory controller the memory figures are 0 and
        `memory_metered` is False.
        """
        cpu_ns = self.cpu_ns()
        pids_raw = self._files.read(self._file("pids.current"))
        tasks = parse_int(pids_raw) if pids_raw is not None else None
        if tasks is None:
            tasks = len(self.pids())
        if not self.has_controller("memory"):
            return GroupStats(
                cpu_ns=cpu_ns,
                memory_bytes=0,
                peak_memory_bytes=0,
                memory_freed_bytes=0,
                memory_freed_exact=False,
                pids=tasks,
                memory_metered=False,
            )
        current_raw = self._files.read(self._file("memory.current"))
        current = (parse_int(current_raw) if current_raw is not None else None) or 0
        peak_raw = self._files.read(self._file("memory.peak"))
        peak_file = parse_int(peak_raw) if peak_raw is not None else None

        if self._last_current is not None and current < self._last_current:
            self._drops += self._last_current - current
        self._last_current = current
        self._max_current = max(self._max_current, current)
        peak = max(peak_file or 0, self._max_current)
        self._freed = max(self._freed, self._drops, peak - current)
        return GroupStats(
            cpu_ns=cpu_ns,
            memory_bytes=current,
            peak_memory_bytes=peak,
            memory_freed_bytes=self._freed,
            memory_freed_exact=False,
            pids=tasks,
        )
