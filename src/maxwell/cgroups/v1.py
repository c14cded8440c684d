"""A workload group on cgroup v1 controllers, with the unified hierarchy on hybrid hosts.

Files: `cpu.cfs_quota_us` (-1 = unlimited) / `cpu.cfs_period_us`, `cpu.shares` (2..262144,
default 1024), `cpuacct.usage` (ns), `memory.limit_in_bytes` (-1 = unlimited),
`memory.usage_in_bytes`, `memory.max_usage_in_bytes`, `memory.stat` (`total_pgpgout`: pages
uncharged, so freed memory is exact), `pids.max`, `pids.current`, `freezer.state`.

Rules: the group is one directory per hierarchy it uses (cpu and cpuacct may be one co-mounted
hierarchy), plus the unified v2 directory on a hybrid host; a member is in all of them. On a
hybrid host the v2 core files do the freezing (`cgroup.freeze`, whose frozen tasks still die on
SIGKILL) and killing (`cgroup.kill`); otherwise `freezer.state`, whose FROZEN tasks die only once
thawed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import (
    CgroupGroup,
    CpuCounterFile,
    check_limit,
    check_period,
    check_weight,
    parse_int,
    parse_pids,
    quota_us,
    read_keyed_int,
)
from maxwell.cgroups.base import GroupStats
from maxwell.cgroups.v2 import read_events, v2_freeze
from maxwell.clock import Clock
from maxwell.errors import CgroupUnavailableError

# The v1 controllers a group is made in, when mounted.
V1_GROUP_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "freezer")

MIN_SHARES = 2
MAX_SHARES = 262_144


def weight_to_shares(weight: int) -> int:
    """v2 weight (default 100) to v1 shares (default 1024)."""
    return max(MIN_SHARES, min(MAX_SHARES, weight * 1024 // 100))


class V1Group(CgroupGroup):
    """A group across v1 controller hierarchies (`dirs`: controller -> directory) and, on a
    hybrid host, the unified hierarchy (`unified_dir`)."""

    kind = "v1"

    def __init__(
        self,
        name: str,
        dirs: Mapping[str, str],
        *,
        unified_dir: str | None = None,
        layout: str = "v1",
        fs: CgroupFs | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not dirs:
            raise ValueError("a v1 group needs at least one controller's directory")
        # Where the cpu controller is missing (a stale group half torn down), any will name it.
        super().__init__(name, dirs.get("cpu") or next(iter(dirs.values())), fs=fs, clock=clock)
        self.dirs = dict(dirs)
        self.unified_dir = unified_dir
        self.layout = layout
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        if unified_dir is not None and self._fs.exists(os.path.join(unified_dir, "cgroup.freeze")):
            self.freeze_method: str | None = "cgroup.freeze"
        elif "freezer" in self.dirs:
            self.freeze_method = "freezer.state"
        else:
            self.freeze_method = None
        self.supports_freeze = self.freeze_method is not None

    def _file(self, controller: str, name: str) -> str | None:
        directory = self.dirs.get(controller)
        return None if directory is None else os.path.join(directory, name)

    def _require(self, controller: str, name: str) -> str:
        path = self._file(controller, name)
        if path is None:
            raise CgroupUnavailableError(
                f"the v1 {controller} controller is not mounted; cannot set {name}",
                path=self.path,
            )
        return path

    def membership_dirs(self) -> list[str]:
        ordered = list(dict.fromkeys(self.dirs.values()))
        if self.unified_dir is not None:
            ordered.append(self.unified_dir)
        return ordered

    def cpu_counter_file(self) -> CpuCounterFile | None:
        """`cpuacct.usage` (ns); on a hybrid host without cpuacct, the unified `cpu.stat`."""
        usage = self._file("cpuacct", "cpuacct.usage")
        if usage is not None:
            return CpuCounterFile(usage, keyed=False)
        if self.unified_dir is not None:
            return CpuCounterFile(os.path.join(self.unified_dir, "cpu.stat"), keyed=True)
        return None

    def set_cpu_quota(self, cores: float | None, period_us: int = 100_000) -> None:
        check_period(period_us)
        quota = -1 if cores is None else quota_us(cores, period_us)
        quota_file = self._require("cpu", "cpu.cfs_quota_us")
        period_file = self._require("cpu", "cpu.cfs_period_us")
        if parse_int(self._fs.read_text(period_file).encode()) != period_us:
            # Lift the quota first so no intermediate quota/period ratio can be refused.
            self._fs.write_text(quota_file, "-1")
            self._fs.write_text(period_file, str(period_us))
        self._fs.write_text(quota_file, str(quota))

    def set_cpu_weight(self, weight: int) -> None:
        shares = weight_to_shares(check_weight(weight))
        self._fs.write_text(self._require("cpu", "cpu.shares"), str(shares))

    def set_memory_max(self, limit_bytes: int | None) -> None:
        limit = check_limit(limit_bytes, "memory limit")
        path = self._require("memory", "memory.limit_in_bytes")
        self._fs.write_text(path, "-1" if limit is None else str(limit))

    def set_pids_max(self, limit: int | None) -> None:
        checked = check_limit(limit, "pids limit")
        path = self._file("pids", "pids.max")
        if path is None and checked is None:
            return  # unlimited is what no controller means
        path = self._require("pids", "pids.max")
        self._fs.write_text(path, "max" if checked is None else str(checked))

    # -- freeze ------------------------------------------------------------------------------

    def _freezer_state(self, state: str, timeout_s: float) -> None:
        path = self._require("freezer", "freezer.state")
        self._fs.write_text(path, state)
        # FREEZING until every task has stopped; re-writing FROZEN retries stuck tasks.
        self.wait_until(
            lambda: self._fs.read_text(path).strip() == state,
            timeout_s,
            "freeze" if state == "FROZEN" else "thaw",
        )

    def freeze(self, timeout_s: float = 5.0) -> None:
        if self.freeze_method == "cgroup.freeze" and self.unified_dir is not None:
            v2_freeze(self._fs, self, self.unified_dir, True, timeout_s)
        elif self.freeze_method == "freezer.state":
            self._freezer_state("FROZEN", timeout_s)
        else:
            raise CgroupUnavailableError(
                "no freezer: neither the v1 freezer controller nor a v2 cgroup.freeze is available",
                path=self.path,
            )

    def thaw(self, timeout_s: float = 5.0) -> None:
        if self.freeze_method == "cgroup.freeze" and self.unified_dir is not None:
            v2_freeze(self._fs, self, self.unified_dir, False, timeout_s)
        elif self.freeze_method == "freezer.state":
            self._freezer_state("THAWED", timeout_s)
        else:
            raise CgroupUnavailableError("no freezer to thaw with", path=self.path)

    # -- membership and killing ----------------------------------------------------------

    def is_empty(self) -> bool:
        if self.unified_dir is not None:
            return read_events(self._fs, self.unified_dir).get("populated", 0) == 0
        for directory in self.membership_dirs():
            text = self._fs.read_text_or_none(os.path.join(directory, "cgroup.procs"))
            if text is not None and parse_pids(text):
                return False
        return True

    def kill(self, timeout_s: float = 5.0) -> None:
        """cgroup.kill on the unified hierarchy where present (hybrid host); otherwise rounds of
        freeze, SIGKILL to every member, thaw, until two scans find nobody."""
        if self.unified_dir is not None:
            kill_file = os.path.join(self.unified_dir, "cgroup.kill")
            if self._fs.exists(kill_file):
                self._fs.write_text(kill_file, "1")
                self.wait_until(self.is_empty, timeout_s, "empty after cgroup.kill")
                return
        if self.supports_freeze:
            self.kill_by_signals(timeout_s, lambda: self.freeze(1.0), lambda: self.thaw(1.0))
        else:
            self.kill_by_signals(timeout_s, None, None)

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> GroupStats:
        """Memory and pids read from their files (`StatFiles`); `memory_freed_bytes` is exact
        (total_pgpgout). CPU is read as `cpu_ns()` reads it, through the same descriptor."""
        cpu_ns = self._cpu_ns_or_zero()

        memory = peak = freed = 0
        exact = False
        memory_dir = self.dirs.get("memory")
        if memory_dir is not None:
            current_raw = self._files.read(os.path.join(memory_dir, "memory.usage_in_bytes"))
            peak_raw = self._files.read(os.path.join(memory_dir, "memory.max_usage_in_bytes"))
            stat_raw = self._files.read(os.path.join(memory_dir, "memory.stat"), 16_384)
            memory = (parse_int(current_raw) if current_raw is not None else None) or 0
            peak = max(memory, (parse_int(peak_raw) if peak_raw is not None else None) or 0)
            if stat_raw is not None:
                pages = read_keyed_int(stat_raw, b"total_pgpgout")
                if pages is None:
                    pages = read_keyed_int(stat_raw, b"pgpgout")
                exact = pages is not None
                freed = (pages or 0) * self._page_size

        pids_path = self._file("pids", "pids.current")
        pids_raw = self._files.read(pids_path) if pids_path is not None else None
        tasks = parse_int(pids_raw) if pids_raw is not None else None
        if tasks is None:
            tasks = len(self.pids())
        return GroupStats(
            cpu_ns=cpu_ns,
            memory_bytes=memory,
            peak_memory_bytes=peak,
            memory_freed_bytes=freed,
            memory_freed_exact=exact,
            pids=tasks,
            memory_metered=memory_dir is not None,
        )
