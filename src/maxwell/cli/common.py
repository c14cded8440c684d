"""What every subcommand shares: the parser that fails in one line, config loading, signals."""

from __future__ import annotations

import argparse
import signal
import sys
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NoReturn

from maxwell.errors import UsageError

EXIT_USAGE = 2
EXIT_FAILURE = 125


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


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


@contextmanager
def signals_raise(make_error: type[BaseException]) -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM/SIGHUP into `make_error(signum)`; ignore later ones.

    Later signals are ignored so that the clean-up the first one started cannot itself be
    interrupted half-way (which would leave a cgroup or a process behind).
    """
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise make_error(signum)

    previous = {signum: signal.signal(signum, handler) for signum in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
