"""The node daemon's core: `NodeDaemon`, the adapter that implements `maxwell.node.facade.Node`.

It wires one tick (ARCHITECTURE.md, "One tick on one node"): sensors and cgroup counters through
the `LiveMeter`, the pure plan (`maxwell.node.tick.plan_tick`: bills, apoptosis, clearing,
enforcement), the ledger (`LedgerStore`, whose journal is also the event log), and the cgroup
writes. It supervises the agents it spawns: each runs in its own group under the daemon's
private directory, with a pids limit and a CPU quota of exactly the cores it was granted.

Threads: one lock (`threading.RLock`) guards everything; the API calls the public methods from
its threads while `run_forever` ticks in another. The ledger and the node tables use
connections shared across threads, which the lock serialises.

Settlement and exactly-once billing (`maxwell.node.policy.settlement`):

- Each tick accrues every agent's bill in memory and decides apoptosis on the accrued balance
  (ledger balance less what it has accrued). The ledger takes an agent's accrual as one `bill`
  entry at most once per `settlement_s` (1 s), at once when an event needs it (funding, a bid,
  a kill, apoptosis, an exit, an audit, a bond, a bounty, shutdown), and never for an agent that
  used nothing. A tick with nothing to write writes nothing.
- A tick that settles commits, in one SQLite transaction, the settled agents' counters (the
  absolute CPU time and bytes freed they are now billed up to), their claims, the state of every
  agent whose state changed, and the ledger entries it plans (`pending`); it then posts those
  entries (idempotency keys `bill:<tick>:<agent>`, `event:<tick>:<agent>:<kind>`) in one ledger
  transaction and clears them. A daemon killed between the commits posts the pending entries
  again on start, or the next tick does after a failed post: applied once.
- A tick that fails before it commits rolls the agents' live views back and keeps the energy the
  meter attributed (its interval is consumed) for the next tick: billed once, never lost.
- After a SIGKILL, what was accrued and not settled is billed again from the kernel's counters,
  which are cumulative: from the counters of the last settlement to the current ones.
- The cgroup tree has a stable name, `maxwell-node-<hash of the state dir>` (never matched by
  `maxwell run`'s stale sweep, which only touches `maxwell-<pid>...`), so a restarted daemon finds
  its agents' groups, rebuilds them from the directories recorded at spawn, and re-adopts them
  (same pids). The interval it was down is billed once, as its first tick: from each agent's
  recorded counters to their current values. The node's energy over that interval was not
  observed, so the agent's energy is modelled from its CPU time at the active watts per busy core
  of the power model (labelled `modelled` in the `adopted` event).
- Shutdown: `shutdown()` (what SIGTERM leads to) stops ticking and leaves the agents running in
  their groups, frozen or not, for the next daemon to re-adopt; `shutdown(kill_agents=True)`
  bills a last tick, kills every agent and removes the whole tree.

Agents started under `user` drop privileges with `setpriv` (util-linux), which execs the command
in place: the pid the daemon records is the agent's own.

Trust, then verify (`billing="optimistic"`): an agent that reports its consumption (`report`) and
can post a Becker bond (`maxwell.audit.policy`) is billed by its claims; the meter keeps running,
and what the claims under-bill accumulates until an audit. Each tick each bonded agent is audited
with `audit_probability` (the OS's randomness): its claims against the counters read when it made
them, and its threads' instruction pointers against the code it declared at spawn (ptrace,
`maxwell.audit`). A liar's bond goes to the slashing pool and the under-billing is clawed back,
in the tick's own ledger batch. Agents spawned with a bounty are paid from the treasury for each
valid proof of inference of the user's model (`submit_proof`, checked with `maxwell.proof`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import pwd
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maxwell.audit.ipsample import AlreadyTracedError, check, module_histogram, sample_threads
from maxwell.audit.manifest import CodeManifest, ManifestError
from maxwell.audit.policy import (
    Usage,
    draw_audits,
    judge,
)
from maxwell.cgroups import CgroupManager, WorkloadGroup
from maxwell.cgroups.base import GroupStats
from maxwell.clock import Clock, SystemClock
from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    TREASURY,
    EntryRequest,
    LedgerError,
    Movement,
    agent_account,
    batch_request,
    event_request,
    open_request,
    stake_account,
    transfer_request,
)
from maxwell.economy.mechanisms import Mechanism, make_mechanism
from maxwell.economy.orderbook import (
    BookError,
    InvalidBidError,
    OrderBook,
    check_demand,
    check_price,
)
from maxwell.economy.price import ConstantPrice, GridPrice, SpotPrice, ThermalPriceController
from maxwell.economy.store import LedgerStore
from maxwell.errors import CgroupError, CgroupUnavailableError, MaxwellError
from maxwell.meter import LiveMeter
from maxwell.meter.live import NodeSampler
from maxwell.node import tick as ticks
from maxwell.node.config import NodeConfig
from maxwell.node.facade import (
    MAX_REPORTED_COUNT,
    MAX_REPORTED_CPU_S,
    NO_MONEY,
    AgentGoneError,
    AgentInfo,
    AgentState,
    AuditResult,
    Event,
    NodeError,
    NodeStatus,
    PriceInfo,
    Principal,
    ProofResult,
    Report,
    Role,
    SpawnResult,
    UnknownAgentError,
)
from maxwell.node.paths import StateLock
from maxwell.node.policy.audit import judge_audit
from maxwell.node.policy.journal import journal_totals
from maxwell.node.policy.optimistic import (
    TickPrices,
    bill_claim,
    bond_for,
    gain_per_tick,
    joules_per_cpu_ns,
)
from maxwell.node.policy.recovery import DownInterval, down_interval
from maxwell.node.policy.settlement import Accrual, accrue, due, settlement_entry
from maxwell.node.state import (
    AgentRow,
    ClaimRow,
    PendingEntry,
    ReportRow,
    admin_token,
    hash_token,
    new_token,
)
from maxwell.node.store import NodeStore
from maxwell.node.supervisor import (
    AgentProcess,
    CgroupSupervisor,
    Supervisor,
    as_user,
)
from maxwell.node.tickstats import TickRecorder
from maxwell.procfs import read_cpu_model
from maxwell.proof import DEFAULT_ROUNDS, Model, ProofInputError, VerifierKey, make_key, verify
from maxwell.proof.bundle import read_proof
from maxwell.proof.files import read_model, read_tensor
from maxwell.sensors import NodeSample, Sensors
from maxwell.sensors.model import ModelConfig, resolve
from maxwell.units import Money

EVENT_KINDS = (
    "spawned",
    "adopted",
    "funded",
    "bid",
    "running",
    "throttled",
    "frozen",
    "thawed",
    "insolvent",
    "apoptosis",
    "exited",
    "killed",
    "bonded",
    "unbonded",
    "released",
    "audited",
    "slashed",
    "bounty",
    "rejected",
)
log = logging.getLogger(__name__)
_UNSET = object()  # a row field not yet written by this daemon
_LIVE = (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN)


def _declared_manifest(code: Sequence[str]) -> CodeManifest:
    """The manifest of the code an agent declares: ELF files, and the ELF files found (walking,
    symlinks not followed) in declared directories. A `NodeError` names what is unusable."""
    files: list[str] = []
    for declared in code:
        if not isinstance(declared, str) or not declared:
            raise NodeError("each declared code path must be a non-empty string")
        if os.path.isdir(declared):
            for root, _dirs, names in os.walk(declared):
                files += [p for p in (os.path.join(root, n) for n in sorted(names)) if _is_elf(p)]
        elif os.path.exists(declared):
            files.append(declared)
        else:
            raise NodeError(f"declared code {declared!r} does not exist")
    if not files:
        raise NodeError(f"no ELF file in the declared code {list(code)!r}")
    try:
        return CodeManifest.from_files(files)
    except ManifestError as exc:
        raise NodeError(f"cannot hash the declared code: {exc}") from exc


def _is_elf(path: str) -> bool:
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _inside(directory: Path, name: str) -> Path:
    """`directory/name`, refusing names that leave it or are symbolic links."""
    if not name or "\x00" in name or os.path.isabs(name):
        raise NodeError(f"{name!r}: name a file in the agent's directory, relative to it")
    path = directory / name
    if path.is_symlink():
        raise NodeError(f"{name}: a symbolic link; the node reads only the agent's own files")
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(directory)]) != os.path.realpath(directory):
        raise NodeError(f"{name}: outside the agent's directory")
    return path


def _report_of(row: ReportRow) -> Report:
    return Report(cpu_s=row.cpu_ns / 1e9, memory_freed_bytes=row.freed_bytes, work=row.work)


def active_w_per_core(config: ModelConfig | None = None, procfs_root: str = "/proc") -> float:
    """The power model's active watts per busy core (max - idle per vCPU)."""
    parameters = resolve(
        config or ModelConfig(), cpu_model=read_cpu_model(procfs_root), cpus=os.cpu_count() or 1
    )
    c = parameters.coefficients
    return max(c.max_w_per_vcpu - c.idle_w_per_vcpu, 0.0)


