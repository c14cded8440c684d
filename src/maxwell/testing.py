"""In-memory doubles of the machine, for tests of the node's bookkeeping without real processes.

- `FakeSupervisor` stands in for `maxwell.node.supervisor.CgroupSupervisor`: its groups are
  `FakeGroup`s whose CPU counters the test moves (`burn`), whose processes end when the test says
  (`exit`), and which record the quotas, weights and freezes the daemon writes.
- `FakeSensors` stands in for `maxwell.sensors.Sensors`: the node's energy is its idle power over
  the fake clock's time plus an active power per CPU-second the fake groups burned. Every figure
  is labelled modelled, as the model fallback is.

Nothing here reads the real clock, a file or a process. With a `FakeClock` (`maxwell.clock`) and a
fixed wall function, a daemon built on these is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from maxwell.cgroups.base import GroupStats
from maxwell.clock import Clock
from maxwell.errors import CgroupError
from maxwell.node.supervisor import AgentProcess, ended_each
from maxwell.procfs import CpuTimes
from maxwell.sensors import NodeSample
from maxwell.sensors._types import Source

__all__ = ["FakeGroup", "FakeProcess", "FakeSensors", "FakeSupervisor"]

_NS = 1_000_000_000


class FakeProcess:
    """An agent's main process: running until its group is killed or the test ends it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            raise CgroupError(f"fake process {self.pid} is still running")
        return self.returncode


@dataclass
class FakeGroup:
    """A workload group in memory (the `WorkloadGroup` protocol)."""

    name: str
    kind: str = "fake"
    supports_freeze: bool = True
    path: str = ""
    cpu: int = 0  # ns used, cumulative
    freed: int = 0  # bytes released, cumulative
    frozen: bool = False
    killed: bool = False
    removed: bool = False
    quota_cores: float | None = None
    weight: int | None = None
    pids_max: int | None = None
    memory_max: int | None = None
    process: FakeProcess | None = None
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def spawn(self, argv: Sequence[str], **_: object) -> FakeProcess:
        raise CgroupError("fake groups start processes through FakeSupervisor.start")

    def set_cpu_quota(self, cores: float | None, period_us: int = 100_000) -> None:
        self.quota_cores = cores

    def set_cpu_weight(self, weight: int) -> None:
        self.weight = weight

    def set_memory_max(self, limit_bytes: int | None) -> None:
        self.memory_max = limit_bytes  # recorded, not enforced

    def set_pids_max(self, limit: int | None) -> None:
        self.pids_max = limit

    def freeze(self, timeout_s: float = 5.0) -> None:
        self.frozen = True

    def thaw(self, timeout_s: float = 5.0) -> None:
        self.frozen = False

    def kill(self) -> None:
        self.killed = True
        if self.process is not None and self.process.returncode is None:
            self.process.returncode = -9

    def signal(self, signum: int) -> None:
        return None  # fake groups freeze through the freezer

    def pids(self) -> list[int]:
        return []  # nothing to sample: audits of fake agents check reports only

    def is_empty(self) -> bool:
        return self.process is None or self.process.returncode is not None

    def cpu_ns(self) -> int:
        return self.cpu

    def stats(self) -> GroupStats:
        return GroupStats(
            cpu_ns=self.cpu,
            memory_bytes=0,
            peak_memory_bytes=0,
            memory_freed_bytes=self.freed,
            memory_freed_exact=True,
            pids=0 if self.is_empty() else 1,
        )

    def remove(self) -> None:
        self.removed = True


class FakeSupervisor:
    """Agents as `FakeGroup`s (the `Supervisor` protocol); the test drives their processes."""

    kind = "fake"
    degraded: str | None = None

    def __init__(self) -> None:
        self.groups: dict[str, FakeGroup] = {}
        self.closed = False
        self._next_pid = 10_000

    @property
    def private_dirs(self) -> list[str]:
        return []

    def create(self, agent: str) -> FakeGroup:
        group = FakeGroup(agent, path=f"fake:{agent}")
        self.groups[agent] = group
        return group

    def record(self, group: object) -> dict[str, object]:
        return {"kind": "fake", "name": getattr(group, "name", "")}

    def rebuild(self, agent: str, record: Mapping[str, object]) -> FakeGroup | None:
        group = self.groups.get(agent)
        return group if group is not None and not group.removed else None

    def start(
        self,
        group: object,
        argv: Sequence[str],
        *,
        user: str | None,
        env: Mapping[str, str],
        log_path: Path,
    ) -> FakeProcess:
        assert isinstance(group, FakeGroup)
        self._next_pid += 1
        group.process, group.argv, group.env = FakeProcess(self._next_pid), tuple(argv), env
        return group.process

    def freeze(self, group: object, frozen: bool) -> None:
        assert isinstance(group, FakeGroup)
        group.frozen = frozen

    def ended(self, processes: Mapping[str, AgentProcess]) -> list[str]:
        return ended_each(processes)

    def kill(self, group: object, process: object) -> int | None:
        assert isinstance(group, FakeGroup)
        group.kill()
        return group.process.returncode if group.process is not None else None

    def finish(self, group: object, process: object) -> int | None:
        assert isinstance(group, FakeGroup)
        group.removed = True
        return group.process.returncode if group.process is not None else None

    def close(self, failure: BaseException | None = None) -> None:
        self.closed = True

    # --- what the test does --------------------------------------------------------------------

    def burn(self, agent: str, cpu_s: float, freed_bytes: int = 0) -> None:
        """The agent's processes use `cpu_s` of CPU (unless frozen or ended) and free bytes."""
        group = self.groups[agent]
        if not group.frozen and not group.is_empty():
            group.cpu += round(cpu_s * _NS)
            group.freed += freed_bytes

    def exit(self, agent: str, code: int = 0) -> None:
        """The agent's command ends with `code`."""
        process = self.groups[agent].process
        if process is not None and process.returncode is None:
            process.returncode = code

    def busy_ns(self) -> int:
        return sum(group.cpu for group in self.groups.values())


class FakeSensors:
    """A node whose energy is `idle_w` over the clock's time plus `active_w_per_core` per
    CPU-second its fake groups burned (the `NodeSampler` protocol)."""

    def __init__(
        self,
        clock: Clock,
        supervisor: FakeSupervisor,
        *,
        idle_w: float = 10.0,
        active_w_per_core: float = 3.0,
        cpus: int = 4,
        temperature_c: float = 50.0,
        critical_c: float = 95.0,
    ) -> None:
        self.clock, self.supervisor = clock, supervisor
        self.idle_w, self.active_w_per_core, self.cpus = idle_w, active_w_per_core, cpus
        self.temperature_c, self.critical_c = temperature_c, critical_c
        self._start = clock.monotonic()

    def sample(self) -> NodeSample:
        elapsed = self.clock.monotonic() - self._start
        busy = self.supervisor.busy_ns()
        idle_uj = round(self.idle_w * elapsed * 1e6)
        active_uj = round(self.active_w_per_core * busy / 1000)  # W x ns = nJ
        return NodeSample(
            at_s=self.clock.monotonic(),
            energy_uj=idle_uj + active_uj,
            idle_energy_uj=idle_uj,
            cpu=CpuTimes(busy_ns=busy, total_ns=round(elapsed * _NS) * self.cpus, cpus=self.cpus),
            temperature_c=self.temperature_c,
            critical_c=self.critical_c,
            energy_source=Source.MODEL,
            energy_measured=False,
            temperature_source=Source.MODEL,
            temperature_measured=False,
        )
