"""The contract between the node daemon and its clients (HTTP API, SDK, CLI, metrics, `top`).

Rules: every value crossing this boundary is one of the frozen types below, with money as integer
µ$J (`Money`) and energy as integer µJ; an implementation is thread-safe (the API serves requests
while the tick runs); errors are the `NodeError` subclasses, each mapped to one HTTP status by the
API. Nothing here does I/O.

These types are also the one definition of the API's JSON (`maxwell.node.wire` derives the JSON,
the checks on reading it and the OpenAPI schemas from them with pydantic): a field's annotation
says how it travels. `WireMoney` and `WireEnergy` fields travel as floats of $J and J, read back
to the nearest micro-unit; an `alias` is the field's name on the wire (`paid` is `paid_j`).
On the wire, fields are added, never renamed: scripts depend on the names.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, Strict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from maxwell.errors import MaxwellError
from maxwell.node.tickstats import TickStats
from maxwell.units import (
    Money,
    joules_to_uj,
    money_to_tokens,
    tokens_to_money,
    uj_to_joules,
)

if TYPE_CHECKING:  # the agents' SDK imports this module: no cryptography for it
    from maxwell.cluster.transfers import Transfer

MIN_MEMORY_MAX = 1 << 20  # an agent's memory limit: below a MiB, not even an interpreter starts


class _MicroUnits:
    """A field held in integer micro-units that travels as a float of the whole unit: the
    float is finite, and reads back rounded to the nearest micro-unit."""

    def __init__(
        self, unit: str, to_whole: Callable[[int], float], from_whole: Callable[[float], int]
    ) -> None:
        self.unit = unit
        self.to_whole = to_whole
        self.from_whole = from_whole

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self.from_whole,
            core_schema.float_schema(allow_inf_nan=False),
            serialization=core_schema.plain_serializer_function_ser_schema(
                self.to_whole, return_schema=core_schema.float_schema()
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "description": self.unit}


WireMoney = Annotated[Money, _MicroUnits("$J", money_to_tokens, tokens_to_money)]
WireEnergy = Annotated[int, _MicroUnits("J", uj_to_joules, joules_to_uj)]

# Every wire type: strict (a number is never a string or a boolean, an integer never 1.0), unknown
# fields ignored (a newer node may add some), and every field in the schema of an answer, since the
# node always sends them all (a default only serves reading an older node's answers).
WIRE_CONFIG = ConfigDict(strict=True, json_schema_serialization_defaults_required=True)


class AgentState(enum.StrEnum):
    RUNNING = "running"  # served in full by the last clearing
    THROTTLED = "throttled"  # served, but fewer cores than it asked for
    FROZEN = "frozen"  # insolvent, or its bid is below the reserve: cgroup frozen
    DEAD = "dead"  # killed by apoptosis (or by `maxwell kill`)
    EXITED = "exited"  # its command ended by itself


class Role(enum.StrEnum):
    ADMIN = "admin"  # may fund, spawn and kill
    AGENT = "agent"  # may read the price and its own account, bid and report for itself
    USER = "user"  # a local user on the Unix socket: spawns agents that run as itself, funded
    # from its own account, and sees and acts on those agents alone


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, one agent (`agent` is its id), or a local user (`uid`, as the
    kernel said on the Unix socket). `/whoami`."""

    __pydantic_config__ = WIRE_CONFIG

    role: Role
    agent: str | None = None
    uid: int | None = None


@dataclass(frozen=True)
class UserAccount:
    """A local user's account (`user:<uid>` in the ledger): what the admin funded it with, less
    what it gave the agents it spawned. `GET /users/{uid}`."""

    __pydantic_config__ = WIRE_CONFIG

    uid: int
    user: str  # its name in the user database
    balance: WireMoney


NO_MONEY = Money(0)
MAX_REPORTED_CPU_S = 1e9  # ~32 years of one core: more is a malformed report, not a claim
MAX_REPORTED_COUNT = 2**62  # bytes freed or work units: within SQLite's int64


