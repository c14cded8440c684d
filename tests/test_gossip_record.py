"""Heat records and trust (issue 12, 2 and 3): the codec, the signatures, admission of node keys
and every reason a record is refused, with hypothesis (`maxwell.gossip.record`, `.trust`)."""

from __future__ import annotations

import math

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.gossip.record import (
    MAX_NODE_ID,
    MAX_RECORD_BYTES,
    HeatRecord,
    RecordError,
    body_of,
    decode,
    encode,
)
from maxwell.gossip.trust import (
    REJECTIONS,
    Admission,
    NodeCertificate,
    Verifier,
    certify,
    raw_public,
)

NOW = 1_800_000_000.0
AUTHORITY = Ed25519PrivateKey.generate()
KEYS = {name: Ed25519PrivateKey.generate() for name in ("n1", "n2", "rogue")}

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def records(draw: st.DrawFn) -> HeatRecord:
    capacity = draw(finite)
    return HeatRecord(
        node=draw(st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1,
                          max_size=16)),
        seq=draw(st.integers(0, 2**63 - 1)),
        at=draw(st.floats(0.0, 4e9)),
        temperature_c=draw(st.floats(-50.0, 150.0)),
        measured=draw(st.booleans()),
        headroom_c=draw(st.floats(-50.0, 150.0)),
        power_w=draw(finite),
        price=draw(finite),
        capacity_cores=capacity,
        free_cores=draw(st.floats(0.0, capacity)),
        load=draw(finite),
    )  # fmt: skip


def _record(node: str = "n1", seq: int = 1, at: float = NOW, **changes: object) -> HeatRecord:
    fields: dict[str, object] = dict(
        node=node, seq=seq, at=at, temperature_c=64.0, measured=True, headroom_c=36.0,
        power_w=80.0, price=1.1, capacity_cores=2.0, free_cores=1.5, load=0.5,
    )  # fmt: skip
    return HeatRecord(**{**fields, **changes})  # type: ignore[arg-type]


def _verifier(**admission: object) -> Verifier:
    verifier = Verifier(Admission(**admission))  # type: ignore[arg-type]
    for name, key in KEYS.items():
        verifier.learn(name, certify(AUTHORITY, name, key.public_key()).encode())
    return verifier


@given(records())
def test_a_record_survives_the_wire_within_its_size_and_its_signature_holds(
    record: HeatRecord,
) -> None:
    key = KEYS["n1"]
    wire = encode(record, key)
    assert len(wire) <= MAX_RECORD_BYTES
    signed = decode(wire)
    assert signed.record == record and signed.body == body_of(record)
    signed.verify(key.public_key())
    with pytest.raises(RecordError, match="forged"):
        signed.verify(KEYS["n2"].public_key())


def test_the_largest_record_fits_in_400_bytes() -> None:
    widest = _record(node="x" * MAX_NODE_ID, seq=2**63 - 1, at=4e9, power_w=math.pi * 1e300)
    assert len(encode(widest, KEYS["n1"])) <= MAX_RECORD_BYTES


@settings(max_examples=300)
@given(st.data())
def test_any_changed_byte_is_refused_never_believed(data: st.DataObject) -> None:
    verifier = _verifier(authority=AUTHORITY.public_key())
    wire = bytearray(encode(_record(), KEYS["n1"]))
    at = data.draw(st.integers(0, len(wire) - 1))
    wire[at] ^= data.draw(st.integers(1, 255))
    assert verifier.accept("n1", bytes(wire), NOW) is None
    assert sum(verifier.rejected.values()) == 1 and set(verifier.rejected) <= set(REJECTIONS)


@given(st.binary(max_size=600))
def test_garbage_is_a_record_error_and_nothing_else(garbage: bytes) -> None:
    verifier = _verifier(authority=AUTHORITY.public_key())
    assert verifier.accept("n1", garbage, NOW) is None
    assert set(verifier.rejected) <= set(REJECTIONS)
    assert not verifier.learn("n1", garbage)  # never a certificate the authority signed


