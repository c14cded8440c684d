"""The two real runs of `maxwell experiment fairshare` on this machine: the mix under plain
Linux fair share, then under the Maxwell daemon, each for the same wall time.

- Fair share: one cgroup per agent beneath this process's own (`CgroupManager`), each with the
  same CPU weight and no quota, the daemon's own memory and pids limits; each agent is started
  by the daemon's own supervisor (`CgroupSupervisor.start`: setpriv, no new privileges, the
  agents' OOM score) as a dynamic uid of its own from the daemon's default range. The meter
  (`LiveMeter` over the node's sensors) attributes energy as the daemon's does.
- Maxwell: a private `NodeDaemon` on a temporary state directory (optimistic billing, audits,
  the Landauer multiplier, dynamic uids from the same range), ticking in a thread, its API on a
  socket for the agents' reports.
- Both: the agents are `python -m maxwell.samples...` run by the `AgentRuntime` given (an
  interpreter and a copy of Maxwell any uid may use: `maxwell.runtime_copy`), never as root;
  every tick the users of each agent's processes are read (`UidWatch`), so what ran as whom is
  observed, not assumed.
- Both: every `TICK_S` the CPU the machine left idle is counted against the CPU time the agents'
  groups spent throttled (`cpu.stat`), so `idle_wanted_core_s` is the CPU left idle while an
  agent wanted more than it was let use. Units of work come from each agent's work file
  (`maxwell.samples._workcount`), read the same way in both runs.

Nothing is left behind: every group is killed and removed, every process reaped, on the way
out of a run whatever ends it (a `RunStopped` raised when `stop` saw a signal, Ctrl-C, an
error). `stop` is polled between ticks (`maxwell.cli.common.StopRequest`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from maxwell.cgroups import CgroupManager, WorkloadGroup
from maxwell.clock import SystemClock
from maxwell.errors import CgroupUnavailableError, MaxwellError
from maxwell.experiments._realmix import (
    AUDIT_PROBABILITY,
    GRACE_S,
    LANDAUER_MULTIPLIER,
    TICK_S,
    AgentMeasure,
    MixAgent,
    RunMeasure,
)
from maxwell.meter import LiveMeter
from maxwell.node.agents import cgroup_dirs
from maxwell.node.config import DEFAULT_MEMORY_MAX, NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentInfo, AgentState, Event
from maxwell.node.intake import IntakeError, read_agent_file
from maxwell.node.private import PrivateNode, private_node
from maxwell.node.supervisor import AgentProcess, CgroupSupervisor, group_record
from maxwell.procfs import NS_PER_S, CpuTimesReader
from maxwell.runtime_copy import AgentRuntime
from maxwell.samples._workcount import WORK_FILE
from maxwell.sensors import Sensors
from maxwell.sensors.model import active_w_per_core
from maxwell.units import money_to_tokens, tokens_to_money
from maxwell.users import DEFAULT_DYNAMIC_UIDS, RunAs, UidRange

log = logging.getLogger(__name__)
PIDS_MAX = 256  # the daemon's default per agent, so that both runs limit alike


class MachineUnfitError(MaxwellError):
    """This machine cannot run the real-process experiment: not root, or no usable cgroups."""


class RunStopped(MaxwellError):
    """A signal stopped the experiment (everything it started is gone)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class Stop(Protocol):
    """A stop request to poll (`maxwell.cli.common.StopRequest`): the signal seen, if any, and a
    descriptor that becomes readable when one comes."""

    signum: int | None

    def fileno(self) -> int: ...


def check_machine() -> None:
    """Refuse (`MachineUnfitError`) where the runs cannot be made: not root, no setpriv."""
    if os.geteuid() != 0:
        raise MachineUnfitError(
            f"needs root (euid {os.geteuid()}): the agents run in cgroups of their own, as uids "
            "of their own"
        )
    if shutil.which("setpriv") is None:
        raise MachineUnfitError(
            "needs setpriv (util-linux): the agents run as uids of their own, never as root"
        )


def pause(seconds: float, stop: Stop | None) -> None:
    """Wait `seconds`, or until `stop` sees a signal (then `RunStopped`)."""
    if stop is None:
        time.sleep(max(seconds, 0.0))
        return
    if stop.signum is None:
        select.select([stop], [], [], max(seconds, 0.0))
    if stop.signum is not None:
        raise RunStopped(stop.signum)


MAX_WORK_BYTES: Final = 32  # a decimal count and a newline


