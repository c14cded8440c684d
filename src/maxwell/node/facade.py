"""The contract between the node daemon and its clients (HTTP API, CLI, metrics, `top`).

Rules: every value crossing this boundary is one of the frozen types below, with money as integer
µ$J (`Money`) and JSON renderings in $J; an implementation is thread-safe (the API serves
requests while the tick runs); errors are the `NodeError` subclasses, each mapped to one HTTP
status by the API. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from maxwell.errors import MaxwellError
from maxwell.node.tickstats import TickStats
from maxwell.units import Money, money_to_tokens


class AgentState(enum.StrEnum):
    RUNNING = "running"  # served in full by the last clearing
    THROTTLED = "throttled"  # served, but fewer cores than it asked for
    FROZEN = "frozen"  # insolvent, or its bid is below the reserve: cgroup frozen
    DEAD = "dead"  # killed by apoptosis (or by `maxwell kill`)
    EXITED = "exited"  # its command ended by itself


class Role(enum.StrEnum):
    ADMIN = "admin"  # may fund, spawn and kill
    AGENT = "agent"  # may read the price and its own account, bid and report for itself


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to: the admin, or one agent (`agent` is its id)."""

    role: Role
    agent: str | None = None


NO_MONEY = Money(0)
MAX_REPORTED_CPU_S = 1e9  # ~32 years of one core: more is a malformed report, not a claim
MAX_REPORTED_COUNT = 2**62  # bytes freed or work units: within SQLite's int64


@dataclass(frozen=True)
class Report:
    """What an agent claims it has consumed since it was spawned: the CPU time of its whole
    process tree, the bytes of memory it freed, and optionally the units of useful work it has
    done (its own unit: inferences, tokens). Cumulative, so a lost report loses nothing and a
    later one may never claim less; the kernel's counters for the same agent are the truth an
    audit compares them with."""

    cpu_s: float
    memory_freed_bytes: int = 0
    work: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "cpu_s": self.cpu_s,
            "memory_freed_bytes": self.memory_freed_bytes,
            "work": self.work,
        }


@dataclass(frozen=True)
class AgentInfo:
    id: str
    name: str
    state: AgentState
    balance: Money
    bid: float  # limit price, $J per J
    demand: float  # cores asked for
    share: float  # cores granted by the last clearing
    power_w: float  # attributed power over the last tick
    energy_uj: int  # attributed energy since spawn
    paid: Money  # energy bills paid (to the grid)
    landauer: Money  # Landauer tax paid
    pid: int | None
    exit_code: int | None = None
    cpu_s: float = 0.0  # measured: the CPU time of its cgroup since spawn
    memory_freed_bytes: int = 0  # measured: memory its cgroup freed since spawn (a lower bound)
    reported: Report | None = None  # its latest self-report, if it ever sent one
    billing: str = "metered"  # "metered", or "reports" while a bond backs its self-reports
    bond: Money = NO_MONEY  # posted against its reports (optimistic billing), in stake:<id>
    audits: int = 0  # audits it has been through
    slashed: Money = NO_MONEY  # lost to slashing: bonds and claw-backs
    proofs: int = 0  # valid proofs of inference it submitted
    bounties: Money = NO_MONEY  # earned by them

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "state": str(self.state),
            "balance": money_to_tokens(self.balance),
            "bid": self.bid,
            "demand": self.demand,
            "share": self.share,
            "power_w": self.power_w,
            "energy_j": self.energy_uj / 1e6,
            "paid_j": money_to_tokens(self.paid),
            "landauer_j": money_to_tokens(self.landauer),
            "pid": self.pid,
            "exit_code": self.exit_code,
            "cpu_s": self.cpu_s,
            "memory_freed_bytes": self.memory_freed_bytes,
            "reported": None if self.reported is None else self.reported.to_json(),
            "billing": self.billing,
            "bond": money_to_tokens(self.bond),
            "audits": self.audits,
            "slashed": money_to_tokens(self.slashed),
            "proofs": self.proofs,
            "bounties": money_to_tokens(self.bounties),
        }


