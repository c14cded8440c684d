"""What the benchmarks share: their own CPU clock, a SIGTERM that unwinds like Ctrl-C (so the
`finally`s that kill workloads and remove groups always run), and how a report is printed (on
a standard output that nothing else wrote to)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from types import FrameType


def process_cpu_s() -> float:
    """This process's user + system CPU time, seconds (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM both unwind as `KeyboardInterrupt` through the caller's clean-up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While a benchmark runs, what anything prints on standard output (Ray's raylet warnings,
    a child's chatter) goes to standard error: standard output carries the report alone."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to keep clean
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def report(
    name: str,
    produce: Callable[[], Mapping[str, object]],
    *,
    as_json: bool,
    table: Callable[[Mapping[str, object]], object] | None = None,
) -> int:
    """Run benchmark `name` and print its report: one JSON line with `as_json`, else `table`'s
    rich renderable (indented JSON without one). Ctrl-C or SIGTERM: a line on stderr, exit 130
    (the benchmark's own clean-up has run by then)."""
    try:
        with sigterm_as_interrupt(), stdout_to_stderr():
            produced = produce()
    except KeyboardInterrupt:
        print(f"maxwell bench {name}: interrupted", file=sys.stderr)
        return 130
    if as_json:
        print(json.dumps(produced))
    elif table is not None:
        from rich.console import Console

        Console().print(table(produced))
    else:
        print(json.dumps(produced, indent=2))
    return 0