def read_units(directory: Path, uid: int) -> int:
    """Units of work the agent (`uid`) counted in its directory: its own regular file, read
    without following links and at most `MAX_WORK_BYTES` (`maxwell.node.intake`). 0 where it
    counts none, or where what it left is no count (logged): a bad counter costs only itself."""
    path = directory / WORK_FILE
    if not path.exists() and not path.is_symlink():
        return 0
    try:
        text = read_agent_file(directory, WORK_FILE, uid=uid, limit=MAX_WORK_BYTES).strip()
    except IntakeError as exc:
        log.warning("%s: its work counter is not read: %s", directory.name, exc)
        return 0
    if not text.isdigit():
        log.warning("%s: its work counter holds no count: %r", directory.name, text[:16])
        return 0
    return int(text)


def read_throttled_ns(dirs: Sequence[str]) -> int | None:
    """CPU time a group spent throttled by its quota, ns (v1 `throttled_time`, v2
    `throttled_usec`), from the first of `dirs` with a `cpu.stat` that says; None: none does
    (the group is gone)."""
    for directory in dirs:
        try:
            text = Path(directory, "cpu.stat").read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":
                return int(value)
            if key == "throttled_usec":
                return int(value) * 1000
    return None


@dataclass
class IdleWatch:
    """CPU the machine left idle while an agent's group was throttled (wanted more), summed
    interval by interval: min(idle core-seconds, throttled seconds of the agents)."""

    procfs_root: str = "/proc"
    idle_wanted_core_s: float = 0.0
    _throttled: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cpu = CpuTimesReader(self.procfs_root)
        self._last = self._cpu.read()

    def sample(self, groups: Mapping[str, Sequence[str]]) -> None:
        cpu = self._cpu.read()
        idle_s = max(cpu.idle_ns - self._last.idle_ns, 0) / NS_PER_S
        self._last = cpu
        throttled_s = 0.0
        for name, dirs in groups.items():
            now = read_throttled_ns(dirs)
            if now is None:
                continue
            before = self._throttled.get(name, now)
            throttled_s += max(now - before, 0) / NS_PER_S
            self._throttled[name] = now
        self.idle_wanted_core_s += min(idle_s, throttled_s)

    def close(self) -> None:
        self._cpu.close()


def read_group_pids(dirs: Sequence[str]) -> list[int]:
    """The processes in a group (`cgroup.procs`), from the first of `dirs` that has the file;
    none where the group is gone."""
    for directory in dirs:
        try:
            text = Path(directory, "cgroup.procs").read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        return [int(line) for line in text.split()]
    return []