@dataclass(frozen=True)
class Report:
    """What an agent claims it has consumed since it was spawned: the CPU time of its whole
    process tree, the bytes of memory it freed, and optionally the units of useful work it has
    done (its own unit: inferences, tokens). Cumulative, so a lost report loses nothing and a
    later one may never claim less; the kernel's counters for the same agent are the truth an
    audit compares them with. The bounds are those of a well-formed report."""

    __pydantic_config__ = WIRE_CONFIG

    cpu_s: Annotated[
        float,
        Strict(),
        Field(
            ge=0, le=MAX_REPORTED_CPU_S, allow_inf_nan=False, description="CPU seconds of the tree"
        ),
    ]
    memory_freed_bytes: Annotated[int, Strict(), Field(ge=0, le=MAX_REPORTED_COUNT)] = 0
    work: Annotated[
        int | None,
        Strict(),
        Field(ge=0, le=MAX_REPORTED_COUNT, description="units of useful work done"),
    ] = None


@dataclass(frozen=True)
class AgentInfo:
    """One agent's account and state: `GET /agents/{id}`, and what fund, bid, report and kill
    answer with."""

    __pydantic_config__ = WIRE_CONFIG

    id: str
    name: str
    state: AgentState
    balance: WireMoney
    bid: float  # limit price, $J per J
    demand: float  # cores asked for
    share: float  # cores granted by the last clearing
    power_w: float  # attributed power over the last tick
    energy_uj: Annotated[WireEnergy, Field(alias="energy_j")]  # attributed energy since spawn
    paid: Annotated[WireMoney, Field(alias="paid_j")]  # energy bills paid (to the grid)
    landauer: Annotated[WireMoney, Field(alias="landauer_j")]  # Landauer tax paid
    pid: int | None
    exit_code: int | None = None
    cpu_s: float = 0.0  # measured: the CPU time of its cgroup since spawn
    memory_freed_bytes: int = 0  # measured: memory its cgroup freed since spawn (a lower bound)
    reported: Report | None = None  # its latest self-report, if it ever sent one
    billing: str = "metered"  # "metered", or "reports" while a bond backs its self-reports
    bond: WireMoney = NO_MONEY  # posted against its reports (optimistic billing), in stake:<id>
    audits: int = 0  # audits it has been through
    slashed: WireMoney = NO_MONEY  # lost to slashing: bonds and claw-backs
    proofs: int = 0  # valid proofs of inference it submitted
    bounties: WireMoney = NO_MONEY  # earned by them
    user: str | None = None  # who it runs as: a user named at spawn, "dynamic:UID", or None
    # (the daemon's own user)
    # Why it ended, once it has (None while it lives): "apoptosis", "killed" (`maxwell kill`, or
    # `maxwell daemon --kill-agents`), "exited N" (its exit status; "exited on signal N", or
    # "exited" where no daemon saw it end), "slashed" (apoptosis after an audit slashed it).
    ended: str | None = None


@dataclass(frozen=True)
class AuditResult:
    """One audit of one agent: its claims against the counters, and where its threads were."""

    __pydantic_config__ = WIRE_CONFIG

    agent: str
    honest: bool
    findings: tuple[str, ...]  # why it failed, one line each; empty when it passed
    checked: tuple[str, ...]  # what was checked: "reports", "code"
    audits: int  # audits of this agent so far, this one included
    probability: float  # the node's audit probability per agent per tick
    slashed: WireMoney  # taken by this audit: bond and claw-back
    modules: Mapping[str, float] = field(default_factory=dict)  # share of IP samples per module
    samples: int = 0  # instruction-pointer samples taken
    pause_us: float | None = None  # median time a thread was stopped for one sample


@dataclass(frozen=True)
class ProofResult:
    """A proof of inference an agent submitted, checked by the node without re-running the
    model: valid proofs of the model the user set earn the bounty the user set."""

    __pydantic_config__ = WIRE_CONFIG

    agent: str
    valid: bool
    reason: str  # one line: why it is valid, or the first failing layer and check (not by how much)
    bounty: WireMoney  # paid for this proof (0 when invalid)
    proofs: int  # valid proofs of this agent so far
    fee: WireMoney = NO_MONEY  # what the agent paid for a rejected proof


@dataclass(frozen=True)
class PriceInfo:
    __pydantic_config__ = WIRE_CONFIG

    spot: float  # $J per J
    grid: float
    thermal_factor: float
    temperature_c: float
    headroom_c: float
    measured: bool  # is the temperature (and energy) measured, or modelled
    energy_source: str
    temperature_source: str
    # The last clearing's price, $J per J: what a uniform auction's winners pay for the energy
    # they burn (capped at each one's bid); above spot under scarcity. None: not cleared yet.
    clearing: float | None = None
    grid_source: str = "constant"  # where the grid price comes from (`--grid`)
    # A feed's: seconds since its last good reading (None: not a feed, or no reading yet).
    grid_age_s: float | None = None
    # The neighbours' coupling, a factor of the spot price (1: no gossip, or none hotter).
    coupling: float = 1.0
    power_w: float = 0.0  # the node's power over the last interval


