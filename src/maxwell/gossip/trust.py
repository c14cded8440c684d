"""Whom a node believes (issue 12, 3): admitted node keys, and the checks every record passes.

Serf's encryption key keeps strangers out of the gossip, but every member holds it, so any member
could write any tag. Maxwell believes a heat record only from the key admitted for the node it
names. A node key is admitted by a cluster authority, whose ed25519 key signs a certificate
binding a node id to the node's public key (`certify`; `maxwell cluster sign-node`), or by an
allow-list of node public keys (`Admission`).

`Verifier.accept` checks a record as it arrives, carried by a Serf member: it parses
(`record.decode`), then refuses it, counting why (`rejected`), when

- it is malformed, of another version, too long, or bears no signature ("malformed", "version",
  "oversized", "unsigned");
- the node it names is not the member that carries it ("impostor"): a member may speak only for
  itself (a user event names no sender: its record is bound by its signature alone);
- that node has no admitted key ("not-admitted"), or the signature is not that key's ("forged");
- its sequence number is not above the last one accepted from that node ("replayed");
- it is older than `max_age_s`, or from further in the future than `max_skew_s` ("stale").

Nothing a peer sends raises out of `accept`. Pure: the time is a parameter.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from maxwell.gossip.record import (
    SIGNATURE_BYTES,
    HeatRecord,
    RecordError,
    check_node_id,
    decode,
)

CERT_DOMAIN: Final = b"maxwell-node-v1\0"  # what an authority's signature means
MAX_CERT_BYTES: Final = 200
PUBLIC_KEY_BYTES: Final = 32
REJECTIONS: Final = (
    "malformed", "version", "oversized", "unsigned", "impostor", "not-admitted", "forged",
    "replayed", "stale",
)  # fmt: skip


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NodeCertificate:
    """An authority's word that `public_key` (raw, 32 bytes) speaks for node `node`."""

    node: str
    public_key: bytes
    signature: bytes

    def signed_part(self) -> bytes:
        return CERT_DOMAIN + bytes(msgpack.packb([self.node, self.public_key]))

    def encode(self) -> bytes:
        return bytes(msgpack.packb([self.node, self.public_key, self.signature]))

    @classmethod
    def decode(cls, wire: bytes) -> NodeCertificate:
        """Parse a certificate without trusting it (`Admission.admit` checks it)."""
        if len(wire) > MAX_CERT_BYTES:
            raise RecordError("oversized", f"a certificate of {len(wire)} bytes")
        try:
            fields = msgpack.unpackb(wire, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise RecordError("malformed", "a certificate that is not msgpack") from None
        if not (isinstance(fields, list) and len(fields) == 3):
            raise RecordError("malformed", "a certificate is [node, public key, signature]")
        node, key, signature = fields
        check_node_id(node)
        if not (isinstance(key, bytes) and len(key) == PUBLIC_KEY_BYTES):
            raise RecordError("malformed", "a certificate's public key")
        if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_BYTES):
            raise RecordError("malformed", "a certificate's signature")
        return cls(node, key, signature)


def certify(authority: Ed25519PrivateKey, node: str, key: Ed25519PublicKey) -> NodeCertificate:
    """The authority's certificate for `node`'s public key."""
    unsigned = NodeCertificate(node, raw_public(key), b"")
    return NodeCertificate(node, unsigned.public_key, authority.sign(unsigned.signed_part()))


@dataclass(frozen=True)
class Admission:
    """Which node keys are believed: those an `authority` certified, and an allow-list of
    node id -> raw public key (either may be empty)."""

    authority: Ed25519PublicKey | None = None
    allowed: Mapping[str, bytes] = field(default_factory=dict)

    def admit(self, certificate: NodeCertificate) -> Ed25519PublicKey:
        """The node's key, if the allow-list holds it or the authority signed it."""
        if self.allowed.get(certificate.node) == certificate.public_key:
            return Ed25519PublicKey.from_public_bytes(certificate.public_key)
        if self.authority is None:
            raise RecordError("not-admitted", f"{certificate.node}: not on the allow-list")
        try:
            self.authority.verify(certificate.signature, certificate.signed_part())
        except InvalidSignature:
            raise RecordError(
                "not-admitted", f"{certificate.node}: the authority did not sign this key"
            ) from None
        return Ed25519PublicKey.from_public_bytes(certificate.public_key)


class Verifier:
    """Checks heat records as they arrive and remembers the last accepted of each node."""

    def __init__(self, admission: Admission, *, max_age_s: float = 30.0, max_skew_s: float = 5.0):
        self._admission = admission
        self._max_age_s = max_age_s
        self._max_skew_s = max_skew_s
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.latest: dict[str, HeatRecord] = {}  # each node's last accepted record
        self.rejected: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self._wires: dict[str, bytes] = {}  # each node's last accepted record, as it came

    def learn(self, member: str, certificate: bytes) -> bool:
        """Admit the key in `member`'s certificate (from its tags): True if admitted. A member
        may present a certificate for itself only."""
        try:
            found = NodeCertificate.decode(certificate)
            if found.node != member:
                raise RecordError("impostor", f"{member} shows {found.node}'s certificate")
            self._keys[member] = self._admission.admit(found)
        except RecordError as exc:
            self.rejected[exc.reason] += 1
            return False
        return True

    def latest_wire(self, node: str) -> bytes | None:
        """`node`'s last accepted record, as it came."""
        return self._wires.get(node)

    def knows(self, node: str) -> bool:
        """Whether `node` has an admitted key."""
        return node in self._keys

    def accept(self, member: str | None, wire: bytes, now: float) -> HeatRecord | None:
        """The record `member` carried, if it passes every check (see the module) and is new;
        else None, a refusal's reason counted in `rejected`, a copy of the last accepted record
        in `duplicates` (a distress record comes both as tags and as an event). `member` None:
        it came in a user event, which does not say who sent it; its signature alone binds it."""
        try:
            record = self._checked(member, wire, now)
        except RecordError as exc:
            self.rejected[exc.reason] += 1
            return None
        if record is None:
            self.duplicates += 1
            return None
        self.latest[record.node] = record
        self._wires[record.node] = wire
        return record

    def _checked(self, member: str | None, wire: bytes, now: float) -> HeatRecord | None:
        signed = decode(wire)
        record = signed.record
        if not any(signed.signature):
            raise RecordError("unsigned", f"{record.node}: no signature")
        if member is not None and record.node != member:
            raise RecordError("impostor", f"{member} carries a record of {record.node}")
        if self._wires.get(record.node) == wire:
            return None  # exactly what was accepted: checked then
        key = self._keys.get(record.node)
        if key is None:
            raise RecordError("not-admitted", f"{record.node}: no admitted key")
        signed.verify(key)
        last = self.latest.get(record.node)
        if last is not None and record.seq <= last.seq:
            raise RecordError("replayed", f"{record.node}: seq {record.seq} after {last.seq}")
        if not -self._max_skew_s <= now - record.at <= self._max_age_s:
            raise RecordError("stale", f"{record.node}: made {now - record.at:.1f} s ago")
        return record