class _CountedGroup:
    """A group as the meter sees it, remembering the counters the meter has accounted up to.

    The meter attributes CPU from `cpu_ns()` readings (and the baseline from the first
    `stats()`), memory freed from `stats()`; these are the absolute values billing has reached.
    """

    def __init__(self, group: WorkloadGroup) -> None:
        self.group = group
        self.cpu_ns_seen: int | None = None
        self.freed_seen = 0

    def cpu_ns(self) -> int:
        value = self.group.cpu_ns()
        if self.cpu_ns_seen is None or value > self.cpu_ns_seen:
            self.cpu_ns_seen = value
        return value

    def stats(self) -> GroupStats:
        stats = self.group.stats()
        if self.cpu_ns_seen is None:
            self.cpu_ns_seen = stats.cpu_ns  # the baseline; later stats() CPU is not attributed
        self.freed_seen = max(self.freed_seen, stats.memory_freed_bytes)
        return stats


@dataclass(frozen=True)
class _CodeAudit:
    """What the instruction-pointer part of an audit found."""

    checked: bool = False  # against a declared manifest
    findings: tuple[str, ...] = ()
    modules: Mapping[str, float] = field(default_factory=dict)
    samples: int = 0
    pause_us: float | None = None
    note: str | None = None  # why nothing was checked


@dataclass(frozen=True)
class _Now:
    """A tick's one reading of the clocks: wall time for what is recorded (journal, rows),
    monotonic time for intervals (billing, price, settlement)."""

    wall: float
    mono: float


@dataclass
class _Agent:
    """The daemon's live view of one agent (the row is its durable part)."""

    id: str
    name: str
    argv: tuple[str, ...]
    user: str | None
    token_hash: str
    created_at: float
    cgroup: Mapping[str, object]
    state: AgentState
    bid: float
    demand: float
    bid_seq: int
    pid: int | None
    group: WorkloadGroup | None = None
    counted: _CountedGroup | None = None
    popen: AgentProcess | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    energy_uj: int = 0
    cpu_ns: int = 0  # absolute group counter billed up to
    freed_bytes: int = 0  # absolute group counter billed up to
    freed_metered: int = 0  # the meter's running total, to take per-tick deltas
    cores: float = 0.0
    power_w: float = 0.0
    burn_per_s: float = 0.0
    insolvent_since: float | None = None
    paid: int = 0
    landauer: int = 0
    last_quota: float | None = None
    last_weight: int | None = None
    finished: bool = False  # ended: bill its last interval at the next tick, then remove its group
    # Settlement (`maxwell.node.policy.settlement`): bills accrued since the ledger last took
    # them, when that was (wall time), whether an event wants the next tick to settle it, and the
    # row fields last written (a tick writes only what changed).
    accrual: Accrual = field(default_factory=Accrual)
    settled_at: float = 0.0  # monotonic
    settle_next: bool = False
    written: dict[str, object] = field(default_factory=dict)
    reported: ReportRow | None = None  # its latest self-report
    # Optimistic billing (see the module comment): the bond posted in stake:<id>, the claim billed
    # up to, what the reports under-billed against the meter since the last audit (µ$J).
    bond: int = 0
    claim_billed: Usage | None = None
    shadow: int = 0
    audits: int = 0
    slashed: int = 0
    unbonded_said: bool = False
    manifest: CodeManifest | None = None  # the code it declared at spawn, if any
    # Proofs of inference: the model the user pays `bounty` µ$J per valid proof for, and the
    # verifier's secret for it (never leaves the daemon).
    bounty: int = 0
    model: Model | None = None
    model_key: VerifierKey | None = None
    proofs: int = 0
    bounties: int = 0


def _requests(entries: Sequence[PendingEntry]) -> list[EntryRequest]:
    """The ledger requests of planned entries: batches where money moves, events elsewhere."""
    requests: list[EntryRequest] = []
    for entry in entries:
        if entry.movements:
            movements = [Movement(d, c, a) for d, c, a in entry.movements]
            requests.append(
                batch_request(entry.key, movements, kind=entry.kind, detail=entry.detail)
            )
        else:
            requests.append(event_request(entry.key, entry.kind, entry.detail))
    return requests


def _agent_from_row(row: AgentRow, paid: Mapping[tuple[str, str], int], bond: int) -> _Agent:
    """An agent as its row and the journal's totals (`journal_totals`) left it."""
    return _Agent(
        id=row.id, name=row.name, argv=row.argv, user=row.user,
        token_hash=row.token_hash, created_at=row.created_at, cgroup=row.cgroup,
        state=AgentState(row.state), bid=row.bid, demand=row.demand,
        bid_seq=row.bid_seq, pid=row.pid, exit_code=row.exit_code,
        ended_at=row.ended_at, energy_uj=row.energy_uj, cpu_ns=row.cpu_ns,
        freed_bytes=row.freed_bytes, cores=row.cores, burn_per_s=row.burn_per_s,
        insolvent_since=row.insolvent_since,
        paid=paid.get((row.id, "grid"), 0), landauer=paid.get((row.id, "landauer"), 0),
        bond=bond,
        audits=paid.get((row.id, "audits"), 0),
        slashed=paid.get((row.id, "slashed"), 0),
        proofs=paid.get((row.id, "proofs"), 0),
        bounties=paid.get((row.id, "bounty"), 0),
    )  # fmt: skip


def _plan_entries(tick: int, plan: ticks.TickPlan) -> list[PendingEntry]:
    """The ledger entries a tick's plan posts: its bills, then its events."""
    entries = [
        PendingEntry(
            post.key,
            tick,
            post.kind,
            tuple((m.debit, m.credit, m.amount) for m in post.movements),
            post.detail,
        )
        for post in plan.posts
    ]
    entries += [PendingEntry(e.key, tick, e.kind, (), e.detail) for e in plan.events]
    return entries


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


