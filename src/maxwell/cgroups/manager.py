"""The cgroup manager: finds the hierarchies, owns a private subtree, creates workload groups.

Rules (systemd's delegation contract, Delegate=yes):
- Everything is created beneath the cgroup Maxwell runs in (`<own>`), never at a hierarchy's root:
  `<own>/<prefix>-<pid>/` is this manager's private subtree (`-<n>` is appended if that name is
  taken, so parallel instances and test runs never collide) and workloads live at
  `<own>/<prefix>-<pid>/<name>`, in every hierarchy a group uses.
- v1 and hybrid hosts: one private directory per v1 controller hierarchy (cpu, cpuacct, memory,
  pids, freezer, as mounted) and one in the unified hierarchy when it is mounted writable (used
  for membership, `cgroup.freeze` and `cgroup.kill`; no controller is enabled there, so v2's
  no-internal-process rule never applies).
- Pure v2: cpu and memory (and pids when offered) must be listed in `<own>/cgroup.controllers`.
  To enable them in `<own>/cgroup.subtree_control`, `<own>` may hold no process (unless it is the
  root), so when Maxwell is alone in `<own>` it first moves itself into the leaf
  `<own>/<prefix>-<pid>-daemon`; when other processes are there it refuses with a clear error
  instead of moving them. The same controllers are enabled in the private directory. What is
  changed in `<own>`, and how it is undone, is `delegation`'s (`V2Delegation`).
- Degraded v2 (opt-in: `require_controllers=False`): whatever subset of cpu, memory and pids the
  parent delegated is enabled, none at all included; the rest is listed in `missing_controllers`
  and described in `degraded`. The no-internal-process rule only binds a group that enables a
  controller for its children, so with nothing to enable Maxwell stays where it is: `<own>` is
  then used as the unified hierarchy is on a hybrid host (membership, freeze, kill, cpu.stat).
- `detect(kind=...)` picks the backend: "auto" (v1 controllers when cpu and memory are mounted
  there, else v2), "v1" (the v1 controllers, plus the unified hierarchy on a hybrid host), "v2"
  (the unified hierarchy alone, even on a hybrid host).
- `close()` undoes all of it: removes the groups (killing what is left), the private subtree,
  disables the controllers it enabled in `<own>` and moves Maxwell back, then removes the leaf.
- Bookkeeping first: every directory is recorded right after its mkdir returns, before any other
  step (and controllers before they are enabled), so an exception raised anywhere after it (a
  KeyboardInterrupt from a signal handler included) leaves nothing `close()` does not know about.
  Teardown is best effort: every step is attempted, then the first failure is raised (the later
  ones as notes on it), or, when an exception is already in flight, all of them are added to it
  as notes and it is never replaced.
- A manager killed with SIGKILL leaves `<prefix>-<pid>` behind, its workloads still running.
  `sweep_stale()` removes those whose pid is dead (opt-in: `maxwell run` calls it; a daemon that
  re-adopts its agents must not). It only ever touches `<prefix>-<pid>`, `<prefix>-<pid>-<n>` and
  `<prefix>-<pid>-daemon` beneath `<own>`, and never those of a live pid (`sweep.StaleSweep`).
- `private_name` (a daemon's option) replaces `<prefix>-<pid>[-n]` by one stable name, adopted
  as it is when it exists already, so a daemon restarted after SIGKILL finds its agents' groups
  where it left them. Pick a name the stale sweep cannot match (`<prefix>-<digits>...`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import CgroupGroup
from maxwell.cgroups.delegation import DELEGATION_HINT, V2Delegation, disable_controllers
from maxwell.cgroups.layout import CgroupLayout, Hierarchy, read_layout
from maxwell.cgroups.sweep import StaleSweep
from maxwell.cgroups.v1 import V1_GROUP_CONTROLLERS, V1Group
from maxwell.cgroups.v2 import V2Group
from maxwell.clock import Clock
from maxwell.errors import CgroupError, CgroupUnavailableError, UsageError

REQUIRED_CONTROLLERS = ("cpu", "memory")
OPTIONAL_V2_CONTROLLERS = ("pids",)
# The controllers Maxwell enforces with; what a degraded manager lacks is named among these.
ENFORCING_CONTROLLERS = (*REQUIRED_CONTROLLERS, *OPTIONAL_V2_CONTROLLERS)
# `detect(kind=...)`: which hierarchies to use.
DETECT_KINDS = ("auto", "v1", "v2")

# What a missing controller costs, for `degraded`.
_LOST_WITHOUT = {
    "cpu": "CPU quotas and weights are not enforced (CPU time is still metered from cpu.stat)",
    "memory": "no memory limit, memory use and memory freed not metered",
    "pids": "no limit on the number of tasks",
}

_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+=-]{0,127}$")


class CgroupManager:
    """Owns `<own>/<prefix>-<pid>` in every hierarchy it uses; a context manager.

    Build it with `detect()`; the constructor takes the own-cgroup directories directly so
    tests can point it at fake trees: `v1_dirs` maps v1 controllers to this process's directory
    in their hierarchy, `v2_dir` is this process's directory in the unified hierarchy.
    """

    def __init__(
        self,
        *,
        v1_dirs: Mapping[str, str] | None = None,
        v2_dir: str | None = None,
        layout: str | None = None,
        prefix: str = "maxwell",
        procfs_root: str = "/proc",
        fs: CgroupFs | None = None,
        clock: Clock | None = None,
        private_name: str | None = None,
        require_controllers: bool = True,
    ) -> None:
        self._fs = fs if fs is not None else CgroupFs()
        self._require_controllers = require_controllers
        self._private_name = private_name
        self._clock = clock
        self._prefix = prefix
        self._procfs = Path(procfs_root)
        self._pid = os.getpid()
        self._v1_dirs = {c: d for c, d in (v1_dirs or {}).items() if c in V1_GROUP_CONTROLLERS}
        self._v2_dir = v2_dir
        if all(c in self._v1_dirs for c in REQUIRED_CONTROLLERS):
            self.kind = "v1"
        elif v2_dir is not None:
            self.kind = "v2"
        else:
            raise CgroupUnavailableError(
                "no cgroup v2 hierarchy and no v1 cpu and memory controllers"
            )
        if layout is None or layout == "none":
            layout = ("hybrid" if v2_dir is not None else "v1") if self.kind == "v1" else "v2"
        self.layout = layout
        self._groups: dict[str, CgroupGroup] = {}
        # own dir -> private dir, in creation order.
        self._private: dict[str, str] = {}
        # name -> the directories made so far for a group `create()` has not registered yet.
        self._creating: dict[str, list[str]] = {}
        # Pure v2: what was changed in `<own>` (controllers enabled, Maxwell moved into a leaf).
        self._delegation = V2Delegation(self._fs, pid=self._pid, prefix=prefix)
        self._closed = False
        # What cannot be enforced for lack of a controller: for v2 `_setup_v2` reads it from
        # `<own>/cgroup.controllers`; v1 has cpu and memory, and pids when it is mounted.
        self.missing_controllers: tuple[str, ...] = ()
        if self.kind == "v1":
            self.missing_controllers = tuple(
                c for c in ENFORCING_CONTROLLERS if c not in self._v1_dirs
            )
        try:
            if self.kind == "v2":
                self._setup_v2(v2_dir or "")
            else:
                self._setup_private(self._hierarchy_dirs())
        except BaseException as exc:
            errors: list[BaseException] = []
            self._teardown(errors)
            _add_notes(exc, errors)
            raise

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def detect(
        cls,
        *,
        procfs_root: str = "/proc",
        prefix: str = "maxwell",
        fs: CgroupFs | None = None,
        clock: Clock | None = None,
        private_name: str | None = None,
        kind: str = "auto",
        require_controllers: bool = True,
    ) -> CgroupManager:
        """Find the hierarchies from `<procfs>/self/mountinfo` and `<procfs>/self/cgroup`, then
        create the private subtree. Raises `CgroupUnavailableError` with the reason.

        `kind`: "auto", "v1" or "v2" (see the module). `require_controllers=False` accepts a v2
        hierarchy whose parent delegated only some of cpu, memory and pids (or none): the
        manager is then `degraded`, and says so."""
        if kind not in DETECT_KINDS:
            raise UsageError(f"cgroup kind {kind!r}: use one of {', '.join(DETECT_KINDS)}")
        layout = read_layout(procfs_root)
        v1_dirs, v2_dir = _own_dirs(layout, kind, procfs_root)
        return cls(
            v1_dirs=v1_dirs,
            v2_dir=v2_dir,
            layout=layout.name,
            prefix=prefix,
            procfs_root=procfs_root,
            fs=fs,
            clock=clock,
            private_name=private_name,
            # Read by the v2 setup alone: with the v1 controllers, cpu and memory are there.
            require_controllers=require_controllers,
        )

    def _hierarchy_dirs(self) -> list[str]:
        dirs = list(dict.fromkeys(self._v1_dirs.values()))
        if self._v2_dir is not None:
            dirs.append(self._v2_dir)
        return dirs

    def _setup_private(self, own_dirs: list[str]) -> None:
        """mkdir `<own>/<prefix>-<pid>[-n]` (or `<own>/<private_name>`) in every hierarchy.

        Each directory goes into `_private` as soon as it is made; on failure the caller's
        teardown removes whatever is recorded there."""
        name = self._private_name
        _make_private_dirs(self._fs, own_dirs, self._private, self._prefix, self._pid, name)

    def _setup_v2(self, own: str) -> None:
        own = self._delegation.adopt_own(own)
        available = set(self._fs.read_text(os.path.join(own, "cgroup.controllers")).split())
        missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
        if missing and self._require_controllers:
            raise CgroupUnavailableError(
                f"cgroup v2 controller {' and '.join(missing)} not available in "
                f"{own}/cgroup.controllers (the parent did not delegate it); {DELEGATION_HINT}",
                path=own,
            )
        wanted = [c for c in ENFORCING_CONTROLLERS if c in available]
        self.missing_controllers = tuple(c for c in ENFORCING_CONTROLLERS if c not in available)
        self._delegation.enable_in_own(own, wanted)
        self._setup_private([own])
        private = self._private[own]
        if wanted:  # none delegated: the private directory stays a plain group, as on hybrid
            self._fs.write_text(
                os.path.join(private, "cgroup.subtree_control"),
                " ".join(f"+{c}" for c in wanted),
            )

    @property
    def degraded(self) -> str | None:
        """One line on what cannot be enforced or metered for lack of a controller, or None."""
        if not self.missing_controllers:
            return None
        parts = [
            f"without {'the ' + c + ' controller' if i == 0 else c}: {_LOST_WITHOUT[c]}"
            for i, c in enumerate(self.missing_controllers)
        ]
        return f"cgroup {self.kind} " + "; ".join(parts)

    # -- groups ------------------------------------------------------------------------------

    def create(self, name: str) -> CgroupGroup:
        """A new empty workload group `<own>/<prefix>-<pid>/<name>` in every hierarchy."""
        if self._closed:
            raise CgroupError("the cgroup manager is closed")
        if not _GROUP_NAME.match(name) or name in (".", ".."):
            raise UsageError(
                f"bad group name {name!r}: use letters, digits and _.@+=- (at most 128)"
            )
        if name in self._groups:
            raise CgroupError(f"group {name!r} already exists", path=self._groups[name].path)
        if name in self._creating:
            raise CgroupError(f"group {name!r} is being created")
        made = self._creating[name] = []
        try:
            for private in self._private.values():
                directory = os.path.join(private, name)
                if not self._fs.mkdir(directory):
                    raise CgroupError(f"group {directory} already exists", path=directory)
                made.append(directory)  # at once: close() removes it whatever fails next
            group = self._group_object(name, made)
            self._groups[name] = group
        except BaseException:
            # Best effort: what cannot be removed now stays recorded for close().
            with contextlib.suppress(CgroupError):
                self._remove_unregistered(name)
            raise
        del self._creating[name]
        return group

    def _group_object(self, name: str, made: list[str]) -> CgroupGroup:
        if self.kind == "v2":
            return V2Group(name, made[0], layout=self.layout, fs=self._fs, clock=self._clock)
        by_own = {own: os.path.join(private, name) for own, private in self._private.items()}
        return V1Group(
            name,
            {controller: by_own[own] for controller, own in self._v1_dirs.items()},
            unified_dir=by_own.get(self._v2_dir) if self._v2_dir is not None else None,
            layout=self.layout,
            fs=self._fs,
            clock=self._clock,
        )

    def _remove_unregistered(self, name: str) -> None:
        """rmdir, newest first, what `create(name)` made; each is forgotten once it is gone (a
        group registered meanwhile has removed them already: rmdir finds nothing)."""
        made = self._creating.get(name, [])
        while made:
            self._fs.rmdir(made[-1])
            made.pop()
        self._creating.pop(name, None)

    @property
    def groups(self) -> dict[str, CgroupGroup]:
        return dict(self._groups)

    @property
    def private_dirs(self) -> list[str]:
        """This manager's `<own>/<prefix>-<pid>` directory in each hierarchy."""
        return list(self._private.values())

    # -- stale groups of dead managers -------------------------------------------------------

    def sweep_stale(self) -> list[str]:
        """Remove what managers killed with SIGKILL left beneath `<own>`; the paths removed.

        Swept: `<prefix>-<pid>`, `<prefix>-<pid>-<n>` and `<prefix>-<pid>-daemon`, in every
        hierarchy this manager uses, whose `<procfs>/<pid>` does not exist. A live pid is left
        alone even when it now belongs to another program (pids are reused); pids are judged in
        this procfs's pid namespace. Whatever still runs in a stale directory or below it is
        killed (`cgroup.kill` where the unified hierarchy offers it, else freeze and SIGKILL
        rounds), then the directories are removed bottom-up. The result lists the stale
        `<prefix>-<pid>...` directories removed, one per hierarchy, not what was below them.
        Every stale group is attempted; the first failure is raised afterwards (what was not
        removed is left for the next sweep).
        """
        if self._closed:
            raise CgroupError("the cgroup manager is closed")
        sweep = StaleSweep(
            fs=self._fs,
            prefix=self._prefix,
            pid=self._pid,
            procfs=self._procfs,
            kind=self.kind,
            layout=self.layout,
            v1_dirs=self._v1_dirs,
            v2_dir=self._v2_dir,
            clock=self._clock,
        )
        # Hierarchies in the order this manager made them.
        return sweep.run(list(self._private))

    # -- teardown ----------------------------------------------------------------------------

    def close(self, *, failure: BaseException | None = None) -> None:
        """Remove every group (killing what is left) and everything this manager created.
        Idempotent.

        Every step is attempted, whatever the others raise; then the first failure is raised
        (an interrupt before any other), the rest added to it as notes. With `failure` (an
        exception already in flight, as in `__exit__`), nothing is raised: every cleanup failure
        becomes a note on `failure`, which is never replaced."""
        if self._closed:
            return
        errors: list[BaseException] = []
        for group in reversed(list(self._groups.values())):
            _attempt(errors, group.remove)
        self._groups.clear()
        self._teardown(errors)
        self._closed = True
        if failure is not None:
            _add_notes(failure, errors)
        elif errors:
            # An interrupt (KeyboardInterrupt, SystemExit) is never demoted to a note.
            first = next((e for e in errors if not isinstance(e, Exception)), errors[0])
            _add_notes(first, [e for e in errors if e is not first])
            raise first

    def _teardown(self, errors: list[BaseException]) -> None:
        """Remove what is recorded, newest first; what fails stays recorded, its error kept."""
        for name in reversed(list(self._creating)):
            _attempt(errors, self._remove_unregistered, name)
        for own, private in reversed(list(self._private.items())):
            if _attempt(errors, self._fs.rmdir, private):
                del self._private[own]
        delegation = self._delegation
        if delegation.enabled_in_own and delegation.own is not None:
            _attempt(
                errors, disable_controllers, self._fs, delegation.own, delegation.enabled_in_own
            )
            delegation.enabled_in_own = []
        _attempt(errors, delegation.release_self_move)

    def __enter__(self) -> CgroupManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(failure=exc)