def read_euid(procfs_root: str, pid: int) -> int | None:
    """The effective uid of process `pid` (`Uid:` in its status), None once it is gone."""
    try:
        text = Path(procfs_root, str(pid), "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # real, effective, saved, filesystem
    return None


@dataclass
class UidWatch:
    """The users each agent's processes ran as: the effective uids of the processes in its
    group, gathered at every sample (the claim "no agent ran as root", observed)."""

    procfs_root: str = "/proc"
    uids: dict[str, set[int]] = field(default_factory=dict)

    def sample(self, groups: Mapping[str, Sequence[str]]) -> None:
        for name, dirs in groups.items():
            seen = self.uids.setdefault(name, set())
            for pid in read_group_pids(dirs):
                uid = read_euid(self.procfs_root, pid)
                if uid is not None:
                    seen.add(uid)

    def of(self, name: str) -> tuple[int, ...]:
        return tuple(sorted(self.uids.get(name, ())))


def agent_env(directory: Path) -> dict[str, str]:
    """The environment of an agent: this process's, less Maxwell's own variables (as the
    daemon gives its agents), with its directory (where it counts its work)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAXWELL_")}
    env["MAXWELL_AGENT_DIR"] = str(directory)
    return env


def agent_argv(agent: MixAgent, runtime: AgentRuntime) -> list[str]:
    """The agent's command: its sample module run by the runtime's Python, on its copy."""
    return [*runtime.command, "-m", agent.module, *agent.args]


@dataclass
class _FairAgent:
    agent: MixAgent
    group: WorkloadGroup
    directory: Path
    uid: int  # what it runs as: its work counter is a file of this uid's
    process: AgentProcess | None = None
    exit_code: int | None = None


def fair_share_run(
    agents: Sequence[MixAgent], duration_s: float, workdir: Path, runtime: AgentRuntime,
    stop: Stop | None,
) -> RunMeasure:  # fmt: skip
    """The mix under fair share for `duration_s`, each agent `runtime`'s Python as a dynamic
    uid of its own (see the module)."""
    sensors = Sensors.detect(clock=SystemClock(), nvml=None)
    try:
        with _manager() as manager:
            supervisor = CgroupSupervisor(manager, SystemClock(), None)  # the daemon's way
            meter = LiveMeter(sensors)
            running: list[_FairAgent] = []
            try:
                for agent, user in zip(agents, _fair_users(len(agents)), strict=True):
                    started = _start_fair(supervisor, meter, agent, workdir, user)
                    running.append(started)
                    started.process = supervisor.start(
                        started.group, agent_argv(agent, runtime), user=user.label,
                        env=agent_env(started.directory),
                        log_path=workdir / "logs" / f"{agent.name}.log",
                    )  # fmt: skip
                return _watch_fair(running, meter, duration_s, stop)
            finally:
                _end_fair(running)
    finally:
        sensors.close()


@contextlib.contextmanager
def _manager() -> Iterator[CgroupManager]:
    try:
        manager = CgroupManager.detect(prefix="maxwell")
    except CgroupUnavailableError as exc:
        raise MachineUnfitError(f"no usable cgroups: {exc}") from exc
    with manager:
        yield manager


def _fair_users(count: int) -> list[RunAs]:
    """A dynamic uid for each of `count` agents, from the daemon's default range, as the
    daemon gives them: one that no other agent holds and the user database does not know."""
    uids = UidRange.parse(DEFAULT_DYNAMIC_UIDS)
    assert uids is not None  # a range, not "none"
    users: list[RunAs] = []
    for _ in range(count):
        users.append(uids.allocate({user.uid for user in users}, secrets.randbelow))
    return users


def _start_fair(
    supervisor: CgroupSupervisor, meter: LiveMeter, agent: MixAgent, workdir: Path, user: RunAs
) -> _FairAgent:
    """The agent's directory (its user's own), its group (equal weight, no quota, the daemon's
    limits) metered, ready for its process."""
    directory = workdir / agent.name
    directory.mkdir(mode=0o700)
    os.chown(directory, user.uid, user.gid)
    (workdir / "logs").mkdir(mode=0o700, exist_ok=True)  # the daemon's layout: root's alone
    group = supervisor.create(agent.name)
    group.set_cpu_weight(100)  # the same for every agent: fair share
    group.set_pids_max(PIDS_MAX)
    group.set_memory_max(DEFAULT_MEMORY_MAX)
    meter.add(agent.name, group)  # before it runs: all its CPU is metered
    return _FairAgent(agent, group, directory, user.uid)


def _watch_fair(
    running: Sequence[_FairAgent], meter: LiveMeter, duration_s: float, stop: Stop | None
) -> RunMeasure:
    """Meter every tick until `duration_s` has passed; what each agent did, and as whom."""
    watch, users = IdleWatch(), UidWatch()
    dirs = {a.agent.name: cgroup_dirs(group_record(a.group)) for a in running}
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            pause(min(TICK_S, duration_s - elapsed), stop)
            meter.tick()
            watch.sample(dirs)
            users.sample(dirs)
            for agent in running:
                if agent.exit_code is None and agent.process is not None:
                    agent.exit_code = agent.process.poll()
        meter.tick(read_memory=True)
        wall = time.monotonic() - started
    finally:
        watch.close()
    measures = tuple(_fair_measure(agent, meter) for agent in running)
    return RunMeasure("fairshare", wall, measures, watch.idle_wanted_core_s,
                      uids={name: users.of(name) for name in dirs})  # fmt: skip


def _fair_measure(agent: _FairAgent, meter: LiveMeter) -> AgentMeasure:
    usage = meter.usage(agent.agent.name)
    code = agent.exit_code
    outcome = "running" if code is None else ("finished" if code == 0 else f"exited {code}")
    return AgentMeasure(
        agent.agent.name, usage.cpu_ns / NS_PER_S, usage.energy_uj / 1e6,
        read_units(agent.directory, agent.uid), outcome, freed_bytes=usage.memory_freed_bytes,
    )  # fmt: skip


def _end_fair(running: Sequence[_FairAgent]) -> None:
    """Kill every group and reap every process (the manager then removes the groups)."""
    for agent in running:
        try:
            agent.group.kill()
        except MaxwellError:
            log.warning("fair share: cannot kill %s", agent.agent.name, exc_info=True)
        if agent.process is not None:
            agent.process.wait(timeout=30)


@dataclass(frozen=True)
class MaxwellContext:
    """What the daemon's run says of the machine: where energy and temperature came from."""

    energy_source: str
    measured: bool
    w_per_core: float
    capacity_cores: float


