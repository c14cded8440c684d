"""`NodeDaemon` implements `maxwell.node.facade.Node`: orchestration only. It starts the node's
parts, hands each call to the part that owns it (each part's module states its rules), and stops:

- `agents`: the live agent records, in one `AgentRegistry` handed to every part that needs it;
- `processes`: the agents' processes and groups, from spawn to finish;
- `ticker`: the tick (meter, plan, settle, commit, enforce; a failed tick rolls back);
- `claims`: self-reports, bonds and claims; `audits`: sampled and on-demand audits;
- `accounts`: the local users and every funding; `bounties`: proofs of inference;
- `recovery`: re-adoption and the down interval, billed once;
- `views`: the read models (agents, events, status).

Start-up (docs/node.md): the state directory must be the daemon's own (`paths.check_private_*`)
and is locked first (a refused start touches nothing), then the store, sensors, meter and
supervisor open, and recovery runs. A failed start closes what it opened and removes its cgroups.
Threads: one `threading.RLock` guards the parts (the API calls in from its threads, `run_forever`
ticks in another); a tick reads the meter before taking it, so that reading holds no call up.
Shutdown: `shutdown()` (SIGTERM) settles every agent in a last tick and leaves them running in
their groups for the next daemon to re-adopt; `shutdown(kill_agents=True)` kills them, bills
their last tick and removes the whole tree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from maxwell.cgroups import CgroupManager
from maxwell.clock import Clock, SystemClock
from maxwell.cluster.transfers import Transfer
from maxwell.economy.coupling import CoupledPrice
from maxwell.economy.gridfeed import HttpGridFeed
from maxwell.economy.ledger import InsufficientFundsError
from maxwell.economy.price import GridPrice
from maxwell.economy.store import LedgerStore
from maxwell.meter import LiveMeter
from maxwell.meter.erasure import SoftDirtyMeter, soft_dirty_support
from maxwell.meter.live import ErasureSampler, NodeSampler
from maxwell.node import facade
from maxwell.node.accounts import LocalUsers, check_funding, paid_short
from maxwell.node.agentlog import MAX_LOG_CHUNK, read_log
from maxwell.node.agents import LIVE, AgentRegistry, cgroup_dirs
from maxwell.node.audits import Auditor
from maxwell.node.bounties import Bounties
from maxwell.node.claims import OptimisticBilling
from maxwell.node.config import NodeConfig, NodeConfigError
from maxwell.node.jobs import JobBoard
from maxwell.node.paths import StateLock, check_private_files, check_private_root
from maxwell.node.processes import AgentProcesses, spawn_request
from maxwell.node.recovery import Recovery
from maxwell.node.results import read_result
from maxwell.node.retention import Retention
from maxwell.node.state import admin_token, hash_token
from maxwell.node.store import NodeStore
from maxwell.node.supervisor import CgroupSupervisor, Supervisor
from maxwell.node.ticker import OpeningPrice, Ticker, TickParts
from maxwell.node.views import NodeViews
from maxwell.sensors import Sensors
from maxwell.sensors.model import active_w_per_core
from maxwell.units import Money

log = logging.getLogger(__name__)


def _erasure_meter(kind: str) -> ErasureSampler | None:
    """The erasure meter `--erasure` asks for; refused (a `NodeConfigError`, before anything is
    touched) where this kernel cannot give it."""
    if kind != "soft-dirty":
        return None
    support = soft_dirty_support()
    if not support.available:
        raise NodeConfigError(f"--erasure soft-dirty: {support.reason}")
    return SoftDirtyMeter()


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
        erasure: ErasureSampler | None = None,
        neighbours: Callable[[], Sequence[float]] | None = None,
    ) -> None:
        """Check and lock the state directory first (a refused start touches nothing), then open
        the store, the sensors and the cgroups, and recover. `erasure`: the erasure meter, made
        from the config's `erasure` when None. `neighbours`: the headrooms of the neighbours'
        verified heat records (gossip), which couple the price (`maxwell.economy.coupling`)."""
        self.config = config
        self.paths = config.paths
        self._erasure = erasure if erasure is not None else _erasure_meter(config.erasure)
        self._coupling = CoupledPrice(neighbours) if neighbours is not None else None
        try:
            self.paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise facade.NodeError(f"--state {self.paths.root}: {exc.strerror}") from exc
        check_private_root(self.paths)
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
        """Check the state's files, open the store, meter and supervisor, make parts, recover."""
        check_private_files(self.paths)
        config = self.config
        self._lock = threading.RLock()
        self._tick_lock = threading.RLock()  # a tick, shutdown; the meter is read under it alone
        self._wall = wall
        self.capacity_cores = float(config.capacity_cores or os.cpu_count() or 1)
        self._owns_sensors = sensors is None
        self._sensors: NodeSampler | None = sensors
        self._store = NodeStore.open(self.paths.root, wall)
        self._ledger, self._state = self._store.ledger, self._store.state
        self._admin_token = admin_token(self.paths.root)
        self._grid = grid or config.grid_price()
        if isinstance(self._grid, HttpGridFeed):
            self._grid.start()  # its first answer, bounded by grid_timeout_s; then its thread
        opening = self._open_meter(wall, self._grid)
        if self._supervisor is None:
            self._supervisor = CgroupSupervisor.open(config.cgroup, self.paths.root, self._clock)
        supervisor = self._supervisor
        self.degraded = supervisor.degraded
        if self.degraded:
            log.info("degraded: %s", self.degraded)
        self._registry = registry = AgentRegistry()
        store, meter, clock = self._store, self._meter, self._clock
        self._processes = AgentProcesses(
            config, clock=clock, wall=wall, store=store, meter=meter, supervisor=supervisor,
            registry=registry, capacity_cores=self.capacity_cores,
        )  # fmt: skip
        self._users = LocalUsers(config.uid_range, self._ledger, wall)
        self._jobs = JobBoard(self.paths, store, wall)
        self._bounties = Bounties(config, store, self._jobs, wall, self._clock)
        self._billing = OptimisticBilling(
            config, wall=wall, store=store, registry=registry,
            active_w_per_core=self._active_w_per_core,
        )  # fmt: skip
        self._auditor = Auditor(
            probability=config.audit_probability, registry=registry, store=store, wall=wall,
            rng=audit_rng, report_lease_s=config.report_lease_s,
        )  # fmt: skip
        parts = TickParts(
            config=config, clock=clock, wall=wall, store=store, meter=meter, supervisor=supervisor,
            registry=registry, processes=self._processes, billing=self._billing,
            auditor=self._auditor,
        )  # fmt: skip
        last = self._state.last_tick()[0]
        self._ticker = Ticker(parts, opening, capacity_cores=self.capacity_cores, tick=last)
        self._views = NodeViews(
            config, ledger=self._ledger, state=self._store.reader, registry=registry,
            ticker=self._ticker, supervisor=supervisor,
        )  # fmt: skip
        self._recover()
        self._views.publish()

    def _open_meter(self, wall: Callable[[], float], grid: GridPrice | None) -> OpeningPrice:
        """The sensors (detected unless given), the meter over them, and the spot price."""
        config = self.config
        if self._sensors is None:
            self._sensors = Sensors.detect(clock=self._clock, model_config=config.model)
        w_per_core = config.active_w_per_core
        self._active_w_per_core = (
            active_w_per_core(config.model) if w_per_core is None else w_per_core
        )
        self._meter = LiveMeter(
            self._sensors, memory_interval_s=config.memory_interval_s, erasure=self._erasure
        )
        opening = OpeningPrice.open(grid, self._meter.node, wall, self._clock)
        return replace(opening, coupling=self._coupling)

    def _recover(self) -> None:
        """Reload and re-adopt the agents, bill the time it was down (`maxwell.node.recovery`)."""
        assert self._supervisor is not None
        Recovery(
            wall=self._wall, store=self._store, meter=self._meter, supervisor=self._supervisor,
            registry=self._registry, billing=self._billing, bounties=self._bounties,
            ticker=self._ticker, active_w_per_core=self._active_w_per_core,
        ).recover()  # fmt: skip

    @property
    def _supervised(self) -> Supervisor:
        assert self._supervisor is not None, "the supervisor is made in __init__"
        return self._supervisor

    # --- the tick and the daemon's life ---------------------------------------------------------

    def tick_once(self, *, settle_all: bool = False) -> None:
        """One tick (`maxwell.node.ticker`); a failure is counted, raised and retried next."""
        with self._tick_lock:
            if self._closed:
                return
            started = self._clock.monotonic()
            reading = self._ticker.read()  # outside `_lock`: the API goes on meanwhile
            with self._lock:
                try:
                    self._ticker.tick_once(settle_all, reading, started)
                finally:
                    self._views.publish(self._ticker.touched)

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every `tick_s` until `stop` is set (the caller then calls `shutdown`)."""
        while not stop.is_set():
            started = self._clock.monotonic()
            try:
                self.tick_once()
            except Exception:  # logged and counted; the next tick retries it
                log.exception("tick %d failed", self._ticker.tick + 1)
            elapsed = self._clock.monotonic() - started
            stop.wait(max(self.config.tick_s - elapsed, 0.0))

    def shutdown(self, *, kill_agents: bool = False) -> None:
        """Stop. A last tick settles every agent, which keeps running for the next daemon to
        re-adopt (with none alive, the cgroup tree goes); `kill_agents`: they and the tree go."""
        with self._tick_lock, self._lock:
            if self._closed:
                return
            if kill_agents:
                self._processes.kill_all()
                self.tick_once(settle_all=True)  # their last interval; removes their groups
            else:  # settled, so the ledger is exact while no daemon runs; a failure loses
                try:  # nothing: the next start bills the interval from the counters
                    self.tick_once(settle_all=True)
                except Exception:
                    log.exception("the last settlement failed: the next start bills it")
            if kill_agents or not any(agent.state in LIVE for agent in self._registry):
                self._processes.finish_all()  # nothing left to re-adopt: leave no empty tree
                self._supervised.close()
            self._closed = True
            self._close_parts()

    def _close_parts(self) -> None:
        """Close what is open (also after a start that failed half-way), then let the next
        daemon start. Agents and their groups are not touched: `shutdown` decides about them."""
        grid = getattr(self, "_grid", None)
        if isinstance(grid, HttpGridFeed):
            grid.stop()
        sensors = getattr(self, "_sensors", None)
        if getattr(self, "_owns_sensors", False) and isinstance(sensors, Sensors):
            sensors.close()
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
        self._state_lock.release()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[set[str]]:
        """The lock, for a call that changes the node: refused once closed; the bids and reports
        queued before it are stored first, so that the journal keeps the order things happened in.
        The call adds the agents it changes to the set it is given, for the read models."""
        with self._lock:
            if self._closed:
                raise facade.NodeError("the node is shutting down")
            changed = self._ticker.inbox.take()
            try:
                yield changed
            finally:
                self._ticker.resting.wake(changed)
                self._views.publish_calls(changed)

    changing = _changing  # the lock, for a collaborator's change (`maxwell.node.transfers`)

    # --- the Node protocol -------------------------------------------------------------------

    @property
    def admin_token(self) -> str:
        return self._admin_token

    def authenticate(self, token: str) -> facade.Principal | None:
        if token and secrets.compare_digest(token.encode(), self._admin_token.encode()):
            return facade.Principal(facade.Role.ADMIN)
        agent = self._registry.by_token.get(hash_token(token)) if token else None  # no lock
        return facade.Principal(facade.Role.AGENT, agent) if agent is not None else None

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
        bounty: Money = facade.NO_MONEY,
        model: str | None = None,
        memory: int | None = None,
        pids: int | None = None,
        owner: int | None = None,
        transfer: Transfer | None = None,
        payload: bytes | None = None,
    ) -> facade.SpawnResult:
        """A local user's (`owner`) runs as it, from its account; a `transfer`'s, on that money."""
        user = self._users.name(owner) if owner is not None else user
        request = spawn_request(
            argv, fund=fund, bid=bid, demand=demand, name=name, user=user, code=code,
            bounty=bounty, model=model, load_model=self._bounties.load_model, memory=memory,
            pids=pids, payload=payload,
        )  # fmt: skip
        with self._changing() as changed:
            if owner is not None:
                request = replace(request, payer=self._users.check_pays(owner, fund))
            request = replace(request, transfer=transfer)
            try:
                spawned = self._processes.spawn(request)
            except InsufficientFundsError as exc:  # checked above, under the same lock
                raise paid_short(exc) from exc
            changed.add(spawned.agent)
            return spawned

    def fund(
        self, agent: str, amount: Money, key: str | None = None, owner: int | None = None
    ) -> facade.AgentInfo:
        """From the treasury, or from the account of `owner`, a local user who owns the agent
        (`maxwell.node.accounts`); with the client's idempotency `key`, a retry funds once."""
        check_funding(amount)
        with self._changing() as changed:
            changed.add(agent)
            self._users.fund_agent(self._registry.live(agent, "fund it"), amount, key, owner)
        return self._views.agent(agent)  # published as the change left it

    # --- local users (`maxwell.node.accounts`) ----------------------------------------------------

    def local_user(self, uid: int) -> facade.Principal | None:
        return self._users.principal(uid)

    def user_account(self, uid: int) -> facade.UserAccount:
        return self._users.account(uid)  # the ledger's reader: no lock

    def fund_user(self, uid: int, amount: Money, key: str | None = None) -> facade.UserAccount:
        check_funding(amount)
        with self._changing():
            return self._users.fund(uid, amount, key)

    def bid(self, agent: str, price: float, demand: float | None = None) -> facade.AgentInfo:
        """Checked and queued, never waiting for a tick (`maxwell.node.bids`); shows the bid."""
        if self._closed:
            raise facade.NodeError("the node is shutting down")
        found = self._registry.live(agent, "bid")
        self._ticker.inbox.queue_bid(found, price, demand)
        return self._views.agent(found.id)

    def report(self, agent: str, report: facade.Report) -> facade.AgentInfo:
        """The agent's self-report (cumulative claims since spawn; see `Report`): checked and
        queued, never waiting for a tick (`maxwell.node.reports`); the answer shows it."""
        if self._closed:
            raise facade.NodeError("the node is shutting down")
        found = self._registry.live(agent, "report")
        queued = self._ticker.inbox.queue_report(found, report)
        return self._views.answer_to_report(queued)

    def audit(self, agent: str) -> facade.AuditResult:
        """Audit `agent` now (`maxwell.node.audits`): a liar is slashed at once, and told why."""
        with self._changing() as changed:
            changed.add(agent)
            found = self._registry.live(agent, "audit it")
            return self._auditor.audit_now(found, self._ticker.tick)

    def submit_proof(self, agent: str, input: str, output: str, proof: str) -> facade.ProofResult:
        """Check a proof of inference the agent left in its directory, outside the lock
        (`maxwell.node.intake`); a valid proof of the user's model pays once per input."""
        found = self._registry.live(agent, "submit proofs")
        checked = self._bounties.check(found, input, output, proof)
        with self._changing() as changed:
            changed.add(agent)
            return self._bounties.pay(self._registry.live(agent, "submit proofs"), checked)

    def kill(self, agent: str) -> facade.AgentInfo:
        with self._changing() as changed:
            changed.add(agent)
            found = self._registry.live(agent, "kill it")
            self._processes.kill(found)
        return self._views.agent(agent)

    def remove(self, agent: str) -> facade.AgentInfo:
        """Forget an ended agent (`maxwell.node.retention`), after the tick that bills its end."""
        if self._registry.get(agent).finished:
            self.tick_once()
        with self._changing() as changed:  # its answer is published until this block ends
            changed.add(agent)
            Retention(self.config, self._store, self._registry, [self._billing.forget]).forget(
                agent
            )
            return self._views.agent(agent)

    # --- posted work (`maxwell.node.jobs`) --------------------------------------------------------

    def post_job(self, model: str, inputs: str, bounty: Money) -> facade.JobInfo:
        """Post a job of inputs for proofs of `model`, `bounty` each, escrowed at once."""
        posting = self._jobs.read(model, inputs, bounty)  # the files, outside the lock
        with self._changing():
            return self._jobs.post(posting)

    def jobs(self) -> list[facade.JobInfo]:
        return self._jobs.all()  # the store's reader: no lock

    def job(self, job: str) -> facade.JobInfo:
        return self._jobs.get(job)

    def take_input(self, agent: str, job: str) -> facade.TakenInput:
        """Lease the agent an input of `job` and write it into its directory."""
        found = self._registry.live(agent, "take inputs")
        with self._changing():
            taken = self._jobs.lease(found, job)
        return self._jobs.deliver(found, taken)  # the copy, outside the lock

    # --- read models ----------------------------------------------------------------------------

    def agent(self, agent: str) -> facade.AgentInfo:
        return self._views.agent(agent)  # published: no lock (`maxwell.node.views`)

    def agents(self) -> list[facade.AgentInfo]:
        return self._views.agents()

    def result(self, agent: str) -> bytes:
        return read_result(self.config.paths, self._views.agent(agent))  # no lock: a file

    def log(self, agent: str, offset: int = 0, limit: int = MAX_LOG_CHUNK) -> bytes:
        return read_log(self.config.paths, self._views.agent(agent), offset, limit)  # a file

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[facade.Event]:
        return self._views.events(after_seq, limit)  # the store's reader: no lock

    def price(self) -> facade.PriceInfo:
        return self._ticker.price()  # the last quote, whole: no lock

    def status(self) -> facade.NodeStatus:
        return self._views.status()

    # --- for tests and tools --------------------------------------------------------------------

    @property
    def ticks(self) -> int:
        return self._ticker.tick

    @property
    def sold_cores(self) -> float:
        """This tick's capacity: fewer cores than `capacity_cores` when the node is hot."""
        return self._ticker.sold_cores

    def group_dirs(self, agent: str) -> list[str]:
        """The cgroup directories an agent's group lives in (empty once removed)."""
        return cgroup_dirs(self._registry.get(agent).cgroup)  # a record never changes its group

    @property
    def private_dirs(self) -> list[str]:
        return self._supervised.private_dirs

    def ledger(self) -> LedgerStore:
        return self._ledger
