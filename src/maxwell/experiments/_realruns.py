"""The two real runs of `maxwell experiment fairshare` on this machine: the mix under plain
Linux fair share, then under the Maxwell daemon, each for the same wall time.

- Fair share: one cgroup per agent beneath this process's own (`CgroupManager`), each with the
  same CPU weight and no quota, the daemon's own memory and pids limits; each agent runs as a
  dynamic uid through setpriv, as the daemon runs its agents (or, where such a uid cannot run
  this interpreter, as this process's user, as the daemon then does too: `agents_user` says
  which). The meter (`LiveMeter` over the node's sensors) attributes energy as the daemon's does.
- Maxwell: a private `NodeDaemon` on a temporary state directory (optimistic billing, audits,
  the Landauer multiplier), ticking in a thread, its API on a socket for the agents' reports.
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
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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
from maxwell.node.supervisor import group_record
from maxwell.procfs import NS_PER_S, CpuTimesReader
from maxwell.samples._workcount import WORK_FILE
from maxwell.sensors import Sensors
from maxwell.sensors.model import active_w_per_core
from maxwell.units import money_to_tokens, tokens_to_money
from maxwell.users import RunAs, UidRange, setpriv_argv

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
    """Refuse (`MachineUnfitError`) where the runs cannot be made: not root."""
    if os.geteuid() != 0:
        raise MachineUnfitError(
            f"needs root (euid {os.geteuid()}): the agents run in cgroups of their own, as uids "
            "of their own"
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


def read_units(directory: Path) -> int:
    """Units of work an agent counted in its directory (0 where it counts none)."""
    try:
        return int((directory / WORK_FILE).read_text())
    except FileNotFoundError:
        return 0


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


def agent_env(directory: Path) -> dict[str, str]:
    """The environment of an agent: this process's, less Maxwell's own variables (as the
    daemon gives its agents), with its directory (where it counts its work)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAXWELL_")}
    env["MAXWELL_AGENT_DIR"] = str(directory)
    return env


def agent_argv(agent: MixAgent) -> list[str]:
    return [sys.executable, "-m", agent.module, *agent.args]


@dataclass
class _FairAgent:
    agent: MixAgent
    group: WorkloadGroup
    directory: Path
    popen: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None


def fair_share_run(
    agents: Sequence[MixAgent], duration_s: float, workdir: Path, uids: str, stop: Stop | None
) -> RunMeasure:
    """The mix under fair share for `duration_s` (see the module)."""
    sensors = Sensors.detect(clock=SystemClock(), nvml=None)
    try:
        with _manager() as manager:
            meter = LiveMeter(sensors)
            running: list[_FairAgent] = []
            try:
                for agent, user in zip(agents, _fair_users(agents, uids), strict=True):
                    running.append(_start_fair(manager, meter, agent, workdir, user))
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


def _fair_users(agents: Sequence[MixAgent], uids: str) -> list[RunAs | None]:
    """A dynamic uid per agent as the daemon would give (None: this process's user)."""
    found = UidRange.parse(uids)
    if found is None:
        return [None for _ in agents]
    users: list[RunAs | None] = []
    taken: set[int] = set()
    for _ in agents:
        user = found.allocate(taken, secrets.randbelow)
        taken.add(user.uid)
        users.append(user)
    return users


def _start_fair(
    manager: CgroupManager, meter: LiveMeter, agent: MixAgent, workdir: Path, user: RunAs | None
) -> _FairAgent:
    """The agent's group (equal weight, no quota, the daemon's limits), metered, and started."""
    directory = workdir / agent.name
    directory.mkdir(mode=0o700)
    if user is not None:
        os.chown(directory, user.uid, user.gid)
    group = manager.create(agent.name)
    started = _FairAgent(agent, group, directory)
    group.set_cpu_weight(100)  # the same for every agent: fair share
    group.set_pids_max(PIDS_MAX)
    group.set_memory_max(DEFAULT_MEMORY_MAX)
    meter.add(agent.name, group)  # before it runs: all its CPU is metered
    argv = agent_argv(agent)
    command = argv if user is None else setpriv_argv(user, argv)
    output = os.open(workdir / f"{agent.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        started.popen = group.spawn(command, env=agent_env(directory), stdin=subprocess.DEVNULL,
                                    stdout=output, stderr=output)  # fmt: skip
    finally:
        os.close(output)
    return started


def _watch_fair(
    running: Sequence[_FairAgent], meter: LiveMeter, duration_s: float, stop: Stop | None
) -> RunMeasure:
    """Meter every tick until `duration_s` has passed; what each agent did."""
    watch = IdleWatch()
    dirs = {a.agent.name: cgroup_dirs(group_record(a.group)) for a in running}
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            pause(min(TICK_S, duration_s - elapsed), stop)
            meter.tick()
            watch.sample(dirs)
            for agent in running:
                if agent.exit_code is None and agent.popen is not None:
                    agent.exit_code = agent.popen.poll()
        meter.tick(read_memory=True)
        wall = time.monotonic() - started
    finally:
        watch.close()
    measures = tuple(_fair_measure(agent, meter) for agent in running)
    return RunMeasure("fairshare", wall, measures, watch.idle_wanted_core_s)


