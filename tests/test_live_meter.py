"""LiveMeter on scripted node samples and groups: conservation, cadence, Landauer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.cgroups import GroupStats
from maxwell.meter import LiveMeter
from maxwell.physics import landauer_joules
from maxwell.procfs import CpuTimes
from maxwell.sensors import NodeSample, Source


@dataclass
class ScriptedNode:
    """A node whose cumulative counters advance by the steps it is given."""

    at_s: float = 0.0
    energy_uj: int = 0
    idle_uj: int = 0
    busy_ns: int = 0
    temperature_c: float = 50.0

    def advance(self, seconds: float, energy_uj: int, idle_uj: int, busy_ns: int) -> None:
        self.at_s += seconds
        self.energy_uj += energy_uj
        self.idle_uj += idle_uj
        self.busy_ns += busy_ns

    def sample(self) -> NodeSample:
        return NodeSample(
            at_s=self.at_s,
            energy_uj=self.energy_uj,
            idle_energy_uj=self.idle_uj,
            cpu=CpuTimes(busy_ns=self.busy_ns, total_ns=int(self.at_s * 2e9), cpus=2),
            temperature_c=self.temperature_c,
            critical_c=95.0,
            energy_source=Source.MODEL,
            energy_measured=False,
            temperature_source=Source.MODEL,
            temperature_measured=False,
        )


@dataclass
class ScriptedGroup:
    cpu: int = 0
    memory: int = 0
    peak: int = 0
    freed: int = 0
    stats_reads: int = field(default=0)

    def cpu_ns(self) -> int:
        return self.cpu

    def stats(self) -> GroupStats:
        self.stats_reads += 1
        return GroupStats(
            cpu_ns=self.cpu,
            memory_bytes=self.memory,
            peak_memory_bytes=self.peak,
            memory_freed_bytes=self.freed,
            memory_freed_exact=True,
            pids=1,
        )


def test_energy_follows_cpu_share_and_house_takes_idle_and_others() -> None:
    node = ScriptedNode()
    meter = LiveMeter(node)
    a, b = ScriptedGroup(), ScriptedGroup()
    meter.add("a", a)
    meter.add("b", b)
    node.advance(1.0, energy_uj=5_000_000, idle_uj=1_000_000, busy_ns=2_000_000_000)
    a.cpu += 1_000_000_000
    b.cpu += 500_000_000
    interval = meter.tick()
    assert interval == {"a": 2_000_000, "b": 1_000_000}
    assert meter.usage("a").power_w == pytest.approx(2.0)
    assert meter.usage("a").cpu_cores == pytest.approx(1.0)
    assert meter.house_uj == 2_000_000
    assert meter.node_energy_uj == 5_000_000


def test_a_workload_added_later_is_billed_only_from_then_on() -> None:
    node = ScriptedNode()
    meter = LiveMeter(node)
    late = ScriptedGroup(cpu=7_000_000_000)  # CPU time used before Maxwell metered it
    node.advance(1.0, energy_uj=1_000, idle_uj=0, busy_ns=1_000)
    meter.tick()
    meter.add("late", late)
    node.advance(1.0, energy_uj=1_000, idle_uj=0, busy_ns=1_000)
    late.cpu += 500
    meter.tick()
    assert meter.usage("late").energy_uj == 500
    assert meter.usage("late").cpu_ns == 500


def test_memory_is_read_at_its_own_cadence_and_taxed_at_the_die_temperature() -> None:
    node = ScriptedNode(temperature_c=76.85)  # 350 K
    group = ScriptedGroup()
    meter = LiveMeter(node, memory_interval_s=1.0)
    meter.add("g", group)
    reads_after_add = group.stats_reads
    for _ in range(4):  # 0.4 s: no memory read yet
        node.advance(0.1, 10, 0, 10)
        group.cpu += 5
        meter.tick()
    assert group.stats_reads == reads_after_add
    group.freed = 2**30
    group.memory, group.peak = 4096, 2**30
    for _ in range(6):  # reaches 1.0 s: one read
        node.advance(0.1, 10, 0, 10)
        group.cpu += 5
        meter.tick()
    assert group.stats_reads == reads_after_add + 1
    usage = meter.usage("g")
    assert usage.memory_freed_bytes == 2**30
    assert usage.peak_memory_bytes == 2**30
    assert usage.landauer_j == pytest.approx(landauer_joules(2**30, 76.85))
    meter.tick(read_memory=True)
    assert group.stats_reads == reads_after_add + 2
    assert usage.memory_freed_bytes == 2**30  # no new release, no new cost


def test_idle_groups_are_not_read_on_the_cadence_but_lose_nothing() -> None:
    node = ScriptedNode()
    idle, busy = ScriptedGroup(), ScriptedGroup()
    meter = LiveMeter(node, memory_interval_s=1.0)
    meter.add("idle", idle)
    meter.add("busy", busy)
    baseline = idle.stats_reads
    idle.freed = 8192  # e.g. its page cache reclaimed while it slept
    for _ in range(30):
        node.advance(0.1, 10, 0, 10)
        busy.cpu += 5
        meter.tick()
    assert busy.stats_reads >= baseline + 3
    assert idle.stats_reads == baseline
    meter.read_memory()  # a forced reading (before a kill, at the end) covers everyone
    assert meter.usage("idle").memory_freed_bytes == 8192
    idle.freed = 16384
    assert meter.discard("idle").memory_freed_bytes == 16384


def test_adding_a_workload_twice_is_an_error() -> None:
    meter = LiveMeter(ScriptedNode())
    meter.add("x", ScriptedGroup())
    with pytest.raises(ValueError, match="already metered"):
        meter.add("x", ScriptedGroup())


STEP = st.tuples(
    st.integers(0, 10**9),  # node energy
    st.integers(0, 10**9),  # idle energy
    st.integers(0, 10**10),  # node busy ns
    st.lists(st.integers(0, 10**10), min_size=3, max_size=3),  # per-workload cpu ns
)


@given(steps=st.lists(STEP, min_size=1, max_size=30))
def test_workloads_plus_house_equals_node_energy_over_any_run(
    steps: list[tuple[int, int, int, list[int]]],
) -> None:
    node = ScriptedNode()
    meter = LiveMeter(node)
    groups = [ScriptedGroup() for _ in range(3)]
    for index, group in enumerate(groups):
        meter.add(f"w{index}", group)
    total = 0
    for energy, idle, busy, cpus in steps:
        node.advance(0.1, energy, idle, busy)
        for group, cpu in zip(groups, cpus, strict=True):
            group.cpu += cpu
        interval = meter.tick()
        total += energy
        assert sum(interval.values()) <= energy
    attributed = sum(usage.energy_uj for _, usage in meter)
    assert attributed + meter.house_uj == total == meter.node_energy_uj
