"""Maxwell's errors, named by cause and by blame.

Every error Maxwell raises on purpose derives from `MaxwellError`. Errors about the machine
(a sensor, a cgroup hierarchy) say which file; errors about a process carry its pid. `OSError`
is translated into these at the adapter boundary, never deeper.
"""

from __future__ import annotations


class MaxwellError(Exception):
    """Root of every error Maxwell raises on purpose."""


class UsageError(MaxwellError, ValueError):
    """The user gave input Maxwell cannot use (a bad flag value, an unknown unit)."""


class SensorError(MaxwellError):
    """A sensor could not be read: missing, unreadable, or returning nonsense."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SensorPermissionError(SensorError):
    """A sensor exists but this user may not read it (e.g. `energy_uj` is root-only)."""


class CounterAmbiguityError(SensorError):
    """An energy counter may have wrapped more than once between two readings."""


class CgroupError(MaxwellError):
    """A cgroup operation failed."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CgroupUnavailableError(CgroupError):
    """No usable cgroup hierarchy: not root, no cgroup filesystem, read-only, or no controller."""


class ProcessError(MaxwellError):
    """An operation on a process failed; carries its pid."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
