"""The state directory's layout: the one place where the daemon and its clients learn paths.

    <state>/
      maxwell.db        the ledger and the node's tables (SQLite, WAL)
      admin.token       the admin token (mode 0600, made on the first start)
      maxwell.sock      the API's default Unix socket
      daemon.lock       held (flock, exclusive) by the one daemon running on this directory
      agents/<id>.log   each agent's standard output and error
      work/<id>/        each agent's own directory, where it leaves proofs for the node to read

One daemon per state directory: `StateLock.acquire` takes `daemon.lock` before the daemon touches
anything else (database, cgroups, socket). The kernel drops the lock when its holder dies, even by
SIGKILL, so a crashed daemon never blocks its successor, and a refused start changes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from maxwell.economy.store import DB_NAME
from maxwell.errors import MaxwellError

SOCKET_NAME = "maxwell.sock"
ADMIN_TOKEN_FILE = "admin.token"
LOCK_FILE = "daemon.lock"
LOGS_DIR = "agents"
WORK_DIR = "work"
_MAX_LOCK_BYTES = 64  # what the lock file may hold: a pid and a newline


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
