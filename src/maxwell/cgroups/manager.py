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
  instead of moving them. The same controllers are enabled in the private directory.
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
  `<prefix>-<pid>-daemon` beneath `<own>`, and never those of a live pid.
- `private_name` (a daemon's option) replaces `<prefix>-<pid>[-n]` by one stable name, adopted
  as it is when it exists already, so a daemon restarted after SIGKILL finds its agents' groups
  where it left them. Pick a name the stale sweep cannot match (`<prefix>-<digits>...`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import CgroupGroup, parse_pids
from maxwell.cgroups.layout import CgroupLayout, Hierarchy, read_layout
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

_DELEGATION_HINT = "run Maxwell in a cgroup of its own, e.g. systemd-run --scope -p Delegate=yes"


@dataclass
class _SelfMove:
    """Maxwell moved itself from `origin` into `leaf` (pure v2); shared by the managers of this
    process and undone by the last one to close."""

    origin: str
    leaf: str
    users: int
    enabled: list[str] = field(default_factory=list)  # controllers enabled in origin after it


# origin and leaf -> move; managers of one process share one move.
_SELF_MOVES: dict[str, _SelfMove] = {}
_SELF_MOVES_LOCK = threading.Lock()


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
        self._enabled_in_own: list[str] = []
        self._v2_own: str | None = None
        self._self_move: _SelfMove | None = None
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
        if _uses_v1(layout, kind, procfs_root):
            v1_dirs, unified_dir = _v1_own_dirs(layout)
            return cls(
                v1_dirs=v1_dirs,
                v2_dir=unified_dir,
                layout=layout.name,
                prefix=prefix,
                procfs_root=procfs_root,
                fs=fs,
                clock=clock,
                private_name=private_name,
            )
        if layout.v2 is not None:
            return cls(
                v2_dir=_writable(layout.v2, "cgroup2 hierarchy").own_dir,
                layout=layout.name,
                prefix=prefix,
                procfs_root=procfs_root,
                fs=fs,
                clock=clock,
                private_name=private_name,
                require_controllers=require_controllers,
            )
        if kind == "v2":
            reasons = "; ".join(layout.problems) or f"this host's layout is {layout.name}"
            raise CgroupUnavailableError(
                f"cgroup v2 asked for, but no cgroup2 hierarchy is usable: {reasons}"
            )
        reasons = "; ".join(layout.problems) or "the cpu and memory controllers are not mounted"
        raise CgroupUnavailableError(f"no usable cgroup hierarchy: {reasons}")

    def _hierarchy_dirs(self) -> list[str]:
        dirs = list(dict.fromkeys(self._v1_dirs.values()))
        if self._v2_dir is not None:
            dirs.append(self._v2_dir)
        return dirs

    def _setup_private(self, own_dirs: list[str]) -> None:
        """mkdir `<own>/<prefix>-<pid>[-n]` in every hierarchy, one name for all.

        Each directory goes into `_private` as soon as it is made; on failure the caller's
        teardown removes whatever is recorded there. With `private_name`, that one name, adopted
        where it exists already."""
        if self._private_name is not None:
            for own in own_dirs:
                private = os.path.join(own, self._private_name)
                self._fs.mkdir(private)  # False: it exists already (a restarted daemon's)
                self._private[own] = private
            return
        for attempt in range(100):
            name = f"{self._prefix}-{self._pid}" + (f"-{attempt}" if attempt else "")
            for own in own_dirs:
                private = os.path.join(own, name)
                if not self._fs.mkdir(private):
                    break  # taken in this hierarchy (another instance): try the next name
                self._private[own] = private
            else:
                return
            # Forget each only once it is gone: a failure leaves the rest for the teardown.
            for own, private in reversed(list(self._private.items())):
                self._fs.rmdir(private)
                del self._private[own]
        raise CgroupError(f"could not find a free {self._prefix}-{self._pid}-<n> name")

    def _setup_v2(self, own: str) -> None:
        own = self._own_before_self_move(own)
        self._v2_own = own
        available = set(self._fs.read_text(os.path.join(own, "cgroup.controllers")).split())
        missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
        if missing and self._require_controllers:
            raise CgroupUnavailableError(
                f"cgroup v2 controller {' and '.join(missing)} not available in "
                f"{own}/cgroup.controllers (the parent did not delegate it); {_DELEGATION_HINT}",
                path=own,
            )
        wanted = [c for c in ENFORCING_CONTROLLERS if c in available]
        self.missing_controllers = tuple(c for c in ENFORCING_CONTROLLERS if c not in available)
        enabled = set(self._fs.read_text(os.path.join(own, "cgroup.subtree_control")).split())
        to_enable = [c for c in wanted if c not in enabled]
        # The root (no cgroup.type file) is exempt from the no-internal-process rule.
        is_root = not self._fs.exists(os.path.join(own, "cgroup.type"))
        if to_enable and not is_root:
            self._move_self_out(own)
        if to_enable:
            # Recorded before the write, so the teardown disables them even when interrupted
            # right after it (disabling a controller that was never enabled changes nothing).
            if self._self_move is not None:
                self._self_move.enabled = to_enable
            else:
                self._enabled_in_own = to_enable
            self._fs.write_text(
                os.path.join(own, "cgroup.subtree_control"), " ".join(f"+{c}" for c in to_enable)
            )
        self._setup_private([own])
        private = self._private[own]
        if wanted:  # none delegated: the private directory stays a plain group, as on hybrid
            self._fs.write_text(
                os.path.join(private, "cgroup.subtree_control"),
                " ".join(f"+{c}" for c in wanted),
            )

    def _own_before_self_move(self, own: str) -> str:
        """If another manager of this process already moved us into its leaf, share its move."""
        with _SELF_MOVES_LOCK:
            move = _SELF_MOVES.get(own)
            if move is not None:
                move.users += 1
                self._self_move = move
                return move.origin
        return own

    def _move_self_out(self, own: str) -> None:
        if self._self_move is not None:
            return
        members = parse_pids(self._fs.read_text(os.path.join(own, "cgroup.procs")))
        others = sorted(members - {self._pid})
        if others:
            shown = ", ".join(str(pid) for pid in others[:5]) + (", ..." if len(others) > 5 else "")
            raise CgroupUnavailableError(
                f"{own} holds other processes ({shown}), so its controllers cannot be enabled "
                f"(cgroup v2 allows no processes in an inner group); {_DELEGATION_HINT}",
                path=own,
            )
        if self._pid not in members:
            return
        leaf = os.path.join(own, f"{self._prefix}-{self._pid}-daemon")
        move = _SelfMove(origin=own, leaf=leaf, users=1)
        self._fs.mkdir(leaf)
        self._self_move = move  # at once: the teardown removes the leaf whatever fails next
        self._fs.write_text(os.path.join(leaf, "cgroup.procs"), str(self._pid))
        with _SELF_MOVES_LOCK:
            _SELF_MOVES[own] = move
            _SELF_MOVES[leaf] = move

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
        pattern = re.compile(rf"^{re.escape(self._prefix)}-([0-9]+)(?:-[0-9]+|-daemon)?$")
        # stale name -> own dir -> stale dir, hierarchies in the order this manager made them
        stale: dict[str, dict[str, str]] = {}
        for own in self._private:
            for directory in self._fs.subdirs(own):
                name = os.path.basename(directory)
                match = pattern.match(name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if pid == self._pid or (self._procfs / str(pid)).exists():
                    continue
                stale.setdefault(name, {})[own] = directory
        removed: list[str] = []
        errors: list[CgroupError] = []
        for name, found in sorted(stale.items()):
            try:
                self._remove_stale(name, found)
            except CgroupError as exc:
                # Another sweeper may have removed it first: only what is left is a failure.
                if any(self._fs.exists(directory) for directory in found.values()):
                    errors.append(exc)
            removed.extend(d for d in found.values() if not self._fs.exists(d))
        if errors:
            raise errors[0]
        return removed

    def _remove_stale(self, name: str, found: Mapping[str, str]) -> None:
        """Kill and remove one stale name (`found`: own dir -> stale dir) through the backend
        that would have made it, so it is killed and removed exactly as a group is."""
        group: CgroupGroup
        unified = found.get(self._v2_dir) if self._v2_dir is not None else None
        v1_dirs = {c: found[own] for c, own in self._v1_dirs.items() if own in found}
        if self.kind == "v2" or not v1_dirs:
            directory = unified if unified is not None else next(iter(found.values()))
            group = V2Group(name, directory, layout=self.layout, fs=self._fs, clock=self._clock)
        else:
            freezer = v1_dirs.get("freezer")
            if freezer is not None:
                self._thaw_v1_tree(freezer)
            group = V1Group(
                name,
                v1_dirs,
                unified_dir=unified,
                layout=self.layout,
                fs=self._fs,
                clock=self._clock,
            )
        group.remove()

    def _thaw_v1_tree(self, directory: str) -> None:
        """THAW every v1 freezer group below a stale one: a task frozen there dies of SIGKILL
        only once thawed, and thawing a parent leaves a child frozen by its own state."""
        for child in self._fs.subdirs(directory):
            self._thaw_v1_tree(child)
        with contextlib.suppress(CgroupError):  # best effort: the kill rounds thaw again
            self._fs.write_text(os.path.join(directory, "freezer.state"), "THAWED")

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
        if self._enabled_in_own and self._v2_own is not None:
            _attempt(errors, self._disable, self._v2_own, self._enabled_in_own)
            self._enabled_in_own = []
        _attempt(errors, self._release_self_move)

    def _disable(self, own: str, controllers: list[str]) -> None:
        # EBUSY when another group below `own` still uses them: leaving them is harmless.
        with contextlib.suppress(CgroupError):
            self._fs.write_text(
                os.path.join(own, "cgroup.subtree_control"), " ".join(f"-{c}" for c in controllers)
            )

    def _release_self_move(self) -> None:
        move, self._self_move = self._self_move, None
        if move is None:
            return
        with _SELF_MOVES_LOCK:
            move.users -= 1
            if move.users > 0:
                return
            _SELF_MOVES.pop(move.origin, None)
            _SELF_MOVES.pop(move.leaf, None)
        if move.enabled:
            self._disable(move.origin, move.enabled)
        self._fs.write_text(os.path.join(move.origin, "cgroup.procs"), str(self._pid))
        self._fs.rmdir(move.leaf)

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