def _attempt(errors: list[BaseException], step: Callable[..., object], *args: object) -> bool:
    """Run one teardown step; what it raises (even KeyboardInterrupt) is kept, not propagated,
    so the remaining steps still run. True when it succeeded."""
    try:
        step(*args)
    except BaseException as exc:  # collected; raised (or noted) once every step has run
        errors.append(exc)
        return False
    return True


def _make_private_dirs(
    fs: CgroupFs,
    own_dirs: list[str],
    private_dirs: dict[str, str],
    prefix: str,
    pid: int,
    private_name: str | None,
) -> None:
    """mkdir `<own>/<prefix>-<pid>[-n]` in every one of `own_dirs`, one name for all, recording
    each in `private_dirs` (own dir -> private dir) as soon as it is made. With `private_name`,
    that one name, adopted where it exists already."""
    if private_name is not None:
        for own in own_dirs:
            private = os.path.join(own, private_name)
            fs.mkdir(private)  # False: it exists already (a restarted daemon's)
            private_dirs[own] = private
        return
    for attempt in range(100):
        name = f"{prefix}-{pid}" + (f"-{attempt}" if attempt else "")
        for own in own_dirs:
            private = os.path.join(own, name)
            if not fs.mkdir(private):
                break  # taken in this hierarchy (another instance): try the next name
            private_dirs[own] = private
        else:
            return
        # Forget each only once it is gone: a failure leaves the rest for the teardown.
        for own, private in reversed(list(private_dirs.items())):
            fs.rmdir(private)
            del private_dirs[own]
    raise CgroupError(f"could not find a free {prefix}-{pid}-<n> name")