@dataclass(frozen=True)
class Event:
    """One line of the node's event log, named in the vision's terms: `spawned`, `funded`,
    `bid`, `throttled`, `frozen`, `thawed`, `apoptosis`, `exited`, `killed`, ..."""

    __pydantic_config__ = WIRE_CONFIG

    seq: int
    at: float  # Unix seconds
    kind: str
    agent: str | None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class JobInfo:
    """Posted work (`maxwell.node.jobs`): inputs of a model that proofs of inference are paid
    for, `bounty` each, once per input, from the job's own account."""

    __pydantic_config__ = WIRE_CONFIG

    id: str
    model: str  # the model's path, as posted
    model_sha256: str  # the model's bytes when posted: proofs of that model only
    bounty: WireMoney  # paid for each input's first valid proof
    inputs: int
    paid: int  # inputs whose proof was paid
    taken: int  # inputs leased to an agent now, not paid yet
    escrow: WireMoney  # left in the job's account (`job:<id>`)
    posted_at: float  # Unix seconds


@dataclass(frozen=True)
class TakenInput:
    """An input of a job, leased to the agent that took it and written into its directory."""

    __pydantic_config__ = WIRE_CONFIG

    job: str
    n: int  # the input's number in its job
    input: str  # the file's name in the agent's directory (`MAXWELL_AGENT_DIR`)
    sha256: str  # the input's digest, as a proof of it records it
    lease_s: float  # no other agent is given it for this long


@dataclass(frozen=True)
class SpawnResult:
    __pydantic_config__ = WIRE_CONFIG

    agent: str
    name: str
    pid: int
    token: str


@dataclass(frozen=True)
class TransferReceipt:
    """A half of a cross-node transfer this node holds (`maxwell.node.transfers`): the job, the
    other node, the amount, the payer (the home node's halves) and this node's signed voucher
    for the other node (base64; None for a refund, which ends the transfer)."""

    __pydantic_config__ = WIRE_CONFIG

    job: str
    node: str
    amount: Annotated[WireMoney, Field(alias="amount_j")]
    payer: str | None
    voucher: str | None


@dataclass(frozen=True)
class TransferHalf:
    kind: str  # xfer-out, xfer-in, xfer-back, xfer-home
    job: str
    node: str  # the other node
    amount_uj: int  # integer µ$J, exact: what `maxwell cluster ledger verify` adds up
    payer: str


@dataclass(frozen=True)
class TransfersReport:
    """This node's halves and its `outbound:*` / `inbound:*` balances (µ$J): `GET /transfers`."""

    __pydantic_config__ = WIRE_CONFIG

    node: str
    balances_uj: dict[str, int]
    halves: tuple[TransferHalf, ...]


@dataclass(frozen=True)
class ClusterMember:
    """A member of the node's gossip cluster as this node sees it (`maxwell cluster members`):
    Serf's view (address, status) and, when `verified`, its last verified heat record's figures
    (None while it has none fresh)."""

    __pydantic_config__ = WIRE_CONFIG

    node: str
    address: str  # HOST:PORT of its gossip
    status: str  # Serf's: "alive", "leaving", "left", "failed"
    verified: bool  # an admitted key, and a fresh record signed by it
    temperature_c: float | None = None
    measured: bool | None = None  # the temperature from a sensor (False: the power model's)
    headroom_c: float | None = None
    price: float | None = None  # its spot price, coupled, $J per J
    free_cores: float | None = None
    age_s: float | None = None  # since its last verified record was made


@dataclass(frozen=True)
class ClusterMembers:
    __pydantic_config__ = WIRE_CONFIG

    members: tuple[ClusterMember, ...]
    node: str | None = None  # the node that answers (its own id): one of the members


@dataclass(frozen=True)
class NodePrice:
    __pydantic_config__ = WIRE_CONFIG

    node: str
    price: float  # its effective (coupled spot) price, $J per J
    free_cores: float


