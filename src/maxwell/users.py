"""Running a command as another user: who, and the `setpriv` (util-linux) line that does it.

A process running as root can leave any cgroup: it may write its pid into any `cgroup.procs`,
with every capability dropped and `no_new_privs` set, because the files are root's own and the
kernel lets root move its own processes (measured on this machine:
`tests/adversarial/test_root_workload.py`). So the only workload a cgroup holds is one that does
not run as root. `RunAs` names the user; `setpriv_argv` is the command line that execs the
command as that user in place (the pid stays the workload's own); `invoking_user` finds the
user who started a root command through sudo.

A node daemon that runs as root gives each agent that names no user a uid of its own, as
systemd's `DynamicUser=` does: `UidRange` is the configured range and `allocate` picks a uid in
it that no other agent of the node holds and that the user database does not know. Such a user
is written `dynamic:UID` (`RunAs.label`, `RunAs.parse`); it has no name, no home and no groups.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import sys
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path

from maxwell.errors import MaxwellError, UsageError


class UnknownUserError(UsageError):
    """A user named to run a command as is not on this system."""


class SetprivMissingError(MaxwellError):
    """`setpriv` (util-linux), which drops to another user, is not installed."""


class UidRangeError(UsageError):
    """A range of dynamic uids that cannot be used."""


class UidsExhaustedError(MaxwellError):
    """Every uid of the dynamic range is held: no agent can be given one of its own."""


DYNAMIC_PREFIX = "dynamic:"
# Above the 16-bit uids and below the first subordinate range that `useradd` hands out
# (/etc/subuid starts at 100000): free on a stock Debian or Ubuntu host. systemd's own
# DynamicUser range (61184-65519) is left to systemd.
DEFAULT_DYNAMIC_UIDS = "70000-99999"


@dataclass(frozen=True)
class RunAs:
    """A user to run a command as: its ids, and its name where the system knows it."""

    uid: int
    gid: int
    name: str | None = None

    @classmethod
    def named(cls, user: str) -> RunAs:
        """The user `user` (a name, or a uid as digits) as the system knows it."""
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise UnknownUserError(f"no such user {user!r}") from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)

    @classmethod
    def dynamic(cls, uid: int) -> RunAs:
        """A dynamic user: the uid alone, its group the same number."""
        return cls(uid, uid, f"{DYNAMIC_PREFIX}{uid}")

    @classmethod
    def parse(cls, label: str) -> RunAs:
        """The user a stored label names: `dynamic:UID`, or a user the system knows."""
        if label.startswith(DYNAMIC_PREFIX):
            uid = dynamic_uid(label)
            if uid is None:
                raise UnknownUserError(f"no such user {label!r}")
            return cls.dynamic(uid)
        return cls.named(label)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.uid)


def dynamic_uid(label: str) -> int | None:
    """The uid of a dynamic user's label (`dynamic:UID`); None for any other label."""
    number = label.removeprefix(DYNAMIC_PREFIX)
    return int(number) if number != label and number.isdigit() else None


