"""Shared test helpers: running the `maxwell` CLI as a real subprocess, finding leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"


def maxwell(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `python -m maxwell.cli.main ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "maxwell.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
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