def _fair_measure(agent: _FairAgent, meter: LiveMeter) -> AgentMeasure:
    usage = meter.usage(agent.agent.name)
    code = agent.exit_code
    outcome = "running" if code is None else ("finished" if code == 0 else f"exited {code}")
    return AgentMeasure(
        agent.agent.name, usage.cpu_ns / NS_PER_S, usage.energy_uj / 1e6,
        read_units(agent.directory), outcome, freed_bytes=usage.memory_freed_bytes,
    )  # fmt: skip


def _end_fair(running: Sequence[_FairAgent]) -> None:
    """Kill every group and reap every process (the manager then removes the groups)."""
    for agent in running:
        try:
            agent.group.kill()
        except MaxwellError:
            log.warning("fair share: cannot kill %s", agent.agent.name, exc_info=True)
        if agent.popen is not None:
            agent.popen.wait(timeout=30)


@dataclass(frozen=True)
class MaxwellContext:
    """What the daemon's run says of the machine: where energy and temperature came from."""

    energy_source: str
    measured: bool
    w_per_core: float
    capacity_cores: float


def maxwell_run(
    agents: Sequence[MixAgent], duration_s: float, state: Path, uids: str, stop: Stop | None
) -> tuple[RunMeasure, MaxwellContext]:
    """The mix under a private Maxwell daemon for `duration_s` (see the module)."""
    from maxwell.node.api import ApiServer, create_app, serve

    socket_path = str(state / "maxwell.sock")
    config = NodeConfig(
        dynamic_uids=uids, state_dir=state, socket_path=socket_path, tick_s=TICK_S,
        landauer_multiplier=LANDAUER_MULTIPLIER, grace_s=GRACE_S, billing="optimistic",
        audit_probability=AUDIT_PROBABILITY,
    )  # fmt: skip
    node = NodeDaemon(config)
    ticking = threading.Event()
    ticker = threading.Thread(target=node.run_forever, args=(ticking,), daemon=True)
    api: ApiServer | None = None
    try:
        if node.degraded:
            raise MachineUnfitError(f"the daemon has no usable cgroups: {node.degraded}")
        api = serve(create_app(node), socket_path=socket_path, listen=None)
        names = {_spawn(node, agent): agent for agent in agents}
        ticker.start()
        return _watch_maxwell(node, names, duration_s, stop, (ticking, ticker))
    finally:
        ticking.set()
        if ticker.is_alive():
            ticker.join()
        if api is not None:
            api.stop()
        node.shutdown(kill_agents=True)


def _spawn(node: NodeDaemon, agent: MixAgent) -> str:
    spawned = node.spawn(agent_argv(agent), fund=tokens_to_money(agent.fund_j), bid=agent.bid,
                         demand=agent.demand, name=agent.name)  # fmt: skip
    return spawned.agent


def _watch_maxwell(
    node: NodeDaemon,
    names: Mapping[str, MixAgent],
    duration_s: float,
    stop: Stop | None,
    ticking: tuple[threading.Event, threading.Thread],
) -> tuple[RunMeasure, MaxwellContext]:
    """Watch the daemon's run until `duration_s` has passed; stop ticking, bill the last
    interval, and read what each agent did."""
    watch, spots = IdleWatch(), []
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            pause(min(TICK_S, duration_s - elapsed), stop)
            watch.sample({agent: node.group_dirs(agent) for agent in names})
            spots.append(node.price().spot)
    finally:
        watch.close()
    ticking[0].set()
    ticking[1].join()
    node.tick_once()
    wall = time.monotonic() - started
    infos = {info.id: info for info in node.agents()}
    events = node.events(limit=100_000)
    measures = tuple(
        _maxwell_measure(agent.name, infos[agent_id], events, node.paths.agent_work(agent_id))
        for agent_id, agent in names.items()
    )
    price = node.price()
    run = RunMeasure("maxwell", wall, measures, watch.idle_wanted_core_s,
                     mean_spot=sum(spots) / len(spots) if spots else price.spot)  # fmt: skip
    w_per_core = node.config.active_w_per_core or active_w_per_core(node.config.model)
    context = MaxwellContext(price.energy_source, price.measured, w_per_core,
                             node.capacity_cores)  # fmt: skip
    return run, context


def _maxwell_measure(
    name: str, info: AgentInfo, events: Sequence[Event], work: Path
) -> AgentMeasure:
    return AgentMeasure(
        name, info.cpu_s, info.energy_uj / 1e6, read_units(work), outcome(info, events),
        freed_bytes=info.memory_freed_bytes, paid_j=money_to_tokens(info.paid + info.landauer),
        slashed_j=money_to_tokens(info.slashed),
    )  # fmt: skip


def outcome(info: AgentInfo, events: Sequence[Event]) -> str:
    """finished, exited N, apoptosis, killed, slashed (caught, still alive) or running."""
    kinds = {event.kind for event in events if event.agent == info.id}
    if info.state is AgentState.EXITED:
        return "finished" if info.exit_code == 0 else f"exited {info.exit_code}"
    if info.state is AgentState.DEAD:
        return "apoptosis" if "apoptosis" in kinds else "killed"
    return "slashed" if info.slashed > 0 else "running"
