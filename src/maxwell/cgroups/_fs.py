"""Every filesystem call the cgroup backends make, and the one place `OSError` becomes a
`CgroupError` (psutil's `wrap_exceptions`, in one class).

Rules: backends never call `os.*` on cgroup files themselves (the pre-exec join in `_spawn` is the
one exception: it runs in the forked child, where raising is useless). Permission, read-only and
"no cgroup here" errors become `CgroupUnavailableError` (Maxwell cannot use cgroups at all); the
rest become `CgroupError` naming the file. Tests subclass `CgroupFs` to play the kernel on a fake
tree (a plain directory does not grow `cpu.max` when created).
"""

from __future__ import annotations

import contextlib
import errno
import os

from maxwell.errors import CgroupError, CgroupUnavailableError

_PERMISSION_HINT = "Maxwell needs root, or a cgroup delegated to its user (systemd Delegate=yes)"


class CgroupBusyError(CgroupError):
    """EBUSY: the group still has members or children (often only for a moment after a kill)."""


def translate(exc: OSError, action: str, path: str) -> CgroupError:
    """A one-line error for a failed cgroup operation, named by cause."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        return CgroupUnavailableError(
            f"cannot {action} {path}: permission denied; {_PERMISSION_HINT}", path=path
        )
    if code == errno.EROFS:
        return CgroupUnavailableError(
            f"cannot {action} {path}: the cgroup hierarchy is mounted read-only", path=path
        )
    if code == errno.ENOENT:
        return CgroupError(
            f"cannot {action} {path}: no such file (controller not available or group gone)",
            path=path,
        )
    if code == errno.ENODEV:  # a descriptor kept open on a group removed since
        return CgroupError(f"cannot {action} {path}: the group was removed", path=path)
    if code == errno.EBUSY:
        return CgroupBusyError(
            f"cannot {action} {path}: busy (the group is still in use)", path=path
        )
    return CgroupError(f"cannot {action} {path}: {exc.strerror or exc}", path=path)


class CgroupFs:
    """Real cgroupfs access. Subclass to fake the kernel in tests."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_text(self, path: str) -> str:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                return handle.read()
        except OSError as exc:
            raise translate(exc, "read", path) from exc

    def read_text_or_none(self, path: str) -> str | None:
        """The file's text, or None when it does not exist (an optional controller file)."""
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise translate(exc, "read", path) from exc

    def write_text(self, path: str, text: str) -> None:
        """One write(2) of the whole value, as the kernel expects for cgroup files."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise translate(exc, "open", path) from exc
        try:
            os.write(fd, text.encode("ascii"))
        except OSError as exc:
            raise translate(exc, f"write {text.strip()!r} to", path) from exc
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> bool:
        """Create a group; False when it already exists."""
        try:
            os.mkdir(path)
        except FileExistsError:
            return False
        except OSError as exc:
            raise translate(exc, "create cgroup", path) from exc
        return True

    def rmdir(self, path: str) -> bool:
        """Remove a group; False when it was already gone."""
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise translate(exc, "remove cgroup", path) from exc
        return True

    def subdirs(self, path: str) -> list[str]:
        try:
            with os.scandir(path) as entries:
                return [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise translate(exc, "list", path) from exc

    def open_read(self, path: str) -> int | None:
        """A kept read-only descriptor for cheap repeated `pread`, or None when absent."""
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise translate(exc, "open", path) from exc

    def pread(self, fd: int, path: str, size: int = 4096) -> bytes:
        """Re-read a kept descriptor from offset 0 (seq_file regenerates the content)."""
        try:
            return os.pread(fd, size, 0)
        except OSError as exc:
            raise translate(exc, "read", path) from exc

    def close(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # closing our own descriptor: nothing to report
            os.close(fd)
