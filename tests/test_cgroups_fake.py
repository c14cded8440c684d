"""Pure-v2 and v1 file logic against fake trees (this host has no v2 controllers).

`FakeKernelFs` plays the parts of the kernel the manager relies on: a new group grows its core
and controller files, `cgroup.subtree_control` obeys the no-internal-process rule, writing a pid
to `cgroup.procs` moves it, `cgroup.freeze` updates `cgroup.events`, `cgroup.kill` empties the
subtree, rmdir refuses populated groups.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from maxwell.cgroups import CgroupManager, V1Group, V2Group
from maxwell.cgroups._fs import CgroupFs, translate
from maxwell.cgroups._group import CgroupGroup
from maxwell.cgroups.v1 import weight_to_shares
from maxwell.clock import FakeClock
from maxwell.errors import CgroupError, CgroupUnavailableError, UsageError

CONTROLLER_FILES = {
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n"},
    "memory": {"memory.max": "max\n", "memory.current": "0\n", "memory.peak": "0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
}


def words(path: Path) -> list[str]:
    return path.read_text().split()


class FakeKernelFs(CgroupFs):
    def __init__(self, mount: Path, *, freezes: bool = True) -> None:
        self.mount = mount
        self.freezes = freezes
        self.writes: list[tuple[str, str]] = []

    def _fail(self, code: int, action: str, path: str) -> CgroupError:
        return translate(OSError(code, os.strerror(code)), action, path)

    def populate(self, directory: Path, controllers: list[str]) -> None:
        files = {
            "cgroup.procs": "",
            "cgroup.controllers": " ".join(controllers) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.type": "domain\n",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.freeze": "0\n",
            "cgroup.kill": "",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        }
        for controller in controllers:
            files.update(CONTROLLER_FILES.get(controller, {}))
        for name, text in files.items():
            (directory / name).write_text(text)

    def mkdir(self, path: str) -> bool:
        made = super().mkdir(path)
        if made:
            parent = Path(path).parent
            self.populate(Path(path), words(parent / "cgroup.subtree_control"))
        return made

    def rmdir(self, path: str) -> bool:
        directory = Path(path)
        if not directory.exists():
            return False
        if words(directory / "cgroup.procs") or any(p.is_dir() for p in directory.iterdir()):
            raise self._fail(errno.EBUSY, "remove cgroup", path)
        shutil.rmtree(directory)
        return True

    def write_text(self, path: str, text: str) -> None:
        self.writes.append((path, text))
        target = Path(path)
        directory = target.parent
        is_root = not (directory / "cgroup.type").exists()
        if target.name == "cgroup.subtree_control":
            enabled = words(target)
            available = words(directory / "cgroup.controllers")
            for token in text.split():
                controller = token[1:]
                if token.startswith("+"):
                    if controller not in available:
                        raise self._fail(errno.ENOENT, f"write {text!r} to", path)
                    if words(directory / "cgroup.procs") and not is_root:
                        raise self._fail(errno.EBUSY, f"write {text!r} to", path)
                    if controller not in enabled:
                        enabled.append(controller)
                else:
                    children = [p for p in directory.iterdir() if p.is_dir()]
                    if any(controller in words(c / "cgroup.subtree_control") for c in children):
                        raise self._fail(errno.EBUSY, f"write {text!r} to", path)
                    if controller in enabled:
                        enabled.remove(controller)
            target.write_text(" ".join(enabled) + "\n")
            return
        if target.name == "cgroup.procs":
            if words(directory / "cgroup.subtree_control") and not is_root:
                raise self._fail(errno.EBUSY, f"write {text!r} to", path)
            pid = text.strip()
            for procs in self.mount.rglob("cgroup.procs"):
                procs.write_text("".join(f"{p}\n" for p in words(procs) if p != pid))
            target.write_text(target.read_text() + pid + "\n")
            return
        if not target.exists():
            raise self._fail(errno.ENOENT, "open", path)
        if target.name == "cgroup.kill" and text.strip() == "1":
            for procs in directory.rglob("cgroup.procs"):
                procs.write_text("")
            for events in directory.rglob("cgroup.events"):
                frozen = words(events)[3]
                events.write_text(f"populated 0\nfrozen {frozen}\n")
            return
        target.write_text(text)
        if target.name == "cgroup.freeze" and self.freezes:
            events = directory / "cgroup.events"
            populated = words(events)[1]
            events.write_text(f"populated {populated}\nfrozen {text.strip()}\n")


class FakeV2Host:
    """A pure-v2 systemd-like host: `<mount>/user.slice/session-2.scope` is Maxwell's cgroup."""

    def __init__(self, tmp_path: Path, *, own_procs: list[int], controllers: str) -> None:
        self.mount = tmp_path / "cgroup2"
        self.fs = FakeKernelFs(self.mount)
        self.mount.mkdir()
        self.fs.populate(self.mount, ["cpu", "memory", "pids", "io"])
        (self.mount / "cgroup.type").unlink()  # the root has none
        (self.mount / "cgroup.subtree_control").write_text("cpu memory pids io\n")
        slice_dir = self.mount / "user.slice"
        slice_dir.mkdir()
        self.fs.populate(slice_dir, ["cpu", "memory", "pids", "io"])
        (slice_dir / "cgroup.subtree_control").write_text(controllers + "\n")
        self.own = slice_dir / "session-2.scope"
        self.own.mkdir()
        self.fs.populate(self.own, controllers.split())
        (self.own / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in own_procs))
        self.procfs = tmp_path / "proc"
        (self.procfs / "self").mkdir(parents=True)
        (self.procfs / "self" / "mountinfo").write_text(
            f"30 24 0:26 / {self.mount} rw,nosuid,relatime shared:4 - cgroup2 cgroup2 "
            "rw,nsdelegate,memory_recursiveprot\n"
        )
        (self.procfs / "self" / "cgroup").write_text("0::/user.slice/session-2.scope\n")

    def detect(self) -> CgroupManager:
        return CgroupManager.detect(procfs_root=str(self.procfs), fs=self.fs, clock=FakeClock())

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.own.iterdir() if p.is_dir())


