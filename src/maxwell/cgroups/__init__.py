"""One interface over cgroup v2, v1 and hybrid hosts, plus a /proc fallback.

A map of the package:

- `base`: `GroupStats` and the `WorkloadGroup` protocol every backend implements.
- `layout`: pure parsers of `/proc/self/mountinfo` and `/proc/self/cgroup`; where each hierarchy
  is mounted and where this process sits in it.
- `manager`: `CgroupManager`, which owns `<own cgroup>/<prefix>-<pid>/` and creates groups in it;
  it drives `delegation` (pure v2: enabling controllers in `<own>`, moving Maxwell into a leaf
  and back) and `sweep` (removing what managers killed with SIGKILL left behind).
- `v2`, `v1`: the backends (`V2Group`; `V1Group`, which on a hybrid host also uses the unified
  hierarchy for membership, freezing and killing).
- `proctree`: `ProcTreeGroup`, the degraded fallback when cgroups cannot be used (not root, no
  writable hierarchy): a process tree found through /proc, no limits, no freezer.
- `_group`, `_fs`: shared backend code; the one boundary where `OSError` becomes `CgroupError`.
"""

from __future__ import annotations

import os

from maxwell.cgroups.base import GroupStats, WorkloadGroup
from maxwell.cgroups.layout import CgroupLayout, read_layout, read_sched_ext_state
from maxwell.cgroups.manager import CgroupManager
from maxwell.cgroups.proctree import ProcTreeGroup
from maxwell.cgroups.v1 import V1Group
from maxwell.cgroups.v2 import V2Group
from maxwell.errors import CgroupUnavailableError

__all__ = [
    "CgroupLayout",
    "CgroupManager",
    "GroupStats",
    "ProcTreeGroup",
    "V1Group",
    "V2Group",
    "WorkloadGroup",
    "open_workload_group",
    "read_layout",
    "read_sched_ext_state",
]


def degraded_reason(cause: CgroupUnavailableError) -> str:
    euid = os.geteuid()
    who = "not root" if euid != 0 else "no usable cgroup"
    if euid != 0:
        who += f" (euid {euid})"
    return f"{who}: {cause}; degraded: process tree via /proc, no limits, no freeze"


def open_workload_group(
    name: str, *, procfs_root: str = "/proc", prefix: str = "maxwell"
) -> tuple[WorkloadGroup, CgroupManager | None, str | None]:
    """A cgroup-backed group when cgroups are usable, else the /proc fallback and the reason.

    The caller owns both: `group.remove()`, then `manager.close()` when a manager came back.
    """
    try:
        manager = CgroupManager.detect(procfs_root=procfs_root, prefix=prefix)
    except CgroupUnavailableError as exc:
        return ProcTreeGroup(name, procfs_root=procfs_root), None, degraded_reason(exc)
    try:
        return manager.create(name), manager, None
    except CgroupUnavailableError as exc:
        manager.close()
        return ProcTreeGroup(name, procfs_root=procfs_root), None, degraded_reason(exc)
    except BaseException as exc:
        manager.close(failure=exc)  # a cleanup failure becomes a note: `exc` is what went wrong
        raise
