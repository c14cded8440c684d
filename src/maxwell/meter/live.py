"""The live meter: drives the pure `attribute` from node samples and workload counters.

Each `tick()` takes one node sample (sensors) and one CPU reading per workload, attributes the
interval's energy, and keeps running totals per workload and for the house. Memory figures
(current, peak, bytes freed, and so the Landauer cost) come from the fuller `stats()` reading,
which costs several times more on cgroup v1 (`memory.stat` alone is ~10 µs), so it is taken at
most every `memory_interval_s` (and whenever a tick asks for it, e.g. the last one). Energy
attribution needs only CPU time, so it stays exact at any tick rate.

With an erasure meter (`maxwell.meter.erasure`: the kernel's soft-dirty bits), each tick also
counts the pages that the processes of every workload that ran in the interval re-wrote since the
last count, as bytes (`memory_rewritten_bytes`); a workload that did not run wrote nothing.

Invariant, every tick: sum of workloads' interval energy + house interval energy == the node's
interval energy (integer µJ), whatever the workloads do; a workload added mid-way is billed only
from its first reading on. Nothing here reads the clock: time comes from the node samples.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from maxwell.cgroups import GroupStats
from maxwell.meter.attribution import attribute
from maxwell.physics import landauer_joules
from maxwell.procfs import NS_PER_S
from maxwell.sensors import NodeSample
from maxwell.units import UJ_PER_J


class NodeSampler(Protocol):
    def sample(self) -> NodeSample: ...


class MeteredGroup(Protocol):
    """What the meter needs of a workload group (every `WorkloadGroup` is one)."""

    def cpu_ns(self) -> int: ...

    def stats(self) -> GroupStats: ...

    def pids(self) -> list[int]: ...


class ErasureSampler(Protocol):
    """Bytes of pages re-written by `pids` since the last sample of each (and clears them)."""

    def sample_tree(self, pids: list[int]) -> int: ...


@dataclass
class WorkloadUsage:
    """Running totals for one workload since it was added to the meter."""

    energy_uj: int = 0
    cpu_ns: int = 0  # CPU time used since added
    landauer_j: float = 0.0  # physical k_B T ln 2 cost of the bytes freed since added
    memory_freed_bytes: int = 0
    memory_rewritten_bytes: int = 0  # pages re-written, as bytes (only with an erasure meter)
    memory_freed_exact: bool = True
    memory_bytes: int = 0
    peak_memory_bytes: int = 0
    last_interval_uj: int = 0
    max_interval_uj: int = 0
    power_w: float = 0.0  # over the last interval
    cpu_cores: float = 0.0  # over the last interval


class _Tracked:
    __slots__ = ("cpu_at_memory_ns", "cpu_ns", "freed_bytes", "group", "usage")

    def __init__(self, group: MeteredGroup, stats: GroupStats) -> None:
        self.group = group
        self.cpu_ns = stats.cpu_ns
        self.cpu_at_memory_ns = stats.cpu_ns  # CPU time when the memory figures were last read
        self.freed_bytes = stats.memory_freed_bytes
        self.usage = WorkloadUsage(
            memory_freed_exact=stats.memory_freed_exact,
            memory_bytes=stats.memory_bytes,
            peak_memory_bytes=stats.peak_memory_bytes,
        )


class LiveMeter:
    """Meter a set of named workload groups against one node's sensors."""

    def __init__(
        self,
        sensors: NodeSampler,
        *,
        memory_interval_s: float = 1.0,
        erasure: ErasureSampler | None = None,
    ) -> None:
        self._sensors = sensors
        self._memory_interval_s = memory_interval_s
        self._erasure = erasure
        self._workloads: dict[str, _Tracked] = {}
        # add, discard and tick may come from different threads (the node's API spawns while
        # its tick reads the counters outside the node's own lock).
        self._lock = threading.Lock()
        self.node = sensors.sample()
        self._memory_read_at_s = self.node.at_s
        self.started_at_s = self.node.at_s
        self.node_energy_uj = 0
        self.idle_energy_uj = 0  # the static part of node_energy_uj (it is inside house_uj)
        self.house_uj = 0
        self.warnings: list[str] = []
        # The workloads whose usage the last tick changed (CPU, energy, power, memory figures).
        self.changed: set[str] = set()

    def add(self, name: str, group: MeteredGroup) -> None:
        """Start metering `group` from now on (its baseline is read immediately)."""
        with self._lock:
            if name in self._workloads:
                raise ValueError(f"workload {name!r} is already metered")
            self._workloads[name] = _Tracked(group, group.stats())

    def discard(self, name: str) -> WorkloadUsage:
        """Stop metering `name`; returns its final totals (memory figures read one last time)."""
        with self._lock:
            tracked = self._workloads.pop(name)
        _read_group_memory(tracked, self.node.temperature_c)
        return tracked.usage

    def usage(self, name: str) -> WorkloadUsage:
        return self._workloads[name].usage

    def __iter__(self) -> Iterator[tuple[str, WorkloadUsage]]:
        return ((name, tracked.usage) for name, tracked in self._workloads.items())

    def tick(self, *, read_memory: bool = False) -> Mapping[str, int]:
        """One interval: returns the energy (µJ) attributed to each workload in it."""
        with self._lock:
            return self._tick(read_memory)

    def _tick(self, read_memory: bool) -> Mapping[str, int]:
        node = self._sensors.sample()
        workloads = self._workloads
        # One pass over the groups: this loop is the meter's hot path (10 Hz x every workload).
        cpu_deltas: dict[str, int] = {}
        for name, tracked in workloads.items():
            cpu_ns = tracked.group.cpu_ns()
            delta_ns = cpu_ns - tracked.cpu_ns
            if delta_ns > 0:
                tracked.cpu_ns = cpu_ns
                if self._erasure is not None:
                    tracked.usage.memory_rewritten_bytes += self._erasure.sample_tree(
                        tracked.group.pids()
                    )
            else:
                delta_ns = 0
            cpu_deltas[name] = delta_ns
        previous = self.node
        elapsed_s = node.at_s - previous.at_s
        idle_uj = max(node.idle_energy_uj - previous.idle_energy_uj, 0)
        share = attribute(
            total_uj=max(node.energy_uj - previous.energy_uj, 0),
            idle_uj=idle_uj,
            node_busy_ns=max(node.cpu.busy_ns - previous.cpu.busy_ns, 0),
            workload_cpu_ns=cpu_deltas,
        )
        self.node_energy_uj += share.total_uj
        self.idle_energy_uj += min(idle_uj, share.total_uj)
        self.house_uj += share.house_uj
        per_second = 1.0 / elapsed_s if elapsed_s > 0 else 0.0
        changed: set[str] = set()
        self.changed = changed
        for name, energy_uj in share.workloads_uj.items():
            usage = workloads[name].usage
            delta_ns = cpu_deltas[name]
            idle = not energy_uj and not delta_ns and not usage.last_interval_uj
            if idle and not usage.power_w and not usage.cpu_cores:
                continue  # idle, and idle last interval too: nothing changes
            changed.add(name)
            usage.energy_uj += energy_uj
            usage.cpu_ns += delta_ns
            usage.last_interval_uj = energy_uj
            if energy_uj > usage.max_interval_uj:
                usage.max_interval_uj = energy_uj
            if per_second:
                usage.power_w = energy_uj * per_second / UJ_PER_J
                usage.cpu_cores = delta_ns * per_second / NS_PER_S
        # A microsecond of slack so that ten ticks of 0.1 s make a second despite float sums.
        if read_memory or node.at_s - self._memory_read_at_s >= self._memory_interval_s - 1e-6:
            self._read_memory(node.temperature_c, only_if_ran=not read_memory)
            self._memory_read_at_s = node.at_s
        for warning in node.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
        self.node = node
        return share.workloads_uj

    def read_memory(self) -> None:
        """Read every group's memory figures now (e.g. just before a kill frees it all)."""
        self._read_memory(self.node.temperature_c, only_if_ran=False)

    def _read_memory(self, temperature_c: float, *, only_if_ran: bool) -> None:
        """Read memory figures; on the regular cadence, only of groups that ran since last time.

        A group that used no CPU since its last reading has allocated and freed nothing itself
        (reclaim of its page cache may still uncharge pages: the cumulative counter keeps them,
        and the next reading, forced ones included, bills them). Skipping idle groups is what
        keeps the once-a-second `memory.stat` reads cheap on a node of mostly idle agents.
        """
        for name, tracked in self._workloads.items():
            if not only_if_ran or tracked.cpu_ns != tracked.cpu_at_memory_ns:
                _read_group_memory(tracked, temperature_c)
                self.changed.add(name)


def _read_group_memory(tracked: _Tracked, temperature_c: float) -> None:
    tracked.cpu_at_memory_ns = tracked.cpu_ns
    stats = tracked.group.stats()
    usage = tracked.usage
    freed = max(stats.memory_freed_bytes - tracked.freed_bytes, 0)
    tracked.freed_bytes = max(stats.memory_freed_bytes, tracked.freed_bytes)
    usage.memory_freed_bytes += freed
    usage.memory_freed_exact = stats.memory_freed_exact
    usage.landauer_j += landauer_joules(freed, temperature_c)
    usage.memory_bytes = stats.memory_bytes
    usage.peak_memory_bytes = max(
        usage.peak_memory_bytes, stats.peak_memory_bytes, stats.memory_bytes
    )