def test_v2_alone_moves_itself_into_a_leaf_and_close_undoes_it(tmp_path: Path) -> None:
    me = os.getpid()
    host = FakeV2Host(tmp_path, own_procs=[me], controllers="cpu memory pids")
    with host.detect() as manager:
        assert (manager.kind, manager.layout) == ("v2", "v2")
        leaf = host.own / f"maxwell-{me}-daemon"
        private = host.own / f"maxwell-{me}"
        assert words(leaf / "cgroup.procs") == [str(me)]
        assert words(host.own / "cgroup.procs") == []
        assert words(host.own / "cgroup.subtree_control") == ["cpu", "memory", "pids"]
        assert words(private / "cgroup.subtree_control") == ["cpu", "memory", "pids"]
        group = manager.create("job-1")
        assert isinstance(group, V2Group) and group.kind == "v2"
        assert group.path == str(private / "job-1")
        group.set_cpu_quota(1.5)
        assert (private / "job-1" / "cpu.max").read_text() == "150000 100000"
        group.set_cpu_quota(0.25, period_us=20_000)
        assert (private / "job-1" / "cpu.max").read_text() == "5000 20000"
        group.set_cpu_quota(0.001)  # below the kernel's 1 ms minimum: clamped
        assert (private / "job-1" / "cpu.max").read_text() == "1000 100000"
        group.set_cpu_quota(None)
        assert (private / "job-1" / "cpu.max").read_text() == "max 100000"
        group.set_cpu_weight(250)
        assert (private / "job-1" / "cpu.weight").read_text() == "250"
        group.set_memory_max(64 << 20)
        assert (private / "job-1" / "memory.max").read_text() == str(64 << 20)
        group.set_memory_max(None)
        assert (private / "job-1" / "memory.max").read_text() == "max"
        group.set_pids_max(32)
        assert (private / "job-1" / "pids.max").read_text() == "32"
        group.freeze()
        assert words(private / "job-1" / "cgroup.events")[-1] == "1"
        group.thaw()
        assert words(private / "job-1" / "cgroup.events")[-1] == "0"
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(me)]
    assert words(host.own / "cgroup.subtree_control") == []


