"""Both ways users run the daemon (issue 10), with a real `maxwell daemon` process in real groups.

- **A service with a delegated subtree** (systemd's `Delegate=yes`): the daemon starts alone in a
  group of its own (`svc`, made for it as systemd makes a service's) and may write only below it.
- **A container with its own cgroup namespace**: the daemon starts in `svc` under
  `unshare --cgroup --mount`, the unified hierarchy mounted again inside, so it sees itself at
  `/`. That root is not the hierarchy's real root (it has a `cgroup.type` file), so the
  no-internal-process rule binds it as it binds any group.

Where `svc` offers cpu and memory (pure v2: the VM of `make test-v2`), the daemon moves itself
into the leaf `<svc>/maxwell-node-<pid>-daemon`, enables the controllers in `svc` for its agents and
undoes both when it stops. On a hybrid host the unified hierarchy offers no controller and the
daemon stays where it is. Everywhere: nothing is written outside `svc`, the agents live below
it, and nothing is left in it after a stop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import TIME_SCALE, maxwell, wait_until
from maxwell.cgroups import read_layout
from maxwell.cgroups.layout import Hierarchy
from maxwell.node.supervisor import PRIVATE_PREFIX, private_name
from test_node_daemon import alive

pytestmark = pytest.mark.root

SRC = Path(__file__).resolve().parent.parent / "src"
ENFORCING = ("cpu", "memory", "pids")
V1_USED = frozenset({"cpu", "cpuacct", "memory", "pids", "freezer"})  # Maxwell's v1 groups
# Joins the groups named in argv[1] (comma-separated cgroup.procs files), then becomes argv[2:].
JOIN_THEN_EXEC = (
    "import os, sys\n"
    "for procs in sys.argv[1].split(','):\n"
    "    with open(procs, 'w') as f:\n"
    "        f.write(str(os.getpid()))\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)
# In the new namespaces: the unified hierarchy mounted again, rooted at the namespace's root.
REMOUNT_THEN_EXEC = 'umount "$0" && mount -t cgroup2 cgroup2 "$0" && exec "$@"'


def _is_real_root(directory: Path) -> bool:
    return not (directory / "cgroup.type").exists()


@dataclass
class Service:
    """`svc`: the group made for the daemon in each hierarchy it joins, and its parents as they
    were before (directories below them, `cgroup.subtree_control`)."""

    v2: Hierarchy
    dirs: list[Path] = field(default_factory=list)
    enabled_in_parent: list[str] = field(default_factory=list)  # by the test, to make svc's

    @property
    def unified(self) -> Path:
        return self.dirs[0]

    def parents_now(self) -> dict[Path, tuple[set[str], str]]:
        return {
            d.parent: (
                {p.name for p in d.parent.iterdir() if p.is_dir()},
                (d.parent / "cgroup.subtree_control").read_text()
                if (d.parent / "cgroup.subtree_control").exists() else "",
            )
            for d in self.dirs
        }  # fmt: skip

    def offered(self) -> set[str]:
        return set((self.unified / "cgroup.controllers").read_text().split())

    def below(self) -> list[Path]:
        """Every directory below `svc`, in any hierarchy."""
        return [Path(d) / n for top in self.dirs for d, names, _ in os.walk(top) for n in names]


def _usable_or_skip() -> tuple[Hierarchy, list[Hierarchy]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a service's group and starts a daemon in it")
    layout = read_layout()
    if layout.v2 is None or layout.v2.readonly:
        pytest.skip(f"needs a writable cgroup2 hierarchy; this host's layout is {layout.name}")
    used = [h for h in layout.v1 if h.controllers & V1_USED and not h.readonly]
    return layout.v2, used


@contextlib.contextmanager
def service_group(*, v1_too: bool) -> Iterator[Service]:
    """`svc` below this process's own group, in the unified hierarchy (and in each writable v1
    hierarchy with `v1_too`), with cpu, memory and pids offered to it where the parent is the
    real root and has them (a delegating manager's job); all of it undone afterwards."""
    v2, v1 = _usable_or_skip()
    service = Service(v2)
    name = f"maxwell-test-svc-{os.getpid()}"
    parent = Path(v2.own_dir)
    available = set((parent / "cgroup.controllers").read_text().split())
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    try:
        if _is_real_root(parent):
            service.enabled_in_parent = [c for c in ENFORCING if c in available - enabled]
            if service.enabled_in_parent:
                (parent / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in service.enabled_in_parent)
                )
        for hierarchy in [v2, *(v1 if v1_too else [])]:
            directory = Path(hierarchy.own_dir) / name
            directory.mkdir()
            service.dirs.append(directory)
        yield service
    finally:
        _remove(service)


