"""Small readers for sysfs attribute files: the one place `OSError` becomes `SensorError`.

A sysfs attribute holds one value and a newline. A file that errors on read (EIO and ENODATA from
a dead hwmon channel, EISDIR, a vanished device) or holds something that is not a number becomes a
`SensorError` naming the file; a root-only file becomes a `SensorPermissionError`.
"""

from __future__ import annotations

import errno
from pathlib import Path

from maxwell.errors import SensorError, SensorPermissionError


def read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError as exc:
        raise SensorPermissionError(
            f"cannot read {path}: permission denied", path=str(path)
        ) from exc
    except UnicodeDecodeError as exc:
        raise SensorError(f"cannot read {path}: not text", path=str(path)) from exc
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "error")
        raise SensorError(f"cannot read {path}: {reason}", path=str(path)) from exc


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
    if not path.exists():
        return None
    try:
        return read_int(path)
    except SensorError:
        return None


def read_optional_text(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return read_text(path)
    except SensorError:
        return None
