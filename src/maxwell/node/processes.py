"""The agents' processes and groups, from spawn to finish: an adapter over the `Supervisor`.

Rules:

- A spawn's arguments are refused, its declared code hashed and its bounty's model loaded
  before anything is made (`spawn_request`).
- A spawn is all or nothing: the group is limited (pids and memory, the spawn's or the node's
  defaults; a CPU quota of its demand capped at the node's cores) and metered before the command
  starts, so all its CPU is billed; its row, code, bounty, bid, accounts, funding and `spawned`
  event are one unit of work. If any step fails, the process started for it is killed and its
  group removed: nothing of the spawn is left.
- Each agent runs with its own environment (`MAXWELL_SOCKET`, its token, its id, its directory),
  none of the daemon's other `MAXWELL_*` variables, and its own log. An agent started under
  `user` drops privileges with `setpriv` (util-linux), which execs the command in place: the
  pid the daemon records is the agent's own.
- No agent runs as root: a root daemon gives an agent whose spawn names no user a uid of its
  own (`dynamic:UID`, from `--dynamic-uids`; `maxwell.users.UidRange`), one no other agent of
  the node holds while its row is kept. A command its user could not run, or a state directory
  it could not reach, is refused at start (`supervisor.check_reach`).
- `work_dir` is the agent's own directory, `<state>/work/<id>`, owned by its user: the only
  place the node reads an agent's files from.
- An agent that ended is finished once: it leaves the meter, its group is removed and its
  process reaped; its row keeps its state and exit code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from maxwell.audit.manifest import CodeManifest
from maxwell.client import OWN_CGROUP_ENV
from maxwell.clock import Clock
from maxwell.cluster.transfers import Transfer, received
from maxwell.economy.ledger import (
    TREASURY,
    EntryRequest,
    agent_account,
    event_request,
    open_request,
    stake_account,
)
from maxwell.economy.orderbook import InvalidBidError, check_demand, check_price
from maxwell.errors import CgroupError, CgroupUnavailableError, MaxwellError
from maxwell.log import logged
from maxwell.meter import LiveMeter
from maxwell.node.accounts import funding_request
from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry, CountedGroup, agent_row
from maxwell.node.audits import declared_manifest
from maxwell.node.config import NodeConfig
from maxwell.node.facade import MIN_MEMORY_MAX, AgentState, NodeError, SpawnResult
from maxwell.node.intake import replace_agent_file
from maxwell.node.paths import AGENT_TOKEN_FILE, StatePaths
from maxwell.node.results import check_payload, hand_over
from maxwell.node.state import hash_token, new_token
from maxwell.node.store import NodeStore
from maxwell.node.supervisor import AgentProcess, Supervisor, as_user
from maxwell.node.tick import AgentPlan, Enforcement
from maxwell.proof import Model, VerifierKey
from maxwell.users import (
    RunAs,
    UidsExhaustedError,
    UnknownUserError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpawnRequest:
    """A spawn, its arguments checked (`spawn_request`)."""

    argv: Sequence[str]
    fund: int
    bid: float
    demand: float
    name: str | None
    user: str | None
    manifest: CodeManifest | None  # the code it declares
    inference: tuple[Model, VerifierKey] | None  # the model a bounty pays for, and its key
    model: str | None  # that model's path, as given
    bounty: int
    memory: int | None = None  # its group's limits; None: the node's defaults
    pids: int | None = None
    payer: str = TREASURY  # the account its funding comes from
    transfer: Transfer | None = None  # funded by another node's voucher instead (`node.transfers`)
    payload: bytes | None = None  # handed to the agent in a file of its own (`node.results`)


def _check_spawn(argv: Sequence[str], fund: object, bounty: object, model: str | None) -> None:
    """Refuse a spawn's malformed arguments before anything is made (a `NodeError` says why)."""
    if not argv or not all(isinstance(arg, str) and arg for arg in argv):
        raise NodeError("the command must be a non-empty list of non-empty strings")
    if isinstance(bounty, bool) or not isinstance(bounty, int) or bounty < 0:
        raise NodeError(f"the bounty must be an integer of µ$J >= 0, got {bounty!r}")
    if bounty and model is None:
        raise NodeError("a bounty pays for proofs of one model: name it (--model)")
    if isinstance(fund, bool) or not isinstance(fund, int) or fund < 0:
        raise NodeError(f"funding must be an integer of µ$J >= 0, got {fund!r}")


