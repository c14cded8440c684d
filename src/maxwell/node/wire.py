"""The wire contract: the JSON the API serves and the SDK reads, defined once.

The answers are the facade's frozen types (`AgentInfo`, `PriceInfo`, `Event`, ...): their
annotations say how each field travels (see `maxwell.node.facade`), and pydantic derives from
them the JSON the API writes, the checks the SDK reads it back with, and the OpenAPI schemas.
This module adds what only the wire has: the request bodies, the envelopes of lists, the flat
shape of `/status`, and the functions the API, the SDK, the CLI and the tests share: `to_json`
(a value as the API's JSON) and `from_json` (JSON text read back into a value).

Rules:
- A request body is strict (`"10"` is not a number, `true` is not 1) and closed (a misspelt
  field is an error). An answer is strict and open: a newer node may add fields, and an older
  node's answer that lacks a field with a default reads as that default.
- The request bodies are frozen dataclasses, like the answers: the SDK builds one with its typed
  constructor, which checks nothing, so the node's 422 stays the one judge of a request.
- Reading never builds a value from a malformed answer: `from_json` raises `ValueError`, one
  line that names the field.
- Money travels as a float of $J; the bounds below keep every figure representable downstream
  (SQLite integers are int64: 1e12 $J is 1e18 µ$J < 2**63) and reject nonsense with a clear
  message rather than an overflow. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError

from maxwell.node.facade import (
    MIN_MEMORY_MAX,
    WIRE_CONFIG,
    AgentInfo,
    Event,
    JobInfo,
    NodeStatus,
    PriceInfo,
    Report,
)
from maxwell.node.tickstats import TickStats

__all__ = [
    "AgentList",
    "ArrivalRequest",
    "BidRequest",
    "ErrorBody",
    "EventList",
    "FundRequest",
    "JobList",
    "JobRequest",
    "ProofRequest",
    "ReportRequest",
    "SpawnRequest",
    "StatusBody",
    "TransferRequest",
    "VoucherRequest",
    "from_json",
    "status_from_json",
    "status_to_json",
    "to_json",
    "to_json_bytes",
    "validation_message",
]

WireValue = TypeVar("WireValue")

MAX_AMOUNT_J = 1e12
MIN_AMOUNT_J = 1e-6  # one µ$J, the ledger's unit: every amount the schema admits can be booked
MAX_PRICE = 1e9  # $J per J; the spot price is around 1
MAX_DEMAND_CORES = 1e6
MAX_ARGV = 1024
MAX_LIMIT = 1 << 62  # a memory or pids limit: the kernel's own "max" is larger than any use
MAX_TEXT = 4096  # one argv element, one path
MAX_NAME = 64
MAX_PAYLOAD_BYTES = 1 << 20  # what a spawn hands its agent in a file (`payload`)
MAX_RESULT_BYTES = 8 << 20  # what the node reads back of an agent's result file

# Strict field by field: a request arrives as parsed JSON, which a strict dataclass would refuse
# for not being an instance of itself.
Amount = Annotated[
    float,
    Strict(),
    Field(ge=MIN_AMOUNT_J, le=MAX_AMOUNT_J, allow_inf_nan=False, description="$J"),
]
Price = Annotated[
    float, Strict(), Field(ge=0, le=MAX_PRICE, allow_inf_nan=False, description="$J per J")
]
Demand = Annotated[
    float, Strict(), Field(gt=0, le=MAX_DEMAND_CORES, allow_inf_nan=False, description="cores")
]
# No NUL in what reaches exec or a path (the kernel cannot take it); no control character in a
# name, which `maxwell ps` and the logs print (an ESC would drive the reader's terminal).
Text = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\x00]*$")]
Name = Annotated[
    str,
    Strict(),
    Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
        description="printable text: no control character",
    ),
]
IdempotencyKey = Annotated[
    str,
    Strict(),
    Field(
        pattern=r"^[A-Za-z0-9._-]{8,64}$",
        description="the client's key for this request: a retry with it changes nothing more",
    ),
]

# Bytes a spawn hands its agent, base64 (`payload`): written to a file of the agent's own.
Payload = Annotated[
    str,
    Strict(),
    Field(
        max_length=4 * -(-MAX_PAYLOAD_BYTES // 3),
        pattern=r"^[A-Za-z0-9+/]*={0,2}$",
        description="bytes for the agent (base64, at most 1 MiB decoded): the file "
        "$MAXWELL_AGENT_PAYLOAD names, its own (mode 0600)",
    ),
]

REQUEST_CONFIG = ConfigDict(extra="forbid")


# --- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpawnRequest:
    __pydantic_config__ = REQUEST_CONFIG

    argv: Annotated[
        list[Text],
        Field(min_length=1, max_length=MAX_ARGV, description="the command and its arguments"),
    ]
    fund: Annotated[Amount, Field(description="initial funding from the treasury, $J")]
    bid: Annotated[Price, Field(description="limit price, $J per J")]
    demand: Demand = 1.0
    name: Name | None = None
    user: Name | None = None
    code: Annotated[
        list[Text] | None,
        Field(
            min_length=1,
            max_length=MAX_ARGV,
            description="the binaries and libraries (or directories of them) the agent runs: its "
            "code manifest, which audits check its threads' instruction pointers against",
        ),
    ] = None
    bounty: Annotated[
        Amount | None,
        Field(description="kept for older clients: a proof earns its job's bounty (POST /jobs)"),
    ] = None
    model: Annotated[
        Text | None,
        Field(
            description="path (on the node) of the ONNX model the agent proves inference of: "
            "proofs of a posted job's inputs for it earn the job's bounty"
        ),
    ] = None
    memory: Annotated[
        int | None,
        Field(
            ge=MIN_MEMORY_MAX, le=MAX_LIMIT,
            description="bytes the agent's group may use (default: the node's memory_max)",
        ),
    ] = None  # fmt: skip
    pids: Annotated[
        int | None,
        Field(
            ge=1, le=MAX_LIMIT,
            description="processes and threads the agent may have (default: the node's pids_max)",
        ),
    ] = None  # fmt: skip
    payload: Payload | None = None


# A job or node id that a ledger account can carry (`cluster.transfers`); a voucher in base64.
CrossId = Annotated[
    str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$", description="an id")
]
VoucherText = Annotated[
    str,
    Strict(),
    Field(
        min_length=4, max_length=1024, pattern=r"^[A-Za-z0-9+/]*={0,2}$",
        description="a node's signed voucher for a transfer, base64",
    ),
]  # fmt: skip


@dataclass(frozen=True)
class TransferRequest:
    """Send a job's funds to the node that runs it (`POST /transfers`)."""

    __pydantic_config__ = REQUEST_CONFIG

    job: CrossId
    to: CrossId
    fund: Amount