def test_v2_others_in_own_cgroup_is_a_clear_error(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid(), 4242], controllers="cpu memory pids")
    with pytest.raises(CgroupUnavailableError, match=r"holds other processes \(4242\).*Delegate"):
        host.detect()
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(os.getpid()), "4242"]
    assert words(host.own / "cgroup.subtree_control") == []


def test_v2_missing_controller(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="memory pids")
    with pytest.raises(CgroupUnavailableError, match=r"controller cpu not available"):
        host.detect()
    assert host.leftovers() == []


def test_v2_pids_is_optional(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="cpu memory")
    with host.detect() as manager:
        assert manager.missing_controllers == ("pids",)
        assert manager.degraded == (
            "cgroup v2 without the pids controller: no limit on the number of tasks"
        )
        group = manager.create("w")
        # Not delegated: a limit is refused by cause (the daemon tolerates exactly this error);
        # no limit is what no controller means.
        with pytest.raises(CgroupUnavailableError, match="pids controller is not enabled"):
            group.set_pids_max(10)
        group.set_pids_max(None)
        assert not (Path(group.path) / "pids.max").exists()
    assert host.leftovers() == []


def test_v2_root_cgroup_needs_no_move(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[], controllers="cpu memory pids")
    (host.mount / "cgroup.subtree_control").write_text("\n")
    (host.mount / "cgroup.procs").write_text(f"1\n{os.getpid()}\n")
    (host.procfs / "self" / "cgroup").write_text("0::/\n")
    with host.detect() as manager:
        assert (host.mount / f"maxwell-{os.getpid()}").is_dir()
        assert not (host.mount / f"maxwell-{os.getpid()}-daemon").exists()
        assert words(host.mount / "cgroup.subtree_control") == ["cpu", "memory", "pids"]
        manager.create("w")
    assert not (host.mount / f"maxwell-{os.getpid()}").exists()


def test_v2_two_managers_in_one_process_share_the_move(tmp_path: Path) -> None:
    me = os.getpid()
    host = FakeV2Host(tmp_path, own_procs=[me], controllers="cpu memory pids")
    first = host.detect()
    # The second sees itself in the leaf, as /proc/self/cgroup would now say.
    (host.procfs / "self" / "cgroup").write_text(
        f"0::/user.slice/session-2.scope/maxwell-{me}-daemon\n"
    )
    second = host.detect()
    assert sorted(first.private_dirs + second.private_dirs) == sorted(
        [str(host.own / f"maxwell-{me}"), str(host.own / f"maxwell-{me}-1")]
    )
    first.close()
    assert (host.own / f"maxwell-{me}-daemon").is_dir()  # still used by the second
    second.close()
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(me)]
    assert words(host.own / "cgroup.subtree_control") == []


def test_v2_duplicate_and_bad_names(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="cpu memory pids")
    with host.detect() as manager:
        manager.create("a")
        with pytest.raises(CgroupError, match="already exists"):
            manager.create("a")
        for bad in ("", "..", "a/b", ".hidden", "x" * 200):
            with pytest.raises(UsageError):
                manager.create(bad)
    assert host.leftovers() == []


def test_v2_argument_validation(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="cpu memory pids")
    with host.detect() as manager:
        group = manager.create("a")
        with pytest.raises(UsageError):
            group.set_cpu_quota(0)
        with pytest.raises(UsageError):
            group.set_cpu_quota(float("nan"))
        with pytest.raises(UsageError):
            group.set_cpu_quota(1, period_us=500)
        with pytest.raises(UsageError):
            group.set_cpu_weight(0)
        with pytest.raises(UsageError):
            group.set_memory_max(-1)


class SignalInterrupt(BaseException):
    """Stands for the KeyboardInterrupt a raising signal handler throws at any bytecode (a real
    KeyboardInterrupt escaping a test would stop the whole pytest session)."""