def spawn_request(
    argv: Sequence[str],
    *,
    fund: int,
    bid: float,
    demand: float,
    name: str | None,
    user: str | None,
    code: Sequence[str] | None,
    bounty: int,
    model: str | None,
    load_model: Callable[[str], tuple[Model, VerifierKey]],
    memory: int | None = None,
    pids: int | None = None,
    payload: bytes | None = None,
) -> SpawnRequest:
    """A spawn's arguments checked, its declared code hashed and its bounty's model loaded,
    before anything is made (a `NodeError` says what is refused)."""
    _check_spawn(argv, fund, bounty, model)
    _check_limit("the memory limit", memory, MIN_MEMORY_MAX, "bytes")
    _check_limit("the pids limit", pids, 1, "processes")
    check_payload(payload)
    manifest = declared_manifest(code) if code else None
    inference = load_model(model) if model is not None else None
    try:
        bid, demand = check_price(bid), check_demand(demand)
    except InvalidBidError as exc:
        raise NodeError(str(exc)) from exc
    if user is not None:
        _named_user(user)  # refuse an unknown user before anything is made
        as_user(user, argv)  # and a missing setpriv
    return SpawnRequest(
        argv, fund, bid, demand, name, user, manifest, inference, model, bounty, memory, pids,
        payload=payload,
    )


def _named_user(user: str) -> None:
    """A user a spawn names must be one the system knows: dynamic uids are the node's to give."""
    try:
        RunAs.named(user)
    except UnknownUserError as exc:
        raise NodeError(str(exc)) from None