@dataclass(frozen=True)
class ArrivalRequest:
    """Run a job another node sent with its funds (`POST /transfers/in`): the spawn's fields,
    funded by the voucher (its amount is the agent's funding)."""

    __pydantic_config__ = REQUEST_CONFIG

    voucher: VoucherText
    argv: Annotated[list[Text], Field(min_length=1, max_length=MAX_ARGV)]
    bid: Price
    demand: Demand = 1.0
    name: Name | None = None
    memory: Annotated[int | None, Field(ge=MIN_MEMORY_MAX, le=MAX_LIMIT)] = None
    pids: Annotated[int | None, Field(ge=1, le=MAX_LIMIT)] = None
    payload: Payload | None = None


@dataclass(frozen=True)
class VoucherRequest:
    """A runner's voucher for what came back (`POST /transfers/back`)."""

    __pydantic_config__ = REQUEST_CONFIG

    voucher: VoucherText


@dataclass(frozen=True)
class FundRequest:
    __pydantic_config__ = REQUEST_CONFIG

    amount: Amount
    key: IdempotencyKey | None = None


@dataclass(frozen=True)
class BidRequest:
    __pydantic_config__ = REQUEST_CONFIG

    price: Price
    demand: Demand | None = None


@dataclass(frozen=True)
class ReportRequest(Report):
    """Cumulative since the agent was spawned: a later report may never claim less."""

    __pydantic_config__ = REQUEST_CONFIG

    def claim(self) -> Report:
        """The claim as the facade's `Report`, which the node keeps."""
        return Report(self.cpu_s, self.memory_freed_bytes, self.work)


@dataclass(frozen=True)
class ProofRequest:
    """Files in the agent's own directory (`MAXWELL_AGENT_DIR`), named relative to it."""

    __pydantic_config__ = REQUEST_CONFIG

    input: Annotated[Text, Field(description="X, a float32 .npy")]
    output: Annotated[Text, Field(description="Y, a float32 .npy")]
    proof: Annotated[Text, Field(description="the proof bundle")]


@dataclass(frozen=True)
class JobRequest:
    """Posted work: paths on the node, read by the daemon; `bounty` $J per input's first valid
    proof of `model` (ONNX), for each float32 `.npy` in the directory `inputs`."""

    __pydantic_config__ = REQUEST_CONFIG

    model: Text
    inputs: Text
    bounty: Amount


# --- answers that only the wire has --------------------------------------------------------------


@dataclass(frozen=True)
class ErrorBody:
    """Every refusal: one line that says why."""

    __pydantic_config__ = WIRE_CONFIG

    error: str


@dataclass(frozen=True)
class AgentList:
    __pydantic_config__ = WIRE_CONFIG

    agents: Sequence[AgentInfo]


@dataclass(frozen=True)
class JobList:
    __pydantic_config__ = WIRE_CONFIG

    jobs: Sequence[JobInfo]


@dataclass(frozen=True)
class EventList:
    __pydantic_config__ = WIRE_CONFIG

    events: Sequence[Event]