@dataclass(frozen=True)
class AuditResult:
    """One audit of one agent: its claims against the counters, and where its threads were."""

    agent: str
    honest: bool
    findings: tuple[str, ...]  # why it failed, one line each; empty when it passed
    checked: tuple[str, ...]  # what was checked: "reports", "code"
    audits: int  # audits of this agent so far, this one included
    probability: float  # the node's audit probability per agent per tick
    slashed: Money  # taken by this audit: bond and claw-back
    modules: Mapping[str, float] = field(default_factory=dict)  # share of IP samples per module
    samples: int = 0  # instruction-pointer samples taken
    pause_us: float | None = None  # median time a thread was stopped for one sample

    def to_json(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "honest": self.honest,
            "findings": list(self.findings),
            "checked": list(self.checked),
            "audits": self.audits,
            "probability": self.probability,
            "slashed": money_to_tokens(self.slashed),
            "modules": dict(self.modules),
            "samples": self.samples,
            "pause_us": self.pause_us,
        }


@dataclass(frozen=True)
class ProofResult:
    """A proof of inference an agent submitted, checked by the node without re-running the
    model: valid proofs of the model the user set earn the bounty the user set."""

    agent: str
    valid: bool
    reason: str  # one line: why it is valid, or the first failing layer
    bounty: Money  # paid for this proof (0 when invalid)
    proofs: int  # valid proofs of this agent so far

    def to_json(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "valid": self.valid,
            "reason": self.reason,
            "bounty": money_to_tokens(self.bounty),
            "proofs": self.proofs,
        }


@dataclass(frozen=True)
class PriceInfo:
    spot: float  # $J per J
    grid: float
    thermal_factor: float
    temperature_c: float
    headroom_c: float
    measured: bool  # is the temperature (and energy) measured, or modelled
    energy_source: str
    temperature_source: str

    def to_json(self) -> dict[str, object]:
        return {
            "spot": self.spot,
            "grid": self.grid,
            "thermal_factor": self.thermal_factor,
            "temperature_c": self.temperature_c,
            "headroom_c": self.headroom_c,
            "measured": self.measured,
            "energy_source": self.energy_source,
            "temperature_source": self.temperature_source,
        }


@dataclass(frozen=True)
class Event:
    """One line of the node's event log, named in the vision's terms: `spawned`, `funded`,
    `bid`, `throttled`, `frozen`, `thawed`, `apoptosis`, `exited`, `killed`, ..."""

    seq: int
    at: float  # Unix seconds
    kind: str
    agent: str | None
    detail: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "agent": self.agent,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class SpawnResult:
    agent: str
    name: str
    pid: int
    token: str

    def to_json(self) -> dict[str, object]:
        return {"agent": self.agent, "name": self.name, "pid": self.pid, "token": self.token}


@dataclass(frozen=True)
class NodeStatus:
    """A snapshot for `/status`, metrics, `top` and `maxwell status`."""

    price: PriceInfo
    agents: Sequence[AgentInfo]
    tick_s: float  # configured tick
    last_tick_duration_s: float
    ticks: int
    mechanism: str
    cgroup: str  # "v1", "v2" or "none"
    capacity_cores: float = 0.0  # cores the last clearing sold: all of them, fewer when hot
    tick_stats: TickStats | None = None  # failures, last error, durations; None: not kept


class NodeError(MaxwellError):
    """A request the node refuses; `status` is the HTTP status the API answers with."""

    status = 400


class UnknownAgentError(NodeError):
    status = 404


class NotAllowedError(NodeError):
    status = 403


class AgentGoneError(NodeError):
    """The agent is dead or exited: it can no longer bid or be funded."""

    status = 409


class Node(Protocol):
    def authenticate(self, token: str) -> Principal | None: ...

    def spawn(
        self,
        argv: Sequence[str],
        *,
        fund: Money,
        bid: float,
        demand: float = 1.0,
        name: str | None = None,
        user: str | None = None,
        code: Sequence[str] | None = None,  # declared binaries, libraries or directories of them
        bounty: Money = NO_MONEY,  # paid from the treasury for each valid proof of `model`
        model: str | None = None,  # the ONNX model whose inference the bounty pays for
    ) -> SpawnResult: ...

    def fund(self, agent: str, amount: Money) -> AgentInfo: ...

    def bid(self, agent: str, price: float, demand: float | None = None) -> AgentInfo: ...

    def report(self, agent: str, report: Report) -> AgentInfo: ...

    def kill(self, agent: str) -> AgentInfo: ...

    def audit(self, agent: str) -> AuditResult: ...

    def submit_proof(self, agent: str, input: str, output: str, proof: str) -> ProofResult: ...

    def agent(self, agent: str) -> AgentInfo: ...

    def agents(self) -> list[AgentInfo]: ...

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    def price(self) -> PriceInfo: ...

    def status(self) -> NodeStatus: ...
