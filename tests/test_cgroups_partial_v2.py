"""Degraded cgroup v2 against fake trees: a parent that delegated only some controllers, or none.

`CgroupManager.detect(kind=..., require_controllers=False)` enables what was delegated, names what
was not (`missing_controllers`, `degraded`), and moves Maxwell out of its cgroup only when a
controller must be enabled there. The fake kernel is `test_cgroups_fake.FakeKernelFs`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maxwell.cgroups import CgroupManager, V2Group
from maxwell.clock import FakeClock
from maxwell.errors import CgroupError, CgroupUnavailableError, UsageError
from test_cgroups_fake import FakeKernelFs, FakeV2Host, words


def detect_degraded(host: FakeV2Host, kind: str = "auto") -> CgroupManager:
    return CgroupManager.detect(
        procfs_root=str(host.procfs),
        fs=host.fs,
        clock=FakeClock(),
        kind=kind,
        require_controllers=False,
    )


def test_memory_and_pids_delegated_cpu_missing(tmp_path: Path) -> None:
    """A systemd user service: memory and pids delegated, cpu not."""
    me = os.getpid()
    host = FakeV2Host(tmp_path, own_procs=[me], controllers="memory pids")
    with detect_degraded(host) as manager:
        assert (manager.kind, manager.layout) == ("v2", "v2")
        assert manager.missing_controllers == ("cpu",)
        assert manager.degraded == (
            "cgroup v2 without the cpu controller: CPU quotas and weights are not enforced "
            "(CPU time is still metered from cpu.stat)"
        )
        # Controllers are enabled in <own>, so Maxwell moved into its leaf first.
        assert words(host.own / f"maxwell-{me}-daemon" / "cgroup.procs") == [str(me)]
        assert words(host.own / "cgroup.subtree_control") == ["memory", "pids"]
        private = host.own / f"maxwell-{me}"
        assert words(private / "cgroup.subtree_control") == ["memory", "pids"]
        group = manager.create("w")
        assert isinstance(group, V2Group)
        assert group.controllers == frozenset({"memory", "pids"})
        with pytest.raises(CgroupUnavailableError, match="cpu controller is not enabled"):
            group.set_cpu_quota(0.5)
        with pytest.raises(CgroupUnavailableError, match="cpu controller is not enabled"):
            group.set_cpu_weight(200)
        group.set_cpu_quota(None)  # no quota: granted, nothing written
        assert not (Path(group.path) / "cpu.max").exists()
        group.set_memory_max(64 << 20)
        assert (Path(group.path) / "memory.max").read_text() == str(64 << 20)
        group.set_pids_max(16)
        assert (Path(group.path) / "pids.max").read_text() == "16"
        (Path(group.path) / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
        (Path(group.path) / "memory.current").write_text("4096\n")
        (Path(group.path) / "pids.current").write_text("2\n")
        stats = group.stats()
        assert (stats.cpu_ns, stats.memory_bytes, stats.pids) == (2_500_000, 4096, 2)
        assert stats.memory_metered
        assert group.cpu_ns() == 2_500_000
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(me)]
    assert words(host.own / "cgroup.subtree_control") == []


def test_nothing_delegated_needs_no_move_even_among_other_processes(tmp_path: Path) -> None:
    """No controller to enable: the no-internal-process rule does not bind, so Maxwell stays in
    its cgroup beside other processes, as on a hybrid host's unified hierarchy."""
    me = os.getpid()
    host = FakeV2Host(tmp_path, own_procs=[me, 4242], controllers="")
    with detect_degraded(host, kind="v2") as manager:
        assert manager.kind == "v2"
        assert manager.missing_controllers == ("cpu", "memory", "pids")
        assert manager.degraded is not None
        assert manager.degraded.startswith("cgroup v2 without the cpu controller: ")
        assert "; without memory: no memory limit" in manager.degraded
        assert "; without pids: no limit on the number of tasks" in manager.degraded
        assert not (host.own / f"maxwell-{me}-daemon").exists()
        assert words(host.own / "cgroup.procs") == [str(me), "4242"]
        private = host.own / f"maxwell-{me}"
        assert manager.private_dirs == [str(private)]
        group = manager.create("w")
        assert isinstance(group, V2Group) and group.controllers == frozenset()
        with pytest.raises(CgroupUnavailableError, match="memory controller is not enabled"):
            group.set_memory_max(1 << 20)
        with pytest.raises(CgroupUnavailableError, match="pids controller is not enabled"):
            group.set_pids_max(8)
        group.set_memory_max(None)
        group.set_pids_max(None)
        (Path(group.path) / "cpu.stat").write_text("usage_usec 7000\nuser_usec 7000\n")
        (Path(group.path) / "cgroup.procs").write_text("101\n102\n")
        stats = group.stats()
        assert (stats.cpu_ns, stats.pids) == (7_000_000, 2)
        assert (stats.memory_bytes, stats.peak_memory_bytes, stats.memory_freed_bytes) == (0, 0, 0)
        assert not stats.memory_metered and not stats.memory_freed_exact
        group.freeze()
        assert words(Path(group.path) / "cgroup.events") == ["populated", "0", "frozen", "1"]
        group.thaw()
        group.kill()
        assert group.is_empty()
    # Nothing was written to <own> itself, and nothing is left beneath it.
    own_files = {str(host.own / "cgroup.procs"), str(host.own / "cgroup.subtree_control")}
    assert not [path for path, _ in host.fs.writes if path in own_files]
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(me), "4242"]