def _own_dirs(
    layout: CgroupLayout, kind: str, procfs_root: str
) -> tuple[dict[str, str], str | None]:
    """This process's directories in the hierarchies `detect(kind=...)` uses on this layout: v1
    controller -> directory (none for v2), and the unified hierarchy's (None without one).
    Raises `CgroupUnavailableError` with the reason when no hierarchy is usable."""
    if _uses_v1(layout, kind, procfs_root):
        return _v1_own_dirs(layout)
    if layout.v2 is not None:
        return {}, _writable(layout.v2, "cgroup2 hierarchy").own_dir
    if kind == "v2":
        reasons = "; ".join(layout.problems) or f"this host's layout is {layout.name}"
        raise CgroupUnavailableError(
            f"cgroup v2 asked for, but no cgroup2 hierarchy is usable: {reasons}"
        )
    reasons = "; ".join(layout.problems) or "the cpu and memory controllers are not mounted"
    raise CgroupUnavailableError(f"no usable cgroup hierarchy: {reasons}")


def _uses_v1(layout: CgroupLayout, kind: str, procfs_root: str) -> bool:
    """Whether `detect(kind=...)` uses the v1 controllers on this layout: they must be mounted
    for "v1", and are preferred by "auto". Raises when nothing is mounted or "v1" cannot be."""
    if not layout.mounted:
        mountinfo = Path(procfs_root) / "self" / "mountinfo"
        raise CgroupUnavailableError(
            f"no cgroup filesystem is mounted (no cgroup or cgroup2 line in {mountinfo})"
        )
    both_mounted = layout.v1_for("cpu") is not None and layout.v1_for("memory") is not None
    if kind == "v1" and not both_mounted:
        raise CgroupUnavailableError(
            f"cgroup v1 asked for, but the v1 cpu and memory controllers are not both "
            f"mounted (this host's layout: {layout.name})"
        )
    return kind != "v2" and both_mounted