def maxwell_run(
    agents: Sequence[MixAgent], duration_s: float, state: Path, runtime: AgentRuntime,
    stop: Stop | None,
) -> tuple[RunMeasure, MaxwellContext]:  # fmt: skip
    """The mix under a private Maxwell daemon for `duration_s`, each agent `runtime`'s Python
    as a dynamic uid the daemon gives it (see the module)."""
    config = NodeConfig(
        dynamic_uids=DEFAULT_DYNAMIC_UIDS, state_dir=state, socket_path=str(state / "maxwell.sock"),
        tick_s=TICK_S, landauer_multiplier=LANDAUER_MULTIPLIER, grace_s=GRACE_S,
        billing="optimistic", audit_probability=AUDIT_PROBABILITY,
    )  # fmt: skip
    with private_node(config) as run:
        if run.node.degraded:
            raise MachineUnfitError(f"the daemon has no usable cgroups: {run.node.degraded}")
        names = {_spawn(run.node, agent, runtime): agent for agent in agents}
        run.start()
        return _watch_maxwell(run, names, duration_s, stop)


def _spawn(node: NodeDaemon, agent: MixAgent, runtime: AgentRuntime) -> str:
    spawned = node.spawn(agent_argv(agent, runtime), fund=tokens_to_money(agent.fund_j),
                         bid=agent.bid, demand=agent.demand, name=agent.name)  # fmt: skip
    return spawned.agent


def _watch_maxwell(
    private: PrivateNode, names: Mapping[str, MixAgent], duration_s: float, stop: Stop | None
) -> tuple[RunMeasure, MaxwellContext]:
    """Watch the daemon's run until `duration_s` has passed; stop ticking, bill the last
    interval, and read what each agent did."""
    node = private.node
    watch, users, spots = IdleWatch(), UidWatch(), []
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            pause(min(TICK_S, duration_s - elapsed), stop)
            groups = {agent: node.group_dirs(agent) for agent in names}
            watch.sample(groups)
            users.sample(groups)
            spots.append(node.price().spot)
    finally:
        watch.close()
    private.finish()
    wall = time.monotonic() - started
    infos = {info.id: info for info in node.agents()}
    events = node.events(limit=100_000)
    measures = tuple(
        _maxwell_measure(agent.name, infos[agent_id], events, node.paths.agent_work(agent_id))
        for agent_id, agent in names.items()
    )
    price = node.price()
    uids = {agent.name: users.of(agent_id) for agent_id, agent in names.items()}
    run = RunMeasure("maxwell", wall, measures, watch.idle_wanted_core_s,
                     mean_spot=sum(spots) / len(spots) if spots else price.spot,
                     uids=uids)  # fmt: skip
    w_per_core = node.config.active_w_per_core or active_w_per_core(node.config.model)
    context = MaxwellContext(price.energy_source, price.measured, w_per_core,
                             node.capacity_cores)  # fmt: skip
    return run, context


def _maxwell_measure(
    name: str, info: AgentInfo, events: Sequence[Event], work: Path
) -> AgentMeasure:
    return AgentMeasure(
        name, info.cpu_s, info.energy_uj / 1e6, read_units(work, _uid_of(info)),
        outcome(info, events),
        freed_bytes=info.memory_freed_bytes, paid_j=money_to_tokens(info.paid + info.landauer),
        slashed_j=money_to_tokens(info.slashed),
    )  # fmt: skip


def _uid_of(info: AgentInfo) -> int:
    """The uid the daemon ran the agent as (its own where it named none)."""
    return os.geteuid() if info.user is None else RunAs.parse(info.user).uid


def outcome(info: AgentInfo, events: Sequence[Event]) -> str:
    """finished, exited N, apoptosis, killed, slashed (caught, still alive) or running."""
    kinds = {event.kind for event in events if event.agent == info.id}
    if info.state is AgentState.EXITED:
        return "finished" if info.exit_code == 0 else f"exited {info.exit_code}"
    if info.state is AgentState.DEAD:
        return "apoptosis" if "apoptosis" in kinds else "killed"
    return "slashed" if info.slashed > 0 else "running"
