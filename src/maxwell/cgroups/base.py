"""The interface every workload group offers (cgroup v2, v1/hybrid, and the /proc fallback).

Rules: a group is named, lives until `remove()`, and everything in it was started by `spawn()`
(or forked by something that was). `cpu_ns()` is the hot path, for 10 Hz over 100 groups: one read
of one kept descriptor on the cgroup backends. `stats()` reads everything (memory too) and is meant
for about 1 Hz; its `cpu_ns` is the figure `cpu_ns()` returns.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

# What `subprocess.Popen` accepts for stdin, stdout and stderr.
StdStream = int | IO[Any] | None


@dataclass(frozen=True)
class GroupStats:
    """One reading of a group's counters.

    `memory_freed_bytes` is cumulative. It is exact (`memory_freed_exact`) only on cgroup v1, where
    `memory.stat` counts every page uncharged (`total_pgpgout` x page size). Cgroup v2 has no such
    counter; its backend reports a lower bound (see `V2Group.stats`), as does the /proc fallback.
    `pids` counts tasks as the pids controller does (threads included) where one is attached, else
    processes. `memory_metered` is False where no memory accounting is attached (a cgroup v2 group
    whose parent did not delegate the memory controller, v1 without the memory hierarchy): the
    memory figures are then 0 because nothing was measured, not because nothing was used.
    """

    cpu_ns: int
    memory_bytes: int
    peak_memory_bytes: int
    memory_freed_bytes: int
    memory_freed_exact: bool
    pids: int
    memory_metered: bool = True


class WorkloadGroup(Protocol):
    """A confined set of processes. Implemented by `V2Group`, `V1Group` and `ProcTreeGroup`."""

    name: str
    kind: str  # "v1", "v2" or "none" (the /proc fallback)
    supports_freeze: bool
    path: str  # a human-readable location

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: StdStream = None,
        stdout: StdStream = None,
        stderr: StdStream = None,
        oom_score_adj: int | None = None,  # set in the child before exec (see `oom_adjuster`)
    ) -> subprocess.Popen[bytes]: ...

    def set_cpu_quota(self, cores: float | None, period_us: int = 100_000) -> None: ...

    def set_cpu_weight(self, weight: int) -> None: ...

    def set_memory_max(self, limit_bytes: int | None) -> None: ...

    def set_pids_max(self, limit: int | None) -> None: ...

    def freeze(self, timeout_s: float = 5.0) -> None: ...

    def thaw(self, timeout_s: float = 5.0) -> None: ...

    def kill(self) -> None: ...

    def signal(self, signum: int) -> None: ...

    def pids(self) -> list[int]: ...

    def is_empty(self) -> bool: ...

    def cpu_ns(self) -> int:
        """Cumulative CPU time of the group, in ns. The cgroup backends raise `CgroupError` once
        the group is gone; the /proc fallback keeps returning its last figure."""
        ...

    def stats(self) -> GroupStats: ...

    def remove(self) -> None: ...
