"""Layout detection from recorded mountinfo and /proc/self/cgroup files (no root needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from maxwell.cgroups import CgroupManager
from maxwell.cgroups.layout import (
    build_layout,
    own_dir,
    parse_mountinfo,
    parse_proc_cgroup,
    read_layout,
    read_sched_ext_state,
)
from maxwell.errors import CgroupUnavailableError

FIXTURES = Path(__file__).parent / "fixtures" / "cgroups"


def procfs_from(tmp_path: Path, case: str) -> Path:
    """A fake procfs whose self/ holds the recorded mountinfo and cgroup of `case`."""
    root = tmp_path / "proc"
    (root / "self").mkdir(parents=True)
    for name in ("mountinfo", "cgroup"):
        shutil.copy(FIXTURES / case / name, root / "self" / name)
    return root


def test_hybrid_host(tmp_path: Path) -> None:
    layout = read_layout(procfs_from(tmp_path, "hybrid"))
    assert layout.name == "hybrid"
    cpu, cpuacct, memory = (layout.v1_for(c) for c in ("cpu", "cpuacct", "memory"))
    assert cpu is not None and cpuacct is not None and memory is not None
    assert cpu.own_dir == "/sys/fs/cgroup/cpu"
    assert cpuacct.own_dir == "/sys/fs/cgroup/cpuacct"
    assert cpu is not cpuacct  # separate mounts on this host
    assert memory.own_dir.startswith("/sys/fs/cgroup/memory/process_api/")
    assert layout.v2 is not None and layout.v2.own_dir == "/sys/fs/cgroup/unified"
    assert not layout.v2.readonly


def test_pure_v2_systemd_session(tmp_path: Path) -> None:
    layout = read_layout(procfs_from(tmp_path, "v2_systemd"))
    assert layout.name == "v2"
    assert layout.v1 == ()
    assert layout.v2 is not None
    assert layout.v2.own_dir == "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope"


def test_pure_v1_with_comounted_cpu_cpuacct(tmp_path: Path) -> None:
    layout = read_layout(procfs_from(tmp_path, "v1_pure"))
    assert layout.name == "v1"
    cpu, cpuacct = layout.v1_for("cpu"), layout.v1_for("cpuacct")
    assert cpu is not None and cpu is cpuacct
    assert cpu.mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert cpu.own_dir == "/sys/fs/cgroup/cpu,cpuacct/system.slice/maxwell.service"
    freezer = layout.v1_for("freezer")
    assert freezer is not None and freezer.own_dir == "/sys/fs/cgroup/freezer"
    systemd = [h for h in layout.v1 if "name=systemd" in h.controllers]
    assert systemd and systemd[0].own_dir.endswith("/system.slice/maxwell.service")


def test_container_v1_mount_root_is_not_slash(tmp_path: Path) -> None:
    layout = read_layout(procfs_from(tmp_path, "container_v1"))
    memory, pids = layout.v1_for("memory"), layout.v1_for("pids")
    assert memory is not None and memory.own_dir == "/sys/fs/cgroup/memory"
    assert pids is not None and pids.own_dir == "/sys/fs/cgroup/pids/worker"


def test_container_v2_mount_root_is_not_slash(tmp_path: Path) -> None:
    layout = read_layout(procfs_from(tmp_path, "container_v2"))
    assert layout.name == "v2"
    assert layout.v2 is not None and layout.v2.own_dir == "/sys/fs/cgroup"


def test_no_cgroup_mounted(tmp_path: Path) -> None:
    layout = read_layout(procfs_from(tmp_path, "no_cgroup"))
    assert layout.name == "none" and not layout.mounted
    with pytest.raises(CgroupUnavailableError, match="no cgroup filesystem is mounted"):
        CgroupManager.detect(procfs_root=str(procfs_from(tmp_path / "b", "no_cgroup")))


def test_read_only_mount(tmp_path: Path) -> None:
    procfs = procfs_from(tmp_path, "v2_readonly")
    layout = read_layout(procfs)
    assert layout.v2 is not None and layout.v2.readonly
    with pytest.raises(CgroupUnavailableError, match="read-only"):
        CgroupManager.detect(procfs_root=str(procfs))


def test_missing_procfs_files(tmp_path: Path) -> None:
    with pytest.raises(CgroupUnavailableError, match="cannot read"):
        read_layout(tmp_path)


def test_own_dir_rules() -> None:
    assert own_dir("/sys/fs/cgroup", "/", "/") == "/sys/fs/cgroup"
    assert own_dir("/sys/fs/cgroup", "/", "/a/b") == "/sys/fs/cgroup/a/b"
    assert own_dir("/mnt", "/docker/x", "/docker/x") == "/mnt"
    assert own_dir("/mnt", "/docker/x", "/docker/x/y") == "/mnt/y"
    assert own_dir("/mnt", "/docker/x", "/docker/xy") is None  # a sibling, not below
    assert own_dir("/mnt", "/docker/x", "/other") is None
    assert own_dir("/mnt", "/", "/../outside") is None


def test_outside_own_path_is_reported() -> None:
    mounts = parse_mountinfo("41 31 0:38 /a /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n")
    layout = build_layout(mounts, parse_proc_cgroup("0::/b\n"))
    assert layout.v2 is None
    assert any("outside the mount's root" in problem for problem in layout.problems)


def test_escaped_mountpoint_and_ro_option() -> None:
    mounts = parse_mountinfo(
        "41 31 0:38 / /mnt/my\\040cgroups ro,relatime shared:3 - cgroup2 cgroup2 rw\n"
        "42 31 0:39 / /mnt/cpu rw,relatime - cgroup cgroup ro,cpu,cpuacct\n"
        "garbage line\n"
    )
    assert [m.mountpoint for m in mounts] == ["/mnt/my cgroups", "/mnt/cpu"]
    assert all(m.readonly for m in mounts)
    assert mounts[1].hierarchy_key == frozenset({"cpu", "cpuacct"})


def test_writable_bind_mount_preferred() -> None:
    mounts = parse_mountinfo(
        "41 31 0:38 / /ro rw,relatime - cgroup2 cgroup2 ro\n"
        "42 31 0:38 / /rw rw,relatime - cgroup2 cgroup2 rw\n"
    )
    layout = build_layout(mounts, parse_proc_cgroup("0::/x\n"))
    assert layout.v2 is not None and layout.v2.own_dir == "/rw/x"


def test_v1_controllers_missing_and_no_v2(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    (root / "self").mkdir(parents=True)
    (root / "self" / "mountinfo").write_text(
        "31 23 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    )
    (root / "self" / "cgroup").write_text("8:pids:/\n")
    with pytest.raises(CgroupUnavailableError, match="no usable cgroup hierarchy"):
        CgroupManager.detect(procfs_root=str(root))


def test_sched_ext_state(tmp_path: Path) -> None:
    assert read_sched_ext_state(tmp_path) is None
    (tmp_path / "kernel" / "sched_ext").mkdir(parents=True)
    (tmp_path / "kernel" / "sched_ext" / "state").write_text("enabled\n")
    assert read_sched_ext_state(tmp_path) == "enabled"
