"""The real-cgroup suites inside a real pure cgroup v2 kernel (`tests/v2vm`): one VM run for the
module, and one host test per file of the selection, which passes only when every test of that
file passed in the VM (a skip is allowed only where it says the test needs cgroup v1).

Run with `make test-v2` (the main suite leaves the `v2vm` marker out). It needs root, qemu,
cpio and apt-get; without them it skips saying what to install, and with
`MAXWELL_REQUIRE_V2VM=1` (CI, as root) a skip fails instead.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import pytest

from v2vm.harness import Boot, Kernel, boot, missing_tools

pytestmark = pytest.mark.v2vm

REPO = Path(__file__).resolve().parents[1]
SELECTION = (  # file, and the marker expression that picks its tests (None: all of them)
    ("tests/test_cgroups_real.py", None),  # the cgroup layer
    ("tests/test_cgroups_proctree.py", None),
    ("tests/test_quota_enforced.py", None),  # a quota measured, not only written
    (
        "tests/test_run_cli.py",
        None,
    ),  # maxwell run --budget: apoptosis, forking, TERM-ignoring trees
    # The daemon on real cgroups: spawn, enforce, freeze, thaw, kill, apoptosis, recovery. Its
    # bookkeeping tests (no cgroups: `--cgroup none`, fakes) are the main suite's.
    ("tests/test_node_daemon.py", "root"),
    ("tests/test_node_daemon_v2.py", None),
    ("tests/test_daemon_e2e.py", None),
    ("tests/test_node_lock.py", None),
    ("tests/test_cgroup_delegation.py", None),  # as a delegated service, and in a cgroupns
    ("tests/adversarial", "root"),  # the attacks that touch cgroups (idle hoarders: cpu.weight)
)
# The whole selection takes about 23 min alone on this kind of machine (emulated CPU); the limit
# leaves room for a loaded one, inside CI's 90 min with the main suite's ~12.
TIMEOUT_S = 2700.0
TIME_SCALE = 10.0  # the tests' deadlines in the VM (`helpers.TIME_SCALE`): its CPU is emulated
V1_ONLY = ("v1",)  # the words of a skip that is right on a pure v2 kernel


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    outcome: str  # passed, failed, error, skipped
    message: str


@dataclass(frozen=True)
class Run:
    boot: Boot
    cases: tuple[Case, ...]
    log: str

    def of(self, path: str) -> list[Case]:
        """The cases of a file of the selection, or of every file under a folder of it."""
        folder = path.rstrip("/") + "/"
        return [case for case in self.cases if case.file == path or case.file.startswith(folder)]


def script(selection: tuple[tuple[str, str | None], ...]) -> str:
    """The VM's command: the selection under pytest as root (one run per marker expression),
    each run's results in the shared folder; it fails (with a failing run's status) when any
    run fails."""
    groups: dict[str | None, list[str]] = {}
    for path, marker in selection:
        groups.setdefault(marker, []).append(path)
    lines = [
        f"cd {REPO}",
        f"export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 MAXWELL_TEST_TIME_SCALE={TIME_SCALE:g}",
        "failed=0",
    ]
    for index, (marker, paths) in enumerate(groups.items()):
        chosen = f"-m {marker} " if marker else ""
        lines.append(
            f"{sys.executable} -m pytest -p no:cacheprovider -q -ra {chosen}{' '.join(paths)} "
            f"--junitxml=/tmp/v2vm-out/junit-{index}.xml >> /tmp/v2vm-out/pytest.log 2>&1 "
            "|| failed=$?"
        )
    lines.append("exit $failed")
    return "\n".join(lines) + "\n"


def parse_junit(path: Path) -> tuple[Case, ...]:
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")  # tests.sub.test_x[.Class]
        stem = next((i for i, part in enumerate(module) if part.startswith("test_")), None)
        file = "/".join(module[: stem + 1]) + ".py" if stem is not None else "?"
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = found.get("message", "") + "\n" + (found.text or "")
                break
        cases.append(Case(file, case.get("name", "?"), outcome, message.strip()))
    return tuple(cases)


def unavailable() -> str | None:
    """Why the VM cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (the VM reads this machine's root, /root's Python included)"
    missing = missing_tools()
    if missing:
        return f"install {' '.join(missing)} (Debian) to boot the pure v2 kernel"
    return None


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Run:
    why = unavailable()
    if why is not None:
        if os.environ.get("MAXWELL_REQUIRE_V2VM") == "1":
            pytest.fail(f"the v2 VM must run here (MAXWELL_REQUIRE_V2VM=1): {why}")
        pytest.skip(why)
    out = tmp_path_factory.mktemp("v2vm")
    result = boot(Kernel.ensure(), script(SELECTION), out, timeout_s=TIMEOUT_S, keep=REPO)
    log = out / "pytest.log"
    cases = tuple(case for junit in sorted(out.glob("junit-*.xml")) for case in parse_junit(junit))
    return Run(result, cases, log.read_text(errors="replace") if log.is_file() else "")


def test_the_vm_ran_the_selection_and_reported(vm: Run) -> None:
    assert not vm.boot.timed_out, f"the VM ran past {TIMEOUT_S:g} s:\n{vm.boot.console[-3000:]}"
    assert vm.boot.exit_status is not None, f"no exit status:\n{vm.boot.console[-3000:]}"
    assert "cgroup2 controllers: " in vm.boot.console
    controllers = vm.boot.console.split("cgroup2 controllers: ", 1)[1].split("\n", 1)[0].split()
    assert {"cpu", "memory", "pids"} <= set(controllers)
    assert vm.cases, f"pytest reported nothing:\n{vm.log[-3000:]}"


@pytest.mark.parametrize("path", [path for path, _ in SELECTION])
def test_passes_on_pure_v2(vm: Run, path: str) -> None:
    cases = vm.of(path)
    assert cases, f"{path}: no test of it ran in the VM:\n{vm.log[-3000:]}"
    bad = [case for case in cases if case.outcome in ("failed", "error")]
    wrong_skips = [
        case for case in cases
        if case.outcome == "skipped" and not any(word in case.message for word in V1_ONLY)
    ]  # fmt: skip
    report = "\n\n".join(f"{c.name} ({c.outcome}): {c.message[:2000]}" for c in bad + wrong_skips)
    assert not bad and not wrong_skips, f"{path} on pure v2:\n{report}"
    assert any(case.outcome == "passed" for case in cases)
