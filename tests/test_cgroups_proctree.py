"""The /proc fallback (needs no root), and `open_workload_group` degrading for user nobody."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NobodyPython
from helpers import wait_until
from maxwell.cgroups import ProcTreeGroup, open_workload_group
from maxwell.cgroups.proctree import parse_stat, parse_status_kib
from maxwell.errors import CgroupUnavailableError

FIXTURES = Path(__file__).parent / "fixtures" / "cgroups"
NOBODY = 65534

# The original forks children in a loop; each child double-forks, so grandchildren are orphaned
# (re-parented to init: found through the session); all ignore SIGTERM. Its sleeps are its own
# behaviour: grandchildren that linger, and a loop that keeps forking without flooding the machine.
FORK_LOOP = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.01)
"""


@pytest.fixture
def tree() -> Iterator[ProcTreeGroup]:
    group = ProcTreeGroup("fallback")
    try:
        yield group
    finally:
        group.remove()
        assert group.pids() == []


def reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def test_parsers() -> None:
    fields = parse_stat("42 (a (weird) name) S 1 42 42 0 -1 0 0 0 0 0 7 3 2 1 20 0 1 0 5")
    assert fields is not None and fields[0] == "S" and fields[1] == "1"
    assert fields[11:15] == ["7", "3", "2", "1"]
    assert parse_stat("garbage") is None
    assert parse_status_kib("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n", "VmRSS") == 1024
    assert parse_status_kib("Name:\tkthread\n", "VmRSS") == 0