def _v1_own_dirs(layout: CgroupLayout) -> tuple[dict[str, str], str | None]:
    """This process's directory in each writable v1 controller hierarchy, and in the unified
    hierarchy when a hybrid host mounts it writable. Raises if cpu's or memory's is read-only."""
    for controller in REQUIRED_CONTROLLERS:
        hierarchy = layout.v1_for(controller)
        if hierarchy is not None:  # always, once `_uses_v1` has said yes
            _writable(hierarchy, "cgroup hierarchy")
    v1_dirs: dict[str, str] = {}
    for controller in V1_GROUP_CONTROLLERS:
        found = layout.v1_for(controller)
        if found is not None and not found.readonly:
            v1_dirs[controller] = found.own_dir
    unified = layout.v2 if layout.v2 is not None and not layout.v2.readonly else None
    return v1_dirs, unified.own_dir if unified is not None else None


def _writable(hierarchy: Hierarchy, what: str) -> Hierarchy:
    """`hierarchy`, or `CgroupUnavailableError` naming it (`what`) when it is mounted read-only."""
    if hierarchy.readonly:
        raise CgroupUnavailableError(
            f"the {what} at {hierarchy.mountpoint} is mounted read-only",
            path=hierarchy.mountpoint,
        )
    return hierarchy


def _add_notes(exc: BaseException, cleanup_errors: list[BaseException]) -> None:
    for error in cleanup_errors:
        exc.add_note(f"cgroup cleanup also failed: {error!r}")
