"""Real cgroups on this machine: needs root and a writable hierarchy (skips with the reason).

Every test leaves no `maxwell-<pid>*` directory behind in any hierarchy, checked by a finalizer
that runs even when the test fails.

CI may run these while other work loads every CPU, so no test expects a fixed share of CPU in a
fixed wall-clock window: a counter is waited for until it has grown by so much (with a generous
deadline), and a CPU quota, an upper bound, is checked against the wall time actually elapsed
and against an uncapped group running the same loop over the same window.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import wait_until
from maxwell.cgroups import CgroupManager, V1Group, V2Group, open_workload_group, read_layout
from maxwell.cgroups._fs import CgroupFs
from maxwell.cgroups._group import CgroupGroup
from maxwell.errors import CgroupError, CgroupUnavailableError

pytestmark = pytest.mark.root

BUSY = [sys.executable, "-c", "while True: pass"]
SLEEPERS = ["sh", "-c", "sleep 30 & sleep 30 & wait"]
FORK_LOOP = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    try:
        os.fork()
    except OSError:  # at pids.max: its own back-off, part of the workload
        time.sleep(0.001)
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
"""


def own_dirs() -> list[Path]:
    layout = read_layout()
    dirs = [Path(h.own_dir) for h in layout.v1]
    if layout.v2 is not None:
        dirs.append(Path(layout.v2.own_dir))
    return dirs


def leftovers() -> list[str]:
    mine = f"maxwell-{os.getpid()}"
    return [
        str(p) for d in own_dirs() if d.is_dir() for p in d.iterdir() if p.name.startswith(mine)
    ]


def detect_or_skip() -> CgroupManager:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups under /sys/fs/cgroup")
    try:
        return CgroupManager.detect()
    except CgroupUnavailableError as exc:
        pytest.skip(f"needs root and a writable cgroup hierarchy: {exc}")


@pytest.fixture
def manager() -> Iterator[CgroupManager]:
    created = detect_or_skip()
    try:
        yield created
    finally:
        created.close()
        assert leftovers() == []


@pytest.fixture
def popens() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children to reap at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def cpu_seconds_over(group: CgroupGroup, seconds: float) -> float:
    """CPU used in a fixed wall window: only for upper bounds (a frozen group uses none)."""
    before = group.stats().cpu_ns
    time.sleep(seconds)  # a real sleep: the window is what is measured
    return (group.stats().cpu_ns - before) / 1e9


def wait_for_cpu(read_ns: Callable[[], int], cpu_s: float, timeout_s: float = 60.0) -> None:
    """Wait until a CPU counter (ns) has grown by `cpu_s` seconds: a busy loop gets there however
    loaded the machine is, only later."""
    start = read_ns()
    wait_until(
        lambda: read_ns() - start >= cpu_s * 1e9,
        timeout_s=timeout_s,
        interval_s=0.01,
        what=f"{cpu_s:g} s more of CPU",
    )


def cpu_over_window(
    pace: CgroupGroup, pace_s: float, groups: list[CgroupGroup]
) -> tuple[float, list[float]]:
    """The wall seconds `pace` takes to burn `pace_s` seconds of CPU, and the CPU seconds each
    of `groups` used in that same window."""
    started = time.monotonic()
    before = [group.cpu_ns() for group in groups]
    wait_for_cpu(pace.cpu_ns, pace_s)
    after = [group.cpu_ns() for group in groups]
    wall = time.monotonic() - started
    return wall, [(end - start) / 1e9 for start, end in zip(before, after, strict=True)]


def test_layout_of_this_host(manager: CgroupManager) -> None:
    assert manager.kind in ("v1", "v2")
    assert manager.layout in ("v1", "v2", "hybrid")
    for private in manager.private_dirs:
        assert Path(private).name == f"maxwell-{os.getpid()}"
        assert Path(private).is_dir()


