"""The state directory's layout: the one place where the daemon and its clients learn paths.

    <state>/
      maxwell.db        the ledger and the node's tables (SQLite, WAL)
      admin.token       the admin token (mode 0600, made on the first start)
      maxwell.sock      the API's default Unix socket
      daemon.lock       held (flock, exclusive) by the one daemon running on this directory
      agents/<id>.log   each agent's standard output and error
      work/<id>/        each agent's own directory, where it leaves proofs for the node to read
        agent.token     its token (mode 0600, its user's): named in its environment, never in it
        payload         what its spawn handed it, if anything ($MAXWELL_AGENT_PAYLOAD)
        result          what it leaves for its submitter, if anything ($MAXWELL_AGENT_RESULT)

The directory is the daemon's own (`check_private_root`, `check_private_files`): owned by its
user, writable by nobody else, and so are its token, database and lock (mode 0600); anything
else is refused before it is used, since whoever could write there could plant a token (and be
the node's admin) or a database (and print money). Once an agent runs as another user, others
may pass through it (mode 711, `maxwell.node.processes.open_to_traversal`) to reach that agent's
own directory, never list or write it.

Where a client finds its daemon (`locate_daemon`), one layout for all: `--socket PATH`, else
`<DIR>/maxwell.sock` with `--state DIR`, else `$MAXWELL_SOCKET`, else `$MAXWELL_STATE`'s socket,
else the default: the service's socket (`/run/maxwell/maxwell.sock`, as
`contrib/maxwell.service` runs it) where it exists, else that of a plain `maxwell daemon`
(`/var/lib/maxwell/maxwell.sock`). The daemon takes `$MAXWELL_STATE` and `$MAXWELL_SOCKET` too.

One daemon per state directory: `StateLock.acquire` takes `daemon.lock` before the daemon touches
anything else (database, cgroups, socket). The kernel drops the lock when its holder dies, even by
SIGKILL, so a crashed daemon never blocks its successor, and a refused start changes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from maxwell.economy.store import DB_NAME
from maxwell.errors import MaxwellError

SOCKET_NAME = "maxwell.sock"
ADMIN_TOKEN_FILE = "admin.token"
LOCK_FILE = "daemon.lock"
LOGS_DIR = "agents"
WORK_DIR = "work"
AGENT_TOKEN_FILE = "agent.token"
PAYLOAD_FILE = "payload"  # `maxwell.node.results`
RESULT_FILE = "result"
PAYLOAD_ENV = "MAXWELL_AGENT_PAYLOAD"
RESULT_ENV = "MAXWELL_AGENT_RESULT"
STATE_ENV = "MAXWELL_STATE"
SOCKET_ENV = "MAXWELL_SOCKET"
DEFAULT_STATE_DIR = "/var/lib/maxwell"
SERVICE_SOCKET = "/run/maxwell/maxwell.sock"  # contrib/maxwell.service's RuntimeDirectory
_MAX_LOCK_BYTES = 64  # what the lock file may hold: a pid and a newline
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatePaths:
    """Where each thing of one state directory lives."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / DB_NAME

    @property
    def admin_token(self) -> Path:
        return self.root / ADMIN_TOKEN_FILE

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_NAME

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    def agent_log(self, agent: str) -> Path:
        return self.logs / f"{agent}.log"

    @property
    def work(self) -> Path:
        return self.root / WORK_DIR

    def agent_work(self, agent: str) -> Path:
        return self.work / agent


@dataclass(frozen=True)
class DaemonAddress:
    """Where a client reaches its daemon: the socket, and the state directory whose admin token
    it may read (None: only a socket was named)."""

    socket: str
    state: Path | None

    def no_daemon(self) -> str:
        """What to say when nothing answers there."""
        if self.state is None:
            return f"no daemon at {self.socket}"
        return f"no daemon at {self.state}: start it with 'maxwell daemon --state {self.state}'"


