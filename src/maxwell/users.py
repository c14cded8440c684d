"""Running a command as another user: who, and the `setpriv` (util-linux) line that does it.

A process running as root can leave any cgroup: it may write its pid into any `cgroup.procs`,
with every capability dropped and `no_new_privs` set, because the files are root's own and the
kernel lets root move its own processes (measured on this machine:
`tests/adversarial/test_root_workload.py`). So the only workload a cgroup holds is one that does
not run as root. `RunAs` names the user; `setpriv_argv` is the command line that execs the
command as that user in place (the pid stays the workload's own); `invoking_user` finds the
user who started a root command through sudo.
"""

from __future__ import annotations

import pwd
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maxwell.errors import MaxwellError, UsageError


class UnknownUserError(UsageError):
    """A user named to run a command as is not on this system."""


class SetprivMissingError(MaxwellError):
    """`setpriv` (util-linux), which drops to another user, is not installed."""


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

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.uid)


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
