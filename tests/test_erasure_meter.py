"""The erasure meter (soft-dirty pages), on recorded fake procfs trees and on this kernel.

A fake process is a `PID/maps` text, a sparse `PID/pagemap` holding one little-endian 64-bit
entry per page at the kernel's offset (`vaddr // 4096 * 8`, so hundreds of GiB into the file for
real user addresses) and an empty `PID/clear_refs` that a sample must leave holding "4".
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.bench.erasure import FakeProcess, cost_report, fake_process, measure_cost
from maxwell.meter.erasure import (
    CHUNK_ENTRIES,
    DirtyPageCount,
    ErasureMeterError,
    PagemapRead,
    SoftDirtyMeter,
    Support,
    bits_erased,
    count_soft_dirty_pages,
    decide_support,
    soft_dirty_support,
)

PAGE = 4096
PID = 4242
HEAP = 0x5555_5556_0000
ARENA = 0x7F3A_1C00_0000
CODE = 0x7F3A_1E00_0000
PRESENT, SWAPPED, DIRTY = 1 << 63, 1 << 62, 1 << 55
FRAME = 0x1_2345  # a page frame number, in bits 0-54 (zeroed for readers without CAP_SYS_ADMIN)
SWAP_SLOT = 0x42 << 5 | 3  # swap offset in bits 5-54, swap type in bits 0-4


def maps_line(start: int, pages: int, perms: str, path: str = "") -> str:
    inode = "1234" if path.startswith("/") else "0"
    device = "08:01" if path.startswith("/") else "00:00"
    return f"{start:x}-{start + pages * PAGE:x} {perms} 00000000 {device} {inode}    {path}"


def write_process(
    root: Path, lines: Sequence[str], entries: Mapping[int, Sequence[int]], pid: int = PID
) -> Path:
    """`root/pid` with `lines` as maps and `entries[vaddr]` written from that page on."""
    directory = root / str(pid)
    directory.mkdir(parents=True)
    (directory / "maps").write_text("".join(f"{line}\n" for line in lines))
    with (directory / "pagemap").open("wb") as pagemap:
        for address, values in entries.items():
            pagemap.seek(address // PAGE * 8)
            pagemap.write(np.array(values, dtype="<u8").tobytes())
    (directory / "clear_refs").write_bytes(b"")
    return directory


def file_reader(path: Path) -> PagemapRead:
    def read(offset: int, length: int) -> bytes:
        with path.open("rb") as pagemap:
            pagemap.seek(offset)
            return pagemap.read(length)

    return read


# --- counting -----------------------------------------------------------------------------------

HEAP_ENTRIES = [
    PRESENT | DIRTY | FRAME,  # re-written, in RAM: counted
    SWAPPED | DIRTY | SWAP_SLOT,  # re-written, then swapped out: counted
    PRESENT | FRAME,  # in RAM, not written since the clear
    SWAPPED | SWAP_SLOT,  # swapped, not written
    DIRTY,  # no page at all in a soft-dirty VMA (a fresh mapping): nothing written
    0,  # never touched
    PRESENT | SWAPPED | DIRTY,  # both flags (not a kernel state, but "holds data"): counted
    PRESENT | DIRTY | (1 << 56) | (1 << 61),  # exclusively mapped, file page: counted
]


def test_dirty_present_and_dirty_swapped_pages_are_counted_clean_ones_are_not(
    tmp_path: Path,
) -> None:
    directory = write_process(
        tmp_path, [maps_line(HEAP, len(HEAP_ENTRIES), "rw-p", "[heap]")], {HEAP: HEAP_ENTRIES}
    )
    meter = SoftDirtyMeter(tmp_path, page_size=PAGE)
    assert meter.sample(PID) == 4 * PAGE
    assert (directory / "clear_refs").read_bytes() == b"4"


def test_only_writable_user_mappings_are_counted(tmp_path: Path) -> None:
    all_dirty = [PRESENT | DIRTY | FRAME] * 4
    lines = [
        maps_line(CODE, 4, "r-xp", "/usr/lib/libfake.so"),
        maps_line(CODE + 4 * PAGE, 4, "r--p", "/usr/lib/libfake.so"),
        maps_line(CODE + 8 * PAGE, 4, "---p"),  # a guard region
        maps_line(CODE + 12 * PAGE, 4, "rw-p", "/usr/lib/libfake.so"),  # .data: counted
        maps_line(ARENA, 4, "rw-s", "/dev/shm/ring"),  # shared: counted for this process
        maps_line(0x7FFF_F7FC_0000, 4, "rw-p", "[vvar]"),  # the kernel's, even if writable
        maps_line(0xFFFF_FFFF_FF60_0000, 1, "--xp", "[vsyscall]"),
    ]
    entries = {CODE: all_dirty * 4, ARENA: all_dirty, 0x7FFF_F7FC_0000: all_dirty}
    write_process(tmp_path, lines, entries)
    assert SoftDirtyMeter(tmp_path, page_size=PAGE).sample(PID) == 8 * PAGE


def test_a_short_pagemap_read_ends_that_mapping_and_is_reported(tmp_path: Path) -> None:
    # The recording stops after 3 of the arena's 6 pages: the kernel serves none past the end of
    # the address space, and a process's pagemap reads empty once it has exited.
    lines = [maps_line(HEAP, 2, "rw-p", "[heap]"), maps_line(ARENA, 6, "rw-p")]
    entries = {HEAP: [PRESENT | DIRTY] * 2, ARENA: [PRESENT | DIRTY] * 3}
    directory = write_process(tmp_path, lines, entries)
    maps_text = (directory / "maps").read_text()
    counted = count_soft_dirty_pages(maps_text, file_reader(directory / "pagemap"), page_size=PAGE)
    assert counted == DirtyPageCount(dirty_pages=5, scanned_pages=5, unread_pages=3)
    assert SoftDirtyMeter(tmp_path, page_size=PAGE).sample(PID) == 5 * PAGE


def test_a_read_ending_inside_an_entry_counts_only_whole_entries() -> None:
    entries = np.array([PRESENT | DIRTY, PRESENT | DIRTY], dtype="<u8").tobytes()
    counted = count_soft_dirty_pages(
        maps_line(HEAP, 2, "rw-p"), lambda offset, length: entries[:12], page_size=PAGE
    )
    assert counted == DirtyPageCount(dirty_pages=1, scanned_pages=1, unread_pages=1)


def test_a_huge_sparse_mapping_is_read_in_bounded_chunks() -> None:
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return bytes(length)

    pages = 4 * CHUNK_ENTRIES + 5  # 1 GiB and 5 pages, never touched
    counted = count_soft_dirty_pages(maps_line(ARENA, pages, "rw-p"), read, page_size=PAGE)
    assert counted == DirtyPageCount(dirty_pages=0, scanned_pages=pages, unread_pages=0)
    assert max(length for _, length in reads) == CHUNK_ENTRIES * 8
    assert [offset for offset, _ in reads] == [
        (ARENA // PAGE + chunk * CHUNK_ENTRIES) * 8 for chunk in range(5)
    ]
    assert sum(length for _, length in reads) == pages * 8


_ENTRY_BITS = st.sets(st.sampled_from([0, 1, 12, 54, 55, 56, 57, 61, 62, 63]))
_ENTRIES = st.lists(_ENTRY_BITS.map(lambda bits: sum(1 << bit for bit in bits)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(entries=_ENTRIES, chunk_entries=st.integers(1, 70))
def test_the_count_equals_a_plain_python_count(entries: list[int], chunk_entries: int) -> None:
    recorded = np.array(entries, dtype="<u8").tobytes()
    first = HEAP // PAGE * 8
    text = maps_line(HEAP, len(entries), "rw-p", "[heap]") if entries else ""

    def read(offset: int, length: int) -> bytes:
        return recorded[offset - first : offset - first + length]

    counted = count_soft_dirty_pages(text, read, page_size=PAGE, chunk_entries=chunk_entries)
    expected = sum(1 for e in entries if e >> 55 & 1 and (e >> 63 & 1 or e >> 62 & 1))
    assert counted == DirtyPageCount(expected, len(entries), 0)


def test_bits_erased_is_every_bit_of_every_page() -> None:
    assert bits_erased(3, 4096) == 3 * 4096 * 8 == 98_304
    assert bits_erased(0, 65536) == 0
    assert bits_erased(1, 2 * 1024 * 1024) == 16_777_216
    with pytest.raises(ValueError, match="pages -1"):
        bits_erased(-1, 4096)
    with pytest.raises(ValueError, match="page_size 0"):
        bits_erased(1, 0)


# --- the adapter --------------------------------------------------------------------------------


def test_a_vanished_pid_reads_zero(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    meter = SoftDirtyMeter(tmp_path, page_size=PAGE)
    with caplog.at_level(logging.DEBUG, logger="maxwell.meter.erasure"):
        assert meter.sample(31337) == 0
        assert meter.clear(31337) is False
    assert "process 31337 is gone" in caplog.text


def test_a_process_that_exits_before_its_clear_still_counts(tmp_path: Path) -> None:
    directory = write_process(tmp_path, [maps_line(HEAP, 1, "rw-p")], {HEAP: [PRESENT | DIRTY]})
    (directory / "clear_refs").unlink()
    assert SoftDirtyMeter(tmp_path, page_size=PAGE).sample(PID) == PAGE


def test_sample_tree_sums_each_process_once(tmp_path: Path) -> None:
    write_process(tmp_path, [maps_line(HEAP, 2, "rw-p")], {HEAP: [PRESENT | DIRTY] * 2}, pid=10)
    write_process(tmp_path, [maps_line(ARENA, 3, "rw-p")], {ARENA: [SWAPPED | DIRTY] * 3}, pid=11)
    meter = SoftDirtyMeter(tmp_path, page_size=PAGE)
    assert meter.sample_tree([10, 11, 10, 99999]) == 5 * PAGE


def test_clear_writes_4_without_counting(tmp_path: Path) -> None:
    directory = write_process(tmp_path, [maps_line(HEAP, 1, "rw-p")], {HEAP: [PRESENT | DIRTY]})
    assert SoftDirtyMeter(tmp_path, page_size=PAGE).clear(PID) is True
    assert (directory / "clear_refs").read_bytes() == b"4"


def test_a_symlinked_file_is_not_followed(tmp_path: Path) -> None:
    directory = write_process(tmp_path, [maps_line(HEAP, 1, "rw-p")], {HEAP: [PRESENT | DIRTY]})
    (tmp_path / "elsewhere").write_text(maps_line(HEAP, 1, "rw-p") + "\n")
    (directory / "maps").unlink()
    (directory / "maps").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ErasureMeterError, match=f"cannot sample process {PID}") as caught:
        SoftDirtyMeter(tmp_path, page_size=PAGE).sample(PID)
    assert caught.value.pid == PID
    assert (directory / "clear_refs").read_bytes() == b""


# --- support ------------------------------------------------------------------------------------

NOT_SET = "CONFIG_HAVE_ARCH_SOFT_DIRTY=y\n# CONFIG_MEM_SOFT_DIRTY is not set\n"
BUILT_IN = "CONFIG_HAVE_ARCH_SOFT_DIRTY=y\nCONFIG_MEM_SOFT_DIRTY=y\nCONFIG_PROC_PAGE_MONITOR=y\n"
RELEASE = "6.1.0-test-amd64"


def fake_kernel(tmp_path: Path, *, config_gz: str | None, boot_config: str | None) -> Path:
    procfs, boot = tmp_path / "proc", tmp_path / "boot"
    (procfs / "sys" / "kernel").mkdir(parents=True)
    (procfs / "sys" / "kernel" / "osrelease").write_text(RELEASE + "\n")
    boot.mkdir()
    if config_gz is not None:
        (procfs / "config.gz").write_bytes(gzip.compress(config_gz.encode()))
    if boot_config is not None:
        (boot / f"config-{RELEASE}").write_text(boot_config)
    return tmp_path


def test_support_from_proc_config_gz(tmp_path: Path) -> None:
    with_it = fake_kernel(tmp_path / "a", config_gz=BUILT_IN, boot_config=None)
    assert soft_dirty_support(with_it / "proc", with_it / "boot") == Support(
        True, f"CONFIG_MEM_SOFT_DIRTY=y in {with_it}/proc/config.gz (not probed)"
    )
    without = fake_kernel(tmp_path / "b", config_gz=NOT_SET, boot_config=BUILT_IN)
    assert soft_dirty_support(without / "proc", without / "boot") == Support(
        False,
        "this kernel has no soft-dirty bits"
        f" (CONFIG_MEM_SOFT_DIRTY is not set in {without}/proc/config.gz)",
    )


def test_support_from_boot_config(tmp_path: Path) -> None:
    with_it = fake_kernel(tmp_path / "a", config_gz=None, boot_config=BUILT_IN)
    support = soft_dirty_support(with_it / "proc", with_it / "boot")
    assert support == Support(
        True, f"CONFIG_MEM_SOFT_DIRTY=y in {with_it}/boot/config-{RELEASE} (not probed)"
    )
    without = fake_kernel(tmp_path / "b", config_gz=None, boot_config=NOT_SET)
    support = soft_dirty_support(without / "proc", without / "boot")
    assert not support.available
    assert f"CONFIG_MEM_SOFT_DIRTY is not set in {without}/boot/config-{RELEASE}" in support.reason


def test_support_without_any_config_cannot_tell(tmp_path: Path) -> None:
    bare = fake_kernel(tmp_path, config_gz=None, boot_config=None)
    support = soft_dirty_support(bare / "proc", bare / "boot")
    assert not support.available
    assert support.reason.startswith("cannot tell whether CONFIG_MEM_SOFT_DIRTY is set")
    assert f"{bare}/boot/config-{RELEASE}" in support.reason


def test_a_corrupt_config_gz_is_logged_and_boot_config_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = fake_kernel(tmp_path, config_gz=None, boot_config=BUILT_IN)
    (kernel / "proc" / "config.gz").write_bytes(b"\x1f\x8b\x08\x00not gzip at all")
    with caplog.at_level(logging.WARNING, logger="maxwell.meter.erasure"):
        support = soft_dirty_support(kernel / "proc", kernel / "boot")
    assert support.available
    assert "cannot read kernel config" in caplog.text


@pytest.mark.parametrize(
    ("probed", "built_in", "available", "reason_part"),
    [
        (True, False, True, "was marked soft-dirty (probe)"),
        (True, None, True, "was marked soft-dirty (probe)"),
        (False, False, False, "no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is not set in C)"),
        (False, True, False, "was not marked soft-dirty (CONFIG_MEM_SOFT_DIRTY=y in C)"),
        (False, None, False, "was not marked soft-dirty (C)"),
        (None, True, True, "CONFIG_MEM_SOFT_DIRTY=y in C (not probed)"),
        (None, None, False, "cannot tell"),
    ],
)
def test_a_probe_that_saw_the_bit_wins_and_the_config_explains_the_rest(
    probed: bool | None, built_in: bool | None, available: bool, reason_part: str
) -> None:
    support = decide_support(probed, built_in, "C")
    assert support.available is available
    assert reason_part in support.reason


# --- this machine's kernel ----------------------------------------------------------------------

_WRITER = """
import sys
memory = bytearray(64 * 4096)
print("ready", flush=True)
sys.stdin.readline()
for offset in range(0, len(memory), 4096):
    memory[offset] = 7
