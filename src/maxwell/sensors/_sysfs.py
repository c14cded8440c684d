"""Small readers for sysfs attribute files and directories: the one place `OSError` becomes
`SensorError`.

A sysfs attribute holds one value and a newline. A file that errors on read (EIO and ENODATA from
a dead hwmon channel, EISDIR, a vanished device) or holds something that is not a number becomes a
`SensorError` naming the file; a root-only file becomes a `SensorPermissionError`.

Directories go through here too: `list_dir`, `is_dir` and `exists` never let an `OSError` out.
`Path.iterdir()` raises `PermissionError` for a directory this user may not list, and on Python
3.11 `Path.exists()` / `Path.is_dir()` raise it as well when a parent directory cannot be searched
(they swallow only ENOENT, ENOTDIR, EBADF and ELOOP): a backend under an unreadable directory is
"unreadable", never a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from maxwell.errors import SensorError, SensorPermissionError


def _translate(action: str, path: Path, exc: OSError) -> SensorError:
    """The `SensorError` for an `OSError` raised while doing `action` ("read", "list") on `path`."""
    if isinstance(exc, PermissionError):
        return SensorPermissionError(f"cannot {action} {path}: permission denied", path=str(path))
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "error")
    return SensorError(f"cannot {action} {path}: {reason}", path=str(path))


def read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except UnicodeDecodeError as exc:
        raise SensorError(f"cannot read {path}: not text", path=str(path)) from exc
    except OSError as exc:
        raise _translate("read", path, exc) from exc


def read_int(path: Path) -> int:
    text = read_text(path)
    try:
        return int(text)
    except ValueError as exc:
        raise SensorError(
            f"cannot read {path}: {text[:40]!r} is not an integer", path=str(path)
        ) from exc


def read_optional_int(path: Path) -> int | None:
    """The integer in `path`, or None when it is absent or unreadable (optional attributes)."""
    try:
        return read_int(path)
    except SensorError:
        return None


def read_optional_text(path: Path) -> str | None:
    """The text in `path`, or None when it is absent or unreadable (optional attributes)."""
    try:
        return read_text(path)
    except SensorError:
        return None


def list_dir(path: Path) -> list[Path]:
    """The entries of directory `path`, sorted by name.

    Raises `SensorPermissionError` when this user may not list it, `SensorError` for any other
    failure (absent, not a directory, EIO).
    """
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise _translate("list", path, exc) from exc
    return [path / name for name in sorted(names)]


def _stat(path: Path) -> os.stat_result | None:
    """`os.stat(path)` (following symlinks), or None when nothing is there."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _translate("look up", path, exc) from exc


def exists(path: Path) -> bool:
    """Whether `path` exists; `SensorPermissionError` when a parent cannot be searched."""
    return _stat(path) is not None


def is_dir(path: Path) -> bool:
    """Whether `path` is a directory; `SensorPermissionError` when a parent cannot be searched."""
    found = _stat(path)
    return found is not None and stat.S_ISDIR(found.st_mode)
