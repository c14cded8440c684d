"""The pure-v2 VM's harness without a VM: the initramfs layout, the archive, the run's exit
status and time limit (a stand-in qemu on PATH), and the JUnit results read back."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import process_state, wait_until
from test_v2vm import Run, parse_junit, script
from v2vm import harness
from v2vm.harness import MODULES, Kernel, boot


def fake_package_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF busybox")
    modules = root / "lib" / "modules" / "6.1.0-test" / "kernel"
    for index, module in enumerate(MODULES):
        (modules / str(index)).mkdir(parents=True)
        (modules / str(index) / f"{module}.ko").write_bytes(module.encode())
    return root


def test_the_initramfs_holds_busybox_the_modules_in_order_and_init(tmp_path: Path) -> None:
    tree, root = fake_package_tree(tmp_path / "tree"), tmp_path / "initramfs"
    harness._initramfs_tree(tree, root)
    assert (root / "modules" / "order").read_text().split() == list(MODULES)
    assert (root / "modules" / "9p.ko").read_bytes() == b"9p"
    assert os.access(root / "init", os.X_OK) and os.access(root / "bin" / "busybox", os.X_OK)
    assert "cgroup2" in (root / "init").read_text()


def test_a_package_without_a_module_is_refused_by_name(tmp_path: Path) -> None:
    tree = fake_package_tree(tmp_path / "tree")
    next(tree.rglob("9pnet_virtio.ko")).unlink()
    with pytest.raises(harness.HarnessError, match="no module 9pnet_virtio"):
        harness._initramfs_tree(tree, tmp_path / "initramfs")


@pytest.mark.skipif(not harness.shutil.which("cpio"), reason="needs cpio (Debian: cpio)")
def test_the_archive_is_a_newc_cpio_the_kernel_reads(tmp_path: Path) -> None:
    tree, root = fake_package_tree(tmp_path / "tree"), tmp_path / "initramfs"
    harness._initramfs_tree(tree, root)
    archive = tmp_path / "initramfs.gz"
    harness._write_archive(root, archive)
    data = gzip.decompress(archive.read_bytes())
    assert data.startswith(b"070701")  # newc
    listed = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True)
    names = listed.stdout.decode().split()
    assert {"init", "bin/busybox", "modules/order", "modules/9p.ko"} <= set(names)


def stand_in_qemu(directory: Path, body: str) -> None:
    directory.mkdir()
    qemu = directory / "qemu-system-x86_64"
    qemu.write_text(f"#!/bin/sh\n{body}\n")
    qemu.chmod(0o755)


def test_boot_reads_the_exit_status_from_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_qemu(tmp_path / "bin", "echo booting; echo 'v2vm-exit-status: 3'")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    result = boot(Kernel(tmp_path), "true\n", out, timeout_s=30)
    assert (result.exit_status, result.timed_out) == (3, False)
    assert (out / "command").read_text() == "true\n"


def test_a_vm_past_its_time_is_killed_with_all_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    stand_in_qemu(tmp_path / "bin", f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    result = boot(Kernel(tmp_path), "true\n", out, timeout_s=1.0)
    assert result.timed_out and result.exit_status is None
    assert time.monotonic() - started < 30
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: process_state(pid) in (None, "Z"), what=f"{pid} to die")


def test_results_come_back_per_file_with_their_outcome(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_ok" />'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="boom">trace'
        "</failure></testcase>"
        '<testcase classname="tests.test_b" name="test_v1"><skipped message="needs the v1 '
        'freezer" /></testcase>'
        '<testcase classname="tests.adversarial.test_c.TestAttack" name="test_fails" />'
        "</testsuite></testsuites>"
    )
    cases = parse_junit(junit)
    assert [(c.file, c.name, c.outcome) for c in cases] == [
        ("tests/test_a.py", "test_ok", "passed"),
        ("tests/test_a.py", "test_bad", "failed"),
        ("tests/test_b.py", "test_v1", "skipped"),
        ("tests/adversarial/test_c.py", "test_fails", "passed"),
    ]
    assert cases[1].message == "boom\ntrace"
    run = Run(boot=None, cases=cases, log="")  # type: ignore[arg-type]
    assert [c.name for c in run.of("tests/adversarial")] == ["test_fails"]
    assert [c.name for c in run.of("tests/test_b.py")] == ["test_v1"]


def test_the_vms_command_runs_the_selection_one_run_per_marker(tmp_path: Path) -> None:
    command = script((("tests/test_x.py", None), ("tests/test_y.py", "root"), ("tests/t.py", None)))
    runs = [line for line in command.splitlines() if " -m pytest " in line]
    assert len(runs) == 2
    assert "tests/test_x.py tests/t.py --junitxml=/tmp/v2vm-out/junit-0.xml" in runs[0]
    assert "-m root tests/test_y.py --junitxml=/tmp/v2vm-out/junit-1.xml" in runs[1]
    # Run with a stand-in interpreter whose first run fails: the command fails with its status.
    first = tmp_path / "first-done"
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!/bin/sh\n[ -e {first} ] && exit 0\ntouch {first}\nexit 3\n")
    stand_in.chmod(0o755)
    runnable = command.replace(sys.executable, str(stand_in)).replace(
        "/tmp/v2vm-out", str(tmp_path)
    )
    runnable = runnable.replace(f"cd {Path(__file__).resolve().parents[1]}", f"cd {tmp_path}")
    done = subprocess.run(["sh", "-c", runnable], check=False)
    assert done.returncode == 3 and first.exists()


def test_a_changed_init_or_module_list_gets_its_own_cache_entry() -> None:
    name = harness.build_name("linux-image-6.1.0-test-amd64")
    assert name.startswith("linux-image-6.1.0-test-amd64-")
    assert name == harness.build_name("linux-image-6.1.0-test-amd64")
    assert name != harness.build_name("linux-image-6.1.0-test-amd64", init=b"#!/bin/sh\n")
