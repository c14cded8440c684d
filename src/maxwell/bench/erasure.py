"""What the erasure meter's count costs per MB of writable memory, on recorded fake pagemaps.

This kernel has no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is not set), so a live sample would
count nothing: the figures are measured on recorded fake pagemap files instead, a sparse file
with one 8-byte entry per page at the kernel's offsets, read through `pread` as the meter reads
/proc/PID/pagemap. They hold the meter's own work (parsing maps, reading entries, counting) and
leave out the kernel's page-table walk that produces a real pagemap, so they are a floor.

The pure part (`fake_process`, `cost_report`) builds the process and the report and is what the
tests exercise; `measure_cost` below `# --- the machine ---` writes files and reads the clock.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from maxwell.errors import MaxwellError
from maxwell.meter.erasure import (
    PAGEMAP_ENTRY_BYTES,
    PRESENT_BIT,
    SOFT_DIRTY_BIT,
    count_soft_dirty_pages,
)

PAGE_SIZE = 4096
MEASURED_ON = "recorded fake pagemap files read from the page cache (not a live process)"
RUNS = 7
# A process's writable memory, as shares of the total: heap, a large anonymous arena, a few
# smaller ones, a stack. Read-only code mappings around them are listed and skipped.
_WRITABLE_SHARES = (0.15, 0.55, 0.1, 0.1, 0.05, 0.05)
_FIRST_ADDRESS = 0x7F00_0000_0000
_GAP = 0x10_0000_0000  # 64 GiB between mappings: the file stays sparse between them


class CountMismatchError(MaxwellError):
    """The meter counted other than the fake process recorded: the benchmark timed a bug."""


@dataclass(frozen=True)
class FakeProcess:
    """A process's maps text and its pagemap entries, one array per writable mapping."""

    maps_text: str
    entries: tuple[tuple[int, npt.NDArray[np.uint64]], ...]  # (first page index, '<u8' entries)
    dirty_pages: int

    @property
    def pages(self) -> int:
        return sum(len(array) for _, array in self.entries)


def fake_process(resident_mb: int, dirty_share: float, seed: int | None) -> FakeProcess:
    """`resident_mb` MB of writable, present pages, each soft-dirty with `dirty_share`."""
    if resident_mb <= 0 or not 0.0 <= dirty_share <= 1.0:
        raise ValueError(f"resident_mb {resident_mb} > 0, dirty_share {dirty_share} in [0, 1]")
    generator = np.random.default_rng(seed)
    total_pages = resident_mb * 1024 * 1024 // PAGE_SIZE
    sizes = [max(1, round(total_pages * share)) for share in _WRITABLE_SHARES]
    sizes[1] += total_pages - sum(sizes)  # rounding goes to the big arena
    lines, entries, dirty, address = [], [], 0, _FIRST_ADDRESS
    for number, pages in enumerate(size for size in sizes if size > 0):
        code_end = address + 16 * PAGE_SIZE
        lines.append(f"{address:x}-{code_end:x} r-xp 00000000 08:01 {100 + number} /lib/fake.so")
        start, end = code_end, code_end + pages * PAGE_SIZE
        lines.append(f"{start:x}-{end:x} rw-p 00000000 00:00 0")
        frames = generator.integers(1, 1 << 40, size=pages, dtype=np.uint64)
        is_dirty = generator.random(pages) < dirty_share
        array = frames | np.uint64(1 << PRESENT_BIT)
        array[is_dirty] |= np.uint64(1 << SOFT_DIRTY_BIT)
        entries.append((start // PAGE_SIZE, array.astype("<u8")))
        dirty += int(np.count_nonzero(is_dirty))
        address = end + _GAP
    return FakeProcess("\n".join(lines) + "\n", tuple(entries), dirty)


def cost_report(
    resident_mb: int, pages: int, dirty_pages: int, run_ns: list[int]
) -> dict[str, object]:
    """The benchmark's figures from the median of `run_ns`."""
    ms = statistics.median(run_ns) / 1e6
    return {
        "resident_mb": resident_mb,
        "pages": pages,
        "ms": round(ms, 4),
        "ms_per_mb": round(ms / resident_mb, 6),
        "dirty_pages": dirty_pages,
        "runs": len(run_ns),
        "measured_on": MEASURED_ON,
    }


# --- the machine ------------------------------------------------------------------------------


def write_pagemap(process: FakeProcess, descriptor: int) -> None:
    """Each mapping's entries at the kernel's offsets; the gaps stay holes in a sparse file."""
    for first_page, array in process.entries:
        os.pwrite(descriptor, array.tobytes(), first_page * PAGEMAP_ENTRY_BYTES)


def measure_cost(
    resident_mb: int, dirty_share: float, seed: int | None = 0, *, runs: int = RUNS
) -> dict[str, object]:
    """Times counting a fake process's soft-dirty pages from its pagemap file (median of
    `runs`, `time.perf_counter_ns`); raises if a run's count disagrees with the recording."""
    process = fake_process(resident_mb, dirty_share, seed)
    run_ns = []
    with tempfile.TemporaryFile(prefix="maxwell-pagemap-") as pagemap:
        descriptor = pagemap.fileno()
        write_pagemap(process, descriptor)
        for _ in range(runs):
            started = time.perf_counter_ns()
            counted = count_soft_dirty_pages(
                process.maps_text,
                lambda offset, length: os.pread(descriptor, length, offset),
                page_size=PAGE_SIZE,
            )
            run_ns.append(time.perf_counter_ns() - started)
            if counted.dirty_pages != process.dirty_pages:
                raise CountMismatchError(
                    f"counted {counted.dirty_pages} dirty pages, recorded {process.dirty_pages}"
                )
    return cost_report(resident_mb, process.pages, process.dirty_pages, run_ns)