def _remove(service: Service) -> None:
    """Kill whatever is left in `svc`, remove it, give the parent its controllers back."""
    for top in reversed(service.dirs):
        walked = [Path(directory) for directory, _, _ in os.walk(top)]
        for directory in sorted(walked, key=lambda d: len(d.parts), reverse=True):
            wait_until(functools.partial(_emptied, directory), what=f"{directory} to empty")
            directory.rmdir()
    if service.enabled_in_parent:
        parent = Path(service.v2.own_dir)
        (parent / "cgroup.subtree_control").write_text(
            " ".join(f"-{c}" for c in service.enabled_in_parent)
        )


def _emptied(directory: Path) -> bool:
    """Whether no process is left in `directory`; if some are, they are sent SIGKILL."""
    pids = (directory / "cgroup.procs").read_text().split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    return not pids


def _cgroup_of(pid: int) -> str:
    """The process's path in the unified hierarchy, as this process (outside any namespace)
    sees it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"process {pid} is in no unified group")


def _path_of(service: Service, directory: Path) -> str:
    """`directory`'s path in the unified hierarchy, as /proc/PID/cgroup shows it here."""
    relative = directory.relative_to(service.v2.mountpoint)
    return str(Path(service.v2.mount_root) / relative)


def _start_daemon(state: Path, service: Service, *, container: bool) -> subprocess.Popen[str]:
    daemon = [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
              "--tick", "0.1"]  # fmt: skip
    if container:
        mountpoint = service.v2.mountpoint
        daemon = [
            "unshare", "--cgroup", "--mount", "--propagation", "private", "--",
            "sh", "-c", REMOUNT_THEN_EXEC, mountpoint, *daemon, "--cgroup", "v2",
        ]  # fmt: skip
    procs = ",".join(str(d / "cgroup.procs") for d in service.dirs)
    return subprocess.Popen(
        [sys.executable, "-c", JOIN_THEN_EXEC, procs, *daemon],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


def _ready(state: Path, daemon: subprocess.Popen[str]) -> None:
    def socket_open() -> bool:
        assert daemon.poll() is None, daemon.communicate()
        return (state / "maxwell.sock").exists()

    wait_until(socket_open, timeout_s=30, what="the daemon to open its socket")


def _run_an_agent_and_stop(state: Path, service: Service, daemon: subprocess.Popen[str]) -> None:
    """Spawn an agent, check where it and the daemon live, kill it, stop the daemon."""
    _ready(state, daemon)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    spawned = maxwell(
        "spawn", "--state", str(state), "--fund", "1000J", "--bid", "5", "--demand", "0.5",
        "--json", "--", "sleep", "600", env=env,
    )  # fmt: skip
    assert spawned.returncode == 0, spawned.stderr
    agent, pid = json.loads(spawned.stdout)["agent"], json.loads(spawned.stdout)["pid"]
    private = service.unified / private_name(state)
    assert _cgroup_of(pid) == _path_of(service, private / agent)
    offered = service.offered()
    if {"cpu", "memory"} <= offered:  # pure v2: the daemon moved into its leaf
        leaf = service.unified / f"{PRIVATE_PREFIX}-{daemon.pid}-daemon"
        assert _cgroup_of(daemon.pid) == _path_of(service, leaf)
        subtree = set((service.unified / "cgroup.subtree_control").read_text().split())
        assert {c for c in ENFORCING if c in offered} <= subtree
        wait_until(  # the agent's quota, written by a tick (0.5 core of the 100 ms period)
            lambda: (private / agent / "cpu.max").read_text().split()[0] != "max",
            what="the agent's cpu.max to be written",
        )
    else:  # nothing to enable: the daemon stays where it was put
        assert _cgroup_of(daemon.pid) == _path_of(service, service.unified)
    killed = maxwell("kill", "--state", str(state), agent, env=env)
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: not alive(pid), what="the agent to die")
    daemon.send_signal(signal.SIGTERM)
    _, stderr = daemon.communicate(timeout=60 * TIME_SCALE)
    assert daemon.returncode == 0, stderr


@pytest.mark.parametrize("way", ["service", "container"])
def test_the_daemon_writes_only_below_its_group_and_leaves_it_as_it_found_it(
    tmp_path: Path, way: str
) -> None:
    container = way == "container"
    with service_group(v1_too=not container) as service:
        before = service.parents_now()
        state = tmp_path / "state"
        daemon = _start_daemon(state, service, container=container)
        try:
            _run_an_agent_and_stop(state, service, daemon)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.communicate()
        assert service.below() == []  # no leaf, no private tree, in any hierarchy
        assert (service.unified / "cgroup.subtree_control").read_text().split() == []
        assert (service.unified / "cgroup.procs").read_text().split() == []
        assert service.parents_now() == before  # nothing written outside svc
