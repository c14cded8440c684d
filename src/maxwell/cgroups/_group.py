"""What the v1 and v2 backends share: joining before exec, membership, waiting, removal.

Rules: a child joins its group in every hierarchy the group uses before it execs, so no
grandchild can be forked outside. `remove()` kills what is left, waits until the group is empty
and removes the directories bottom-up; it is idempotent. Time is read from the injected clock.
`cpu_ns()` is the hot path (10 Hz x 100 groups): one `pread` of one descriptor opened on first
use, no path joins, no dictionary lookups, no generic parsing; `stats()` reads CPU through it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal as signals
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from maxwell.cgroups._fs import CgroupBusyError, CgroupFs
from maxwell.cgroups.base import GroupStats, StdStream
from maxwell.clock import Clock, SystemClock
from maxwell.errors import CgroupError, CgroupUnavailableError, ProcessError, UsageError

MIN_PERIOD_US = 1_000
MAX_PERIOD_US = 1_000_000
MIN_QUOTA_US = 1_000  # the kernel refuses less (v1 and v2)


def spawn_joined(
    procs_files: Sequence[str],
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdin: StdStream,
    stdout: StdStream,
    stderr: StdStream,
    oom_score_adj: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, joined to every `cgroup.procs` in `procs_files` before exec
    (and with `oom_score_adj`, if given, `oom_adjuster`).

    The join runs in the forked child (`preexec_fn`) and uses only `os.open`/`os.write`/`os.close`
    on pre-encoded paths: writing "0" moves the writer itself, on v1 and v2 alike. Like every
    `preexec_fn`, this is not safe if other threads of the parent hold locks the child needs;
    Maxwell's parent process forks from its main thread. Exec errors (`FileNotFoundError`,
    `PermissionError`) propagate unchanged; a failed join becomes `CgroupError`.
    """
    targets = [os.fsencode(path) for path in procs_files]
    adjust = oom_adjuster(oom_score_adj)

    def join_groups() -> None:
        for target in targets:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        if adjust is not None:
            adjust()

    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=join_groups,
        )
    except subprocess.SubprocessError as exc:
        raise CgroupError(
            f"the child could not join {', '.join(procs_files)} before exec: {exc}",
            path=procs_files[0] if procs_files else None,
        ) from exc