class FailingKernelFs(FakeKernelFs):
    """Raises a chosen exception once, at the first call of a method on a given path."""

    def __init__(self, mount: Path) -> None:
        super().__init__(mount)
        self.plan: list[tuple[str, str, BaseException]] = []

    def fail(self, method: str, path: Path, exc: BaseException) -> None:
        self.plan.append((method, str(path), exc))

    def _check(self, method: str, path: str) -> None:
        for step in self.plan:
            if step[:2] == (method, path):
                self.plan.remove(step)
                raise step[2]

    def exists(self, path: str) -> bool:
        self._check("exists", path)
        return super().exists(path)

    def rmdir(self, path: str) -> bool:
        self._check("rmdir", path)
        return super().rmdir(path)


def failing_v2_host(tmp_path: Path) -> tuple[FakeV2Host, FailingKernelFs, Path]:
    """A pure-v2 host whose kernel fails on demand, and the private directory to be made."""
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="cpu memory pids")
    fs = FailingKernelFs(host.mount)
    host.fs = fs
    return host, fs, host.own / f"maxwell-{os.getpid()}"


@pytest.mark.parametrize("rollback", ["completes", "interrupted"])
def test_create_interrupted_after_its_mkdir_loop(tmp_path: Path, rollback: str) -> None:
    host, fs, private = failing_v2_host(tmp_path)
    manager = host.detect()
    # The group object asks whether cgroup.freeze exists right after the mkdir loop.
    fs.fail("exists", private / "job" / "cgroup.freeze", SignalInterrupt())
    if rollback == "interrupted":  # a second signal stops create()'s own rollback at once
        fs.fail("rmdir", private / "job", SignalInterrupt())
    with pytest.raises(SignalInterrupt):
        manager.create("job")
    assert fs.plan == []
    assert (private / "job").is_dir() == (rollback == "interrupted")
    manager.close()  # knows what create() made: removes it, so no EBUSY on the private dir
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(os.getpid())]  # moved back
    assert words(host.own / "cgroup.subtree_control") == []


def test_close_attempts_every_step_then_raises_the_first_failure(tmp_path: Path) -> None:
    host, fs, private = failing_v2_host(tmp_path)
    manager = host.detect()
    manager.create("a")
    manager.create("b")
    fs.fail("rmdir", private / "b", CgroupError("b is stuck"))  # the first step: newest first
    with pytest.raises(CgroupError, match="b is stuck") as caught:
        manager.close()
    assert not (private / "a").exists()  # the steps after the failure still ran
    # Those that failed because b is still there are notes on the first failure.
    assert any("busy" in note for note in caught.value.__notes__)
    manager.close()  # closed: nothing more to do


def test_close_never_replaces_the_exception_in_flight(tmp_path: Path) -> None:
    host, fs, private = failing_v2_host(tmp_path)
    with pytest.raises(RuntimeError, match="boom") as caught, host.detect() as manager:
        manager.create("a")
        manager.create("b")
        fs.fail("rmdir", private / "b", SignalInterrupt("again"))  # even an interrupt
        raise RuntimeError("boom")
    assert not (private / "a").exists()
    notes = caught.value.__notes__
    assert any("SignalInterrupt('again')" in note for note in notes)
    assert any("busy" in note for note in notes)


def test_an_interrupt_during_close_is_raised_after_every_step(tmp_path: Path) -> None:
    host, fs, private = failing_v2_host(tmp_path)
    manager = host.detect()
    manager.create("a")
    fs.fail("rmdir", private / "a", SignalInterrupt("during close"))
    with pytest.raises(SignalInterrupt, match="during close") as caught:
        manager.close()
    # It is raised before the EBUSY it caused, which is a note, and the rest still ran.
    assert any("busy" in note for note in caught.value.__notes__)
    assert (str(host.own / "cgroup.procs"), str(os.getpid())) in fs.writes  # moving back