@dataclass(frozen=True)
class ClusterPrices:
    """Every verified, alive node's price (`maxwell cluster price`), cheapest first, and the
    cheapest with room (None: no verified node has a free core)."""

    __pydantic_config__ = WIRE_CONFIG

    nodes: tuple[NodePrice, ...]
    cheapest: str | None


class Cluster(Protocol):
    """What the API serves of the gossip cluster (`maxwell.gossip.view.ClusterView`)."""

    def members(self) -> ClusterMembers: ...

    def prices(self) -> ClusterPrices: ...


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
    # Journal events by kind since the daemon started (`maxwell_events_total`); None: not kept.
    event_counts: Mapping[str, int] | None = None
    node_cores: float | None = None  # cores it sells when cool (`capacity_cores`); None: unknown


class NodeError(MaxwellError):
    """A request the node refuses; `status` is the HTTP status the API answers with."""

    status = 400


class UnknownAgentError(NodeError):
    status = 404


class NotAllowedError(NodeError):
    status = 403


class PaymentError(NodeError):
    """The account that is to pay holds too little."""

    status = 402


class FundKeyConflictError(NodeError):
    """A funding's idempotency key was used for another funding (agent or amount)."""

    status = 409


class UnknownJobError(NodeError):
    status = 404


class NoInputLeftError(NodeError):
    """Every input of the job is paid for, or leased to another agent."""

    status = 409


class AgentGoneError(NodeError):
    """The agent is dead or exited: it can no longer bid or be funded."""

    status = 409


class AgentLiveError(NodeError):
    """The agent still runs (or has not been billed for its end yet): it cannot be forgotten."""

    status = 409


class Node(Protocol):
    """What the API serves. Every method is thread-safe. `authenticate`, `bid` and `report`
    never wait for a tick, and do no more I/O than reading a counter file: the API calls them on
    its event loop, so that they are answered while a tick runs; the others may block and run in
    the API's thread pool."""

    def authenticate(self, token: str) -> Principal | None: ...

    def local_user(self, uid: int) -> Principal | None:
        """The principal of a local user connected on the Unix socket as `uid` (never an
        agent's dynamic uid: agents use their tokens); None for one the node does not serve."""
        ...

    def user_account(self, uid: int) -> UserAccount: ...

    def fund_user(self, uid: int, amount: Money, key: str | None = None) -> UserAccount:
        """From the treasury to the user's account; with `key`, a retry funds once."""
        ...

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
        memory: int | None = None,  # bytes the agent's group may use; None: the node's default
        pids: int | None = None,  # processes and threads it may have; None: the node's default
        owner: int | None = None,  # a local user's spawn: runs as it, funded from its account
        transfer: Transfer | None = None,  # funded by another node's voucher (node.transfers)
        payload: bytes | None = None,  # handed to the agent in a file of its own (node.results)
    ) -> SpawnResult: ...

    def fund(
        self, agent: str, amount: Money, key: str | None = None, owner: int | None = None
    ) -> AgentInfo:
        """From the treasury, or (`owner`) from that local user's account to its own agent."""
        ...

    def bid(self, agent: str, price: float, demand: float | None = None) -> AgentInfo: ...

    def report(self, agent: str, report: Report) -> AgentInfo: ...

    def kill(self, agent: str) -> AgentInfo: ...

    def remove(self, agent: str) -> AgentInfo:
        """Forget an ended agent (`maxwell rm`): gone from the agents and the API, its ledger
        history and its account kept; refused (`AgentLiveError`) while it lives. Its last
        answer."""
        ...

    def audit(self, agent: str) -> AuditResult: ...

    def submit_proof(self, agent: str, input: str, output: str, proof: str) -> ProofResult: ...

    def post_job(self, model: str, inputs: str, bounty: Money) -> JobInfo: ...

    def jobs(self) -> list[JobInfo]: ...

    def job(self, job: str) -> JobInfo: ...

    def take_input(self, agent: str, job: str) -> TakenInput: ...

    def agent(self, agent: str) -> AgentInfo: ...

    def result(self, agent: str) -> bytes:
        """What the ended agent left in its result file (`maxwell.node.results`)."""
        ...

    def log(self, agent: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of the agent's output from `offset` (`maxwell.node.agentlog`)."""
        ...

    def agents(self) -> list[AgentInfo]: ...

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    def price(self) -> PriceInfo: ...

    def status(self) -> NodeStatus: ...
