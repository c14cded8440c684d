"""The /proc fallback: a "group" that is a process tree, for when cgroups cannot be used.

Rules and honest limits:
- Members are the spawned roots, every live descendant found by walking the ppid links of
  `<procfs>/[0-9]*/stat`, and every process in a root's session (children start in a new session,
  so orphans re-parented to init are still found unless they call setsid themselves).
- Nothing is confined: CPU, memory and pids limits cannot be enforced (setting one raises
  `CgroupUnavailableError`; setting "unlimited" is a no-op), and there is no freezer
  (`supports_freeze` is False; SIGSTOP would be visible to, and undoable by, the workload).
- `stats()` is approximate: CPU is utime+stime of live members plus the roots' cutime+cstime
  (children they reaped), kept non-decreasing; CPU of short-lived grandchildren reaped by a
  non-root member that has since exited is missed. Memory is the sum of VmRSS (shared pages are
  counted once per process); the peak is the larger of the sampled sums and the largest single
  VmHWM (a lower bound); memory freed is the sum of drops of the summed RSS between readings
  (a lower bound, not exact). A full /proc scan per reading makes it far costlier than cgroups.
- `kill()` SIGKILLs every member and the roots' process groups, until two consecutive scans
  find no one (a fork loop cannot outrun it for long).
- A restarted owner finds a tree again by its roots (`roots`, `adopt`): each pid with its start
  time, so a process that took a dead root's pid since is never adopted.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from maxwell.cgroups._group import oom_adjuster, send_signal, sigkill_until_empty
from maxwell.cgroups.base import GroupStats, StdStream
from maxwell.clock import Clock, SystemClock
from maxwell.errors import CgroupError, CgroupUnavailableError, ProcessError
from maxwell.procfs import NS_PER_S, clock_ticks_per_second

# Field indices in /proc/PID/stat after the ")" that closes comm.
_STATE, _PPID, _SESSION = 0, 1, 3
_UTIME, _STIME, _CUTIME, _CSTIME = 11, 12, 13, 14
_STARTTIME = 19  # clock ticks after boot: with the pid, names one process for good


def parse_stat(text: str) -> list[str] | None:
    """The fields after `pid (comm)`; comm may hold spaces and parentheses."""
    close = text.rfind(")")
    if close < 0:
        return None
    fields = text[close + 1 :].split()
    return fields if len(fields) > _CSTIME else None


def parse_status_kib(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return 0


class ProcTreeGroup:
    """A `WorkloadGroup` over /proc, kind "none"."""

    kind = "none"
    layout = "none"
    supports_freeze = False

    def __init__(
        self, name: str, *, procfs_root: str | Path = "/proc", clock: Clock | None = None
    ) -> None:
        self.name = name
        self._procfs = Path(procfs_root)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._roots: list[int] = []
        self._ns_per_tick = NS_PER_S // clock_ticks_per_second()
        self._cpu_ns = 0
        self._peak = 0
        self._freed = 0
        self._last_memory: int | None = None
        self.path = f"{self._procfs} (process tree of {name!r})"

    # -- membership ----------------------------------------------------------------------------

    def _scan(self) -> dict[int, list[str]]:
        """pid -> stat fields of every readable process; none before the group has a process
        (a group is metered before its first process starts: that costs no scan)."""
        table: dict[int, list[str]] = {}
        if not self._roots:
            return table
        try:
            entries = os.listdir(self._procfs)
        except OSError as exc:
            raise CgroupError(f"cannot list {self._procfs}: {exc.strerror}") from exc
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                text = (self._procfs / entry / "stat").read_text()
            except OSError:
                continue  # exited between listdir and read
            fields = parse_stat(text)
            if fields is not None:
                table[int(entry)] = fields
        return table

    def _members(self, table: dict[int, list[str]]) -> set[int]:
        """Roots, their descendants and their sessions' members, zombies included."""
        if not self._roots:
            return set()
        children: dict[int, list[int]] = {}
        for pid, fields in table.items():
            children.setdefault(int(fields[_PPID]), []).append(pid)
        sessions = set(self._roots)  # each root leads its own session
        found: set[int] = set()
        stack = [root for root in self._roots if root in table]
        while stack:
            pid = stack.pop()
            if pid in found:
                continue
            found.add(pid)
            stack.extend(children.get(pid, ()))
        found |= {pid for pid, fields in table.items() if int(fields[_SESSION]) in sessions}
        return found

    def pids(self) -> list[int]:
        table = self._scan()
        return sorted(p for p in self._members(table) if table[p][_STATE] != "Z")

    def is_empty(self) -> bool:
        return not self.pids()

    # -- processes -----------------------------------------------------------------------------

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: StdStream = None,
        stdout: StdStream = None,
        stderr: StdStream = None,
        oom_score_adj: int | None = None,
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=oom_adjuster(oom_score_adj),
        )
        self._roots.append(process.pid)
        return process

    def roots(self) -> list[tuple[int, int]]:
        """Each live root process with its start time (`/proc/PID/stat`): what finds the tree
        again after its owner restarts (`adopt`)."""
        found = ((pid, self._start_of(pid)) for pid in self._roots)
        return [(pid, start) for pid, start in found if start is not None]

    @classmethod
    def adopt(
        cls,
        name: str,
        roots: Sequence[tuple[int, int]],
        *,
        procfs_root: str | Path = "/proc",
        clock: Clock | None = None,
    ) -> ProcTreeGroup | None:
        """The tree of the recorded `roots` that still run, each the very process recorded (the
        same start time); None when none does."""
        group = cls(name, procfs_root=procfs_root, clock=clock)
        group._roots = [pid for pid, start in roots if group._start_of(pid) == start]
        return group if group._roots else None

    def _start_of(self, pid: int) -> int | None:
        try:
            fields = parse_stat((self._procfs / str(pid) / "stat").read_text())
        except OSError:
            return None
        return int(fields[_STARTTIME]) if fields is not None and len(fields) > _STARTTIME else None

    def signal(self, signum: int) -> None:
        for pid in self.pids():
            send_signal(pid, signum)

    def kill(self, timeout_s: float = 5.0) -> None:
        def kill_round(members: list[int]) -> None:
            for root in self._roots:
                # The group may be gone, or its leader's pid reused by someone else.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(root, signals.SIGKILL)
            for pid in members:
                send_signal(pid, signals.SIGKILL)

        survivors = sigkill_until_empty(self.pids, kill_round, self._clock, timeout_s)
        if survivors:
            raise ProcessError(
                f"{len(survivors)} processes of {self.name!r} survive SIGKILL", pid=survivors[0]
            )

    def remove(self) -> None:
        if not self.is_empty():
            self.kill()

    # -- limits: not enforceable without cgroups --------------------------------------------

    def _cannot(self, what: str) -> CgroupUnavailableError:
        return CgroupUnavailableError(
            f"cannot {what} for {self.name!r}: no cgroups (process tree via /proc only)"
        )

    def set_cpu_quota(self, cores: float | None, period_us: int = 100_000) -> None:
        if cores is not None:
            raise self._cannot("limit CPU")

    def set_cpu_weight(self, weight: int) -> None:
        if weight != 100:
            raise self._cannot("weight CPU")

    def set_memory_max(self, limit_bytes: int | None) -> None:
        if limit_bytes is not None:
            raise self._cannot("limit memory")

    def set_pids_max(self, limit: int | None) -> None:
        if limit is not None:
            raise self._cannot("limit processes")

    def freeze(self, timeout_s: float = 5.0) -> None:
        raise self._cannot("freeze")

    def thaw(self, timeout_s: float = 5.0) -> None:
        raise self._cannot("thaw")

    # -- stats ---------------------------------------------------------------------------------

    def _cpu_of(self, table: dict[int, list[str]], members: set[int]) -> int:
        """The non-decreasing CPU figure (see the module's rules) from one scan."""
        ticks = 0
        for pid in members:
            fields = table[pid]
            ticks += int(fields[_UTIME]) + int(fields[_STIME])
            if pid in self._roots:
                ticks += int(fields[_CUTIME]) + int(fields[_CSTIME])
        self._cpu_ns = max(self._cpu_ns, ticks * self._ns_per_tick)
        return self._cpu_ns

    def cpu_ns(self) -> int:
        """The CPU figure `stats()` gives, without reading memory: still one full /proc scan,
        so far costlier than the cgroup backends. Never fails for a group whose processes are
        gone: it returns the last figure."""
        table = self._scan()
        return self._cpu_of(table, self._members(table))

    def stats(self) -> GroupStats:
        table = self._scan()
        members = self._members(table)
        cpu_ns = self._cpu_of(table, members)
        rss_kib = 0
        hwm_kib = 0
        live = 0
        for pid in members:
            if table[pid][_STATE] == "Z":
                continue
            live += 1
            try:
                status = (self._procfs / str(pid) / "status").read_text()
            except OSError:
                continue
            rss_kib += parse_status_kib(status, "VmRSS")
            hwm_kib = max(hwm_kib, parse_status_kib(status, "VmHWM"))
        memory = rss_kib * 1024
        if self._last_memory is not None and memory < self._last_memory:
            self._freed += self._last_memory - memory
        self._last_memory = memory
        self._peak = max(self._peak, memory, hwm_kib * 1024)
        return GroupStats(
            cpu_ns=cpu_ns,
            memory_bytes=memory,
            peak_memory_bytes=self._peak,
            memory_freed_bytes=self._freed,
            memory_freed_exact=False,
            pids=live,
        )