def test_v2_stats_and_memory_freed_lower_bound(tmp_path: Path) -> None:
    directory = tmp_path / "g"
    directory.mkdir()
    fs = FakeKernelFs(tmp_path)
    fs.populate(directory, ["cpu", "memory", "pids"])
    group = V2Group("g", str(directory), fs=fs, clock=FakeClock())
    (directory / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (directory / "pids.current").write_text("3\n")
    freed = []
    readings = [(100, 100), (50, 100), (80, 100), (20, 100), (300, 300), (290, 300), (10, 900)]
    for current, peak in readings:
        (directory / "memory.current").write_text(f"{current}\n")
        (directory / "memory.peak").write_text(f"{peak}\n")
        stats = group.stats()
        assert stats.memory_bytes == current
        assert stats.peak_memory_bytes == peak
        assert not stats.memory_freed_exact
        freed.append(stats.memory_freed_bytes)
    assert stats.cpu_ns == 1_500_000 and stats.pids == 3
    # The sum of drops (50, 60, 10, 280) until memory.peak - memory.current (890) is larger:
    # the peak shows 900 was reached between readings, so at least 890 was released.
    assert freed == [0, 50, 50, 110, 110, 120, 890]
    assert freed == sorted(freed)


def test_v2_stats_without_memory_peak_uses_sampled_max(tmp_path: Path) -> None:
    directory = tmp_path / "g"
    directory.mkdir()
    fs = FakeKernelFs(tmp_path)
    fs.populate(directory, ["cpu", "memory"])
    (directory / "memory.peak").unlink()  # kernels before 5.19
    group = V2Group("g", str(directory), fs=fs, clock=FakeClock())
    for current in (10, 40, 30):
        (directory / "memory.current").write_text(f"{current}\n")
        stats = group.stats()
    assert stats.peak_memory_bytes == 40
    assert stats.memory_freed_bytes == 10
    assert stats.pids == 0  # no pids.current: counted from cgroup.procs


# What the kernel writes with the cpu controller enabled: usage_usec always comes first.
REAL_CPU_STAT = (
    "usage_usec 98765432101234\nuser_usec 60000000000000\nsystem_usec 38765432101234\n"
    "core_sched.force_idle_usec 0\nnr_periods 1200\nnr_throttled 30\nthrottled_usec 450000\n"
    "nr_bursts 0\nburst_usec 0\n"
)


def fake_v2_group(tmp_path: Path) -> tuple[V2Group, Path]:
    directory = tmp_path / "g"
    directory.mkdir()
    fs = FakeKernelFs(tmp_path)
    fs.populate(directory, ["cpu", "memory", "pids"])
    return V2Group("g", str(directory), fs=fs, clock=FakeClock()), directory


def test_v2_cpu_ns_reads_usage_usec(tmp_path: Path) -> None:
    group, directory = fake_v2_group(tmp_path)
    (directory / "cpu.stat").write_text(REAL_CPU_STAT)
    assert group.cpu_ns() == 98765432101234 * 1000
    assert group.stats().cpu_ns == group.cpu_ns()
    # The kept descriptor re-reads from offset 0: a new value is seen, a shorter file too.
    (directory / "cpu.stat").write_text("usage_usec 7\nuser_usec 5\nsystem_usec 2\n")
    assert group.cpu_ns() == 7000
    # Not first (no kernel does this, but the key is matched exactly wherever it is), after a
    # key that ends in "usage_usec" and past the first read's 64 bytes.
    (directory / "cpu.stat").write_text(
        "user_usec 5\nsystem_usec 2\nnr_periods 1200\nburst_usage_usec 99\nusage_usec 12\n"
        "nr_bursts 0\n"
    )
    assert group.cpu_ns() == 12_000
    assert group.stats().cpu_ns == 12_000
    (directory / "cpu.stat").write_text("usage_usec 31")  # no newline at the end
    assert group.cpu_ns() == 31_000


def test_v2_cpu_ns_malformed_or_removed_is_a_clear_error(tmp_path: Path) -> None:
    group, directory = fake_v2_group(tmp_path)
    (directory / "cpu.stat").write_text("user_usec 5\nsystem_usec 2\n")
    with pytest.raises(CgroupError, match=r"CPU time of group 'g'.*cpu\.stat"):
        group.cpu_ns()
    (directory / "cpu.stat").write_text("usage_usec lots\n")
    with pytest.raises(CgroupError, match="unexpected content"):
        group.cpu_ns()
    (directory / "cpu.stat").write_text("usage_usec 3\n")
    assert group.cpu_ns() == 3000
    group.remove()
    with pytest.raises(CgroupError, match="'g' was removed"):
        group.cpu_ns()


def test_v2_cpu_ns_of_a_group_gone_before_the_first_read(tmp_path: Path) -> None:
    group, directory = fake_v2_group(tmp_path)
    shutil.rmtree(directory)
    with pytest.raises(CgroupError, match=r"cpu\.stat: no such file \(the group was removed\)"):
        group.cpu_ns()


def test_v1_cpu_ns_sources(tmp_path: Path) -> None:
    dirs = make_v1_tree(tmp_path)
    fs = FakeKernelFs(tmp_path)
    group = V1Group("w", dirs, fs=fs, clock=FakeClock())
    assert group.cpu_ns() == 123456789
    (Path(dirs["cpuacct"]) / "cpuacct.usage").write_text("223456789\n")
    assert group.cpu_ns() == group.stats().cpu_ns == 223456789
    # Hybrid without cpuacct: the unified hierarchy's cpu.stat.
    unified = tmp_path / "unified" / "w"
    unified.mkdir(parents=True)
    fs.populate(unified, [])
    (unified / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    no_cpuacct = {c: d for c, d in dirs.items() if c != "cpuacct"}
    hybrid = V1Group("w", no_cpuacct, unified_dir=str(unified), fs=fs, clock=FakeClock())
    assert hybrid.cpu_ns() == hybrid.stats().cpu_ns == 1_500_000
    # No CPU accounting at all: stats() says 0 as it always has, cpu_ns() says why.
    bare = V1Group("w", no_cpuacct, fs=fs, clock=FakeClock())
    assert bare.stats().cpu_ns == 0
    with pytest.raises(CgroupUnavailableError, match="no CPU accounting"):
        bare.cpu_ns()


def test_cgroup_group_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        CgroupGroup("x", "/nowhere", fs=None, clock=None)  # type: ignore[abstract]


def test_sweep_stale_removes_dead_managers_groups_only(tmp_path: Path) -> None:
    me, live, dead = os.getpid(), 111, 222
    host = FakeV2Host(tmp_path, own_procs=[me], controllers="cpu memory pids")
    (host.procfs / str(live)).mkdir()  # pid 111 is alive; 222 is not
    manager = host.detect()
    names = [
        f"maxwell-{live}",  # a live pid, maybe reused by another program: left alone
        f"maxwell-{live}-daemon",
        f"maxwell-{dead}",
        f"maxwell-{dead}-1",
        f"maxwell-{dead}-daemon",
        f"maxwell-{dead}-v2core",  # not the pattern
        f"maxwell-{dead}-daemon-2",
        f"maxwell-{dead}x",
        f"other-{dead}",
    ]
    for name in names:
        assert host.fs.mkdir(str(host.own / name))
    stale = host.own / f"maxwell-{dead}"
    assert host.fs.mkdir(str(stale / "job"))
    (stale / "job" / "cgroup.procs").write_text("4242\n")  # a workload still running
    for directory in (stale, stale / "job"):
        (directory / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    (host.own / f"maxwell-{live}" / "cgroup.procs").write_text(f"{live}\n")

    removed = manager.sweep_stale()

    assert sorted(removed) == sorted(
        str(host.own / name)
        for name in (f"maxwell-{dead}", f"maxwell-{dead}-1", f"maxwell-{dead}-daemon")
    )
    assert (str(stale / "cgroup.kill"), "1") in host.fs.writes
    assert host.leftovers() == sorted(
        [
            f"maxwell-{live}",
            f"maxwell-{live}-daemon",
            f"maxwell-{dead}-v2core",
            f"maxwell-{dead}-daemon-2",
            f"maxwell-{dead}x",
            f"maxwell-{me}",  # this manager's own, never swept
            f"maxwell-{me}-daemon",
            f"other-{dead}",
        ]
    )
    assert words(host.own / f"maxwell-{live}" / "cgroup.procs") == [str(live)]
    assert manager.sweep_stale() == []
    manager.close()
    assert f"maxwell-{me}" not in host.leftovers()


def test_v2_freeze_timeout(tmp_path: Path) -> None:
    directory = tmp_path / "g"
    directory.mkdir()
    fs = FakeKernelFs(tmp_path, freezes=False)
    fs.populate(directory, ["cpu"])
    group = V2Group("g", str(directory), fs=fs, clock=FakeClock())
    with pytest.raises(CgroupError, match=r"did not freeze within 0\.5 s"):
        group.freeze(timeout_s=0.5)


def make_v1_tree(tmp_path: Path) -> dict[str, str]:
    dirs = {}
    files = {
        "cpu": {
            "cpu.cfs_period_us": "100000\n",
            "cpu.cfs_quota_us": "-1\n",
            "cpu.shares": "1024\n",
        },
        "cpuacct": {"cpuacct.usage": "123456789\n"},
        "memory": {
            "memory.limit_in_bytes": "9223372036854771712\n",
            "memory.usage_in_bytes": "4096000\n",
            "memory.max_usage_in_bytes": "8192000\n",
            "memory.stat": "cache 0\nrss 4096000\npgpgin 3000\npgpgout 1000\n"
            "total_cache 0\ntotal_rss 4096000\ntotal_pgpgin 3000\ntotal_pgpgout 1000\n",
        },
        "freezer": {"freezer.state": "THAWED\n"},
    }
    for controller, contents in files.items():
        directory = tmp_path / controller / "w"
        directory.mkdir(parents=True)
        (directory / "cgroup.procs").write_text("")
        for name, text in contents.items():
            (directory / name).write_text(text)
        dirs[controller] = str(directory)
    return dirs


def test_v1_file_logic(tmp_path: Path) -> None:
    dirs = make_v1_tree(tmp_path)
    fs = FakeKernelFs(tmp_path)
    group = V1Group("w", dirs, fs=fs, clock=FakeClock())
    assert (group.kind, group.layout, group.freeze_method) == ("v1", "v1", "freezer.state")
    cpu = Path(dirs["cpu"])
    group.set_cpu_quota(0.5)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    group.set_cpu_quota(2, period_us=50_000)
    assert (cpu / "cpu.cfs_period_us").read_text() == "50000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "100000"
    # A period change lifts the quota first, so no intermediate ratio can be refused.
    quota_writes = [text for path, text in fs.writes if path.endswith("cfs_quota_us")]
    assert quota_writes == ["50000", "-1", "100000"]
    group.set_cpu_quota(None, period_us=50_000)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"
    group.set_cpu_weight(100)
    assert (cpu / "cpu.shares").read_text() == "1024"
    group.set_memory_max(None)
    assert (Path(dirs["memory"]) / "memory.limit_in_bytes").read_text() == "-1"
    group.set_pids_max(None)  # no pids controller: unlimited is a no-op
    with pytest.raises(CgroupUnavailableError, match="pids controller is not mounted"):
        group.set_pids_max(5)
    group.freeze()
    assert (Path(dirs["freezer"]) / "freezer.state").read_text() == "FROZEN"
    group.thaw()
    stats = group.stats()
    assert stats.cpu_ns == 123456789
    assert stats.memory_bytes == 4096000 and stats.peak_memory_bytes == 8192000
    assert stats.memory_freed_bytes == 1000 * os.sysconf("SC_PAGE_SIZE")
    assert stats.memory_freed_exact


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stats_keeps_only_the_cpu_counter_open(tmp_path: Path) -> None:
    """A group holds one descriptor (its CPU counter), however often `stats()` reads memory and
    pids: five per group kept a 5,000-agent node over a 20,000 open-files limit."""
    dirs = make_v1_tree(tmp_path)
    group = V1Group("w", dirs, fs=FakeKernelFs(tmp_path), clock=FakeClock())
    before = _open_descriptors()
    for _ in range(3):
        assert group.stats().memory_bytes == 4096000
    assert _open_descriptors() == before + 1
    memory_stat = Path(dirs["memory"]) / "memory.stat"
    memory_stat.write_text(memory_stat.read_text().replace("total_pgpgout 1000", "total_pgpgout 7"))
    assert group.stats().memory_freed_bytes == 7 * os.sysconf("SC_PAGE_SIZE")  # read anew
    group.remove()
    assert _open_descriptors() == before


def test_weight_to_shares() -> None:
    assert weight_to_shares(100) == 1024
    assert weight_to_shares(1) == 10
    assert weight_to_shares(10_000) == 102_400
    assert weight_to_shares(0) == 2  # clamped (weights are validated before)