def locate_daemon(
    *,
    state: str | None,
    socket: str | None,
    env: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.exists,
) -> DaemonAddress:
    """The daemon the flags, then the environment, then the default layout name (see the
    module)."""
    if socket:
        return DaemonAddress(socket, Path(state) if state else None)
    if state:
        return DaemonAddress(str(StatePaths(Path(state)).socket), Path(state))
    named = env.get(STATE_ENV) or None
    if env.get(SOCKET_ENV):
        return DaemonAddress(env[SOCKET_ENV], Path(named) if named else None)
    if named:
        return DaemonAddress(str(StatePaths(Path(named)).socket), Path(named))
    if exists(SERVICE_SOCKET):
        return DaemonAddress(SERVICE_SOCKET, Path(DEFAULT_STATE_DIR))
    default = StatePaths(Path(DEFAULT_STATE_DIR))
    return DaemonAddress(str(default.socket), default.root)


class StateLockError(MaxwellError):
    """The state directory's lock cannot be taken (another daemon holds it, or it is unusable)."""

    def __init__(self, message: str, *, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


class StateLock:
    """The exclusive lock of one state directory, held while its daemon runs."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, paths: StatePaths) -> StateLock:
        """Take the lock without waiting; a `StateLockError` names the daemon that holds it."""
        path = paths.lock
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise StateLockError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f" (pid {holder})" if holder is not None else ""
                raise StateLockError(
                    f"another maxwell daemon{who} is running on {paths.root}", holder_pid=holder
                ) from None
            raise StateLockError(f"cannot lock {path}: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StateLockError(f"cannot write {path}: {exc.strerror}") from exc
        return cls(fd, path)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let the next daemon start (idempotent). The file stays: removing it would race."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock


def _holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it reads as one."""
    try:
        text = os.pread(fd, _MAX_LOCK_BYTES, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


class StateDirUnsafeError(MaxwellError):
    """The state directory, or a file in it, could have been planted or changed by another user."""


# The files a daemon trusts in its state directory: its own, private (mode 0600).
_PRIVATE_FILES = (ADMIN_TOKEN_FILE, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_FILE)


def check_private_root(paths: StatePaths, uid: int | None = None) -> None:
    """Refuse (`StateDirUnsafeError`, saying why and what to do) a state directory that is not
    the daemon's own: not owned by `uid` (the daemon's effective uid), or writable by its group
    or others. Someone who could write there could plant a token and become the node's admin,
    or a database and print money. Checked before anything is made in it."""
    uid = os.geteuid() if uid is None else uid
    root = paths.root
    try:
        found = os.stat(root)
    except OSError as exc:
        raise StateDirUnsafeError(f"--state {root}: {exc.strerror}") from exc
    _check_owner(root, found, uid)
    if found.st_mode & 0o022:
        raise StateDirUnsafeError(
            f"--state {root}: writable by its group or others (mode {found.st_mode & 0o777:o}): "
            f"make it private (chmod 700 {root}) or choose another directory"
        )


def check_private_files(paths: StatePaths, uid: int | None = None) -> None:
    """Refuse an admin token, database or lock that is not a regular file (a link), is owned by
    another uid than `uid`, or is writable by others. One of the daemon's own that others may
    read is made private (mode 0600), with a warning: older releases left the database 0644."""
    uid = os.geteuid() if uid is None else uid
    for name in _PRIVATE_FILES:
        _check_file(paths.root / name, uid)


def _check_file(path: Path, uid: int) -> None:
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return  # the daemon makes it, private
    except OSError as exc:
        raise StateDirUnsafeError(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISREG(found.st_mode):
        raise StateDirUnsafeError(f"{path}: not a regular file (a link?): remove it")
    _check_owner(path, found, uid)
    mode = found.st_mode & 0o777
    if mode & 0o022:
        raise StateDirUnsafeError(
            f"{path}: writable by its group or others (mode {mode:o}): it may have been "
            "changed by another user; check it, then chmod 600 it"
        )
    if mode & 0o077:
        log.warning("%s: mode %o let others read it; made private (0600)", path, mode)
        os.chmod(path, 0o600)


def _check_owner(path: Path, found: os.stat_result, uid: int) -> None:
    if found.st_uid != uid:
        raise StateDirUnsafeError(
            f"{path}: owned by uid {found.st_uid}, not by this daemon's user (uid {uid}): "
            "refusing what another user may have planted"
        )