def test_the_default_still_refuses_a_partial_delegation(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="memory pids")
    with pytest.raises(CgroupUnavailableError, match=r"controller cpu not available.*Delegate"):
        host.detect()
    with pytest.raises(CgroupUnavailableError, match=r"controller cpu not available"):
        CgroupManager.detect(procfs_root=str(host.procfs), fs=host.fs, kind="v2")
    assert host.leftovers() == []
    assert words(host.own / "cgroup.procs") == [str(os.getpid())]


def test_a_full_delegation_is_not_degraded(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="cpu memory pids")
    with detect_degraded(host, kind="v2") as manager:
        assert manager.missing_controllers == ()
        assert manager.degraded is None
        assert manager.create("w").stats().memory_metered
    assert host.leftovers() == []


def test_a_kind_that_cannot_be_honoured_is_refused(tmp_path: Path) -> None:
    host = FakeV2Host(tmp_path, own_procs=[os.getpid()], controllers="cpu memory pids")
    with pytest.raises(CgroupUnavailableError, match="v1 cpu and memory controllers are not"):
        detect_degraded(host, kind="v1")
    with pytest.raises(UsageError, match="use one of auto, v1, v2"):
        detect_degraded(host, kind="v3")
    assert host.leftovers() == []


class FakeHybridHost:
    """v1 cpu,cpuacct and memory hierarchies plus a cgroup2 hierarchy whose root offers only
    hugetlb, Maxwell at its root `/` (this project's CI host)."""

    def __init__(self, tmp_path: Path) -> None:
        self.unified = tmp_path / "unified"
        self.unified.mkdir()
        self.fs = FakeKernelFs(self.unified)
        self.fs.populate(self.unified, ["hugetlb"])
        (self.unified / "cgroup.type").unlink()  # the root has none
        (self.unified / "cgroup.procs").write_text(f"1\n{os.getpid()}\n")
        self.v1 = [tmp_path / "cpu,cpuacct", tmp_path / "memory"]
        for directory in self.v1:
            directory.mkdir()
        self.procfs = tmp_path / "proc"
        (self.procfs / "self").mkdir(parents=True)
        (self.procfs / "self" / "mountinfo").write_text(
            f"31 25 0:27 / {self.v1[0]} rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
            f"32 25 0:28 / {self.v1[1]} rw,nosuid - cgroup cgroup rw,memory\n"
            f"33 25 0:29 / {self.unified} rw,nosuid - cgroup2 cgroup2 rw\n"
        )
        (self.procfs / "self" / "cgroup").write_text("3:memory:/\n2:cpu,cpuacct:/\n0::/\n")


def test_v2_on_a_hybrid_host_uses_the_unified_hierarchy_alone(tmp_path: Path) -> None:
    host = FakeHybridHost(tmp_path)
    me = os.getpid()
    manager = CgroupManager.detect(
        procfs_root=str(host.procfs),
        fs=host.fs,
        clock=FakeClock(),
        kind="v2",
        require_controllers=False,
    )
    with manager:
        assert (manager.kind, manager.layout) == ("v2", "hybrid")
        assert manager.missing_controllers == ("cpu", "memory", "pids")
        # Beneath Maxwell's own v2 cgroup (the root here), as the hybrid path does; no move.
        assert manager.private_dirs == [str(host.unified / f"maxwell-{me}")]
        assert words(host.unified / "cgroup.subtree_control") == []
        assert words(host.unified / "cgroup.procs") == ["1", str(me)]
        group = manager.create("w")
        assert isinstance(group, V2Group) and group.path == str(
            host.unified / f"maxwell-{me}" / "w"
        )
        assert group.layout == "hybrid"
        for directory in host.v1:
            assert list(directory.iterdir()) == []  # the v1 hierarchies are left alone
    assert not (host.unified / f"maxwell-{me}").exists()


def test_a_group_whose_controllers_file_is_gone_reports_the_kernels_error(tmp_path: Path) -> None:
    directory = tmp_path / "g"
    directory.mkdir()
    fs = FakeKernelFs(tmp_path)
    fs.populate(directory, [])
    (directory / "cgroup.controllers").unlink()
    group = V2Group("g", str(directory), fs=fs, clock=FakeClock())
    assert group.controllers is None and group.has_controller("cpu")
    with pytest.raises(CgroupError, match="no such file") as caught:
        group.set_cpu_quota(1.0)
    assert not isinstance(caught.value, CgroupUnavailableError)
