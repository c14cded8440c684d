"""The heat record (issue 12, 2): what a node tells the cluster about itself, signed by its key.

A record says who (the node id, the Serf member name), which (a sequence number, above every
earlier one of that node), when (Unix time), and how hot and how dear the node is: temperature
(and whether it was measured or modelled), headroom to the throttle point, power, spot price,
capacity, free cores and load. It is signed with the node's ed25519 key, so a member that holds
the cluster's Serf key but not the node's own key cannot forge or alter it.

The wire format (`docs/gossip.md`), version 1: a msgpack array `[body, signature]`, where `body`
is the msgpack array `[1, node, seq, at, temperature_c, measured, headroom_c, power_w, price,
capacity_cores, free_cores, load]` (floats as IEEE 754 doubles, `measured` a boolean) and
`signature` the 64-byte ed25519 signature of `DOMAIN + body`. A record is at most
`MAX_RECORD_BYTES` (400) on the wire. Decoding never trusts the bytes: any malformation is a
`RecordError` naming its `reason`, one of `REJECTIONS`.

Pure: no clock, no I/O; keys are `cryptography`'s.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass
from typing import Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from maxwell.errors import MaxwellError

VERSION: Final = 1
MAX_RECORD_BYTES: Final = 400
MAX_NODE_ID: Final = 48  # bytes of UTF-8: a record and a certificate fit in Serf's tags
DOMAIN: Final = b"maxwell-heat-v1\0"  # signed before the body: a signature means this, nothing else
SIGNATURE_BYTES: Final = 64


class RecordError(MaxwellError):
    """A record that cannot be used; `reason` is its label in the rejection counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


@dataclass(frozen=True)
class HeatRecord:
    """One node's heat and price at one moment (see the module)."""

    node: str
    seq: int
    at: float  # Unix time it was made
    temperature_c: float
    measured: bool  # read from a sensor; False: the power model's
    headroom_c: float  # to the throttle point
    power_w: float
    price: float  # the node's spot price, $J per J
    capacity_cores: float
    free_cores: float
    load: float  # cores in use

    def __post_init__(self) -> None:
        check_record(self)


def check_node_id(node: object) -> str:
    """`node`, if it can name a node: 1 to `MAX_NODE_ID` bytes of printable UTF-8 (a
    `RecordError`, reason "malformed", otherwise)."""
    if not (isinstance(node, str) and 0 < len(node.encode()) <= MAX_NODE_ID and node.isprintable()):
        raise RecordError("malformed", f"node id {node!r}: 1-{MAX_NODE_ID} printable bytes")
    return node


def check_record(record: HeatRecord) -> None:
    """Refuse a record no honest node makes (a `RecordError`, reason "malformed")."""
    check_node_id(record.node)
    if isinstance(record.seq, bool) or not 0 <= record.seq < 2**63:
        raise RecordError("malformed", f"sequence {record.seq!r}: an integer from 0 to 2^63 - 1")
    numbers = astuple(record)[2:]
    if not all(isinstance(x, float | int) and math.isfinite(x) for x in numbers):
        raise RecordError("malformed", "every figure must be a finite number")
    if min(record.power_w, record.price, record.capacity_cores, record.free_cores, record.load) < 0:
        raise RecordError("malformed", "power, price, capacity, free cores and load are >= 0")
    if record.free_cores > record.capacity_cores:
        raise RecordError("malformed", "more free cores than capacity")


def body_of(record: HeatRecord) -> bytes:
    """The signed part: the version, then the fields in their order."""
    node, seq, at, temperature, measured, *figures = astuple(record)
    floats = [float(x) for x in (at, temperature)], [float(x) for x in figures]
    packed: bytes = msgpack.packb([VERSION, node, seq, *floats[0], measured, *floats[1]])
    return packed


def encode(record: HeatRecord, key: Ed25519PrivateKey) -> bytes:
    """The record signed by `key`, as it goes on the wire (at most `MAX_RECORD_BYTES`)."""
    body = body_of(record)
    wire: bytes = msgpack.packb([body, key.sign(DOMAIN + body)])
    if len(wire) > MAX_RECORD_BYTES:  # cannot happen within MAX_NODE_ID; kept as a guard
        raise RecordError("oversized", f"{len(wire)} bytes, more than {MAX_RECORD_BYTES}")
    return wire


@dataclass(frozen=True)
class SignedRecord:
    """A record as it came: what it says, and the bytes its signature covers."""

    record: HeatRecord
    body: bytes
    signature: bytes

    def verify(self, key: Ed25519PublicKey) -> None:
        """A `RecordError` ("forged") unless `key` signed this body."""
        try:
            key.verify(self.signature, DOMAIN + self.body)
        except InvalidSignature:
            raise RecordError(
                "forged", f"{self.record.node}: the signature does not hold"
            ) from None


def decode(wire: bytes) -> SignedRecord:
    """Parse a record from the wire without trusting it (its signature is checked later, against
    the key admitted for the node it names: `maxwell.gossip.trust`)."""
    if len(wire) > MAX_RECORD_BYTES:
        raise RecordError("oversized", f"{len(wire)} bytes, more than {MAX_RECORD_BYTES}")
    outer = _unpack(wire)
    if not (isinstance(outer, list) and len(outer) == 2):
        raise RecordError("malformed", "not [body, signature]")
    body, signature = outer
    if not isinstance(body, bytes) or not isinstance(signature, bytes):
        raise RecordError("malformed", "body and signature must be bytes")
    if len(signature) != SIGNATURE_BYTES:
        raise RecordError("malformed", f"a signature of {len(signature)} bytes")
    fields = _unpack(body)
    if not isinstance(fields, list) or not fields:
        raise RecordError("malformed", "the body is not a list")
    if fields[0] != VERSION:
        raise RecordError("version", f"version {fields[0]!r}; this node reads {VERSION}")
    return SignedRecord(_record(fields[1:]), body, signature)


def _unpack(data: bytes) -> object:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)  # `data` is capped above
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RecordError("malformed", f"not msgpack ({exc})") from None


def _record(fields: list[object]) -> HeatRecord:
    names = ("node", "seq", "at", "temperature_c", "measured", "headroom_c", "power_w", "price",
             "capacity_cores", "free_cores", "load")  # fmt: skip
    if len(fields) != len(names):
        raise RecordError("malformed", f"{len(fields)} fields, not {len(names)}")
    node, seq, measured = fields[0], fields[1], fields[4]
    if not isinstance(node, str) or not isinstance(seq, int) or not isinstance(measured, bool):
        raise RecordError("malformed", "node must be text, seq an integer, measured a boolean")
    numbers = [fields[2], fields[3], *fields[5:]]
    if not all(isinstance(x, float) for x in numbers):
        raise RecordError("malformed", "the figures must be floats")
    return HeatRecord(**dict(zip(names, fields, strict=True)))  # type: ignore[arg-type]