@dataclass(frozen=True)
class StatusBody:
    """`/status`: a `NodeStatus` with its tick figures at the top level (null, and 0, when the
    node keeps no stats). Read back, absent figures take "unknown" values (an older node, or a
    status built from `/price` and `/agents` alone)."""

    __pydantic_config__ = WIRE_CONFIG

    price: PriceInfo
    agents: Sequence[AgentInfo]
    tick_s: float = 0.0
    last_tick_duration_s: float = 0.0
    ticks: int = 0
    mechanism: str = "unknown"
    cgroup: str = "unknown"
    capacity_cores: float = 0.0
    tick_failures: Annotated[
        int, Field(description="ticks that failed since the daemon started")
    ] = 0
    last_error: Annotated[
        str | None, Field(description="the last failed tick's error, one line")
    ] = None
    last_error_at: Annotated[float | None, Field(description="when it failed, Unix seconds")] = None
    tick_ms_median: Annotated[
        float | None,
        Field(
            description="median tick duration over the recent ticks; null: the node keeps no stats"
        ),
    ] = None
    tick_ms_p99: Annotated[float | None, Field(description="99th percentile of the same")] = None
    ledger_rows: Annotated[int, Field(description="rows the ledger's journal holds")] = 0

    @classmethod
    def of(cls, status: NodeStatus) -> StatusBody:
        stats = status.tick_stats
        return cls(
            price=status.price,
            agents=status.agents,
            tick_s=status.tick_s,
            last_tick_duration_s=status.last_tick_duration_s,
            ticks=status.ticks,
            mechanism=status.mechanism,
            cgroup=status.cgroup,
            capacity_cores=status.capacity_cores,
            tick_failures=0 if stats is None else stats.failures,
            last_error=None if stats is None else stats.last_error,
            last_error_at=None if stats is None else stats.last_error_at,
            tick_ms_median=None if stats is None else stats.median_ms,
            tick_ms_p99=None if stats is None else stats.p99_ms,
            ledger_rows=0 if stats is None else stats.ledger_rows,
        )

    def status(self) -> NodeStatus:
        """The `NodeStatus` back; its `tick_stats` is None unless `tick_ms_median` is a number,
        and then has no histogram (the wire carries none) and the node's tick count."""
        return NodeStatus(
            price=self.price,
            agents=list(self.agents),
            tick_s=self.tick_s,
            last_tick_duration_s=self.last_tick_duration_s,
            ticks=self.ticks,
            mechanism=self.mechanism,
            cgroup=self.cgroup,
            capacity_cores=self.capacity_cores,
            tick_stats=self._tick_stats(),
        )

    def _tick_stats(self) -> TickStats | None:
        if self.tick_ms_median is None:
            return None
        if self.tick_ms_p99 is None:
            raise ValueError("malformed StatusBody: tick_ms_p99: must be a number with a median")
        return TickStats(
            ticks=self.ticks,
            failures=self.tick_failures,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            duration_bounds_s=(),
            duration_counts=(),
            duration_sum_s=0.0,
            median_ms=self.tick_ms_median,
            p99_ms=self.tick_ms_p99,
            ledger_rows=self.ledger_rows,
        )


# --- to and from JSON ----------------------------------------------------------------------------

_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(kind: type[WireValue]) -> TypeAdapter[WireValue]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:  # two threads may both build one: the same, and only once per type
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


def to_json(value: object, *, exclude_none: bool = False) -> dict[str, Any]:
    """`value` (one of the wire types) as the API's JSON: names and units as on the wire.
    `exclude_none` leaves out absent optional fields (how the SDK writes a request)."""
    document: dict[str, Any] = _adapter(type(value)).dump_python(
        value, mode="json", by_alias=True, exclude_none=exclude_none
    )
    return document


def to_json_bytes(value: object, *, exclude_none: bool = False) -> bytes:
    """`to_json`, encoded: the body of a request."""
    return _adapter(type(value)).dump_json(value, by_alias=True, exclude_none=exclude_none)


def from_json(kind: type[WireValue], document: str | bytes) -> WireValue:
    """`document`, JSON text, read as a `kind`, every field checked; `ValueError` otherwise."""
    try:
        return _adapter(kind).validate_json(document)
    except ValidationError as exc:
        message = validation_message(exc.errors(include_url=False))
        raise ValueError(f"malformed {kind.__name__}: {message}") from None


# Pydantic words two errors about a dataclass in Python's terms (keyword arguments, the class's
# name); a request body is one, and the API says them as it did when the bodies were models.
_WIRE_WORDS = {
    "unexpected_keyword_argument": "Extra inputs are not permitted",
    "dataclass_type": "Input should be a valid dictionary or object to extract fields from",
}


def validation_message(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's errors as one line: the first, where it is (`body.amount`), and how many more."""
    found = list(errors)
    if not found:
        return "malformed request"
    first = found[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = _WIRE_WORDS.get(str(first.get("type")), str(first.get("msg", "invalid")))
    line = f"{where}: {message}" if where else message
    if len(found) > 1:
        line += f" (and {len(found) - 1} more)"
    return " ".join(line.split())  # one line, whatever the message holds


def status_to_json(status: NodeStatus) -> dict[str, Any]:
    """The JSON of `/status` (`StatusBody`)."""
    return to_json(StatusBody.of(status))


def status_from_json(document: str | bytes) -> NodeStatus:
    """A `NodeStatus` from the JSON of `/status` (`StatusBody`)."""
    return from_json(StatusBody, document).status()