def _check_limit(what: str, value: object, low: int, unit: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise NodeError(f"{what} must be an integer of {low} {unit} or more, got {value!r}")


def work_dir(paths: StatePaths, agent: AgentRecord) -> Path:
    """`<state>/work/<id>`: the agent's own directory, where it leaves proofs for the node
    to read and finds its token (the node reads nothing of an agent's outside it). Made on
    first use, owned by the agent's user; for an agent of another user, the state directory
    is opened to traversal (`open_to_traversal`), never to listing or writing."""
    paths.work.mkdir(mode=0o711, exist_ok=True)
    directory = paths.agent_work(agent.id)
    if not directory.is_dir():
        directory.mkdir(mode=0o700, exist_ok=True)  # a proof check may make it meanwhile
        if agent.user is not None:
            user = _run_as(agent)
            os.chown(directory, user.uid, user.gid)
    if agent.user is not None:
        open_to_traversal(paths.root)
    return directory


def open_to_traversal(directory: Path) -> None:
    """Let other users pass through `directory` (x for group and others), so that an agent of
    another user reaches its own directory below; they still cannot list or write it."""
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode & 0o011 != 0o011:
        os.chmod(directory, mode | 0o011)
        log.info(
            "%s: mode %o, so that agents of other users reach their own directories",
            directory,
            mode | 0o011,
        )


def agent_uid(agent: AgentRecord) -> int:
    """The uid the agent runs as: its user's, or the daemon's when it names none."""
    if agent.user is None:
        return os.geteuid()
    return _run_as(agent).uid


def _run_as(agent: AgentRecord) -> RunAs:
    """The user the agent runs as (a `NodeError` when the system no longer has it)."""
    assert agent.user is not None
    try:
        return RunAs.parse(agent.user)
    except UnknownUserError:
        raise NodeError(f"agent {agent.id}: its user {agent.user!r} no longer exists") from None


class AgentProcesses:
    """Starts, kills and finishes the agents' processes in their groups (see the module)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock,
        wall: Callable[[], float],
        store: NodeStore,
        meter: LiveMeter,
        supervisor: Supervisor,
        registry: AgentRegistry,
        capacity_cores: float,
    ) -> None:
        self._config = config
        self._paths = config.paths
        self._clock = clock
        self._wall = wall
        self._store = store
        self._meter = meter
        self._supervisor = supervisor
        self._ended: set[str] = set()  # agents whose started process has ended (`exited`)
        self._agents = registry
        self._capacity_cores = capacity_cores
        self._uids = config.uid_range if os.geteuid() == 0 else None
        if os.geteuid() == 0 and self._uids is None:
            log.warning("--dynamic-uids none: agents spawned without --user run as root")

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        """Make the agent's group, start its command in it and record the spawn."""
        agent_id = secrets.token_hex(4)
        while agent_id in self._agents:
            agent_id = secrets.token_hex(4)
        token = new_token()
        at = self._wall()
        user = self._user(request)
        group = self._supervisor.create(agent_id)
        agent = AgentRecord(
            id=agent_id, name=request.name or agent_id, argv=tuple(request.argv),
            user=user, token_hash=hash_token(token), created_at=at,
            cgroup=self._supervisor.record(group), state=AgentState.RUNNING, bid=request.bid,
            demand=request.demand, bid_seq=0, pid=None, group=group, counted=CountedGroup(group),
            settled_at=self._clock.monotonic(),
        )  # fmt: skip
        if request.manifest is not None:
            agent.manifest = request.manifest
        if request.inference is not None and request.model is not None:
            agent.model, agent.model_key = request.inference
            agent.model_key_at = self._clock.monotonic()
            agent.bounty = request.bounty
        self._launch(agent, token, request)
        agent.cgroup = self._supervisor.record(group)  # a process tree's names its roots now
        self._record_spawn(agent, request, at)
        self._agents.add(agent)
        assert agent.pid is not None
        return SpawnResult(agent=agent_id, name=agent.name, pid=agent.pid, token=token)

    def _user(self, request: SpawnRequest) -> str | None:
        """The user the agent runs as: the one its spawn names, else for a root daemon a
        dynamic uid that no other agent of the node holds (None: the daemon's own)."""
        if request.user is not None or self._uids is None:
            return request.user
        try:
            user = self._uids.allocate(self._agents.dynamic_uids, secrets.randbelow)
        except UidsExhaustedError as exc:
            raise NodeError(str(exc)) from None
        return user.label

    def _launch(self, agent: AgentRecord, token: str, request: SpawnRequest) -> None:
        """Limit the agent's group and start its command in it; on any failure, undo all."""
        group = agent.group
        assert group is not None and agent.counted is not None
        try:
            self._limit(agent, request)
            quota = min(agent.demand, self._capacity_cores)
            with logged(log, f"agent {agent.id}: no CPU quota", CgroupUnavailableError):
                group.set_cpu_quota(quota)
            agent.last_quota = quota
            self._meter.add(agent.id, agent.counted)  # before it runs: all its CPU is metered
            agent.popen = self._start(agent, token, request.payload)
        except BaseException:
            with contextlib.suppress(KeyError):  # not metered yet: nothing to undo
                self._meter.discard(agent.id)
            with logged(log, f"agent {agent.id}: cannot remove its group", MaxwellError,
                        level=logging.WARNING):  # fmt: skip
                group.remove()
            raise
        agent.pid = agent.popen.pid

    def _limit(self, agent: AgentRecord, request: SpawnRequest) -> None:
        """The group's memory and pids limits: the spawn's, else the node's (none where the
        controller is missing: logged)."""
        assert agent.group is not None
        pids = request.pids if request.pids is not None else self._config.pids_max
        memory = request.memory if request.memory is not None else self._config.memory_max
        if pids is not None:
            with logged(log, f"agent {agent.id}: no pids limit", CgroupUnavailableError):
                agent.group.set_pids_max(pids)
        if memory is not None:
            with logged(log, f"agent {agent.id}: no memory limit", CgroupUnavailableError):
                agent.group.set_memory_max(memory)

    def _record_spawn(self, agent: AgentRecord, request: SpawnRequest, at: float) -> None:
        """One unit of work: the agent's row, code, bounty and bid, its accounts, funding and
        `spawned` event. If it fails, the agent started for it is killed and its group removed:
        nothing of the spawn is left."""
        assert agent.group is not None
        state, ledger = self._store.state, self._store.ledger
        try:
            with self._store.unit_of_work():
                state.insert_agent(agent_row(agent))
                if agent.manifest is not None:
                    state.save_manifest(agent.id, agent.manifest.to_json())
                if agent.model is not None and request.model is not None:
                    path = os.path.abspath(request.model)
                    state.save_bounty(agent.id, path, agent.model.sha256, agent.bounty)
                agent.bid_seq = state.place_bid(agent.id, agent.bid, agent.demand, at)
                entries = self._spawn_entries(agent, request, agent.group.path)
                ledger.submit_many(entries, at=at)
        except BaseException:
            with contextlib.suppress(KeyError):  # not metered: nothing to undo
                self._meter.discard(agent.id)
            with logged(log, f"agent {agent.id}: cannot kill it", MaxwellError,
                        level=logging.WARNING):  # fmt: skip
                self._supervisor.kill(agent.group, agent.popen)
            self._supervisor.finish(agent.group, agent.popen)
            raise

    def _spawn_entries(
        self, agent: AgentRecord, request: SpawnRequest, cgroup: str
    ) -> list[EntryRequest]:
        """The ledger entries of a spawn: its accounts, its funding, the `spawned` event."""
        requests = [open_request(agent_account(agent.id)), open_request(stake_account(agent.id))]
        fund = request.fund
        if request.transfer is not None:  # the job's funds, from the node that sent them
            requests += received(request.transfer, agent.id)
        elif fund > 0:
            requests.append(funding_request(agent.id, fund, payer=request.payer))
        detail = {
            "agent": agent.id,
            "name": agent.name,
            "argv": list(agent.argv),
            "pid": agent.pid,
            "user": agent.user,
            "bid": agent.bid,
            "demand": agent.demand,
            "fund": int(fund),
            "cgroup": cgroup,
        }
        requests.append(event_request(f"spawned:{agent.id}", "spawned", detail))
        return requests

    def _start(self, agent: AgentRecord, token: str, payload: bytes | None) -> AgentProcess:
        """Start the agent's command in its group, with its own environment and log. Its token
        is a file of its own in its directory, named in its environment: a token in the
        environment would leak to every child it starts and every crash report it writes. So
        is the spawn's payload (`maxwell.node.results`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAXWELL_")}
        directory, uid = work_dir(self._paths, agent), agent_uid(agent)
        replace_agent_file(directory, AGENT_TOKEN_FILE, token.encode(), uid=uid)
        env.update(hand_over(directory, payload, uid=uid))
        env.update(
            MAXWELL_SOCKET=self._config.socket,
            MAXWELL_AGENT_TOKEN_FILE=str(directory / AGENT_TOKEN_FILE),
            MAXWELL_AGENT=agent.id,
            MAXWELL_AGENT_DIR=str(directory),
        )
        assert agent.group is not None
        if agent.group.kind != "none":  # its own cgroup: the SDK's self-meter reads it
            env[OWN_CGROUP_ENV] = "1"
        self._paths.logs.mkdir(mode=0o700, exist_ok=True)
        return self._supervisor.start(
            agent.group,
            agent.argv,
            user=agent.user,
            env=env,
            log_path=self._paths.agent_log(agent.id),
        )

    def exited(self, agents: AgentRegistry) -> list[AgentRecord]:
        """The live agents among `agents` whose command has ended (those started here reaped:
        `popen.poll()` gives the exit code): those started here as the supervisor finds them
        (`Supervisor.ended`), those adopted from an earlier daemon by their empty (or
        unreadable) group."""
        started: dict[str, AgentProcess] = {}
        adopted: list[AgentRecord] = []
        for agent in agents:
            if agent.state in LIVE and agent.group is not None:
                if agent.popen is not None:
                    started[agent.id] = agent.popen
                else:
                    adopted.append(agent)
        # Reaped processes are not found again: one found ended stays so while its agent is live
        # (a tick that fails after finding it leaves it live, and the retry must find it too).
        ended = set(self._supervisor.ended(started)) if started else set()
        ended |= self._ended & started.keys()
        self._ended = ended
        exited = ended | {agent.id for agent in adopted if self.has_exited(agent)}
        if not exited:  # most ticks
            return []
        return [agent for agent in agents if agent.id in exited]

    def has_exited(self, agent: AgentRecord) -> bool:
        """Whether a live agent's command has ended (its group is empty, or unreadable)."""
        if agent.popen is not None:
            code = agent.popen.poll()
            if code is None:
                return False
            agent.exit_code = code
            return True
        assert agent.group is not None
        try:
            return agent.group.is_empty()
        except CgroupError:
            return True

    def enforce(self, agent: AgentRecord, plan: AgentPlan) -> None:
        """Carry a committed tick's plan out on the agent's group: kill, or write the quota and
        weight that changed, then freeze or thaw. A group that cannot take it is logged."""
        group = agent.group
        if group is None:
            return
        try:
            if plan.enforcement is Enforcement.KILL:
                self.kill_group(agent)
                agent.finished = True
                return
            if plan.quota_cores is not None and plan.quota_cores != agent.last_quota:
                with logged(log, f"agent {agent.id}: no CPU quota", CgroupUnavailableError):
                    group.set_cpu_quota(plan.quota_cores)
                agent.last_quota = plan.quota_cores
            if plan.weight is not None and plan.weight != agent.last_weight:
                with logged(log, f"agent {agent.id}: no CPU weight", CgroupUnavailableError):
                    group.set_cpu_weight(plan.weight)
                agent.last_weight = plan.weight
            if plan.enforcement is Enforcement.FREEZE:
                self._supervisor.freeze(group, True)
            elif plan.enforcement is Enforcement.THAW:
                self._supervisor.freeze(group, False)
        except MaxwellError as exc:
            log.warning("agent %s: cannot enforce its plan: %s", agent.id, exc, exc_info=True)

    def kill_group(self, agent: AgentRecord) -> None:
        if agent.group is not None:
            code = self._supervisor.kill(agent.group, agent.popen)
            if code is not None:
                agent.exit_code = code

    def kill(self, agent: AgentRecord) -> None:
        """Kill a live agent on request: its processes, then its state and the `killed` event
        in one unit of work (its last interval is billed by the next tick)."""
        at = self._wall()
        if agent.group is not None:
            try:
                self.kill_group(agent)
            except MaxwellError as exc:
                raise NodeError(f"cannot kill agent {agent.id}: {exc}") from exc
        agent.state, agent.ended_at, agent.finished = AgentState.DEAD, at, True
        reason = {"agent": agent.id, "reason": "killed on request"}
        with self._store.unit_of_work():  # its state and the event, together
            self._store.state.update_agent(
                agent.id, state=str(agent.state), ended_at=at, exit_code=agent.exit_code
            )
            self._store.ledger.submit(event_request(f"killed:{agent.id}", "killed", reason), at=at)

    def kill_all(self) -> None:
        """Kill every live agent as the daemon shuts down, with a `killed` event each; the
        caller's last tick then bills their last interval."""
        at = self._wall()
        killed: list[EntryRequest] = []
        for agent in self._agents:
            if agent.state in LIVE and agent.group is not None:
                with logged(log, f"agent {agent.id}: cannot kill it", MaxwellError,
                            level=logging.WARNING):  # fmt: skip
                    self.kill_group(agent)
                agent.state, agent.ended_at, agent.finished = AgentState.DEAD, at, True
                killed.append(
                    event_request(
                        f"killed:{agent.id}",
                        "killed",
                        {"agent": agent.id, "reason": "the daemon shut down"},
                    )
                )
        self._store.ledger.submit_many(killed, at=at)

    def finish(self, agent: AgentRecord) -> None:
        """Stop metering an agent that ended, remove its group, reap its process."""
        with contextlib.suppress(KeyError):
            self._meter.discard(agent.id)
        group, agent.group, agent.counted = agent.group, None, None
        if group is not None:
            code = self._supervisor.finish(group, agent.popen)
            if agent.exit_code is None:
                agent.exit_code = code
        agent.popen = None
        agent.finished = False
        self._store.state.update_agent(agent.id, exit_code=agent.exit_code, state=str(agent.state))

    def finish_all(self) -> None:
        """Finish every agent that still has a group."""
        for agent in self._agents:
            if agent.group is not None:
                self.finish(agent)
