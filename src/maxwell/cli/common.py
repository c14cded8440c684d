"""What every subcommand shares: the parser that fails in one line, config loading, signals."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from maxwell.errors import UsageError

EXIT_USAGE = 2
EXIT_FAILURE = 125


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def print_json(document: Mapping[str, object]) -> None:
    """One JSON object on a line of its own, with the package's `version` added: what every
    command prints with `--json`."""
    from maxwell import __version__

    print(json.dumps({**document, "version": __version__}), flush=True)


def fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def check_root_dir(flag: str, value: str) -> None:
    """A `--sysfs-root`-style flag must name a readable directory: else a `UsageError`."""
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"{flag} {value}: no such directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"{flag} {value}: cannot read the directory")


def load_config(path: str | None) -> Mapping[str, object]:
    """Read a TOML config file; `None` means the embedded defaults (an empty mapping)."""
    if path is None:
        return {}
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from exc


TERMINATING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    """The first SIGINT/SIGTERM/SIGHUP, recorded and made visible as a readable descriptor.

    The handlers never raise: an exception thrown into arbitrary code (half-way through making a
    cgroup, or through killing one) is how clean-up gets skipped. They record the signal and write
    a byte to a pipe; the code that owns the work polls `signum` at safe points and can wait on
    `fileno()` together with its other descriptors.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, Any] = {}

    def fileno(self) -> int:
        return self._read_fd

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"\0")

    def __enter__(self) -> StopRequest:
        for signum in TERMINATING_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, old in self._previous.items():
            signal.signal(signum, old)
        os.close(self._read_fd)
        os.close(self._write_fd)