class NodeDaemon:
    """Runs agents as real processes in cgroups and clears the market every tick (see module)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        sensors: NodeSampler | None = None,
        cgroups: CgroupManager | None = None,
        supervisor: Supervisor | None = None,
        grid: GridPrice | None = None,
        audit_rng: random.Random | None = None,
    ) -> None:
        """Lock the state directory first (one daemon per directory: a refused start touches
        nothing else), then open the store, the sensors and the cgroups, and recover."""
        self.config = config
        self.paths = config.paths
        try:
            self.paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(f"--state {self.paths.root}: {exc.strerror}") from exc
        self._state_lock = StateLock.acquire(self.paths)
        self._closed = True  # until everything below is open
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._supervisor: Supervisor | None = supervisor
        if supervisor is None and cgroups is not None:
            self._supervisor = CgroupSupervisor(cgroups, self._clock, None)
        try:
            self._setup(wall, sensors, grid, audit_rng)
        except BaseException as exc:
            if self._supervisor is not None:
                # Removes what it made; a tree holding re-adoptable agents stays (rmdir refuses).
                self._supervisor.close(failure=exc)
            self._close_parts()
            raise
        self._closed = False

    def _setup(
        self,
        wall: Callable[[], float],
        sensors: NodeSampler | None,
        grid: GridPrice | None,
        audit_rng: random.Random | None,
    ) -> None:
        config = self.config
        # Unpredictable to agents: the operating system's randomness, unless a test seeds one.
        self._audit_rng = audit_rng if audit_rng is not None else random.SystemRandom()
        # The proof verifier's secret vectors: from the OS, drawn after each proof is committed.
        self._proof_rng = np.random.default_rng(secrets.randbits(128))
        self._lock = threading.RLock()
        self._mechanism: Mechanism | None = (
            None if config.mechanism == "uniform" else make_mechanism(config.mechanism)
        )
        self._wall = wall
        self.capacity_cores = float(config.capacity_cores or os.cpu_count() or 1)
        self.sold_cores = self.capacity_cores  # this tick's capacity: fewer cores when hot
        self._owns_sensors = sensors is None
        self._sensors: NodeSampler | None = sensors
        self._store = NodeStore.open(self.paths.root, wall)
        self._ledger, self._state = self._store.ledger, self._store.state
        self._admin_token = admin_token(self.paths.root)
        self._open_meter(wall, grid)
        if self._supervisor is None:
            self._supervisor = CgroupSupervisor.open(config.cgroup, self.paths.root, self._clock)
        self.degraded = self._supervisor.degraded
        if self.degraded:
            log.info("degraded: %s", self.degraded)
        self._agents: dict[str, _Agent] = {}
        # The standing order book: one bid per live agent that has a group, numbered by its
        # `bid_seq` (its arrival). A bid places it (`bid`); the tick adds agents it lacks (spawned,
        # recovered) and cancels the dead and exited. Insolvent agents keep their place: the tick
        # skips them. The pure tick reads it (and rebuilds if it ever disagrees with the bids).
        self._book = OrderBook()
        self._by_token: dict[str, str] = {}
        self._tick, _ = self._state.last_tick()
        self.last_tick_duration_s = 0.0
        self._tick_stats = TickRecorder()
        # The meter's energy of the tick in flight, and what failed ticks metered and did not
        # bill (µJ per agent): the next tick bills it (see `_roll_back`).
        self._metered: dict[str, int] = {}
        self._unbilled: dict[str, int] = {}
        self._claims_stored: set[str] = set()  # agents with a row in the claims table
        self._recover()

    @property
    def _supervised(self) -> Supervisor:
        assert self._supervisor is not None, "the supervisor is made in __init__"
        return self._supervisor

    def _open_meter(self, wall: Callable[[], float], grid: GridPrice | None) -> None:
        """The sensors (detected unless given), the meter over them, and the spot price."""
        config = self.config
        if self._sensors is None:
            self._sensors = Sensors.detect(clock=self._clock, model_config=config.model)
        self._active_w_per_core = (
            config.active_w_per_core
            if config.active_w_per_core is not None
            else active_w_per_core(config.model)
        )
        self._meter = LiveMeter(self._sensors, memory_interval_s=config.memory_interval_s)
        first = self._meter.node
        self._spot = SpotPrice(
            grid if grid is not None else ConstantPrice(1.0),
            ThermalPriceController(setpoint_c=first.critical_c - 15.0),
        )
        self._quote = self._spot.spot(wall(), first.temperature_c, 0.0)
        self._last_mono = self._clock.monotonic()

    # --- recovery -------------------------------------------------------------------------------

    def _flush_outbox(self) -> None:
        """Post what a daemon of release 0.1.0 committed to its `pending` outbox and had not
        posted when it died (same keys, same content: applied once). This release writes a
        tick's rows and entries in one transaction and leaves the outbox empty."""
        left = self._state.pending()
        if left:
            with self._store.unit_of_work():
                self._ledger.submit_many(_requests(left), at=self._wall())
                self._state.clear_pending([entry.key for entry in left])

    def _recover(self) -> None:
        """Post what a killed daemon left pending, reload the agents, re-adopt the live ones and
        bill the interval the daemon was down (one tick)."""
        at = self._wall()
        self._flush_outbox()
        down: dict[str, DownInterval] = {}
        ended: list[_Agent] = []
        for agent in self._load_agents():
            self._agents[agent.id] = agent
            self._by_token[agent.token_hash] = agent.id
            was_live = agent.state in _LIVE
            interval = self._readopt(agent, at)
            if interval is not None:
                down[agent.id] = interval
            elif was_live:  # its group is gone: it ended while the daemon was down
                ended.append(agent)
        if down or ended:
            self._bill_down_interval(down, ended)

    def _load_agents(self) -> list[_Agent]:
        """Every agent of the node's tables, with what the journal and the ledger say of it."""
        paid = journal_totals(self._ledger.entries())
        reports, claims = self._state.reports(), self._state.claims()
        manifests, bounties = self._state.manifests(), self._state.bounties()
        balances = self._ledger.balances()
        agents = []
        for row in self._state.agents():
            agent = _agent_from_row(row, paid, balances.get(stake_account(row.id), 0))
            agent.reported = reports.get(row.id)
            claim = claims.get(row.id)
            if agent.bond and claim is not None:  # billed by its claims up to here
                agent.claim_billed = Usage(claim.cpu_ns, claim.freed_bytes)
                agent.shadow = claim.shadow
                self._claims_stored.add(row.id)
            if row.id in bounties and agent.state in _LIVE:
                self._restore_bounty(agent, *bounties[row.id])
            if row.id in manifests:
                try:
                    agent.manifest = CodeManifest.from_json(manifests[row.id])
                except ManifestError:
                    log.warning("agent %s: its code manifest is unreadable", row.id, exc_info=True)
            agents.append(agent)
        return agents

    def _restore_bounty(self, agent: _Agent, path: str, digest: str, amount: int) -> None:
        try:
            agent.model, agent.model_key = self._load_model(path)
            if agent.model.sha256 != digest:
                raise NodeError(f"{path} changed since the agent was spawned")
            agent.bounty = amount
        except NodeError as exc:
            agent.model = agent.model_key = None
            log.warning("agent %s: no more bounties: %s", agent.id, exc, exc_info=True)

    def _readopt(self, agent: _Agent, at: float) -> DownInterval | None:
        """Take a live agent back into its group, metered again; what it used while the daemon
        was down. An agent whose group is gone has ended (`EXITED` at `at`), and one that ended
        before the crash only loses its leftover group."""
        group = self._supervised.rebuild(agent.id, agent.cgroup)
        if agent.state not in _LIVE:
            if group is not None:  # ended just before a crash, its group not yet removed
                try:
                    group.remove()
                except MaxwellError:
                    log.warning("agent %s: cannot remove its group", agent.id, exc_info=True)
            return None
        if group is None:
            # Its group is gone (removed by hand, or a reboot): nothing left to bill or run.
            agent.state, agent.ended_at = AgentState.EXITED, at
            self._state.update_agent(agent.id, state=str(agent.state), ended_at=at)
            return None
        agent.group, agent.counted = group, _CountedGroup(group)
        self._meter.add(agent.id, agent.counted)
        agent.freed_metered = self._meter.usage(agent.id).memory_freed_bytes
        if group.is_empty():
            agent.state, agent.ended_at, agent.finished = AgentState.EXITED, at, True
        return down_interval(
            billed_cpu_ns=agent.cpu_ns,
            billed_freed_bytes=agent.freed_bytes,
            now_cpu_ns=agent.counted.cpu_ns_seen or 0,
            now_freed_bytes=agent.counted.freed_seen,
            active_w_per_core=self._active_w_per_core,
        )

    def _bill_down_interval(self, down: Mapping[str, DownInterval], ended: list[_Agent]) -> None:
        """The restarted daemon's first tick: the interval it was down, with an `adopted` event
        per live agent and an `exited` one per agent that ended meanwhile."""
        tick = self._tick + 1
        events: list[PendingEntry] = []
        for agent_id, interval in sorted(down.items()):
            agent = self._agents[agent_id]
            detail = {
                "agent": agent_id,
                "pid": agent.pid,
                "cpu_ns": interval.cpu_ns,
                "bytes_freed": interval.bytes_freed,
                "energy_uj": interval.energy_uj,
                "energy_source": "modelled from CPU time while the daemon was down",
                "alive": not agent.finished,
            }
            key = ticks.event_key(tick, agent_id, "adopted")
            events.append(PendingEntry(key, tick, "adopted", (), detail))
        for agent in [*ended, *(a for a in self._agents.values() if a.finished)]:
            events.append(
                self._exited_event(tick, agent, "its process ended while the daemon was down")
            )
        energies = {agent: interval.energy_uj for agent, interval in down.items()}
        freed_by = {agent: interval.bytes_freed for agent, interval in down.items()}
        self._run_tick(
            energies, freed_by, self._now(), extra_events=events, interval_s=0.0, force_all=True
        )

    def _exited_event(self, tick: int, agent: _Agent, reason: str) -> PendingEntry:
        return PendingEntry(
            key=ticks.event_key(tick, agent.id, "exited"),
            tick=tick,
            kind="exited",
            movements=(),
            detail={"agent": agent.id, "exit_code": agent.exit_code, "reason": reason},
        )

    # --- the tick -------------------------------------------------------------------------------

    def tick_once(self, *, settle_all: bool = False) -> None:
        """Meter, bill, decide, clear and enforce: one tick (see the module comment). A failure
        is counted (`status().tick_stats`) and raised; the next tick retries. `settle_all`
        settles every agent's accrued bills whatever the settlement interval."""
        with self._lock:
            if self._closed:
                return
            started = self._clock.monotonic()
            committed, views = self._tick, {a.id: copy.copy(a) for a in self._agents.values()}
            try:
                self._tick_now(settle_all)
            except Exception as exc:
                self._tick_stats.record_failure(exc, self._wall())
                if self._tick == committed:
                    self._roll_back(views)
                raise
            self.last_tick_duration_s = self._clock.monotonic() - started
            self._tick_stats.record_tick(self.last_tick_duration_s)

    def _roll_back(self, views: Mapping[str, _Agent]) -> None:
        """A tick failed before it committed: the agents' live views go back to what they were,
        and the energy the meter attributed (read once: its interval is consumed) waits for the
        next tick, which bills it with its own. Nothing is billed twice, nothing never."""
        for agent_id, view in views.items():
            vars(self._agents[agent_id]).update(vars(view))
        for agent_id, energy in self._metered.items():
            self._unbilled[agent_id] = self._unbilled.get(agent_id, 0) + energy
        self._metered = {}

    def _tick_now(self, settle_all: bool = False) -> None:
        """Read the meter and the exits, then run the tick on what was read."""
        self._metered = dict(self._meter.tick())
        energies = dict(self._metered)
        for agent_id, energy in self._unbilled.items():  # metered by a tick that failed
            energies[agent_id] = energies.get(agent_id, 0) + energy
        freed: dict[str, int] = {}
        for agent in self._agents.values():
            if agent.counted is None or agent.id not in energies:
                continue
            usage = self._meter.usage(agent.id)
            freed[agent.id] = max(usage.memory_freed_bytes - agent.freed_metered, 0)
            agent.freed_metered = usage.memory_freed_bytes
            agent.power_w = usage.power_w
        tick = self._tick + 1
        events: list[PendingEntry] = []
        now = self._now()  # the tick's one "now"
        for agent in self._agents.values():
            if agent.state in _LIVE and agent.group is not None and self._has_exited(agent):
                agent.state, agent.ended_at, agent.finished = AgentState.EXITED, now.wall, True
                events.append(self._exited_event(tick, agent, "its command ended"))
        self._run_tick(
            energies,
            freed,
            now,
            extra_events=events,
            interval_s=max(now.mono - self._last_mono, 0.0),
            optimistic=self.config.billing == "optimistic",
            force_all=settle_all,
        )

    def _now(self) -> _Now:
        return _Now(wall=self._wall(), mono=self._clock.monotonic())

    def _has_exited(self, agent: _Agent) -> bool:
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

    def _run_tick(
        self,
        energies: Mapping[str, int],
        freed: Mapping[str, int],
        now: _Now,
        *,
        extra_events: Sequence[PendingEntry],
        interval_s: float,
        optimistic: bool = False,
        force_all: bool = False,
    ) -> None:
        """Plan the tick on what was metered, accrue its bills, settle what is due, commit,
        post, enforce. `force_all` settles every agent (recovery, shutdown)."""
        tick, at = self._tick + 1, now.wall
        sample = self._meter.node
        elapsed_s = max(now.mono - self._last_mono, 0.0)
        self._quote = self._spot.spot(at, sample.temperature_c, elapsed_s)
        balances = self._available(self._ledger.balances())
        stakes = self._stakes(tick, balances, optimistic)
        # What the bills are made of: the meter's figures, or the claims of agents with a bond.
        billed_energy, billed_freed = energies, freed
        if optimistic:
            billed_energy, billed_freed = self._claimed(energies, freed, sample.temperature_c)
        self.sold_cores = ticks.thermal_capacity(
            self.capacity_cores, sample.headroom_c,
            derate_below_c=self.config.derate_below_c, floor=self.config.min_capacity_fraction,
        )  # fmt: skip
        inputs = self._tick_inputs(energies, billed_energy, billed_freed, balances)
        tick_input = ticks.TickInput(
            tick=tick,
            now_s=at,
            interval_s=interval_s,
            tick_s=self.config.tick_s,
            spot_price=self._quote.spot,
            temperature_c=sample.temperature_c,
            capacity_cores=self.sold_cores,
            landauer_multiplier=self.config.landauer_multiplier,
            grace_s=self.config.grace_s,
            agents=inputs,
        )
        plan = ticks.plan_tick(tick_input, mechanism=self._mechanism, book=self._book)
        audits: list[PendingEntry] = []
        if optimistic and self.config.audit_probability > 0:
            audits = self._sampled_audits(tick, plan)
        events = [PendingEntry(e.key, tick, e.kind, (), e.detail) for e in plan.events]
        forced = {e.detail.get("agent") for e in (*stakes, *events, *extra_events, *audits)}
        self._apply_plan(plan, energies, at)
        settled = self._settle(tick, now.mono, plan, forced, force_all)
        # Bonds and releases first (the bills were capped without the bonds), then the
        # settlements, the events, and the audits (their claw-backs read settled balances).
        pending = [*stakes, *settled, *events, *extra_events, *audits]
        settled_ids = {str(entry.detail["agent"]) for entry in settled}
        self._commit(tick, now, self._row_updates(plan, settled_ids), pending, settled_ids)
        # Committed: carry the plan out on the cgroups.
        for agent_id, agent_plan in plan.agents.items():
            self._enforce(self._agents[agent_id], agent_plan)
        for agent in self._agents.values():
            if agent.finished and agent.group is not None:
                self._finish(agent)

    def _tick_inputs(
        self,
        energies: Mapping[str, int],
        billed_energy: Mapping[str, int],
        billed_freed: Mapping[str, int],
        balances: Mapping[str, Money],
    ) -> list[ticks.AgentTickInput]:
        """Each agent the tick decides about, with the book brought up to date: live agents with
        a group stand in it, the others leave it."""
        inputs: list[ticks.AgentTickInput] = []
        book = self._book
        for agent in self._agents.values():
            live = agent.state in _LIVE
            if live and agent.group is not None:
                if agent.id not in book:
                    self._place(agent)
            elif agent.id in book:
                book.cancel(agent.id)
            if (agent.id not in energies and not live) or (live and agent.group is None):
                continue
            inputs.append(
                ticks.AgentTickInput(
                    agent=agent.id,
                    state=agent.state,
                    balance=balances.get(agent_account(agent.id), Money(0)),
                    bid=agent.bid,
                    demand=agent.demand,
                    energy_uj=billed_energy.get(agent.id, 0),
                    bytes_freed=billed_freed.get(agent.id, 0),
                    burn_per_s=agent.burn_per_s,
                    insolvent_since_s=agent.insolvent_since,
                    bid_seq=agent.bid_seq,
                )
            )
        return inputs

    def _available(self, balances: Mapping[str, Money]) -> dict[str, Money]:
        """The ledger's balances less what each agent has accrued and not yet settled."""
        available = dict(balances)
        for agent in self._agents.values():
            if agent.accrual.owed:
                account = agent_account(agent.id)
                available[account] = Money(available.get(account, 0) - agent.accrual.owed)
        return available

    def _settle(
        self,
        tick: int,
        mono: float,
        plan: ticks.TickPlan,
        forced: Set[object],
        force_all: bool,
    ) -> list[PendingEntry]:
        """Accrue the tick's bills; the entries that settle the agents that are due."""
        for post in plan.posts:
            agent = self._agents[str(post.detail["agent"])]
            paid = (
                sum(m.amount for m in post.movements if m.credit == GRID),
                sum(m.amount for m in post.movements if m.credit == LANDAUER),
            )
            agent.accrual = accrue(agent.accrual, tick, dict(post.detail), paid)
        entries: list[PendingEntry] = []
        for agent in self._agents.values():
            must = force_all or agent.settle_next or agent.id in forced or agent.finished
            if not due(
                agent.accrual,
                now_s=mono,
                settled_at_s=agent.settled_at,
                interval_s=self.config.settlement_s,
                forced=must or agent.state not in _LIVE,
            ):
                continue
            key, movements, detail = settlement_entry(agent.id, agent.accrual, tick)
            moves = tuple((m.debit, m.credit, m.amount) for m in movements)
            entries.append(PendingEntry(key, tick, "bill", moves, detail))
            agent.accrual, agent.settled_at, agent.settle_next = Accrual(), mono, False
        return entries

    def _apply_plan(self, plan: ticks.TickPlan, energies: Mapping[str, int], at: float) -> None:
        """Update each planned agent's live view."""
        for agent_id, agent_plan in plan.agents.items():
            agent = self._agents[agent_id]
            agent.energy_uj += energies.get(agent_id, 0)
            if agent.counted is not None and agent.counted.cpu_ns_seen is not None:
                agent.cpu_ns = agent.counted.cpu_ns_seen
                agent.freed_bytes = max(agent.freed_bytes, agent.counted.freed_seen)
            agent.paid += agent_plan.paid_energy
            agent.landauer += agent_plan.paid_landauer
            agent.burn_per_s = agent_plan.burn_per_s
            agent.insolvent_since = agent_plan.insolvent_since_s
            agent.cores = agent_plan.cores
            if agent_plan.state is AgentState.DEAD and agent.state is not AgentState.DEAD:
                agent.ended_at = at
            agent.state = agent_plan.state

    def _row_updates(self, plan: ticks.TickPlan, settled: Set[str]) -> dict[str, dict[str, object]]:
        """The row fields to write: an agent's state when it changed; its counters (billed up to)
        and figures only with its settlement, so that a restart bills from them exactly once."""
        updates: dict[str, dict[str, object]] = {}
        for agent_id in plan.agents:
            agent = self._agents[agent_id]
            fields: dict[str, object] = {
                "state": str(agent.state),
                "insolvent_since": agent.insolvent_since,
                "exit_code": agent.exit_code,
                "ended_at": agent.ended_at,
            }
            if agent_id in settled:
                fields.update(
                    energy_uj=agent.energy_uj, cpu_ns=agent.cpu_ns,
                    freed_bytes=agent.freed_bytes, cores=agent.cores, power_w=agent.power_w,
                    burn_per_s=agent.burn_per_s,
                )  # fmt: skip
            changed = {k: v for k, v in fields.items() if agent.written.get(k, _UNSET) != v}
            if changed:
                updates[agent_id] = changed
                agent.written = {**agent.written, **changed}  # a new dict: a rollback keeps the old
        return updates

    def _commit(
        self,
        tick: int,
        now: _Now,
        updates: Mapping[str, Mapping[str, object]],
        pending: Sequence[PendingEntry],
        settled: Set[str],
    ) -> None:
        """Commit the tick's rows, the claims of the agents it settled and its ledger entries,
        in one transaction (all or none); a tick with nothing to write writes nothing."""
        claims: dict[str, ClaimRow | None] = {}
        for agent in self._agents.values():
            if agent.claim_billed is not None and agent.id in settled:
                billed = agent.claim_billed
                claims[agent.id] = ClaimRow(billed.cpu_ns, billed.freed_bytes, agent.shadow)
            elif agent.claim_billed is None and agent.id in self._claims_stored:
                claims[agent.id] = None
        if updates or pending or claims:
            with self._store.unit_of_work():
                self._state.commit_tick(tick, now.wall, updates, (), claims)
                self._ledger.submit_many(_requests(pending), at=now.wall)
        self._claims_stored |= {a for a, claim in claims.items() if claim is not None}
        self._claims_stored -= {a for a, claim in claims.items() if claim is None}
        self._tick = tick
        self._last_mono = now.mono
        self._metered, self._unbilled = {}, {}  # billed by this tick's entries

    # --- optimistic billing and audits ----------------------------------------------------------

    def _stakes(
        self, tick: int, balances: dict[str, Money], optimistic: bool
    ) -> list[PendingEntry]:
        """Release the bonds of agents that ended; in optimistic mode, post the bond of each
        agent that reports and can afford it (`balances` is updated as if posted). The entries."""
        entries: list[PendingEntry] = []
        p = self.config.audit_probability
        for agent in self._agents.values():
            account, stake = agent_account(agent.id), stake_account(agent.id)
            live = agent.state in _LIVE and not agent.finished and agent.group is not None
            if agent.bond and not live:
                entries.append(
                    PendingEntry(
                        ticks.event_key(tick, agent.id, "released"), tick, "released",
                        ((stake, account, agent.bond),),
                        {"agent": agent.id, "bond": agent.bond, "reason": f"it {agent.state}"},
                    )
                )  # fmt: skip
                balances[account] = Money(balances.get(account, 0) + agent.bond)
                agent.bond, agent.claim_billed = 0, None
                continue
            wants = optimistic and live and agent.reported is not None and not agent.bond
            if not wants or agent.slashed or p <= 0:
                continue
            assert agent.reported is not None
            gain = gain_per_tick(
                agent.demand, self._active_w_per_core, self.config.tick_s, self._quote.spot
            )
            bond = bond_for(gain, p)
            balance = balances.get(account, Money(0))
            if balance < bond:
                if not agent.unbonded_said:
                    agent.unbonded_said = True
                    reason = (
                        f"its balance {balance / 1e6:.6g} $J cannot post the bond "
                        f"{bond / 1e6:.6g} $J: billed by the meter"
                    )
                    entries.append(
                        PendingEntry(
                            ticks.event_key(tick, agent.id, "unbonded"), tick, "unbonded", (),
                            {"agent": agent.id, "bond": bond, "reason": reason},
                        )
                    )  # fmt: skip
                continue
            if stake not in self._ledger.accounts():  # an agent spawned by an older daemon
                self._ledger.submit(open_request(stake), at=self._wall())
            entries.append(
                PendingEntry(
                    ticks.event_key(tick, agent.id, "bonded"), tick, "bonded",
                    ((account, stake, bond),),
                    {"agent": agent.id, "bond": bond, "probability": p, "gain_per_tick": gain},
                )
            )  # fmt: skip
            balances[account] = Money(balance - bond)
            agent.bond = bond
            agent.claim_billed = Usage(agent.reported.cpu_ns, agent.reported.freed_bytes)
        return entries

    def _claimed(
        self, energies: Mapping[str, int], freed: Mapping[str, int], temperature_c: float
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The energy and bytes freed to bill, by the claims of bonded agents: their claimed CPU
        time since the last tick at the tick's joules per CPU second (attribution is by CPU time,
        so that rate is every agent's), their claimed bytes freed. What the claims under-bill
        against the meter accumulates in `shadow`, for an audit to claw back."""
        cpu_ns: dict[str, int] = {}
        for agent in self._agents.values():
            counted = agent.counted
            if counted is None or counted.cpu_ns_seen is None or agent.id not in energies:
                continue
            cpu_ns[agent.id] = max(counted.cpu_ns_seen - agent.cpu_ns, 0)
        rate = joules_per_cpu_ns(cpu_ns, energies, self._active_w_per_core)
        prices = TickPrices(self._quote.spot, temperature_c, self.config.landauer_multiplier)
        billed_energy, billed_freed = dict(energies), dict(freed)
        for agent in self._agents.values():
            if not agent.bond or agent.claim_billed is None or agent.reported is None:
                continue
            if agent.id not in energies:
                continue
            claim = Usage(agent.reported.cpu_ns, agent.reported.freed_bytes)
            metered = Usage(cpu_ns.get(agent.id, 0), freed.get(agent.id, 0))
            billed = bill_claim(
                claim, agent.claim_billed, rate, metered, energies[agent.id], prices
            )
            billed_energy[agent.id], billed_freed[agent.id] = billed.energy_uj, billed.bytes_freed
            agent.claim_billed = billed.billed_up_to
            agent.shadow += billed.under_billed
        return billed_energy, billed_freed

    def _sampled_audits(self, tick: int, plan: ticks.TickPlan) -> list[PendingEntry]:
        """Audit each bonded agent with the node's probability (unpredictably); entries to post."""
        candidates = sorted(
            agent.id
            for agent in self._agents.values()
            if agent.bond and agent.state in _LIVE and not agent.finished
        )
        entries: list[PendingEntry] = []
        for agent_id in draw_audits(candidates, self.config.audit_probability, self._audit_rng):
            agent = self._agents[agent_id]
            planned = plan.agents.get(agent_id)
            balance = planned.balance if planned is not None else Money(0)
            key = ticks.event_key(tick, agent_id, "audit")
            _result, entry = self._judge(agent, key, tick, balance, sampled=True)
            entries.append(entry)
        return entries

    def _judge(
        self,
        agent: _Agent,
        key: str,
        tick: int,
        balance: Money,
        *,
        sampled: bool,
    ) -> tuple[AuditResult, PendingEntry]:
        """The verdict on an agent's reports and on where its threads are (its code, where it
        declared it), and the entry that records it: an `audited` event, or a `slashed` entry
        that moves its bond to the slashing pool and claws back what its reports under-billed
        (at most its `balance`)."""
        code = self._sample_code(agent)
        agent.audits += 1
        findings: list[str] = []
        checked: list[str] = []
        reported = agent.reported
        if reported is not None and reported.measured_cpu_ns is not None:
            measured = Usage(reported.measured_cpu_ns, reported.measured_freed_bytes or 0)
            verdict = judge(Usage(reported.cpu_ns, reported.freed_bytes), measured)
            findings += verdict.findings
            checked.append("reports")
        if code.checked:
            checked.append("code")
            findings += code.findings
        detail: dict[str, object] = {
            "agent": agent.id,
            "honest": not findings,
            "audits": agent.audits,
            "probability": self.config.audit_probability,
            "sampled": sampled,
            "checked": checked,
        }
        if code.modules:
            detail["modules"] = dict(code.modules)
        if code.note:
            detail["code"] = code.note
        judgement = judge_audit(
            agent.id, findings, bond=agent.bond, shadow=agent.shadow, balance=balance
        )
        if not judgement.honest:
            detail.update(findings=findings, bond=agent.bond, clawback=judgement.clawback)
            agent.bond, agent.claim_billed = 0, None
            agent.slashed += judgement.slashed
        agent.shadow = 0  # an honest audit forgives what the tolerance allowed; a slash settles it
        kind = "slashed" if findings else "audited"
        result = AuditResult(
            agent=agent.id,
            honest=not findings,
            findings=tuple(findings),
            checked=tuple(checked),
            audits=agent.audits,
            probability=self.config.audit_probability,
            slashed=Money(judgement.slashed),
            modules=dict(code.modules),
            samples=code.samples,
            pause_us=code.pause_us,
        )
        return result, PendingEntry(key, tick, kind, judgement.movements, detail)

    def _sample_code(self, agent: _Agent) -> _CodeAudit:
        """Stop each of the agent's threads for an instant and read where it is (ptrace): the
        per-module histogram, and, against the code it declared, which samples fall outside."""
        if agent.group is None:
            return _CodeAudit(note="no processes to sample")
        pids = sorted(agent.group.pids())
        try:
            samples = sample_threads(pids)
        except AlreadyTracedError as exc:
            if exc.tracer_pid in pids:  # it traces itself: a way to keep auditors out
                finding = f"code: thread {exc.tid} is traced by its own process {exc.tracer_pid}"
                return _CodeAudit(checked=True, findings=(f"{finding}, so it cannot be sampled",))
            return _CodeAudit(note=f"instruction-pointer sampling unavailable: {exc}")
        except (MaxwellError, OSError) as exc:  # not the agent's fault: say why, check nothing
            return _CodeAudit(note=f"instruction-pointer sampling unavailable: {exc}")
        pauses = sorted(sample.pause_ns for sample in samples)
        pause_us = pauses[len(pauses) // 2] / 1000 if pauses else None
        modules = module_histogram(samples)
        if agent.manifest is None:
            return _CodeAudit(
                modules=modules, samples=len(samples), pause_us=pause_us,
                note="no code declared at spawn: where its threads were, not checked",
            )  # fmt: skip
        verdict = check(samples, agent.manifest)
        return _CodeAudit(
            checked=True,
            findings=() if verdict.passed else (f"code: {verdict.describe()}",),
            modules=modules,
            samples=len(samples),
            pause_us=pause_us,
        )

    def _place(self, agent: _Agent) -> None:
        """Make the agent's bid its standing one in the book, at its arrival number."""
        book = self._book
        if agent.id in book:
            book.cancel(agent.id)
        # A bid the book refuses stays out of it: the tick then sees the book disagree with the
        # bids and clears a book rebuilt from them, as it always did.
        with contextlib.suppress(BookError, InvalidBidError):
            book.insert(agent.id, agent.bid, agent.demand, seq=agent.bid_seq)

    def _enforce(self, agent: _Agent, plan: ticks.AgentPlan) -> None:
        group = agent.group
        if group is None:
            return
        try:
            if plan.enforcement is ticks.Enforcement.KILL:
                self._kill_group(agent)
                agent.finished = True
                return
            if plan.quota_cores is not None and plan.quota_cores != agent.last_quota:
                with contextlib.suppress(CgroupUnavailableError):
                    group.set_cpu_quota(plan.quota_cores)
                agent.last_quota = plan.quota_cores
            if plan.weight is not None and plan.weight != agent.last_weight:
                with contextlib.suppress(CgroupUnavailableError):
                    group.set_cpu_weight(plan.weight)
                agent.last_weight = plan.weight
            if plan.enforcement is ticks.Enforcement.FREEZE:
                self._supervised.freeze(group, True)
            elif plan.enforcement is ticks.Enforcement.THAW:
                self._supervised.freeze(group, False)
        except MaxwellError as exc:
            log.warning("agent %s: cannot enforce its plan: %s", agent.id, exc, exc_info=True)

    def _kill_group(self, agent: _Agent) -> None:
        if agent.group is not None:
            code = self._supervised.kill(agent.group, agent.popen)
            if code is not None:
                agent.exit_code = code

    def _finish(self, agent: _Agent) -> None:
        """Stop metering an agent that ended, remove its group, reap its process."""
        with contextlib.suppress(KeyError):
            self._meter.discard(agent.id)
        group, agent.group, agent.counted = agent.group, None, None
        if group is not None:
            code = self._supervised.finish(group, agent.popen)
            if agent.exit_code is None:
                agent.exit_code = code
        agent.popen = None
        agent.finished = False
        self._state.update_agent(agent.id, exit_code=agent.exit_code, state=str(agent.state))

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every `tick_s` until `stop` is set (the caller then calls `shutdown`)."""
        while not stop.is_set():
            started = self._clock.monotonic()
            try:
                self.tick_once()
            except Exception:  # logged and counted; the next tick retries it
                log.exception("tick %d failed", self._tick + 1)
            elapsed = self._clock.monotonic() - started
            stop.wait(max(self.config.tick_s - elapsed, 0.0))

    def shutdown(self, *, kill_agents: bool = False) -> None:
        """Stop. By default a last tick settles every agent and the agents keep running in their
        groups, for a restarted daemon to re-adopt (with none alive, the daemon's cgroup tree is
        removed); with `kill_agents`, a last tick bills them, then they and the tree go."""
        with self._lock:
            if self._closed:
                return
            if not kill_agents:
                self._settle_before_leaving()
            if kill_agents:
                at = self._wall()
                killed: list[EntryRequest] = []
                for agent in self._agents.values():
                    if agent.state in _LIVE and agent.group is not None:
                        with contextlib.suppress(MaxwellError):
                            self._kill_group(agent)
                        agent.state, agent.ended_at, agent.finished = AgentState.DEAD, at, True
                        killed.append(
                            event_request(
                                f"killed:{agent.id}",
                                "killed",
                                {"agent": agent.id, "reason": "the daemon shut down"},
                            )
                        )
                self._ledger.submit_many(killed, at=at)
                self.tick_once(settle_all=True)  # their last interval; removes their groups
                for agent in self._agents.values():
                    if agent.group is not None:
                        self._finish(agent)
                self._supervised.close()
            elif not any(agent.state in _LIVE for agent in self._agents.values()):
                # Nothing left to re-adopt: leave no empty tree behind.
                for agent in self._agents.values():
                    if agent.group is not None:
                        self._finish(agent)
                self._supervised.close()
            self._closed = True
            self._close_parts()

    def _settle_before_leaving(self) -> None:
        """A last tick that settles every agent, so the ledger is exact while no daemon runs. If
        it fails, nothing is lost: a restart bills the interval from the kernel's counters."""
        try:
            self.tick_once(settle_all=True)
        except Exception:
            log.exception("the last settlement failed: the next start bills it from the counters")

    def _close_parts(self) -> None:
        """Close what is open (also after a start that failed half-way), then let the next
        daemon start. Agents and their groups are not touched: `shutdown` decides about them."""
        sensors = getattr(self, "_sensors", None)
        if getattr(self, "_owns_sensors", False) and isinstance(sensors, Sensors):
            sensors.close()
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
        self._state_lock.release()

    # --- the Node protocol -------------------------------------------------------------------

    @property
    def admin_token(self) -> str:
        return self._admin_token

    def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        if secrets.compare_digest(token.encode(), self._admin_token.encode()):
            return Principal(Role.ADMIN)
        with self._lock:
            agent = self._by_token.get(hash_token(token))
        return Principal(Role.AGENT, agent) if agent is not None else None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        fund: Money,
        bid: float,
        demand: float = 1.0,
        name: str | None = None,
        user: str | None = None,
        code: Sequence[str] | None = None,
        bounty: Money = NO_MONEY,
        model: str | None = None,
    ) -> SpawnResult:
        _check_spawn(argv, fund, bounty, model)
        manifest = _declared_manifest(code) if code else None
        inference = self._load_model(model) if model is not None else None
        try:
            bid, demand = check_price(bid), check_demand(demand)
        except InvalidBidError as exc:
            raise NodeError(str(exc)) from exc
        if user is not None:
            as_user(user, argv)  # refuse an unknown user before anything is made
        with self._lock:
            self._check_open()
            agent_id = secrets.token_hex(4)
            while agent_id in self._agents:
                agent_id = secrets.token_hex(4)
            token = new_token()
            at = self._wall()
            group = self._supervised.create(agent_id)
            agent = _Agent(
                id=agent_id, name=name or agent_id, argv=tuple(argv), user=user,
                token_hash=hash_token(token), created_at=at, cgroup=self._supervised.record(group),
                state=AgentState.RUNNING, bid=bid, demand=demand, bid_seq=0, pid=None,
                group=group, counted=_CountedGroup(group), settled_at=self._clock.monotonic(),
            )  # fmt: skip
            if manifest is not None:
                agent.manifest = manifest
            if inference is not None and model is not None:
                agent.model, agent.model_key = inference
                agent.bounty = bounty
            self._launch(agent, token)
            self._record_spawn(agent, fund, model, at)
            self._agents[agent_id] = agent
            self._by_token[agent.token_hash] = agent_id
            assert agent.pid is not None
            return SpawnResult(agent=agent_id, name=agent.name, pid=agent.pid, token=token)

    def _launch(self, agent: _Agent, token: str) -> None:
        """Limit the agent's group and start its command in it; on any failure, undo all."""
        group = agent.group
        assert group is not None and agent.counted is not None
        try:
            if self.config.pids_max is not None:
                with contextlib.suppress(CgroupUnavailableError):
                    group.set_pids_max(self.config.pids_max)
            quota = min(agent.demand, self.capacity_cores)
            with contextlib.suppress(CgroupUnavailableError):
                group.set_cpu_quota(quota)
            agent.last_quota = quota
            self._meter.add(agent.id, agent.counted)  # before it runs: all its CPU is metered
            agent.popen = self._start(agent, token)
        except BaseException:
            with contextlib.suppress(KeyError):
                self._meter.discard(agent.id)
            with contextlib.suppress(MaxwellError):
                group.remove()
            raise
        agent.pid = agent.popen.pid

    def _record_spawn(self, agent: _Agent, fund: int, model: str | None, at: float) -> None:
        """One unit of work: the agent's row, code, bounty and bid, its accounts, funding and
        `spawned` event. If it fails, the agent started for it is killed and its group removed:
        nothing of the spawn is left."""
        assert agent.group is not None
        try:
            with self._store.unit_of_work():
                self._state.insert_agent(self._row(agent))
                if agent.manifest is not None:
                    self._state.save_manifest(agent.id, agent.manifest.to_json())
                if agent.model is not None and model is not None:
                    path = os.path.abspath(model)
                    self._state.save_bounty(agent.id, path, agent.model.sha256, agent.bounty)
                agent.bid_seq = self._state.place_bid(agent.id, agent.bid, agent.demand, at)
                self._ledger.submit_many(self._spawn_entries(agent, fund, agent.group.path), at=at)
        except BaseException:
            with contextlib.suppress(KeyError):
                self._meter.discard(agent.id)
            with contextlib.suppress(MaxwellError):
                self._supervised.kill(agent.group, agent.popen)
            self._supervised.finish(agent.group, agent.popen)
            raise

    def _spawn_entries(self, agent: _Agent, fund: int, cgroup: str) -> list[EntryRequest]:
        """The ledger entries of a spawn: its accounts, its funding, the `spawned` event."""
        requests = [open_request(agent_account(agent.id)), open_request(stake_account(agent.id))]
        if fund > 0:
            requests.append(self._funding(agent.id, fund))
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

    def _start(self, agent: _Agent, token: str) -> AgentProcess:
        """Start the agent's command in its group, with its own environment and log."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAXWELL_")}
        env.update(
            MAXWELL_SOCKET=self.config.socket,
            MAXWELL_AGENT_TOKEN=token,
            MAXWELL_AGENT=agent.id,
            MAXWELL_AGENT_DIR=str(self._work_dir(agent)),
        )
        self.paths.logs.mkdir(mode=0o700, exist_ok=True)
        assert agent.group is not None
        return self._supervised.start(
            agent.group,
            agent.argv,
            user=agent.user,
            env=env,
            log_path=self.paths.agent_log(agent.id),
        )

    def _work_dir(self, agent: _Agent) -> Path:
        """`<state>/work/<id>`: the agent's own directory, where it leaves proofs for the node
        to read (the node reads nothing of an agent's outside it). Made on first use, owned by
        the agent's user."""
        self.paths.work.mkdir(mode=0o711, exist_ok=True)
        directory = self.paths.agent_work(agent.id)
        if not directory.is_dir():
            directory.mkdir(mode=0o700)
            if agent.user is not None:
                entry = pwd.getpwnam(agent.user)
                os.chown(directory, entry.pw_uid, entry.pw_gid)
        return directory

    def _load_model(self, path: str) -> tuple[Model, VerifierKey]:
        """The model a bounty pays for, and the verifier's secret key for it."""
        try:
            model = read_model(Path(path))
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        return model, make_key(model, DEFAULT_ROUNDS, self._proof_rng)

    def submit_proof(self, agent: str, input: str, output: str, proof: str) -> ProofResult:
        """Check a proof of inference the agent left in its directory (`MAXWELL_AGENT_DIR`):
        `input` and `output` are `.npy` tensors, `proof` a bundle (`maxwell infer --proof`),
        all named relative to that directory. A valid proof of the model the user set pays the
        bounty, once per distinct input (the ledger key is the input's digest)."""
        with self._lock:
            self._check_open()
            found = self._live(agent, "submit proofs")
            if found.model is None or found.model_key is None:
                raise NodeError(f"agent {agent} has no bounty: nothing pays for its proofs")
            directory = self._work_dir(found)
            paths = [_inside(directory, name) for name in (input, output, proof)]
            try:
                x = read_tensor(paths[0], "input")
                y = read_tensor(paths[1], "output")
                bundle = read_proof(paths[2])
            except ProofInputError as exc:
                raise NodeError(str(exc).replace(str(directory) + "/", "")) from exc
            key = f"bounty:{agent}:{bundle.input_sha256}"
            if self._ledger.key_used(key):
                raise NodeError("this input's inference was paid for already")
            verdict = verify(found.model, x, y, bundle, rng=self._proof_rng, key=found.model_key)
            at = self._wall()
            if not verdict.valid:
                self._ledger.submit(
                    event_request(
                        f"rejected:{agent}:{secrets.token_hex(8)}",
                        "rejected",
                        {"agent": agent, "reason": verdict.message()},
                    ),
                    at=at,
                )
                return ProofResult(agent, False, verdict.message(), NO_MONEY, found.proofs)
            detail = {
                "agent": agent,
                "bounty": found.bounty,
                "input_sha256": bundle.input_sha256,
                "merkle_root": bundle.merkle_root,
                "layers_checked": verdict.layers_checked,
                "rounds": verdict.rounds,
            }
            try:
                self._ledger.submit(
                    batch_request(
                        key,
                        [Movement(TREASURY, agent_account(agent), found.bounty)],
                        kind="bounty",
                        detail=detail,
                    ),
                    at=at,
                )
            except LedgerError as exc:
                raise NodeError(f"cannot pay the bounty: {exc}") from exc
            found.proofs += 1
            found.settle_next = True
            found.bounties += found.bounty
            return ProofResult(agent, True, verdict.message(), Money(found.bounty), found.proofs)

    def _row(self, agent: _Agent) -> AgentRow:
        return AgentRow(
            id=agent.id, name=agent.name, argv=agent.argv, user=agent.user, pid=agent.pid,
            cgroup=agent.cgroup, token_hash=agent.token_hash, state=str(agent.state),
            bid=agent.bid, demand=agent.demand, bid_seq=agent.bid_seq,
            created_at=agent.created_at,
        )  # fmt: skip

    def _funding(self, agent_id: str, amount: int) -> EntryRequest:
        return transfer_request(
            f"fund:{agent_id}:{secrets.token_hex(8)}",
            TREASURY,
            agent_account(agent_id),
            amount,
            kind="funded",
            detail={"agent": agent_id, "amount": int(amount)},
        )

    def _check_open(self) -> None:
        if self._closed:
            raise NodeError("the node is shutting down")

    def _get(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise UnknownAgentError(f"no agent {agent_id!r}")
        return agent

    def _live(self, agent_id: str, doing: str) -> _Agent:
        agent = self._get(agent_id)
        if agent.state not in _LIVE or agent.finished:
            raise AgentGoneError(f"agent {agent_id} is {agent.state}: cannot {doing}")
        return agent

    def fund(self, agent: str, amount: Money) -> AgentInfo:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise NodeError(f"funding must be a positive integer of µ$J, got {amount!r}")
        with self._lock:
            self._check_open()
            found = self._live(agent, "fund it")
            try:
                self._ledger.submit(self._funding(agent, amount), at=self._wall())
            except LedgerError as exc:
                raise NodeError(str(exc)) from exc
            found.settle_next = True
            return self._info(found)

    def bid(self, agent: str, price: float, demand: float | None = None) -> AgentInfo:
        with self._lock:
            self._check_open()
            found = self._live(agent, "bid")
            try:
                price = check_price(price)
                demand = found.demand if demand is None else check_demand(demand)
            except InvalidBidError as exc:
                raise NodeError(str(exc)) from exc
            at = self._wall()
            with self._store.unit_of_work():  # the standing bid and its event, together
                seq = self._state.place_bid(agent, price, demand, at)
                detail = {"agent": agent, "price": price, "demand": demand}
                self._ledger.submit(event_request(f"bid:{agent}:{seq}", "bid", detail), at=at)
            found.bid_seq, found.bid, found.demand, found.settle_next = seq, price, demand, True
            if found.group is not None:
                self._place(found)
            return self._info(found)

    def report(self, agent: str, report: Report) -> AgentInfo:
        """Record the agent's self-report (cumulative claims since spawn; see `Report`)."""
        cpu_s, freed, work = report.cpu_s, report.memory_freed_bytes, report.work
        if isinstance(cpu_s, bool) or not isinstance(cpu_s, int | float):
            raise NodeError(f"cpu_s must be a number of seconds, got {cpu_s!r}")
        if not math.isfinite(cpu_s) or not 0 <= cpu_s <= MAX_REPORTED_CPU_S:
            raise NodeError(f"cpu_s must be between 0 and {MAX_REPORTED_CPU_S:g}, got {cpu_s!r}")
        for field_name, value in (("memory_freed_bytes", freed), ("work", work)):
            if value is None and field_name == "work":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise NodeError(f"{field_name} must be an integer, got {value!r}")
            if not 0 <= value <= MAX_REPORTED_COUNT:
                raise NodeError(f"{field_name} must be between 0 and 2**62, got {value}")
        with self._lock:
            self._check_open()
            found = self._live(agent, "report")
            measured_cpu: int | None = None
            measured_freed: int | None = None
            if found.group is not None and found.counted is not None:
                try:  # the truth at the instant of the claim, for a later audit
                    measured_cpu = found.group.cpu_ns()
                    measured_freed = found.counted.freed_seen
                except CgroupError:
                    pass  # its group is going away: the claim cannot be checked
            claim = ReportRow(
                agent, self._wall(), round(cpu_s * 1e9), freed, work, measured_cpu, measured_freed
            )
            last = found.reported
            if last is not None:
                pairs: list[tuple[str, float, float]] = [
                    ("cpu_s", last.cpu_ns / 1e9, claim.cpu_ns / 1e9),
                    ("memory_freed_bytes", last.freed_bytes, claim.freed_bytes),
                ]
                if last.work is not None and work is not None:
                    pairs.append(("work", last.work, work))
                fell = [f"{name} fell from {a:g} to {b:g}" for name, a, b in pairs if b < a]
                if fell:
                    raise NodeError(f"reports are cumulative since spawn: {'; '.join(fell)}")
            self._state.save_report(claim)
            found.reported = claim
            return self._info(found)

    def audit(self, agent: str) -> AuditResult:
        """Audit `agent` now: its latest report against the counters read when it was made, and
        (where it has a code manifest) its threads' instruction pointers. A liar is slashed at
        once; the result and the journal entry say why."""
        with self._lock:
            self._check_open()
            found = self._live(agent, "audit it")
            try:  # what it holds once its accrued bills are settled (at the next tick)
                balance = Money(self._ledger.balance(agent_account(agent)) - found.accrual.owed)
            except LedgerError:
                balance = Money(0)
            found.settle_next = True
            key = f"audit:{agent}:{secrets.token_hex(8)}"
            result, entry = self._judge(found, key, self._tick, balance, sampled=False)
            self._ledger.submit_many(_requests([entry]), at=self._wall())
            return result

    def kill(self, agent: str) -> AgentInfo:
        with self._lock:
            self._check_open()
            found = self._live(agent, "kill it")
            at = self._wall()
            if found.group is not None:
                try:
                    self._kill_group(found)
                except MaxwellError as exc:
                    raise NodeError(f"cannot kill agent {agent}: {exc}") from exc
            found.state, found.ended_at, found.finished = AgentState.DEAD, at, True
            reason = {"agent": agent, "reason": "killed on request"}
            with self._store.unit_of_work():  # its state and the event, together
                self._state.update_agent(
                    agent, state=str(found.state), ended_at=at, exit_code=found.exit_code
                )
                self._ledger.submit(event_request(f"killed:{agent}", "killed", reason), at=at)
            return self._info(found)

    def agent(self, agent: str) -> AgentInfo:
        with self._lock:
            return self._info(self._get(agent))

    def agents(self) -> list[AgentInfo]:
        with self._lock:
            return [self._info(agent) for agent in self._agents.values()]

    def _info(self, agent: _Agent, balances: Mapping[str, Money] | None = None) -> AgentInfo:
        account = agent_account(agent.id)
        if balances is not None:
            balance = balances.get(account, Money(0))
        else:
            try:
                balance = Money(self._ledger.balance(account) - agent.accrual.owed)
            except LedgerError:
                balance = Money(0)
        live = agent.state in _LIVE
        return AgentInfo(
            id=agent.id,
            name=agent.name,
            state=agent.state,
            balance=balance,
            bid=agent.bid,
            demand=agent.demand,
            share=agent.cores if live else 0.0,
            power_w=agent.power_w if live else 0.0,
            energy_uj=agent.energy_uj,
            paid=Money(agent.paid),
            landauer=Money(agent.landauer),
            pid=agent.pid,
            exit_code=agent.exit_code,
            cpu_s=agent.cpu_ns / 1e9,
            memory_freed_bytes=agent.freed_bytes,
            reported=None if agent.reported is None else _report_of(agent.reported),
            billing="reports" if agent.bond else "metered",
            bond=Money(agent.bond),
            audits=agent.audits,
            slashed=Money(agent.slashed),
            proofs=agent.proofs,
            bounties=Money(agent.bounties),
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        with self._lock:
            found = self._state.journal_events(EVENT_KINDS, max(after_seq, 0), max(limit, 0))
        return [
            Event(
                seq=event.seq,
                at=event.at,
                kind=event.kind,
                agent=str(event.detail["agent"]) if "agent" in event.detail else None,
                detail=event.detail,
            )
            for event in found
        ]

    def price(self) -> PriceInfo:
        with self._lock:
            return self._price(self._meter.node)

    def _price(self, sample: NodeSample) -> PriceInfo:
        return PriceInfo(
            spot=self._quote.spot,
            grid=self._quote.grid,
            thermal_factor=self._quote.thermal_factor,
            temperature_c=sample.temperature_c,
            headroom_c=sample.headroom_c,
            measured=sample.energy_measured and sample.temperature_measured,
            energy_source=str(sample.energy_source),
            temperature_source=str(sample.temperature_source),
        )

    def status(self) -> NodeStatus:
        with self._lock:
            balances = self._available(self._ledger.balances())
            return NodeStatus(
                price=self._price(self._meter.node),
                agents=[self._info(agent, balances) for agent in self._agents.values()],
                tick_s=self.config.tick_s,
                last_tick_duration_s=self.last_tick_duration_s,
                ticks=self._tick,
                mechanism=self.config.mechanism,
                cgroup=self._supervised.kind,
                capacity_cores=self.sold_cores,
                tick_stats=self._tick_stats.snapshot(self._ledger.entries_written()),
            )

    # --- for tests and tools --------------------------------------------------------------------

    @property
    def ticks(self) -> int:
        return self._tick

    def group_dirs(self, agent: str) -> list[str]:
        """The cgroup directories an agent's group lives in (empty once removed)."""
        with self._lock:
            record = self._get(agent).cgroup
        if record.get("kind") == "v1":
            dirs = record.get("dirs")
            unified = record.get("unified")
            found = [str(d) for d in dirs.values()] if isinstance(dirs, dict) else []
            return found + ([unified] if isinstance(unified, str) else [])
        path = record.get("path")
        return [path] if isinstance(path, str) else []

    @property
    def private_dirs(self) -> list[str]:
        return self._supervised.private_dirs

    def ledger(self) -> LedgerStore:
        return self._ledger