def test_members_limits_and_no_freezer(tree: ProcTreeGroup) -> None:
    assert (tree.kind, tree.supports_freeze) == ("none", False)
    process = tree.spawn(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        wait_until(lambda: len(tree.pids()) == 3, interval_s=0.01, what="sh and its two sleeps")
        assert process.pid in tree.pids()
        assert os.getpid() not in tree.pids()
        assert tree.stats().pids == 3
        tree.set_cpu_quota(None)
        tree.set_memory_max(None)
        tree.set_pids_max(None)
        tree.set_cpu_weight(100)
        with pytest.raises(CgroupUnavailableError, match="no cgroups"):
            tree.set_cpu_quota(0.5)
        with pytest.raises(CgroupUnavailableError, match="freeze"):
            tree.freeze()
        tree.kill()
        assert tree.is_empty()
        assert process.wait(timeout=5) == -signal.SIGKILL
    finally:
        reap(process)


def test_kill_fork_loop_ignoring_sigterm_with_orphans(tree: ProcTreeGroup) -> None:
    process = tree.spawn([sys.executable, "-c", FORK_LOOP])
    try:
        wait_until(lambda: len(tree.pids()) > 5, interval_s=0.01, what="the fork loop to fork")
        tree.signal(signal.SIGTERM)
        before = set(tree.pids())
        # Forking again after the SIGTERM shows the original took it and lives on.
        wait_until(lambda: set(tree.pids()) - before, what="a fork after the SIGTERM")
        seen = tree.pids()
        orphans = [pid for pid in seen if pid != process.pid and os.getsid(pid) == process.pid]
        assert len(seen) > 5 and orphans
        tree.kill()
        assert tree.pids() == []
        process.wait(timeout=5)
        for pid in seen:
            wait_until(lambda: zombie(pid), what=f"{pid} to die")  # noqa: B023 - called at once
    finally:
        reap(process)


def zombie(pid: int) -> bool:
    """Gone, or dead and waiting for init (here not always quick) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def test_stats_cpu_includes_reaped_children(tree: ProcTreeGroup) -> None:
    code = textwrap.dedent(
        """
        import subprocess, sys, time
        busy = "import time\\nwhile time.process_time() < 0.4: pass"  # 0.4 s of its own CPU
        subprocess.run([sys.executable, "-c", busy])
        print("done", flush=True)
        time.sleep(30)  # stays a member to be measured; reap() kills it
        """
    )
    process = tree.spawn([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"done"
        assert len(tree.pids()) == 1  # the busy grandchild is gone, its CPU time is not
        assert tree.stats().cpu_ns >= 300_000_000  # its 0.4 s, counted in clock ticks
        # cpu_ns() is the same figure without the memory reads (the member is idle now).
        first, from_stats, last = tree.cpu_ns(), tree.stats().cpu_ns, tree.cpu_ns()
        assert first <= from_stats <= last and last - first <= 20_000_000
    finally:
        reap(process)
    tree.remove()
    assert tree.cpu_ns() == last  # nothing left to scan: the last figure, not 0


def test_stats_memory_and_freed_estimate(tree: ProcTreeGroup) -> None:
    code = textwrap.dedent(
        """
        import sys, time
        block = b"x" * (64 << 20)
        print("allocated", flush=True)
        sys.stdin.readline()
        del block
        print("freed", flush=True)
        time.sleep(30)  # stays a member to be measured; reap() kills it
        """
    )
    process = tree.spawn(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        assert process.stdout.readline().strip() == b"allocated"
        held = tree.stats()
        assert held.memory_bytes >= 64 << 20
        process.stdin.write(b"go\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == b"freed"
        after = tree.stats()
        assert after.memory_freed_bytes >= 48 << 20
        assert not after.memory_freed_exact
        assert after.peak_memory_bytes >= 64 << 20
    finally:
        reap(process)


def test_open_workload_group_without_cgroups_degrades(tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    (procfs / "self").mkdir(parents=True)
    for name in ("mountinfo", "cgroup"):
        shutil.copy(FIXTURES / "no_cgroup" / name, procfs / "self" / name)
    group, manager, reason = open_workload_group("x", procfs_root=str(procfs))
    assert manager is None and group.kind == "none"
    assert reason is not None
    assert "no cgroup filesystem is mounted" in reason
    assert "degraded: process tree via /proc" in reason


@pytest.mark.root
def test_open_workload_group_as_nobody(nobody_python: NobodyPython) -> None:
    snippet = textwrap.dedent(
        """
        import json, sys
        from maxwell.cgroups import open_workload_group
        group, manager, reason = open_workload_group("as-nobody")
        child = group.spawn(["sleep", "30"])
        pids = group.pids()
        group.remove()
        child.wait()
        print(json.dumps({"kind": group.kind, "manager": manager is not None,
                          "reason": reason, "pids": pids, "child": child.pid,
                          "empty": group.is_empty()}))
        """
    )
    result = subprocess.run(
        [nobody_python.python, "-c", snippet],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        env=nobody_python.env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "none" and not report["manager"]
    assert report["reason"].startswith("not root (euid 65534)")
    assert "degraded: process tree via /proc" in report["reason"]
    assert report["pids"] == [report["child"]] and report["empty"]


def test_a_tree_is_adopted_again_by_its_roots_and_never_by_a_reused_pid(
    tree: ProcTreeGroup,
) -> None:
    """What a restarted daemon does with a process tree's record: the same root (pid and start
    time) is found again with its members; a pid whose start time differs (taken by another
    process since) or that is gone is not."""
    child = tree.spawn(["sh", "-c", "sleep 30 & exec sleep 30"])
    wait_until(lambda: len(tree.pids()) == 2, what="the root and its child")
    roots = tree.roots()
    assert [pid for pid, _ in roots] == [child.pid] and roots[0][1] > 0
    again = ProcTreeGroup.adopt("again", roots)
    assert again is not None and again.pids() == tree.pids() and again.roots() == roots
    (pid, start) = roots[0]
    assert ProcTreeGroup.adopt("reused", [(pid, start + 1)]) is None
    again.kill()
    child.wait(10)
    assert tree.is_empty() and tree.roots() == []
    assert ProcTreeGroup.adopt("gone", roots) is None