def test_spawn_joins_every_hierarchy(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("sleepers")
    popens.append(group.spawn(SLEEPERS))
    wait_until(lambda: len(group.pids()) == 3, what="sh and its two sleeps")
    members = group.pids()
    assert popens[0].pid in members
    for directory in group.membership_dirs():
        procs = {int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()}
        assert procs == set(members), directory
    for pid in members:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        in_group = [line for line in lines if line.endswith(f"maxwell-{os.getpid()}/sleepers")]
        assert len(in_group) == len(group.membership_dirs())
        assert os.getsid(pid) == popens[0].pid  # a session of its own
    assert group.stats().pids == 3
    group.remove()
    assert all(not Path(d).exists() for d in group.membership_dirs())
    group.remove()  # idempotent


QUOTA_CORES = 0.05  # small, so the quota binds even when a loaded machine gives the loop little


def test_cpu_quota_limits_a_busy_loop(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    capped = manager.create("limited")
    capped.set_cpu_quota(QUOTA_CORES)
    control = manager.create("unlimited")  # the same loop without a quota, same windows
    popens.append(capped.spawn(BUSY))
    popens.append(control.spawn(BUSY))
    wait_for_cpu(capped.cpu_ns, 0.01)  # both past the interpreter's start
    wait_for_cpu(control.cpu_ns, 0.05)
    wall, (capped_s, control_s) = cpu_over_window(control, 1.0, [capped, control])
    # A quota is an upper bound, whatever the load: quota x wall, plus the CFS bandwidth slices
    # (5 ms per CPU) a period may overrun by and the edges of the window.
    assert 0 < capped_s <= QUOTA_CORES * wall * 1.5 + 0.02, (capped_s, wall)
    # And it is what held the loop back: the same loop, uncapped, got at least twice as much.
    assert capped_s * 2 < control_s, (capped_s, control_s)
    capped.set_cpu_quota(None)
    wait_for_cpu(capped.cpu_ns, 0.02)  # past the period the quota was lifted in
    wall, (capped_s, control_s) = cpu_over_window(control, 0.5, [capped, control])
    # Lifted: two sibling groups of equal weight running the same loop share the CPU fairly.
    assert capped_s * 2 > control_s, (capped_s, control_s, wall)


def test_stats_cpu_grows_for_a_busy_child(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("busy")
    group.set_cpu_weight(200)
    popens.append(group.spawn(BUSY))
    wait_for_cpu(lambda: group.stats().cpu_ns, 0.25)
    stats = group.stats()
    assert stats.memory_bytes > 0 and stats.peak_memory_bytes >= stats.memory_bytes
    assert stats.pids == 1


def test_cpu_ns_grows_for_a_busy_child_and_matches_stats(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    busy = manager.create("busy-cpu")
    popens.append(busy.spawn(BUSY))
    wait_for_cpu(busy.cpu_ns, 0.25)
    idle = manager.create("idle-cpu")
    popens.append(idle.spawn(["sleep", "30"]))
    (sleeper,) = wait_until(idle.pids, what="the sleeper to join")
    wait_until(lambda: name_and_state(sleeper) == ("sleep", "S"), what="sleep(1) to go to sleep")
    for _ in range(3):
        first, from_stats, last = idle.cpu_ns(), idle.stats().cpu_ns, idle.cpu_ns()
        assert first <= from_stats <= last
        assert last - first < 1_000_000  # an idle group: well under 1 ms apart
    if isinstance(idle, V1Group) and idle.unified_dir is not None:
        # Hybrid without cpuacct: the unified cpu.stat counts the same task, in µs.
        unified = V1Group("idle-unified", {"cpu": idle.dirs["cpu"]}, unified_dir=idle.unified_dir)
        assert abs(unified.cpu_ns() - idle.cpu_ns()) < 5_000_000
    idle.remove()
    with pytest.raises(CgroupError, match="was removed"):
        idle.cpu_ns()


def test_cpu_ns_of_a_group_removed_underneath(manager: CgroupManager) -> None:
    group = manager.create("vanishing")
    assert group.cpu_ns() >= 0
    for directory in group.membership_dirs():
        os.rmdir(directory)  # empty: someone else removed it
    with pytest.raises(CgroupError, match="the group was removed"):
        group.cpu_ns()
    group.remove()  # nothing left to remove: still fine


def test_freeze_waits_until_frozen_and_thaw(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("frozen")
    assert group.supports_freeze
    popens.append(group.spawn(BUSY))
    wait_for_cpu(group.cpu_ns, 0.1)  # running: freezing it has something to stop
    group.freeze()
    if isinstance(group, V1Group) and group.unified_dir is not None:
        events = (Path(group.unified_dir) / "cgroup.events").read_text().split()
        assert events[events.index("frozen") + 1] == "1"
    assert cpu_seconds_over(group, 0.3) < 0.01
    group.thaw()
    wait_for_cpu(lambda: group.stats().cpu_ns, 0.1)


def test_v1_freezer_and_signal_kill_without_unified(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("v1only")
    if not isinstance(group, V1Group) or "freezer" not in group.dirs:
        pytest.skip("needs the v1 freezer controller")
    v1_only = V1Group("v1only", group.dirs, layout="v1")
    assert v1_only.freeze_method == "freezer.state"
    popens.append(v1_only.spawn(BUSY))
    wait_for_cpu(lambda: v1_only.stats().cpu_ns, 0.1)  # running: freezing it has something to stop
    v1_only.freeze()
    assert (Path(group.dirs["freezer"]) / "freezer.state").read_text().strip() == "FROZEN"
    assert cpu_seconds_over(v1_only, 0.3) < 0.01
    v1_only.thaw()
    wait_for_cpu(lambda: v1_only.stats().cpu_ns, 0.1)
    v1_only.set_pids_max(64)
    popens.append(v1_only.spawn([sys.executable, "-c", FORK_LOOP]))
    wait_until(lambda: len(v1_only.pids()) > 5, interval_s=0.01, what="the fork loop to fork")
    v1_only.kill()  # freeze, SIGKILL, thaw rounds
    assert v1_only.is_empty()


def test_kill_a_fork_loop_that_ignores_sigterm(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("forker")
    group.set_pids_max(64)
    popens.append(group.spawn([sys.executable, "-c", FORK_LOOP]))
    wait_until(lambda: len(group.pids()) > 5, interval_s=0.01, what="the fork loop to fork")
    group.signal(signal.SIGTERM)
    time.sleep(0.2)  # a real sleep: what is checked is that nothing dies of the SIGTERM meanwhile
    seen = group.pids()
    assert len(seen) > 5, "SIGTERM is ignored: they are all still there"
    group.kill()
    assert group.pids() == [] and group.is_empty()
    popens[0].wait(timeout=5)
    for pid in seen:
        wait_until(lambda: is_dead(pid), what=f"{pid} to die")  # noqa: B023 - called at once


def name_and_state(pid: int) -> tuple[str, str]:
    """The command name and state letter in /proc/PID/stat (`S`: asleep)."""
    name, _, rest = Path(f"/proc/{pid}/stat").read_text().partition(" (")[2].rpartition(")")
    return name, rest.split()[0]


def is_dead(pid: int) -> bool:
    """Gone, or a zombie: orphans wait for init (here not always quick) to reap them."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        assert not Path(f"/proc/{pid}").exists()
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def test_memory_freed_counter(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("allocator")
    code = (
        "import sys, time\n"
        "block = b'x' * (64 << 20)\n"
        "del block\n"
        "print('freed', flush=True)\n"
        "time.sleep(30)\n"  # stays a member to be measured; the popens fixture kills it
    )
    before = group.stats().memory_freed_bytes
    child = group.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE)
    popens.append(child)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"freed"
    stats = group.stats()
    assert stats.memory_freed_bytes - before >= 48 << 20
    assert stats.peak_memory_bytes >= 64 << 20
    if group.kind == "v1":
        assert stats.memory_freed_exact


def test_remove_kills_and_leaves_nothing(
    manager: CgroupManager, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = manager.create("doomed")
    popens.append(group.spawn(SLEEPERS))
    wait_until(lambda: len(group.pids()) == 3, what="sh and its two sleeps")
    group.remove()
    assert popens[0].wait(timeout=5) == -signal.SIGKILL
    assert all(not Path(d).exists() for d in group.membership_dirs())


def test_close_removes_groups_with_live_processes(popens: list[subprocess.Popen[bytes]]) -> None:
    manager = detect_or_skip()
    try:
        for name in ("a", "b"):
            popens.append(manager.create(name).spawn(SLEEPERS))
    finally:
        manager.close()
    assert leftovers() == []
    for process in popens:
        assert process.wait(timeout=5) == -signal.SIGKILL
    manager.close()  # idempotent


def test_context_manager_cleans_up_on_exception(popens: list[subprocess.Popen[bytes]]) -> None:
    detect_or_skip().close()
    with pytest.raises(RuntimeError, match="boom"), CgroupManager.detect() as manager:
        popens.append(manager.create("w").spawn(SLEEPERS))
        raise RuntimeError("boom")
    assert leftovers() == []
    assert popens[0].wait(timeout=5) == -signal.SIGKILL


def test_exec_errors_propagate_unchanged(manager: CgroupManager, tmp_path: Path) -> None:
    group = manager.create("exec")
    with pytest.raises(FileNotFoundError):
        group.spawn([str(tmp_path / "no-such-program")])
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        group.spawn([str(not_executable)])
    assert group.is_empty()


def test_parallel_managers_do_not_collide(popens: list[subprocess.Popen[bytes]]) -> None:
    first = detect_or_skip()
    try:
        with CgroupManager.detect() as second:
            assert set(first.private_dirs).isdisjoint(second.private_dirs)
            popens.append(second.create("same").spawn(SLEEPERS))
            popens.append(first.create("same").spawn(SLEEPERS))
    finally:
        first.close()
    assert leftovers() == []


def test_open_workload_group_uses_cgroups_as_root(popens: list[subprocess.Popen[bytes]]) -> None:
    detect_or_skip().close()
    group, manager, reason = open_workload_group("convenience")
    try:
        assert manager is not None and reason is None
        assert group.kind == manager.kind
        popens.append(group.spawn(["true"]))
        assert popens[0].wait(timeout=5) == 0
    finally:
        group.remove()
        if manager is not None:
            manager.close()
    assert leftovers() == []


@pytest.fixture
def unified_group() -> Iterator[V2Group]:
    """The pure-v2 backend over this host's unified hierarchy (core files only, no controllers)."""
    detect_or_skip().close()
    layout = read_layout()
    if layout.v2 is None or layout.v2.readonly:
        pytest.skip("needs a writable cgroup2 hierarchy")
    directory = Path(layout.v2.own_dir) / f"maxwell-{os.getpid()}-v2core"
    directory.mkdir()
    group = V2Group("v2core", str(directory), layout=layout.name)
    try:
        yield group
    finally:
        group.remove()
        assert leftovers() == []


def test_v2_core_files_for_real(
    unified_group: V2Group, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = unified_group
    assert group.supports_freeze and group.is_empty()
    popens.append(group.spawn(SLEEPERS))
    wait_until(lambda: len(group.pids()) == 3, what="sh and its two sleeps")
    assert not group.is_empty()
    group.freeze()
    events = (Path(group.directory) / "cgroup.events").read_text().split()
    assert events[events.index("frozen") + 1] == "1"
    group.thaw()
    group.kill()
    assert group.is_empty()
    assert popens[0].wait(timeout=5) == -signal.SIGKILL


def test_v2_core_kill_fork_loop_and_cpu_stat(
    unified_group: V2Group, popens: list[subprocess.Popen[bytes]]
) -> None:
    group = unified_group
    popens.append(group.spawn(BUSY))
    wait_for_cpu(lambda: group.stats().cpu_ns, 0.25)  # core cpu.stat usage_usec
    wait_for_cpu(group.cpu_ns, 0.15)
    popens.append(group.spawn([sys.executable, "-c", FORK_LOOP]))
    wait_until(lambda: len(group.pids()) > 5, interval_s=0.01, what="the fork loop to fork")
    group.freeze()
    group.kill()  # cgroup.kill works on frozen tasks
    assert group.is_empty()


class LateJoinerFs(CgroupFs):
    """Lets a process join the group just before the first rmdir: what an interrupted `spawn`
    (a signal handler raising inside Popen after the fork) leaves behind."""

    def __init__(self) -> None:
        self.join: Callable[[], None] | None = None

    def rmdir(self, path: str) -> bool:
        join, self.join = self.join, None
        if join is not None:
            join()
        return super().rmdir(path)


def test_remove_kills_a_late_joiner(popens: list[subprocess.Popen[bytes]]) -> None:
    detect_or_skip().close()
    fs = LateJoinerFs()
    with CgroupManager.detect(fs=fs) as manager:
        group = manager.create("late")
        assert group.is_empty()

        def join() -> None:
            popens.append(group.spawn(["sleep", "30"]))

        fs.join = join
        group.remove()
        assert popens and popens[0].wait(timeout=5) == -signal.SIGKILL
    assert leftovers() == []


class SignalInterrupt(BaseException):
    """Stands for the KeyboardInterrupt a raising signal handler throws at any bytecode (a real
    KeyboardInterrupt escaping a test would stop the whole pytest session)."""


class InterruptingFs(CgroupFs):
    """Raises `SignalInterrupt` at chosen calls: `interrupt(method, suffix, after=n)` fires once,
    at the call of `method` on a path ending in `suffix` that follows `n` such calls."""

    def __init__(self) -> None:
        self.plan: list[tuple[str, str, list[int]]] = []

    def interrupt(self, method: str, suffix: str, *, after: int = 0) -> None:
        self.plan.append((method, suffix, [after]))

    def _check(self, method: str, path: str) -> None:
        for step in self.plan:
            planned, suffix, countdown = step
            if planned == method and path.endswith(suffix):
                if countdown[0] == 0:
                    self.plan.remove(step)
                    raise SignalInterrupt(f"{method} {path}")
                countdown[0] -= 1

    def exists(self, path: str) -> bool:
        self._check("exists", path)
        return super().exists(path)

    def mkdir(self, path: str) -> bool:
        self._check("mkdir", path)
        return super().mkdir(path)

    def rmdir(self, path: str) -> bool:
        self._check("rmdir", path)
        return super().rmdir(path)


@pytest.mark.parametrize("rollback", ["completes", "interrupted"])
def test_create_interrupted_after_its_mkdirs_leaves_nothing(rollback: str) -> None:
    detect_or_skip().close()
    fs = InterruptingFs()
    manager = CgroupManager.detect(fs=fs)
    try:
        if manager.layout == "v1":
            pytest.skip("pure v1: no filesystem call between create()'s mkdirs and its return")
        # The group object asks whether cgroup.freeze exists right after the mkdir loop.
        fs.interrupt("exists", "/job/cgroup.freeze")
        if rollback == "interrupted":  # a second signal stops create()'s own rollback at once
            fs.interrupt("rmdir", "/job")
        with pytest.raises(SignalInterrupt):
            manager.create("job")
        made = [Path(private) / "job" for private in manager.private_dirs]
        assert any(d.is_dir() for d in made) == (rollback == "interrupted")
    finally:
        manager.close()  # knows what create() made: no EBUSY on the private directories
    assert leftovers() == []


def test_setup_interrupted_between_hierarchies_leaves_nothing() -> None:
    with detect_or_skip() as probe:
        if len(probe.private_dirs) < 2:
            pytest.skip("needs two hierarchies (v1 controllers, or v1 and unified)")
    fs = InterruptingFs()
    fs.interrupt("mkdir", f"/maxwell-{os.getpid()}", after=1)  # before the second hierarchy's
    with pytest.raises(SignalInterrupt):
        CgroupManager.detect(fs=fs)
    assert leftovers() == []


# A `maxwell run` killed with SIGKILL: its manager's directories stay, its workload runs on.
# With "freeze", the workload is left frozen by the v1 freezer (it dies of SIGKILL only once
# thawed; cgroup.kill on the unified hierarchy alone would wait for it in vain).
ORPHANING_MANAGER = """
import json, os, sys, time
from maxwell.cgroups import CgroupManager
manager = CgroupManager.detect()
group = manager.create("orphan")
child = group.spawn(["sleep", "300"])
if sys.argv[1] == "freeze":
    with open(os.path.join(group.dirs["freezer"], "freezer.state"), "w") as state:
        state.write("FROZEN")
print(json.dumps({"workload": child.pid, "stale": manager.private_dirs,
                  "groups": group.membership_dirs()}), flush=True)
time.sleep(300)  # a live manager, until the test kills it with SIGKILL
"""


@pytest.mark.parametrize("left_as", ["running", "freeze"])
def test_sweep_stale_after_a_manager_killed_with_sigkill(
    left_as: str, popens: list[subprocess.Popen[bytes]]
) -> None:
    with detect_or_skip() as probe:
        group = probe.create("probe")
        has_v1_freezer = isinstance(group, V1Group) and "freezer" in group.dirs
        hierarchies = len(probe.private_dirs)  # v1 controllers and unified; 1 on pure v2
    if left_as == "freeze" and not has_v1_freezer:
        pytest.skip("needs the v1 freezer controller")
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHANING_MANAGER, left_as], stdout=subprocess.PIPE
    )
    popens.append(owner)
    assert owner.stdout is not None
    left = json.loads(owner.stdout.readline())
    workload, stale, groups = left["workload"], left["stale"], left["groups"]
    try:
        assert len(stale) == len(groups) == hierarchies >= 1  # one per hierarchy
        owner.kill()
        assert owner.wait(timeout=5) == -signal.SIGKILL
        assert not is_dead(workload), "the workload outlives its manager"
        assert all(Path(d).is_dir() for d in stale + groups)
        with CgroupManager.detect() as sweeper:
            removed = sweeper.sweep_stale()
            assert set(stale) <= set(removed)
            assert all(Path(d).is_dir() for d in sweeper.private_dirs)  # its own: untouched
        assert [d for d in stale if Path(d).exists()] == []
        wait_until(lambda: is_dead(workload), what="the workload to die")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(workload, signal.SIGKILL)
        wait_until(lambda: is_dead(workload), what="the workload to die")
        for directory in groups + stale:  # only reached with anything left when the sweep failed
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(directory)
