"""A CPU quota really enforced, measured: a busy loop in a group held to 0.3 cores uses about
0.3 cores of CPU time, while a busy loop beside it with no quota uses far more. Not a timed test
of our speed: the kernel's throttling, with wide bounds (the machine may be busy)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from helpers import wait_until
from maxwell.cgroups import CgroupManager
from test_cgroups_real import detect_or_skip

pytestmark = pytest.mark.root

BUSY = [sys.executable, "-c", "while True: pass"]
QUOTA_CORES = 0.3
MEASURE_S = 3.0


@pytest.fixture
def manager() -> Iterator[CgroupManager]:
    made = detect_or_skip()
    try:
        yield made
    finally:
        made.close()


def test_a_group_held_to_a_third_of_a_core_uses_about_that(manager: CgroupManager) -> None:
    held, free = manager.create("held"), manager.create("free")
    held.set_cpu_quota(QUOTA_CORES)
    loops = [held.spawn(BUSY), free.spawn(BUSY)]
    try:
        wait_until(lambda: held.cpu_ns() > 0 and free.cpu_ns() > 0, what="both loops to run")
        start_held, start_free, started = held.cpu_ns(), free.cpu_ns(), time.monotonic()
        time.sleep(MEASURE_S)  # the window the CPU time is measured over: real time, on purpose
        elapsed = time.monotonic() - started
        held_cores = (held.cpu_ns() - start_held) / 1e9 / elapsed
        free_cores = (free.cpu_ns() - start_free) / 1e9 / elapsed
    finally:
        for group in (held, free):
            group.kill()
        for loop in loops:
            loop.wait(timeout=10)
    assert held_cores <= QUOTA_CORES * 1.25, f"held to {QUOTA_CORES}, used {held_cores:.3f}"
    assert held_cores >= QUOTA_CORES * 0.5, f"held to {QUOTA_CORES}, used only {held_cores:.3f}"
    assert free_cores >= 1.5 * held_cores, f"no quota: {free_cores:.3f}, held: {held_cores:.3f}"