def test_each_reason_a_record_is_refused() -> None:
    verifier = _verifier(authority=AUTHORITY.public_key())
    first = encode(_record(seq=4), KEYS["n1"])
    assert verifier.accept("n1", first, NOW) == _record(seq=4)
    assert verifier.accept(None, encode(_record(seq=5), KEYS["n1"]), NOW) == _record(seq=5)
    cases = {
        "replayed": ("n1", first),  # an earlier one again
        "impostor": ("rogue", encode(_record(seq=9), KEYS["rogue"])),  # for another node
        "forged": ("n1", encode(_record(seq=9), KEYS["rogue"])),  # another node's key
        "not-admitted": ("n3", encode(_record(node="n3", seq=9), KEYS["n1"])),
        "stale": ("n1", encode(_record(seq=9, at=NOW - 60), KEYS["n1"])),
        "oversized": ("n1", bytes(MAX_RECORD_BYTES + 1)),
        "malformed": ("n1", msgpack.packb([b"body"])),
        "version": ("n1", msgpack.packb([msgpack.packb([2, "n1"]), bytes(64)])),
        "unsigned": ("n1", msgpack.packb([body_of(_record(seq=9)), bytes(64)])),
    }
    for reason, (member, wire) in cases.items():
        assert verifier.accept(member, wire, NOW) is None, reason
        assert verifier.rejected[reason] == 1, (reason, verifier.rejected)
    future = encode(_record(seq=10, at=NOW + 60), KEYS["n1"])
    assert verifier.accept("n1", future, NOW) is None and verifier.rejected["stale"] == 2
    assert verifier.latest == {"n1": _record(seq=5)}  # nothing refused changed what is believed


def test_the_latest_record_again_is_a_duplicate_not_news_nor_a_refusal() -> None:
    """A distress record comes as tags and as an event: the second copy changes nothing."""
    verifier = _verifier(authority=AUTHORITY.public_key())
    wire = encode(_record(seq=5), KEYS["n1"])
    assert verifier.accept("n1", wire, NOW) == _record(seq=5)
    assert verifier.accept(None, wire, NOW + 1) is None
    assert verifier.accept("n1", wire, NOW + 2) is None
    assert (verifier.duplicates, sum(verifier.rejected.values())) == (2, 0)
    assert verifier.accept("rogue", wire, NOW) is None  # carried by another: still an impostor
    assert verifier.rejected == {"impostor": 1}
    assert verifier.accept("n1", encode(_record(seq=6), KEYS["n1"]), NOW) == _record(seq=6)


def test_keys_are_admitted_by_the_authority_or_the_allow_list() -> None:
    stranger = Ed25519PrivateKey.generate()
    by_authority = Verifier(Admission(authority=AUTHORITY.public_key()))
    assert by_authority.learn("n1", certify(AUTHORITY, "n1", KEYS["n1"].public_key()).encode())
    assert not by_authority.learn("n2", certify(stranger, "n2", KEYS["n2"].public_key()).encode())
    # a member showing another node's certificate is an impostor, whoever signed it
    assert not by_authority.learn("rogue", certify(AUTHORITY, "n1", KEYS["rogue"].public_key())
                                  .encode())  # fmt: skip
    assert by_authority.rejected == {"not-admitted": 1, "impostor": 1}
    listed = Verifier(Admission(allowed={"n2": raw_public(KEYS["n2"].public_key())}))
    assert listed.learn("n2", certify(stranger, "n2", KEYS["n2"].public_key()).encode())
    assert not listed.learn("n1", certify(AUTHORITY, "n1", KEYS["n1"].public_key()).encode())
    certificate = certify(AUTHORITY, "n1", KEYS["n1"].public_key())
    assert NodeCertificate.decode(certificate.encode()) == certificate


@pytest.mark.parametrize(
    "changes",
    [{"node": ""}, {"node": "x" * 65}, {"node": "a\nb"}, {"seq": -1}, {"seq": 2**63},
     {"price": -1.0}, {"temperature_c": math.nan}, {"free_cores": 3.0}, {"load": math.inf}],
)  # fmt: skip
def test_a_record_no_honest_node_makes_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(RecordError, match="malformed"):
        _record(**changes)
