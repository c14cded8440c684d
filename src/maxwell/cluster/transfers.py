"""Money that crosses nodes (issue 13, 3): a job's funds go from its home node to the node that
runs it, and what is left comes back. Pure: no clock, no I/O; keys are `cryptography`'s.

Every node keeps its own ledger, so a transfer is two halves, one in each ledger, each an
idempotent entry keyed by the job id (a retry applies nothing twice):

| half | in the ledger of | key | legs |
| --- | --- | --- | --- |
| sent | home H | `xfer-out:<job>` | payer (`user:<uid>` or `treasury`) -> `outbound:R` |
| received | runner R | `xfer-in:<job>` | `inbound:H` (credit allowed) -> `agent:<id>` |
| returned | runner R | `xfer-back:<job>` | `agent:<id>` -> `inbound:H` (what is left) |
| refunded | home H | `xfer-home:<job>` | `outbound:R` -> the payer of `xfer-out:<job>` |

A runner that received a job it cannot run (its command would not start) declines it: its
`xfer-in` and `xfer-back` go through `declined:<job>` in one unit of work, all of the funds back.

A half moves money in one ledger only on the word of the other node: a **voucher**, signed by
the sending node's ed25519 key and carrying that node's certificate (`gossip.trust`), says
"node F sent `amount` for job J to node T". The runner credits `xfer-in` only on a voucher of the
home node's (kind "out"), the home node refunds only on a voucher of the runner's (kind "back"),
at most what it sent, to the payer its own journal names (never one a voucher names). A voucher
whose certificate the cluster authority did not sign, whose signature is not that key's, that
names another recipient, or of the wrong kind is refused (`VoucherError`, reason among
`VOUCHER_REFUSALS`); one presented twice applies once (its half's key).

Conservation across nodes: for every ordered pair (H, R), what H holds in `outbound:R` plus what
R holds in `inbound:H` is exactly the money in flight between them: sent but not yet received,
and returned but not yet refunded (`reconcile`); every second half matches its first. Anything
else is money created or lost.

The voucher's wire format, version 1: a msgpack array `[body, certificate, signature]`, `body`
the msgpack array `[1, kind, job, from, to, amount, at]` (`amount` in integer µ$J, `at` Unix
time), `signature` the ed25519 signature of `DOMAIN + body`; at most `MAX_VOUCHER_BYTES`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from maxwell.economy.ledger import (
    TREASURY,
    EntryRequest,
    Leg,
    agent_account,
    event_request,
    open_request,
    transfer_request,
)
from maxwell.errors import MaxwellError
from maxwell.gossip.record import RecordError
from maxwell.gossip.trust import Admission, NodeCertificate

DOMAIN: Final = b"maxwell-transfer-v1\0"
VERSION: Final = 1
MAX_VOUCHER_BYTES: Final = 600
VOUCHER_REFUSALS: Final = ("malformed", "not-admitted", "forged", "misdirected", "wrong-kind")
KINDS: Final = ("xfer-out", "xfer-in", "xfer-back", "xfer-home")
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")  # a ledger account's suffix

Direction = Literal["out", "back"]  # out: home -> runner (the funds); back: what is left


class TransferError(MaxwellError):
    """A transfer that cannot be made: a node or job id no ledger account can carry."""


class VoucherError(MaxwellError):
    """A voucher that is refused; `reason` is one of `VOUCHER_REFUSALS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _checked(what: str, value: object) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise TransferError(
            f"{what} {value!r} cannot cross nodes: 1-128 of A-Z a-z 0-9 . _ @ - (not starting "
            "with a symbol)"
        )
    return value


def outbound_account(node: str) -> str:
    """What this node sent `node` and `node` has not returned: `outbound:<node>`."""
    return f"outbound:{_checked('node id', node)}"


def inbound_account(node: str) -> str:
    """What this node received from `node` and has not returned (negative): `inbound:<node>`."""
    return f"inbound:{_checked('node id', node)}"


@dataclass(frozen=True)
class Transfer:
    """`amount` µ$J of job `job`'s money, from node `sender` to node `recipient`."""

    direction: Direction
    job: str
    sender: str
    recipient: str
    amount: int

    def __post_init__(self) -> None:
        if self.direction not in ("out", "back"):
            raise TransferError(f"a transfer goes out or back, not {self.direction!r}")
        _checked("job id", self.job)
        _checked("node id", self.sender)
        _checked("node id", self.recipient)
        if self.sender == self.recipient:
            raise TransferError(f"node {self.sender} cannot send money to itself")
        amount = self.amount
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 2**63:
            raise TransferError(f"an amount is a whole number of µ$J, not {amount!r}")
        if self.direction == "out" and amount == 0:
            raise TransferError("a job is sent with more than 0 µ$J")

    def body(self, at: float) -> bytes:
        fields = [VERSION, self.direction, self.job, self.sender, self.recipient, self.amount, at]
        return bytes(msgpack.packb(fields))


@dataclass(frozen=True)
class Voucher:
    """A sending node's signed word for a transfer (see the module)."""

    transfer: Transfer
    at: float
    certificate: NodeCertificate
    signature: bytes

    def encode(self) -> bytes:
        body = self.transfer.body(self.at)
        return bytes(msgpack.packb([body, self.certificate.encode(), self.signature]))


def sign(transfer: Transfer, at: float, key: Ed25519PrivateKey, cert: NodeCertificate) -> Voucher:
    """The sender's voucher for `transfer` (`cert` must be the sender's, for `key`)."""
    if cert.node != transfer.sender:
        raise TransferError(f"{cert.node}'s certificate cannot sign for {transfer.sender}")
    return Voucher(transfer, at, cert, key.sign(DOMAIN + transfer.body(at)))


def check(wire: bytes, admission: Admission, *, me: str, direction: Direction) -> Voucher:
    """The voucher in `wire`, if it is for this node (`me`), of `direction`, and its sender's
    admitted key signed it; else a `VoucherError` saying why (see the module)."""
    body, certificate, signature = _parts(wire)
    transfer, at = _transfer(body)
    try:
        key = admission.admit(certificate)
    except RecordError as exc:
        raise VoucherError("not-admitted", str(exc)) from None
    if certificate.node != transfer.sender:
        raise VoucherError("forged", f"{certificate.node} signs for {transfer.sender}")
    try:
        key.verify(signature, DOMAIN + body)
    except InvalidSignature:
        raise VoucherError("forged", f"{transfer.sender}'s key did not sign it") from None
    if transfer.recipient != me:
        raise VoucherError("misdirected", f"for {transfer.recipient}, not {me}")
    if transfer.direction != direction:
        raise VoucherError("wrong-kind", f"a voucher {transfer.direction}, not {direction}")
    return Voucher(transfer, at, certificate, signature)


def _parts(wire: bytes) -> tuple[bytes, NodeCertificate, bytes]:
    if not isinstance(wire, bytes) or len(wire) > MAX_VOUCHER_BYTES:
        raise VoucherError("malformed", f"a voucher is at most {MAX_VOUCHER_BYTES} bytes")
    try:
        parts = msgpack.unpackb(wire, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise VoucherError("malformed", "a voucher that is not msgpack") from None
    if not (isinstance(parts, list) and len(parts) == 3):
        raise VoucherError("malformed", "a voucher is [body, certificate, signature]")
    body, certificate, signature = parts
    if not (isinstance(body, bytes) and isinstance(certificate, bytes)):
        raise VoucherError("malformed", "a voucher's body and certificate are bytes")
    if not isinstance(signature, bytes):
        raise VoucherError("malformed", "a voucher's signature is bytes")
    try:
        return body, NodeCertificate.decode(certificate), signature
    except RecordError as exc:
        raise VoucherError("malformed", str(exc)) from None


def _transfer(body: bytes) -> tuple[Transfer, float]:
    try:
        fields = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise VoucherError("malformed", "a voucher's body that is not msgpack") from None
    if not (isinstance(fields, list) and len(fields) == 7 and fields[0] == VERSION):
        raise VoucherError("malformed", f"a voucher's body is [{VERSION}, kind, job, ...]")
    _, direction, job, sender, recipient, amount, at = fields
    if not isinstance(at, float):
        raise VoucherError("malformed", "a voucher's time is a float")
    try:
        return Transfer(direction, job, sender, recipient, amount), at
    except TransferError as exc:
        raise VoucherError("malformed", str(exc)) from None


# --- the four halves, as ledger entries ---------------------------------------------------------


def sent(transfer: Transfer, payer: str) -> list[EntryRequest]:
    """The home node's half: the job's funds from `payer` into `outbound:<runner>`."""
    _expect(transfer, "out")
    outbound = outbound_account(transfer.recipient)
    return [
        open_request(outbound),
        transfer_request(
            f"xfer-out:{transfer.job}", payer, outbound, transfer.amount, kind="xfer-out",
            detail=_detail(transfer, transfer.recipient) | {"payer": payer},
        ),
    ]  # fmt: skip


def received(transfer: Transfer, agent_id: str) -> list[EntryRequest]:
    """The runner's half: the job's funds from `inbound:<home>` to the agent that runs it."""
    _expect(transfer, "out")
    inbound = inbound_account(transfer.sender)
    return [
        open_request(inbound, allow_credit=True),
        transfer_request(
            f"xfer-in:{transfer.job}", inbound, agent_account(agent_id), transfer.amount,
            kind="xfer-in", detail=_detail(transfer, transfer.sender) | {"agent": agent_id},
        ),
    ]  # fmt: skip


def declined(transfer: Transfer) -> tuple[list[EntryRequest], Transfer]:
    """The runner's halves for a job it received and could not run (its command would not
    start): the funds in from `inbound:<home>` and straight back, through `declined:<job>`, and
    the transfer back (all of it) for the home node's voucher."""
    _expect(transfer, "out")
    job, amount = transfer.job, transfer.amount
    holding, inbound = f"declined:{_checked('job id', job)}", inbound_account(transfer.sender)
    back = Transfer("back", job, transfer.recipient, transfer.sender, amount)
    return [
        open_request(inbound, allow_credit=True),
        open_request(holding),
        transfer_request(
            f"xfer-in:{job}", inbound, holding, amount, kind="xfer-in",
            detail=_detail(transfer, transfer.sender) | {"agent": None, "declined": True},
        ),
        transfer_request(
            f"xfer-back:{job}", holding, inbound, amount, kind="xfer-back",
            detail=_detail(back, back.recipient) | {"agent": None, "declined": True},
        ),
    ], back  # fmt: skip


def returned(transfer: Transfer, agent_id: str) -> EntryRequest:
    """The runner's half of the way back: what is left of the agent's money to `inbound:<home>`
    (nothing left: the journal still says the job came back empty)."""
    _expect(transfer, "back")
    key = f"xfer-back:{transfer.job}"
    detail = _detail(transfer, transfer.recipient) | {"agent": agent_id}
    if transfer.amount == 0:
        return event_request(key, "xfer-back", detail)
    inbound = inbound_account(transfer.recipient)
    return transfer_request(
        key, agent_account(agent_id), inbound, transfer.amount, kind="xfer-back", detail=detail
    )


def refunded(transfer: Transfer, payer: str) -> EntryRequest:
    """The home node's half of the way back: what the runner returned, from `outbound:<runner>`
    to the job's payer (as the home node's own `xfer-out` entry names it)."""
    _expect(transfer, "back")
    key = f"xfer-home:{transfer.job}"
    detail = _detail(transfer, transfer.sender) | {"payer": payer}
    if transfer.amount == 0:
        return event_request(key, "xfer-home", detail)
    outbound = outbound_account(transfer.sender)
    return transfer_request(key, outbound, payer, transfer.amount, kind="xfer-home", detail=detail)


def _expect(transfer: Transfer, direction: Direction) -> None:
    if transfer.direction != direction:
        raise TransferError(f"a transfer {transfer.direction} is no half of one {direction}")


def _detail(transfer: Transfer, peer: str) -> dict[str, object]:
    """What a half records: the job, the other node, the amount, and the node whose ledger holds
    it (`here`: so a ledger alone says which node it is)."""
    here = transfer.recipient if peer == transfer.sender else transfer.sender
    return {"job": transfer.job, "node": peer, "amount": transfer.amount, "here": here}


# --- reconciliation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Half:
    """A half as a node's journal holds it: its kind (one of `KINDS`), job, the other node, and
    the amount; `payer` for the home node's halves."""

    kind: str
    job: str
    peer: str
    amount: int
    payer: str = TREASURY
    here: str | None = None  # the node whose ledger holds it


def halves(entries: Iterable[tuple[str, Mapping[str, object], Iterable[Leg]]]) -> list[Half]:
    """The halves among journal entries given as (kind, detail, legs)."""
    found: list[Half] = []
    for kind, detail, _legs in entries:
        if kind not in KINDS:
            continue
        job, peer, amount = detail.get("job"), detail.get("node"), detail.get("amount")
        payer, here = detail.get("payer", TREASURY), detail.get("here")
        if isinstance(job, str) and isinstance(peer, str) and isinstance(amount, int):
            found.append(Half(kind, job, peer, amount, str(payer), str(here) if here else None))
    return found


@dataclass(frozen=True)
class PairReport:
    """Between home `home` and runner `runner`: what `home` holds in `outbound:<runner>`, what
    `runner` holds in `inbound:<home>`, the money in flight, and the jobs half done."""

    home: str
    runner: str
    outbound: int
    inbound: int
    in_flight: int
    pending: tuple[str, ...]  # jobs with a first half done and the other not yet: retry
    broken: tuple[str, ...]  # halves that disagree, or a second half without its first

    @property
    def conserved(self) -> bool:
        return self.outbound + self.inbound == self.in_flight and not self.broken


def reconcile(
    home: str,
    runner: str,
    balances: tuple[Mapping[str, int], Mapping[str, int]],
    journals: tuple[Iterable[Half], Iterable[Half]],
) -> PairReport:
    """The account of money between `home` and `runner`, from each node's balances and halves
    (see the module). In flight: sent and not received, returned and not refunded; both leave
    `outbound:<runner>` + `inbound:<home>` above zero by their amount until the second half."""
    at_home = {(h.kind, h.job): h.amount for h in journals[0] if h.peer == runner}
    at_runner = {(h.kind, h.job): h.amount for h in journals[1] if h.peer == home}
    pending: set[str] = set()
    broken: set[str] = set()
    in_flight = 0
    for first, second, firsts, seconds in (
        ("xfer-out", "xfer-in", at_home, at_runner),
        ("xfer-back", "xfer-home", at_runner, at_home),
    ):
        jobs = {job for kind, job in firsts if kind == first}
        jobs |= {job for kind, job in seconds if kind == second}
        for job in jobs:
            done, echoed = firsts.get((first, job)), seconds.get((second, job))
            if done is not None and echoed is None:
                pending.add(job)
                in_flight += done
            elif done != echoed:  # a second half alone, or another amount: money made or lost
                broken.add(job)
    return PairReport(
        home, runner, balances[0].get(outbound_account(runner), 0),
        balances[1].get(inbound_account(home), 0), in_flight,
        tuple(sorted(pending)), tuple(sorted(broken)),
    )  # fmt: skip


def reconcile_all(
    nodes: Mapping[str, tuple[Mapping[str, int], Sequence[Half]]],
) -> list[PairReport]:
    """Every pair of `nodes` (node -> its balances and halves) that moved money either way,
    each direction on its own (the home node first), in a stable order."""
    pairs: set[tuple[str, str]] = set()
    for node, (_, journal) in nodes.items():
        for half in journal:
            home_side = half.kind in ("xfer-out", "xfer-home")
            pairs.add((node, half.peer) if home_side else (half.peer, node))
    empty: tuple[Mapping[str, int], Sequence[Half]] = ({}, ())
    reports = []
    for home, runner in sorted(pairs):
        home_balances, home_halves = nodes.get(home, empty)
        runner_balances, runner_halves = nodes.get(runner, empty)
        reports.append(
            reconcile(home, runner, (home_balances, runner_balances), (home_halves, runner_halves))
        )
    return reports
