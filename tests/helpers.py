"""Shared test helpers: running the `maxwell` CLI as a subprocess, finding leftovers, waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from maxwell.runtime_copy import CLI_PACKAGES, SDK_PACKAGES, MissingPackageError, copy_runtime

T = TypeVar("T")

SRC = Path(__file__).resolve().parent.parent / "src"
# Deadlines and subprocess time limits are multiplied by this: the pure-v2 VM (`tests/v2vm`)
# emulates its CPU in software, some ten times slower than this machine, and sets it there.
TIME_SCALE = float(os.environ.get("MAXWELL_TEST_TIME_SCALE", "1"))
# The base URL of a test client of the API: a name the node answers to (`maxwell.node.hosts`);
# Starlette's default, "testserver", is a name a web page could rebind, and is refused.
LOCAL = "http://localhost"


def maxwell(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `python -m maxwell.cli.main ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "maxwell.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout * TIME_SCALE,
        check=False,
        **kwargs,
    )


def last_json(stdout: str) -> dict[str, Any]:
    """The last line of stdout, parsed as a JSON object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


def wait_until(
    condition: Callable[[], T], *, what: str, timeout_s: float = 20.0, interval_s: float = 0.05
) -> T:
    """Poll `condition` until it returns something true, and return that; fail naming `what`.

    Tests wait for an event (a process started, a tick passed, a file appeared) this way, never
    with a fixed sleep: a sleep long enough for a slow, loaded CI machine wastes time everywhere
    else, and one short enough to be cheap fails there. Deadlines are generous for that reason,
    and scaled by `MAXWELL_TEST_TIME_SCALE` where the CPU is emulated.
    """
    timeout_s *= TIME_SCALE
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
    return value


def cpu_ticks(pid: int, tid: int | None = None) -> int:
    """Clock ticks (of 10 ms) of CPU that process `pid`, or its thread `tid`, has used."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def pids_with_tag(tag: str) -> list[int]:
    """Live workload pids whose command line contains `tag` (zombies and Maxwell excluded).

    Maxwell's own command line carries the tag too, and so does its child until it execs.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag.encode() in cmdline and b"maxwell.cli.main" not in cmdline and state != "Z":
            found.append(int(entry))
    return found


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` in /proc (R, S, T, Z, ...); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def maxwell_cgroup_dirs() -> set[str]:
    """Directories named maxwell-PID in any cgroup hierarchy whose PID is dead: leftovers.

    Groups of Maxwell processes still running (another test, a benchmark) are not leftovers.
    """
    found: set[str] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if not right.startswith(("cgroup ", "cgroup2 ")):
            continue
        mount_point = left.split()[4]
        for dirpath, dirnames, _files in os.walk(mount_point):
            for name in dirnames:
                owner = name.removeprefix("maxwell-")
                if name.startswith("maxwell-") and owner.isdigit() and not _alive(int(owner)):
                    found.add(os.path.join(dirpath, name))
    return found


def fail_once(monkeypatch: pytest.MonkeyPatch, target: object, name: str, error: Exception) -> None:
    """Make `target.name` raise `error` on its next call, then behave as before (a fault
    injected deterministically: a full disk, a broken meter)."""
    real = getattr(target, name)
    failures = iter([error])

    def failing(*args: object, **kwargs: object) -> object:
        for failure in failures:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


# A root daemon runs each agent that names no user as a uid of its own (`--dynamic-uids`). This
# suite's interpreter (a virtualenv, often below a directory other users may not enter, as /root
# or CI's private checkout) is beyond such a uid's reach, so the tests whose agents are Python
# programs of the suite, or that write an agent's files as root, keep agents as the daemon's user
# with this setting. Dynamic uids themselves: tests/adversarial/test_dynamic_uids.py and
# tests/test_dynamic_users.py, and every test whose agents are `sleep` or `sh`.
AGENTS_AS_DAEMON = "none"


# What `maxwell` imports at run time, copied for other users (rich and its own dependencies),
# and what the SDK's client imports (pydantic and its own).
RUNTIME_PACKAGES = (*CLI_PACKAGES, *SDK_PACKAGES)
OPTIONAL_PACKAGES = ("cloudpickle",)  # a priced call's agent side (maxwell[cluster])


def copy_for_anyone(root: Path) -> str | None:
    """Maxwell (the one this suite imports: this checkout's) and its runtime dependencies copied
    into `root`, which any uid may read and pass: for `PYTHONPATH` (the checkout may sit where
    only root can enter). None, or the name of a runtime dependency that is not installed."""
    try:
        copy_runtime(root, RUNTIME_PACKAGES, OPTIONAL_PACKAGES)
    except MissingPackageError as exc:
        return exc.package
    return None


def public_python() -> str:
    """A Python 3.11+ that any uid may run (a dynamic one too), for agents of the standard
    library alone: this interpreter where it is reachable, else the system's; a skip if neither."""
    from maxwell.users import RunAs, obstacle

    stranger = RunAs.dynamic(70000)
    for candidate in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(candidate) and obstacle(stranger, candidate, execute=True) is None:
            return candidate
    pytest.skip("no Python that an agent's own uid may run")
