"""Cgroup v2 delegation: what a manager changes in `<own>` to enable its controllers below.

Rules (cgroup v2's no-internal-process rule; systemd's Delegate=yes):
- A controller is enabled for the private subtree by writing `+<controller>` to
  `<own>/cgroup.subtree_control`. Only those not enabled there yet are written.
- `<own>` may then hold no process unless it is the root (no `cgroup.type` file). When Maxwell
  is alone in `<own>` it first moves itself into the leaf `<own>/<prefix>-<pid>-daemon`; when
  other processes are there it refuses with a clear error instead of moving them. With nothing to
  enable, Maxwell stays where it is.
- One move per process: the managers of this process share it (`SelfMove.users`), each finding
  it under the directory it was given, the origin or the leaf. The last one to release it
  disables what was enabled in the origin after the move, moves Maxwell back to the origin and
  removes the leaf.
- Bookkeeping first: the move is recorded right after the leaf's mkdir returns, and controllers
  before the write that enables them, so the manager's teardown undoes whatever was done, even
  when interrupted (disabling a controller that was never enabled changes nothing).
- Disabling is best effort: EBUSY (another group below `<own>` still uses a controller) leaves
  it enabled, which is harmless.

`CgroupManager` (in `manager`) owns one `V2Delegation`, drives it while it sets up a pure v2
hierarchy and undoes it in its teardown; every write goes through the `CgroupFs` boundary.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import parse_pids
from maxwell.errors import CgroupError, CgroupUnavailableError

DELEGATION_HINT = "run Maxwell in a cgroup of its own, e.g. systemd-run --scope -p Delegate=yes"


@dataclass
class SelfMove:
    """Maxwell moved itself from `origin` into `leaf` (pure v2); shared by the managers of this
    process and undone by the last one to close."""

    origin: str
    leaf: str
    users: int
    enabled: list[str] = field(default_factory=list)  # controllers enabled in origin after it


# origin and leaf -> move; managers of one process share one move.
_SELF_MOVES: dict[str, SelfMove] = {}
_SELF_MOVES_LOCK = threading.Lock()


def disable_controllers(fs: CgroupFs, own: str, controllers: list[str]) -> None:
    """Write `-<controller>` for each of `controllers` to `<own>/cgroup.subtree_control`."""
    # EBUSY when another group below `own` still uses them: leaving them is harmless.
    with contextlib.suppress(CgroupError):
        fs.write_text(
            os.path.join(own, "cgroup.subtree_control"), " ".join(f"-{c}" for c in controllers)
        )


class V2Delegation:
    """What one manager changed in `<own>` of the unified hierarchy, recorded to be undone."""

    def __init__(self, fs: CgroupFs, *, pid: int, prefix: str) -> None:
        self._fs = fs
        self._pid = pid
        self._prefix = prefix
        # `<own>` once known: the origin of the move when one was shared.
        self.own: str | None = None
        self.self_move: SelfMove | None = None
        # Controllers enabled in `own` with no move (the root): the move records its own.
        self.enabled_in_own: list[str] = []

    def adopt_own(self, own: str) -> str:
        """Record and return `<own>`: `own`, or, when another manager of this process already
        moved us out of it into its leaf, the origin of that move, which is then shared."""
        self.own = self._own_before_self_move(own)
        return self.own

    def _own_before_self_move(self, own: str) -> str:
        with _SELF_MOVES_LOCK:
            move = _SELF_MOVES.get(own)
            if move is not None:
                move.users += 1
                self.self_move = move
                return move.origin
        return own

    def enable_in_own(self, own: str, wanted: list[str]) -> None:
        """Enable in `<own>/cgroup.subtree_control` those of `wanted` not enabled there yet,
        first moving Maxwell out of `<own>` unless it is the root."""
        enabled = set(self._fs.read_text(os.path.join(own, "cgroup.subtree_control")).split())
        to_enable = [c for c in wanted if c not in enabled]
        # The root (no cgroup.type file) is exempt from the no-internal-process rule.
        is_root = not self._fs.exists(os.path.join(own, "cgroup.type"))
        if to_enable and not is_root:
            self._move_self_out(own)
        if to_enable:
            # Recorded before the write, so the teardown disables them even when interrupted
            # right after it (disabling a controller that was never enabled changes nothing).
            if self.self_move is not None:
                self.self_move.enabled = to_enable
            else:
                self.enabled_in_own = to_enable
            self._fs.write_text(
                os.path.join(own, "cgroup.subtree_control"), " ".join(f"+{c}" for c in to_enable)
            )

    def _move_self_out(self, own: str) -> None:
        if self.self_move is not None:
            return
        members = parse_pids(self._fs.read_text(os.path.join(own, "cgroup.procs")))
        others = sorted(members - {self._pid})
        if others:
            shown = ", ".join(str(pid) for pid in others[:5]) + (", ..." if len(others) > 5 else "")
            raise CgroupUnavailableError(
                f"{own} holds other processes ({shown}), so its controllers cannot be enabled "
                f"(cgroup v2 allows no processes in an inner group); {DELEGATION_HINT}",
                path=own,
            )
        if self._pid not in members:
            return
        leaf = os.path.join(own, f"{self._prefix}-{self._pid}-daemon")
        move = SelfMove(origin=own, leaf=leaf, users=1)
        self._fs.mkdir(leaf)
        self.self_move = move  # at once: the teardown removes the leaf whatever fails next
        self._fs.write_text(os.path.join(leaf, "cgroup.procs"), str(self._pid))
        with _SELF_MOVES_LOCK:
            _SELF_MOVES[own] = move
            _SELF_MOVES[leaf] = move

    def release_self_move(self) -> None:
        """Drop this manager's share of the move; the last one undoes it: disables what it
        enabled in the origin, moves Maxwell back there and removes the leaf."""
        move, self.self_move = self.self_move, None
        if move is None:
            return
        with _SELF_MOVES_LOCK:
            move.users -= 1
            if move.users > 0:
                return
            _SELF_MOVES.pop(move.origin, None)
            _SELF_MOVES.pop(move.leaf, None)
        if move.enabled:
            disable_controllers(self._fs, move.origin, move.enabled)
        self._fs.write_text(os.path.join(move.origin, "cgroup.procs"), str(self._pid))
        self._fs.rmdir(move.leaf)