def oom_adjuster(score: int | None) -> Callable[[], None] | None:
    """What a forked child runs before exec to set its own `oom_score_adj` (-1000..1000), which
    its descendants inherit: the kernel's OOM killer then picks it, or them, before processes
    with a lower score (raising one's own needs no privilege). None for no change."""
    if score is None:
        return None
    if not -1000 <= score <= 1000:
        raise UsageError(f"oom_score_adj must be between -1000 and 1000, got {score}")
    text = str(score).encode()

    def adjust() -> None:
        fd = os.open(b"/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)

    return adjust


def parse_pids(text: str) -> set[int]:
    return {int(line) for line in text.split() if line.isdigit()}


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (cgroup.events, cpu.stat, memory.stat)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def read_keyed_int(data: bytes, key: bytes) -> int | None:
    """The value of `key` in flat-keyed bytes without parsing the rest (cheap for 10 Hz)."""
    if data.startswith(key + b" "):
        start = len(key) + 1
    else:
        index = data.find(b"\n" + key + b" ")
        if index < 0:
            return None
        start = index + len(key) + 2
    end = data.find(b"\n", start)
    try:
        return int(data[start : end if end >= 0 else len(data)])
    except ValueError:
        return None


def parse_int(data: bytes) -> int | None:
    text = data.strip()
    if text == b"max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def check_period(period_us: int) -> int:
    if not MIN_PERIOD_US <= period_us <= MAX_PERIOD_US:
        raise UsageError(f"CPU period must be 1000..1000000 µs, got {period_us}")
    return period_us


def quota_us(cores: float, period_us: int) -> int:
    """Validated CFS quota for `cores` over `period_us`."""
    check_period(period_us)
    if not math.isfinite(cores) or cores <= 0:
        raise UsageError(f"CPU quota must be a positive number of cores, got {cores}")
    return max(MIN_QUOTA_US, round(cores * period_us))


def check_weight(weight: int) -> int:
    if not 1 <= weight <= 10_000:
        raise UsageError(f"CPU weight must be 1..10000 (100 is the default), got {weight}")
    return weight


def check_limit(value: int | None, what: str) -> int | None:
    if value is not None and value < 0:
        raise UsageError(f"{what} must be >= 0 or None (unlimited), got {value}")
    return value


class StatFiles:
    """The files `stats()` reads, each opened, read and closed on every call.

    `stats()` runs about once a second and only for groups that used CPU, so a kept descriptor
    would save little, and it would cost one descriptor per file per group: four more per agent
    than the CPU counter's, which is what kept a node of 5,000 agents over a 20,000 open-files
    limit. Only the CPU counter (`cpu_ns()`, every tick) keeps its descriptor."""

    def __init__(self, fs: CgroupFs) -> None:
        self._fs = fs

    def read(self, path: str, size: int = 4096) -> bytes | None:
        """The file's content, or None when it is absent."""
        fd = self._fs.open_read(path)
        if fd is None:
            return None
        try:
            return self._fs.pread(fd, path, size)
        finally:
            self._fs.close(fd)


class CpuCounterFile(NamedTuple):
    """Where a group's cumulative CPU time is read: `cpuacct.usage` (a bare count of ns,
    `keyed` False) or a `cpu.stat` whose `usage_usec` line counts µs (`keyed` True)."""

    path: str
    keyed: bool


_USAGE_USEC = b"usage_usec "
_USAGE_USEC_LEN = len(_USAGE_USEC)
# One `usage_usec N` line: 11 bytes of key, at most 20 digits, the newline.
_CPU_READ_SIZE = 64


class CgroupGroup(ABC):
    """Shared behaviour of `V1Group` and `V2Group`; not used on its own."""

    kind: str
    layout: str
    supports_freeze: bool

    def __init__(self, name: str, path: str, *, fs: CgroupFs | None, clock: Clock | None) -> None:
        self.name = name
        self.path = path
        self._fs = fs if fs is not None else CgroupFs()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._files = StatFiles(self._fs)
        self._removed = False
        # The CPU counter's kept descriptor (-1 until the first `cpu_ns()`), its path, its format.
        self._cpu_fd = -1
        self._cpu_path = ""
        self._cpu_keyed = False

    # -- provided by the backends ----------------------------------------------------------------

    @abstractmethod
    def membership_dirs(self) -> list[str]:
        """Every directory whose cgroup.procs a member must be in (one per hierarchy)."""
        ...

    @abstractmethod
    def cpu_counter_file(self) -> CpuCounterFile | None:
        """The one file `cpu_ns()` reads; None where no CPU accounting is mounted."""
        ...

    @abstractmethod
    def set_cpu_quota(self, cores: float | None, period_us: int = 100_000) -> None: ...

    @abstractmethod
    def set_cpu_weight(self, weight: int) -> None: ...

    @abstractmethod
    def set_memory_max(self, limit_bytes: int | None) -> None: ...

    @abstractmethod
    def set_pids_max(self, limit: int | None) -> None: ...

    @abstractmethod
    def freeze(self, timeout_s: float = 5.0) -> None: ...

    @abstractmethod
    def thaw(self, timeout_s: float = 5.0) -> None: ...

    @abstractmethod
    def kill(self, timeout_s: float = 5.0) -> None: ...

    @abstractmethod
    def stats(self) -> GroupStats: ...

    # -- CPU time: the hot path ------------------------------------------------------------------

    def cpu_ns(self) -> int:
        """Cumulative CPU time of everything in the group (descendants included), in ns.

        One `pread` of a descriptor kept open since the first call. A group removed since, by
        `remove()` or by anyone else, raises `CgroupError` (the kernel answers ENODEV); a stale
        value is never returned. No CPU accounting at all (v1 without cpuacct, no unified
        hierarchy) raises `CgroupUnavailableError`.
        """
        fd = self._cpu_fd
        if fd < 0:
            fd = self._open_cpu_counter()
        data = self._fs.pread(fd, self._cpu_path, _CPU_READ_SIZE)
        try:
            if not self._cpu_keyed:
                return int(data)
            # The kernel writes usage_usec first; anything else takes the slow path.
            if data.startswith(_USAGE_USEC):
                end = data.find(b"\n", _USAGE_USEC_LEN)
                if end > 0:
                    return int(data[_USAGE_USEC_LEN:end]) * 1000
        except ValueError:
            pass  # not the expected first line: the slow path below reads the whole file
        return self._cpu_ns_slow()

    def _cpu_ns_slow(self) -> int:
        """`usage_usec` anywhere in a whole `cpu.stat`, or a clear error for a malformed file."""
        data = self._fs.pread(self._cpu_fd, self._cpu_path, 16_384)
        if self._cpu_keyed:
            usec = read_keyed_int(data, b"usage_usec")
            if usec is not None:
                return usec * 1000
        else:
            value = parse_int(data)
            if value is not None:
                return value
        raise CgroupError(
            f"cannot read the CPU time of group {self.name!r}: unexpected content "
            f"{data[:80]!r} in {self._cpu_path}",
            path=self._cpu_path,
        )

    def _open_cpu_counter(self) -> int:
        if self._removed:
            raise CgroupError(f"group {self.name!r} was removed", path=self.path)
        counter = self.cpu_counter_file()
        if counter is None:
            raise CgroupUnavailableError(
                f"group {self.name!r} has no CPU accounting: neither the v1 cpuacct controller "
                "nor the unified hierarchy is mounted",
                path=self.path,
            )
        fd = self._fs.open_read(counter.path)
        if fd is None:
            raise CgroupError(
                f"cannot open {counter.path}: no such file (the group was removed)",
                path=counter.path,
            )
        self._cpu_path, self._cpu_keyed, self._cpu_fd = counter.path, counter.keyed, fd
        return fd

    def _cpu_ns_or_zero(self) -> int:
        """`cpu_ns()` through the same descriptor, or 0 where no CPU accounting is mounted."""
        if self._cpu_fd < 0 and self.cpu_counter_file() is None:
            return 0
        return self.cpu_ns()

    def _close_cpu_counter(self) -> None:
        fd, self._cpu_fd = self._cpu_fd, -1
        if fd >= 0:
            self._fs.close(fd)

    # -- shared ----------------------------------------------------------------------------------

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
        if self._removed:
            raise CgroupError(f"group {self.name!r} was removed", path=self.path)
        procs = [os.path.join(directory, "cgroup.procs") for directory in self.membership_dirs()]
        return spawn_joined(
            procs, argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
            oom_score_adj=oom_score_adj,
        )  # fmt: skip

    def _tree(self, directory: str) -> list[str]:
        """`directory` and the groups a workload may have made below it, parents first."""
        found = [directory]
        for child in self._fs.subdirs(directory):
            found.extend(self._tree(child))
        return found

    def pids(self) -> list[int]:
        members: set[int] = set()
        for directory in self.membership_dirs():
            for group in self._tree(directory):
                text = self._fs.read_text_or_none(os.path.join(group, "cgroup.procs"))
                if text is not None:
                    members |= parse_pids(text)
        return sorted(members)

    def is_empty(self) -> bool:
        return not self.pids()

    def signal(self, signum: int) -> None:
        for pid in self.pids():
            send_signal(pid, signum)

    def wait_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = self._clock.monotonic() + timeout_s
        pause = 0.001
        while not done():
            if self._clock.monotonic() >= deadline:
                raise CgroupError(
                    f"group {self.name!r} did not {what} within {timeout_s:g} s", path=self.path
                )
            self._clock.sleep(pause)
            pause = min(pause * 2, 0.02)

    def kill_by_signals(
        self,
        timeout_s: float,
        freeze: Callable[[], None] | None,
        thaw: Callable[[], None] | None,
    ) -> None:
        """SIGKILL every member until two consecutive scans find none.

        With a freezer, members are frozen first so a fork loop cannot outrun the scan; frozen v1
        tasks only die once thawed, hence the thaw after each round.
        """

        def kill_round(members: list[int]) -> None:
            if freeze is not None:
                # A task stuck in D state delays freezing; SIGKILL anyway.
                with contextlib.suppress(CgroupError):
                    freeze()
            for pid in self.pids():
                send_signal(pid, signals.SIGKILL)
            if thaw is not None:
                thaw()

        survivors = sigkill_until_empty(self.pids, kill_round, self._clock, timeout_s)
        if survivors:
            raise CgroupError(
                f"group {self.name!r} still has {len(survivors)} processes after "
                f"{timeout_s:g} s of SIGKILL",
                path=self.path,
            )

    def remove(self, timeout_s: float = 5.0) -> None:
        """Kill what is left, wait until empty, remove every directory. Idempotent, and a group
        whose directories are all gone already (removed by someone else) is simply forgotten.

        A child whose `spawn` was interrupted (a signal handler raising inside `Popen`) may join
        the group after an emptiness check, so an EBUSY rmdir leads to another kill and retry.
        """
        if self._removed:
            return
        if not any(self._fs.exists(directory) for directory in self.membership_dirs()):
            self._forget()  # removed by someone else (a sweep, an administrator)
            return
        deadline = self._clock.monotonic() + timeout_s
        while True:
            if not self.is_empty():
                self.kill()
            try:
                for directory in self.membership_dirs():
                    for group in reversed(self._tree(directory)):
                        self._fs.rmdir(group)
                break
            except CgroupBusyError:
                if self._clock.monotonic() >= deadline:
                    raise
                self._clock.sleep(0.01)
        self._forget()

    def _forget(self) -> None:
        """Close the CPU counter's kept descriptor; the group is removed."""
        self._close_cpu_counter()
        self._removed = True


def sigkill_until_empty(
    members: Callable[[], list[int]],
    kill_round: Callable[[list[int]], None],
    clock: Clock,
    timeout_s: float,
) -> list[int]:
    """Run kill rounds until two consecutive scans find no member; returns the survivors of the
    last round when `timeout_s` runs out first (an empty list on success).

    Two empty scans, not one: a member forking at the moment of a scan may have a child the scan
    missed, which the next scan sees.
    """
    deadline = clock.monotonic() + timeout_s
    empty_scans = 0
    while empty_scans < 2:
        found = members()
        if not found:
            empty_scans += 1
            clock.sleep(0.005)
            continue
        empty_scans = 0
        if clock.monotonic() >= deadline:
            return found
        kill_round(found)
        clock.sleep(0.005)
    return []


def send_signal(pid: int, signum: int) -> None:
    """Signal one process; one that is already gone is not an error."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone: nothing to signal
    except PermissionError as exc:
        raise ProcessError(f"not allowed to signal process {pid}", pid=pid) from exc
