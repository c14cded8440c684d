"""The stale sweep: remove what cgroup managers killed with SIGKILL left beneath `<own>`.

A manager killed with SIGKILL leaves its `<prefix>-<pid>` directories behind, its workloads
still running in them. Rules:
- Candidates are only `<prefix>-<pid>`, `<prefix>-<pid>-<n>` and `<prefix>-<pid>-daemon` directly
  beneath one of the sweeping manager's own directories, in every hierarchy it uses.
- Stale means the pid is dead: `<procfs>/<pid>` does not exist (pids are judged in that procfs's
  pid namespace). The sweeper's own pid and a live pid are left alone, even when the pid now
  belongs to another program (pids are reused).
- A stale name is killed and removed through the backend that would have made it (`V2Group`, or
  `V1Group` with the unified directory on a hybrid host), exactly as a group is: `cgroup.kill`
  where the unified hierarchy offers it, else freeze and SIGKILL rounds, then rmdir bottom-up.
  v1 freezer groups below it are thawed first: a frozen task dies of SIGKILL only once thawed.
- Every stale name is attempted; the first failure is raised afterwards. A failure whose
  directories are all gone meanwhile (another sweeper removed them first) is no failure; what
  was not removed is left for the next sweep.

`CgroupManager.sweep_stale()` is the entry point; this module opens nothing itself: the
directories are listed and removed through the `CgroupFs` boundary, liveness read from procfs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import CgroupGroup
from maxwell.cgroups.v1 import V1Group
from maxwell.cgroups.v2 import V2Group
from maxwell.clock import Clock
from maxwell.errors import CgroupError


@dataclass(frozen=True)
class StaleSweep:
    """One manager's view for the sweep: its hierarchies, backend kind and pid.

    `v1_dirs` maps v1 controllers to their own directory, `v2_dir` is the own directory in the
    unified hierarchy (either may be absent), as the manager was given them."""

    fs: CgroupFs
    prefix: str
    pid: int
    procfs: Path
    kind: str
    layout: str
    v1_dirs: Mapping[str, str]
    v2_dir: str | None
    clock: Clock | None

    def run(self, own_dirs: Iterable[str]) -> list[str]:
        """Remove the stale names beneath `own_dirs`; the stale directories removed, one per
        hierarchy, not what was below them."""
        stale = self._find(own_dirs)
        removed: list[str] = []
        errors: list[CgroupError] = []
        for name, found in sorted(stale.items()):
            try:
                self._remove(name, found)
            except CgroupError as exc:
                # Another sweeper may have removed it first: only what is left is a failure.
                if any(self.fs.exists(directory) for directory in found.values()):
                    errors.append(exc)
            removed.extend(d for d in found.values() if not self.fs.exists(d))
        if errors:
            raise errors[0]
        return removed

    def _find(self, own_dirs: Iterable[str]) -> dict[str, dict[str, str]]:
        """stale name -> own dir -> stale dir, hierarchies in the order of `own_dirs`."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}-([0-9]+)(?:-[0-9]+|-daemon)?$")
        stale: dict[str, dict[str, str]] = {}
        for own in own_dirs:
            for directory in self.fs.subdirs(own):
                name = os.path.basename(directory)
                match = pattern.match(name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if pid == self.pid or (self.procfs / str(pid)).exists():
                    continue
                stale.setdefault(name, {})[own] = directory
        return stale

    def _remove(self, name: str, found: Mapping[str, str]) -> None:
        """Kill and remove one stale name (`found`: own dir -> stale dir) through the backend
        that would have made it, so it is killed and removed exactly as a group is."""
        group: CgroupGroup
        unified = found.get(self.v2_dir) if self.v2_dir is not None else None
        v1_dirs = {c: found[own] for c, own in self.v1_dirs.items() if own in found}
        if self.kind == "v2" or not v1_dirs:
            directory = unified if unified is not None else next(iter(found.values()))
            group = V2Group(name, directory, layout=self.layout, fs=self.fs, clock=self.clock)
        else:
            freezer = v1_dirs.get("freezer")
            if freezer is not None:
                self._thaw_v1_tree(freezer)
            group = V1Group(
                name,
                v1_dirs,
                unified_dir=unified,
                layout=self.layout,
                fs=self.fs,
                clock=self.clock,
            )
        group.remove()

    def _thaw_v1_tree(self, directory: str) -> None:
        """THAW every v1 freezer group below a stale one: a task frozen there dies of SIGKILL
        only once thawed, and thawing a parent leaves a child frozen by its own state."""
        for child in self.fs.subdirs(directory):
            self._thaw_v1_tree(child)
        with contextlib.suppress(CgroupError):  # best effort: the kill rounds thaw again
            self.fs.write_text(os.path.join(directory, "freezer.state"), "THAWED")