print("written", flush=True)
sys.stdin.readline()
"""


def _writer() -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def _write_then_sample(meter: SoftDirtyMeter, child: subprocess.Popen[str]) -> int:
    assert child.stdin is not None and child.stdout is not None
    meter.sample(child.pid)  # everything since exec; clears
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline() == "written\n"
    return meter.sample(child.pid)


def test_this_kernel_without_soft_dirty_says_so_and_meters_zero() -> None:
    support = soft_dirty_support()
    if support.available:
        pytest.skip(f"this kernel has soft-dirty bits: {support.reason}")
    assert "CONFIG_MEM_SOFT_DIRTY" in support.reason, support.reason
    child = _writer()
    try:
        assert _write_then_sample(SoftDirtyMeter(), child) == 0
    finally:
        child.communicate("done\n")
    assert SoftDirtyMeter().sample(child.pid) == 0  # reaped: its /proc directory is gone


def test_this_kernel_with_soft_dirty_counts_a_childs_rewritten_pages() -> None:
    support = soft_dirty_support()
    if not support.available:
        pytest.skip(f"no soft-dirty bits to count: {support.reason}")
    child = _writer()
    try:
        rewritten = _write_then_sample(SoftDirtyMeter(), child)
    finally:
        child.communicate("done\n")
    assert rewritten >= os.sysconf("SC_PAGE_SIZE")


# --- the benchmark ------------------------------------------------------------------------------


def test_fake_process_is_reproducible_and_counts_what_it_recorded() -> None:
    process = fake_process(1, 0.5, seed=3)
    assert _same(process, fake_process(1, 0.5, seed=3))
    assert not _same(process, fake_process(1, 0.5, seed=4))
    assert process.pages == 256
    recorded = {first * 8: array.tobytes() for first, array in process.entries}

    def read(offset: int, length: int) -> bytes:
        return recorded[offset][:length]

    counted = count_soft_dirty_pages(process.maps_text, read, page_size=PAGE)
    assert counted == DirtyPageCount(process.dirty_pages, 256, 0)
    assert 0 < process.dirty_pages < 256


def _same(one: FakeProcess, other: FakeProcess) -> bool:
    return (
        one.maps_text == other.maps_text
        and one.dirty_pages == other.dirty_pages
        and all(
            first == other_first and np.array_equal(array, other_array)
            for (first, array), (other_first, other_array) in zip(
                one.entries, other.entries, strict=True
            )
        )
    )


def test_measure_cost_reports_its_figures() -> None:
    report = measure_cost(2, 0.1, seed=7, runs=3)
    assert set(report) == {
        "resident_mb", "pages", "ms", "ms_per_mb", "dirty_pages", "runs", "measured_on",
    }  # fmt: skip
    assert report["resident_mb"] == 2
    assert report["pages"] == 512
    assert report["dirty_pages"] == fake_process(2, 0.1, seed=7).dirty_pages
    assert report["runs"] == 3
    assert isinstance(report["ms"], float) and report["ms"] > 0  # 512 entries take some time
    assert report["ms_per_mb"] == pytest.approx(report["ms"] / 2, abs=1e-3)


def test_the_cost_report_is_the_median_run_per_mb() -> None:
    report = cost_report(4, 1024, 10, [3_000_000, 1_000_000, 2_000_000])
    assert (report["ms"], report["ms_per_mb"], report["runs"]) == (2.0, 0.5, 3)
    assert "recorded fake pagemap files" in str(report["measured_on"])
