"""Fixtures shared across the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NOBODY = 65534
SRC = Path(__file__).resolve().parent.parent / "src"

# `maxwell run` started by root through sudo runs its command as the user who ran sudo: a suite
# started that way would run every workload as that user. The tests that mean it set these.
for _name in ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"):
    os.environ.pop(_name, None)


@dataclass(frozen=True)
class NobodyPython:
    """An interpreter user nobody may run, and an environment in which it can import maxwell."""

    python: str
    env: dict[str, str]


def _python_for_nobody() -> str | None:
    """A Python >= 3.11 that user nobody may execute (a venv's may point under /root)."""
    candidates = [sys.executable, shutil.which("python3"), "/usr/bin/python3"]
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            check = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                capture_output=True,
                text=True,
                check=False,
            )
        except PermissionError:
            continue
        if check.returncode == 0 and check.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="session")
def nobody_python() -> Iterator[NobodyPython]:
    """Maxwell and its runtime dependencies copied where user nobody can read them.

    The checkout itself may sit in a directory only root can enter (a private temp dir, /root),
    so the tests that drop to nobody run a world-readable copy.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: switches to user nobody")
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python 3.11+ that user nobody may execute")
    from helpers import copy_for_anyone  # here: pytester's runs copy this file alone

    root = Path(tempfile.mkdtemp(prefix="maxwell-nobody-", dir="/tmp"))
    try:
        missing = copy_for_anyone(root)
        if missing is not None:
            pytest.skip(f"runtime dependency {missing} is not installed")
        env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
        yield NobodyPython(python=python, env=env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's own, opened to search (mode 0711, never to listing) down from its root, when
    running as root: a root daemon's agents run as uids of their own (`--dynamic-uids`), and
    each must reach its directory in a state directory made here."""
    if os.geteuid() == 0:
        base = tmp_path_factory.getbasetemp()
        for directory in (
            base.parent,
            base,
            *reversed(tmp_path.parents[: _depth(tmp_path, base)]),
            tmp_path,
        ):
            directory.chmod(0o711)
    return tmp_path


def _depth(path: Path, base: Path) -> int:
    return len(path.relative_to(base).parts) - 1


# CI running as root must not go green with the real-cgroup tests silently off: `.ci/run` sets
# MAXWELL_REQUIRE_ROOT_TESTS=1 there, and then a `root` test that skipped (its own pytest.skip, a
# skipif, or a fixture's skip such as nobody_python's) fails the session, each listed with why.
REQUIRE_ROOT_TESTS = "MAXWELL_REQUIRE_ROOT_TESTS"
_ROOT_SKIPS = pytest.StashKey[list[tuple[str, str]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        os.environ.get(REQUIRE_ROOT_TESTS) == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")  # an xfail is reported as a skip; it is not one
        and item.get_closest_marker("root") is not None
    ):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        item.config.stash.setdefault(_ROOT_SKIPS, []).append((item.nodeid, reason))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.config.stash.get(_ROOT_SKIPS, [])
    if skipped:
        title = f"{len(skipped)} root tests skipped with {REQUIRE_ROOT_TESTS}=1: the run fails"
        terminalreporter.write_sep("=", title, red=True)
        for nodeid, reason in skipped:
            terminalreporter.write_line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.stash.get(_ROOT_SKIPS, []) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