@dataclass(frozen=True)
class UidRange:
    """The uids a node may give its agents, `first` to `last` inclusive."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> UidRange | None:
        """`FIRST-LAST` (None for "none": agents that name no user run as the daemon's)."""
        if text == "none":
            return None
        first, dash, last = text.partition("-")
        if not (dash and first.isdigit() and last.isdigit()):
            raise UidRangeError(f"dynamic uids {text!r}: use FIRST-LAST (as 70000-99999) or none")
        low, high = int(first), int(last)
        special = any(low <= uid <= high for uid in (65534, 65535))  # nobody, 16-bit -1
        if not 1000 <= low <= high <= 2**32 - 2 or special:
            raise UidRangeError(
                f"dynamic uids {text!r}: must lie within 1000-4294967294 and hold neither "
                "nobody (65534) nor 65535"
            )
        return cls(low, high)

    def __len__(self) -> int:
        return self.last - self.first + 1

    def allocate(self, taken: Set[int], draw: Callable[[int], int]) -> RunAs:
        """A uid of the range that is not `taken` and that the user database does not know,
        probing on from a point `draw(len(self))` gives (so nodes sharing a range rarely meet)."""
        start = draw(len(self))
        for step in range(len(self)):
            uid = self.first + (start + step) % len(self)
            if uid not in taken and not _known(RunAs(uid, uid)):
                return RunAs.dynamic(uid)
        raise UidsExhaustedError(
            f"all {len(self)} dynamic uids {self.first}-{self.last} are taken: no agent can be "
            "given a uid of its own (widen [daemon] dynamic_uids)"
        )


def invoking_user(environ: Mapping[str, str]) -> RunAs | None:
    """The user who ran this root process through sudo (`SUDO_UID`, `SUDO_GID`, `SUDO_USER`),
    or None where it was not started through sudo, or by root itself."""
    uid, gid = environ.get("SUDO_UID", ""), environ.get("SUDO_GID", "")
    if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0:
        return None
    name = environ.get("SUDO_USER") or None
    return RunAs(int(uid), int(gid), name)


def setpriv_argv(user: RunAs, argv: Sequence[str]) -> list[str]:
    """`argv` run as `user` through setpriv: real and effective ids, its groups (initgroups for a
    user the system knows, none otherwise), no new privileges."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SetprivMissingError(
            "cannot run a command as another user: setpriv (util-linux) is missing"
        )
    groups = "--init-groups" if _known(user) else "--clear-groups"
    return [
        setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", groups, "--no-new-privs",
        "--", *argv,
    ]  # fmt: skip


def _known(user: RunAs) -> bool:
    """Whether the system has an entry for the user's uid (initgroups needs one)."""
    try:
        pwd.getpwuid(user.uid)
    except KeyError:
        return False
    return True


def groups_of(user: RunAs) -> frozenset[int]:
    """The groups `user` holds when it runs (`setpriv_argv`): its supplementary groups for a
    user the system knows, its own group alone otherwise."""
    if user.name is None or not _known(user):
        return frozenset({user.gid})
    return frozenset({user.gid, *os.getgrouplist(user.name, user.gid)})


def obstacle(user: RunAs, path: str | os.PathLike[str], *, execute: bool = False) -> str | None:
    """Why `user` cannot reach `path` (every directory above it searchable, the file itself
    readable, or executable with `execute`), or None where it can. Links are followed, as exec
    and open follow them; a path that does not exist is not an obstacle of permissions."""
    try:
        target = Path(os.path.realpath(path))
        groups = groups_of(user)
        for directory in reversed(target.parents):
            if not _permits(os.stat(directory), user, groups, stat.S_IXUSR):
                return f"{directory} is closed to {user.label} (no search permission)"
        bit = stat.S_IXUSR if execute else stat.S_IRUSR
        if not _permits(os.stat(target), user, groups, bit):
            return f"{target} is not {'executable' if execute else 'readable'} by {user.label}"
    except FileNotFoundError:
        return None
    return None


def _permits(info: os.stat_result, user: RunAs, groups: frozenset[int], owner_bit: int) -> bool:
    """Whether the mode grants `user` the permission `owner_bit` names (owner, group or other
    class, as the kernel picks one; root's override is not assumed: agents are never root)."""
    if info.st_uid == user.uid:
        return bool(info.st_mode & owner_bit)
    if info.st_gid in groups:
        return bool(info.st_mode & (owner_bit >> 3))
    return bool(info.st_mode & (owner_bit >> 6))


def interpreter_obstacle(user: RunAs, modules: Sequence[str] = ("maxwell", "numpy")) -> str | None:
    """Why `user` could not run this interpreter with `modules` importable (None: it could):
    for those that start Python agents of their own (the demo, the benchmarks)."""
    why = obstacle(user, sys.executable, execute=True)
    for name in modules:
        spec = importlib.util.find_spec(name)
        if why is None and spec is not None and spec.origin is not None:
            why = obstacle(user, spec.origin)
    return why


def uids_for_python_agents(uids: str = DEFAULT_DYNAMIC_UIDS) -> tuple[str, str | None]:
    """The dynamic uids for a node whose agents are this interpreter's Python programs: `uids`
    where a uid of that range could run them (or no uid is given: not root), else "none" and
    why, so that those agents run as the node's own user rather than fail to start."""
    found = UidRange.parse(uids)
    if found is None or os.geteuid() != 0:
        return uids, None
    why = interpreter_obstacle(RunAs.dynamic(found.first))
    return ("none", why) if why is not None else (uids, None)
