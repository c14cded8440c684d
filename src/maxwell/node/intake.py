"""Files an agent hands the node (its proofs), read so that nothing it places can hurt the node;
and files the node hands an agent (a job's input), written so that nothing it places can
redirect them.

An agent names files in its own directory; the agent controls that directory, and may swap what
is there while the node reads it. So:

- A name is a relative path of plain components (no `..`, no `.`, nothing empty, no NUL). Each
  directory on the way is opened with `O_NOFOLLOW | O_DIRECTORY` relative to the one before,
  starting from the agent's directory, and the file itself with `O_NOFOLLOW | O_NONBLOCK`:
  no symbolic link is followed anywhere, however it is swapped in, and a FIFO does not block.
- What is opened must be a regular file, with one link (a hard link to someone else's file is
  not the agent's), owned by the agent's uid, and at most `limit` bytes (checked on the open
  descriptor, and again while reading, so a file that grows is cut off): a sparse file of
  2 GiB apparent size is refused before a byte is read.
- Every failure is an `IntakeError` (HTTP 400) that names the file relative to the agent's
  directory and says why; no `OSError` escapes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from maxwell.node.facade import NodeError

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class IntakeError(NodeError):
    """A file an agent named cannot be taken: missing, a link, not its own, too large..."""


def components(name: str) -> list[str]:
    """The plain components of a relative name (an `IntakeError` for anything else)."""
    parts = name.split("/")
    if ".." in parts:
        raise IntakeError(f"{name!r}: outside the agent's directory ('..')")
    if not name or "\x00" in name or name.startswith("/") or any(p in ("", ".") for p in parts):
        raise IntakeError(f"{name!r}: name a file in the agent's directory, relative to it")
    return parts


def open_beneath(directory: Path, name: str) -> int:
    """A descriptor of `directory/name`, opened without following any link (see the module)."""
    parts = components(name)
    try:
        parent = os.open(directory, _DIRECTORY)
    except OSError as exc:
        raise IntakeError(f"the agent's directory cannot be opened: {exc.strerror}") from exc
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIRECTORY, dir_fd=parent)
            os.close(parent)
            parent = child
        return os.open(parts[-1], _FILE, dir_fd=parent)
    except OSError as exc:
        raise IntakeError(f"{name}: {_why(exc)}") from exc
    finally:
        os.close(parent)


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symbolic link, or a path through one; the node follows none"
    if exc.errno == errno.ENOENT:
        return "no such file"
    return f"cannot open it: {exc.strerror}"


def read_agent_file(directory: Path, name: str, *, uid: int, limit: int) -> bytes:
    """The bytes of the agent's regular file `name` (see the module for what is refused)."""
    fd = open_beneath(directory, name)
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise IntakeError(f"{name}: not a regular file")
        if found.st_nlink != 1:
            raise IntakeError(
                f"{name}: has {found.st_nlink} links; the node reads only files with one"
            )
        if found.st_uid != uid:
            raise IntakeError(f"{name}: owned by uid {found.st_uid}, not by the agent (uid {uid})")
        if found.st_size > limit:
            raise IntakeError(f"{name}: {found.st_size} bytes, over the limit of {limit}")
        return _read_at_most(fd, name, limit)
    finally:
        os.close(fd)


def _read_at_most(fd: int, name: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise IntakeError(f"{name}: grew past the limit of {limit} bytes while read")
    except OSError as exc:
        raise IntakeError(f"{name}: cannot read it: {exc.strerror}") from exc
    return b"".join(chunks)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def replace_agent_file(directory: Path, name: str, data: bytes, *, uid: int) -> None:
    """Write `data` as the agent's file `name` (one plain component) in `directory`: whatever
    stood there is unlinked first (a link is removed, never followed), and the new file is made
    exclusively (a link the agent races in makes it fail, not follow), mode 0600, given to the
    agent's uid. An `IntakeError` says why it could not."""
    parts = components(name)
    if len(parts) != 1:
        raise IntakeError(f"{name!r}: one name in the agent's directory")
    try:
        parent = os.open(directory, _DIRECTORY)
    except OSError as exc:
        raise IntakeError(f"the agent's directory cannot be opened: {exc.strerror}") from exc
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as file:
            os.fchown(fd, uid, -1)
            file.write(data)
    except OSError as exc:
        raise IntakeError(f"{name}: cannot write it: {exc.strerror}") from exc
    finally:
        os.close(parent)
