"""An in-memory `Node` for the API, SDK and CLI tests: honest bookkeeping, no processes.

Rules it keeps (and `check_invariants` asserts): money is conserved (treasury + balances ==
the initial treasury), no balance is negative, event sequence numbers are 1, 2, 3, ..., every
agent has exactly one token, and a dead agent can be neither funded nor bid for.

It answers as `NodeDaemon` does wherever a client can tell (`test_contract.py` runs the same
tests against both): an agent's default name is its id, a spawn logs `funded` then `spawned`,
every event's detail names its agent, a killed agent keeps its pid and exits by SIGKILL, an
audit checks reports only once there is one, and refusals say what the daemon's say. Where it
still differs (ids `a1`, `a2`, ...; a bounded treasury; unique names), no contract test looks.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from starlette.exceptions import StarletteDeprecationWarning

from maxwell.node.agentlog import NoLogError
from maxwell.node.api import ApiServer, create_app, serve
from maxwell.node.facade import (
    MIN_MEMORY_MAX,
    NO_MONEY,
    AgentGoneError,
    AgentInfo,
    AgentLiveError,
    AgentState,
    AuditResult,
    Event,
    FundKeyConflictError,
    JobInfo,
    NodeError,
    NodeStatus,
    NotAllowedError,
    PaymentError,
    PriceInfo,
    Principal,
    ProofResult,
    Report,
    Role,
    SpawnResult,
    TakenInput,
    UnknownAgentError,
    UnknownJobError,
    UserAccount,
)
from maxwell.node.peers import AdminPeers
from maxwell.node.results import NoResultError, ResultNotReadyError
from maxwell.node.tickstats import TickStats
from maxwell.units import Money

with warnings.catch_warnings():
    # Starlette 1.x asks for its `httpx2` fork; the httpx Maxwell depends on works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["ADMIN_TOKEN", "FakeNode", "TestClient", "serving"]

ADMIN_TOKEN = "admin-secret"
FAKE_USERS = {65534: "nobody"}  # the local users the fake knows, by uid
FAKE_DYNAMIC_UIDS = (70000, 99999)  # never local users: agents' own uids
TREASURY: Money = Money(1_000_000 * 1_000_000)  # 1e6 $J


class FakeNode:
    def __init__(self, treasury: Money = TREASURY) -> None:
        self._lock = threading.Lock()
        self.initial_treasury = treasury
        self.treasury = treasury
        self.agents_by_id: dict[str, AgentInfo] = {}
        self.tokens: dict[str, Principal] = {ADMIN_TOKEN: Principal(Role.ADMIN)}
        self.journal: list[Event] = []
        self._ids = itertools.count(1)
        self.spot = 1.0
        self.liars: set[str] = set()  # agents whose audits fail
        self.fund_keys: dict[str, tuple[str, Money]] = {}  # idempotency key -> its funding
        self.tick_stats: TickStats | None = None  # set it to show failures, a last error
        self.limits: dict[str, tuple[int | None, int | None]] = {}  # each spawn's memory, pids
        self.jobs_by_id: dict[str, JobInfo] = {}  # posted work, its escrow held out of the treasury
        self.user_balances: dict[int, Money] = {}  # local users' accounts, by uid
        self.payloads: dict[str, bytes | None] = {}  # what each spawn handed its agent
        self.results: dict[str, bytes] = {}  # what an agent left (set by a test: none runs)
        self.logs: dict[str, bytes] = {}  # an agent's output (set by a test: none runs)

    # --- helpers ------------------------------------------------------------------------------

    def _event(self, kind: str, agent: str | None, **detail: object) -> None:
        named = detail if agent is None else {"agent": agent, **detail}
        self.journal.append(Event(len(self.journal) + 1, time.time(), kind, agent, named))

    def _get(self, agent: str) -> AgentInfo:
        try:
            return self.agents_by_id[agent]
        except KeyError:
            raise UnknownAgentError(f"no agent {agent!r}") from None

    def _alive(self, agent: str, doing: str) -> AgentInfo:
        info = self._get(agent)
        if info.state in (AgentState.DEAD, AgentState.EXITED):
            raise AgentGoneError(f"agent {agent} is {info.state}: cannot {doing}")
        return info

    def token_of(self, agent: str) -> str:
        return next(t for t, p in self.tokens.items() if p.agent == agent)

    def check_invariants(self) -> None:
        with self._lock:
            balances = sum(info.balance for info in self.agents_by_id.values())
            escrow = sum(job.escrow for job in self.jobs_by_id.values())
            users = sum(self.user_balances.values())
            assert self.treasury + balances + escrow + users == self.initial_treasury
            assert all(balance >= 0 for balance in self.user_balances.values())
            assert self.treasury >= 0
            assert all(info.balance >= 0 for info in self.agents_by_id.values())
            assert [event.seq for event in self.journal] == list(range(1, len(self.journal) + 1))
            owners = [p.agent for p in self.tokens.values() if p.role is Role.AGENT]
            assert sorted(owners) == sorted(self.agents_by_id)  # type: ignore[type-var]
            for info in self.agents_by_id.values():
                assert math.isfinite(info.bid) and info.bid >= 0
                assert math.isfinite(info.demand) and info.demand > 0

    def snapshot(self) -> tuple[object, ...]:
        """Everything a request could change, to assert a refused request changed nothing."""
        with self._lock:
            return (
                self.treasury, dict(self.agents_by_id), dict(self.tokens), len(self.journal),
                dict(self.jobs_by_id), dict(self.user_balances),
            )  # fmt: skip

    # --- the Node protocol --------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        return self.tokens.get(token)

    def local_user(self, uid: int) -> Principal | None:
        if FAKE_DYNAMIC_UIDS[0] <= uid <= FAKE_DYNAMIC_UIDS[1]:
            return None
        return Principal(Role.USER, uid=uid)

    def user_account(self, uid: int) -> UserAccount:
        name = FAKE_USERS.get(uid, str(uid))
        return UserAccount(uid=uid, user=name, balance=self.user_balances.get(uid, Money(0)))

    def fund_user(self, uid: int, amount: Money, key: str | None = None) -> UserAccount:
        with self._lock:
            if amount <= 0:
                raise NodeError("amount must be positive")
            if key is not None:
                done = self.fund_keys.get(key)
                if done is not None:
                    if done != (f"user:{uid}", amount):
                        raise FundKeyConflictError(f"key {key!r} funded another request")
                    return self.user_account(uid)
                self.fund_keys[key] = (f"user:{uid}", amount)
            if amount > self.treasury:
                raise NodeError("the treasury cannot fund that much")
            self.treasury = Money(self.treasury - amount)
            self.user_balances[uid] = Money(self.user_balances.get(uid, 0) + amount)
            self._event("funded", None, user=uid, amount=amount)
            return self.user_account(uid)

    def _pay_from(self, owner: int | None, amount: Money) -> None:
        """Take `amount` from the treasury, or from local user `owner`'s account."""
        if owner is None:
            if amount > self.treasury:
                raise NodeError("the treasury cannot fund that much")
            self.treasury = Money(self.treasury - amount)
            return
        held = self.user_balances.get(owner, Money(0))
        if amount > held:
            raise PaymentError(f"user:{owner} holds less than asked")
        self.user_balances[owner] = Money(held - amount)

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
        memory: int | None = None,
        pids: int | None = None,
        owner: int | None = None,
        payload: bytes | None = None,
    ) -> SpawnResult:
        if owner is not None:
            if owner not in FAKE_USERS:
                raise NodeError(f"uid {owner} is not in the user database")
            user = FAKE_USERS[owner]
        with self._lock:
            if code is not None and any(not os.path.exists(path) for path in code):
                raise NodeError("declared code does not exist")
            if (memory is not None and memory < MIN_MEMORY_MAX) or (pids is not None and pids < 1):
                raise NodeError("the memory limit must be 1 MiB or more, the pids limit 1 or more")
            if not argv:
                raise NodeError("empty command")
            if user is not None and user != "nobody":
                raise NodeError(f"no such user {user!r}")
            if fund > (self.treasury if owner is None else self.user_balances.get(owner, 0)):
                self._pay_from(owner, fund)  # refused: says which account is short
            number = next(self._ids)
            agent = f"a{number}"
            name = name or agent
            if any(info.name == name for info in self.agents_by_id.values()):
                raise NodeError(f"an agent is already named {name!r}")
            self._pay_from(owner, fund)
            pid = 10_000 + number
            self.agents_by_id[agent] = AgentInfo(
                id=agent,
                name=name,
                state=AgentState.RUNNING,
                balance=fund,
                bid=bid,
                demand=demand,
                share=0.0,
                power_w=0.0,
                energy_uj=0,
                paid=Money(0),
                landauer=Money(0),
                pid=pid,
                user=user,
            )
            token = f"agent-token-{number}"
            self.tokens[token] = Principal(Role.AGENT, agent)
            self.limits[agent] = (memory, pids)
            self.payloads[agent] = payload
            self._event("funded", agent, amount=fund)
            self._event(
                "spawned", agent, name=name, argv=list(argv), pid=pid, user=user, bid=bid,
                demand=demand, fund=fund, cgroup="none",
            )  # fmt: skip
            return SpawnResult(agent, name, pid, token)

    def fund(
        self, agent: str, amount: Money, key: str | None = None, owner: int | None = None
    ) -> AgentInfo:
        with self._lock:
            info = self._alive(agent, "fund it")
            if amount <= 0:
                raise NodeError("amount must be positive")
            if owner is not None and FAKE_USERS.get(owner) != info.user:
                raise NotAllowedError(f"agent {agent} is not uid {owner}'s")
            if key is not None:
                done = self.fund_keys.get(key)
                if done is not None:
                    if done != (agent, amount):
                        raise FundKeyConflictError(f"key {key!r} funded another request")
                    return info  # a retry: funded once already
                self.fund_keys[key] = (agent, amount)
            self._pay_from(owner, amount)
            info = replace(info, balance=Money(info.balance + amount))
            self.agents_by_id[agent] = info
            self._event("funded", agent, amount=amount)
            return info

    def bid(self, agent: str, price: float, demand: float | None = None) -> AgentInfo:
        with self._lock:
            info = self._alive(agent, "bid")
            info = replace(info, bid=price, demand=info.demand if demand is None else demand)
            self.agents_by_id[agent] = info
            self._event("bid", agent, price=price, demand=info.demand)
            return info

    def report(self, agent: str, report: Report) -> AgentInfo:
        with self._lock:
            info = self._alive(agent, "report")
            last = info.reported
            if last is not None:
                pairs = [
                    ("cpu_s", last.cpu_s, report.cpu_s),
                    ("memory_freed_bytes", last.memory_freed_bytes, report.memory_freed_bytes),
                ]
                if last.work is not None and report.work is not None:
                    pairs.append(("work", last.work, report.work))
                fell = [f"{name} fell from {a:g} to {b:g}" for name, a, b in pairs if b < a]
                if fell:
                    raise NodeError(f"reports are cumulative since spawn: {'; '.join(fell)}")
            info = replace(info, reported=report)
            self.agents_by_id[agent] = info
            return info

    def audit(self, agent: str) -> AuditResult:
        with self._lock:
            found = self._alive(agent, "audit it")
            info = replace(found, audits=found.audits + 1)
            self.agents_by_id[agent] = info
            lied = agent in self.liars
            checked = ("reports",) if info.reported is not None else ()
            modules = {"libpython3.11.so.1.0": 0.75, "[vdso]": 0.25}
            self._event(
                "slashed" if lied else "audited", agent, honest=not lied, audits=info.audits,
                probability=0.001, sampled=False, checked=list(checked), modules=modules,
            )  # fmt: skip
            findings = ("claimed 1.000 s of CPU, the kernel counted 9.000 s",) if lied else ()
            return AuditResult(
                agent, not lied, findings, checked, info.audits, 0.001, Money(0), modules=modules
            )

    def submit_proof(self, agent: str, input: str, output: str, proof: str) -> ProofResult:
        with self._lock:
            self._alive(agent, "submit proofs")
            raise NodeError(f"agent {agent} has no bounty: nothing pays for its proofs")

    def post_job(self, model: str, inputs: str, bounty: Money) -> JobInfo:
        """A job as the daemon posts one (its inputs counted, not read: no agent here proves)."""
        if bounty <= 0:
            raise NodeError(f"a job's bounty must be a positive integer of µ$J, got {bounty!r}")
        try:
            digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
            count = sum(1 for name in os.listdir(inputs) if name.endswith(".npy"))
        except OSError as exc:
            raise NodeError(f"{exc.filename}: {exc.strerror}") from exc
        if not count:
            raise NodeError(f"--inputs {inputs}: no .npy file in it")
        with self._lock:
            if bounty * count > self.treasury:
                raise NodeError("the treasury cannot escrow that much")
            job = f"j{next(self._ids)}"
            info = JobInfo(
                id=job, model=os.path.abspath(model), model_sha256=digest, bounty=bounty,
                inputs=count, paid=0, taken=0, escrow=Money(bounty * count),
                posted_at=time.time(),
            )  # fmt: skip
            self.treasury = Money(self.treasury - info.escrow)
            self.jobs_by_id[job] = info
            return info

    def jobs(self) -> list[JobInfo]:
        with self._lock:
            return list(self.jobs_by_id.values())

    def job(self, job: str) -> JobInfo:
        with self._lock:
            if job not in self.jobs_by_id:
                raise UnknownJobError(f"no job {job!r}")
            return self.jobs_by_id[job]

    def take_input(self, agent: str, job: str) -> TakenInput:
        """No agent here proves a model: the daemon refuses such an agent the same way."""
        with self._lock:
            self._alive(agent, "take inputs")
            if job not in self.jobs_by_id:
                raise UnknownJobError(f"no job {job!r}")
            raise NodeError(f"job {job} is for another model than the one agent {agent} proves")

    def kill(self, agent: str) -> AgentInfo:
        with self._lock:
            found = self._alive(agent, "kill it")
            info = replace(
                found, state=AgentState.DEAD, exit_code=-signal.SIGKILL, share=0.0, ended="killed"
            )
            self.agents_by_id[agent] = info
            self._event("killed", agent, reason="killed on request")
            return info

    def end(self, agent: str, ended: str) -> AgentInfo:
        """Make a live agent end as a real node's would (a test's hand): `ended` is the reason,
        "apoptosis", "slashed" or "exited N"."""
        with self._lock:
            found = self._alive(agent, "end it")
            exited = ended.startswith("exited")
            code = int(ended.split()[-1]) if exited else -signal.SIGKILL
            state = AgentState.EXITED if exited else AgentState.DEAD
            info = replace(found, state=state, exit_code=code, share=0.0, ended=ended)
            self.agents_by_id[agent] = info
            self._event("exited" if exited else "apoptosis", agent, reason=ended)
            return info

    def remove(self, agent: str) -> AgentInfo:
        """Forget an ended agent; its money stays in its (here: forgotten) account."""
        with self._lock:
            found = self._get(agent)
            if found.state not in (AgentState.DEAD, AgentState.EXITED):
                raise AgentLiveError(f"agent {agent} is {found.state}: kill it first")
            del self.agents_by_id[agent]
            self.tokens = {t: p for t, p in self.tokens.items() if p.agent != agent}
            return found

    def agent(self, agent: str) -> AgentInfo:
        with self._lock:
            return self._get(agent)

    def result(self, agent: str) -> bytes:
        with self._lock:
            if self._get(agent).state not in (AgentState.DEAD, AgentState.EXITED):
                raise ResultNotReadyError(f"agent {agent} still runs")
            if agent not in self.results:
                raise NoResultError(f"agent {agent} left no result")
            return self.results[agent]

    def log(self, agent: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        with self._lock:
            self._get(agent)
            if agent not in self.logs:
                raise NoLogError(f"agent {agent} has no output kept")
            return self.logs[agent][offset : offset + min(limit, 1 << 20)]

    def agents(self) -> list[AgentInfo]:
        with self._lock:
            return list(self.agents_by_id.values())

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        with self._lock:
            return [event for event in self.journal if event.seq > after_seq][:limit]

    def price(self) -> PriceInfo:
        return PriceInfo(
            spot=self.spot,
            grid=0.8,
            thermal_factor=1.25,
            temperature_c=55.0,
            headroom_c=30.0,
            measured=False,
            energy_source="model",
            temperature_source="model",
            clearing=self.spot,
        )

    def status(self) -> NodeStatus:
        return NodeStatus(
            price=self.price(),
            agents=self.agents(),
            tick_s=1.0,
            last_tick_duration_s=0.001,
            ticks=7,
            mechanism="uniform",
            cgroup="none",
            tick_stats=self.tick_stats,
        )

    # test hooks ---------------------------------------------------------------------------------

    def drain(self, agent: str, amount: Money) -> None:
        """Bill `agent` (money goes back to the treasury, as a payment to the grid would)."""
        with self._lock:
            info = self.agents_by_id[agent]
            amount = Money(min(amount, info.balance))
            self.agents_by_id[agent] = replace(info, balance=Money(info.balance - amount))
            self.treasury = Money(self.treasury + amount)


@contextlib.contextmanager
def serving(
    node: FakeNode, *, listen: str | None = None, admins: AdminPeers | None = None
) -> Iterator[ApiServer]:
    """`node`'s API served on a real Unix socket (and `listen`) in a thread, for the test.
    `admins`: who is the admin without a token on the socket (None: root and this user)."""
    # A short directory: a socket's path must fit in 108 bytes, pytest's tmp_path may not.
    directory = Path(tempfile.mkdtemp(prefix="mxw-", dir="/tmp"))
    app = create_app(node, metrics=lambda: b"maxwell_up 1\n", admins=admins)
    server = serve(app, socket_path=str(directory / "api.sock"), listen=listen)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
