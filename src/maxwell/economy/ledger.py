"""The $JOULE ledger's rules: double entry over integer µ$J, sans-IO (no clock, file or database).

Rules and invariants (the store in `maxwell.economy.store` persists exactly what these decide):

- An account has a name (`treasury`, `grid`, `landauer`, `slashing`, `house`, `agent:<id>`,
  `stake:<id>`), a balance in integer micro-$JOULE (`Money`, never a float) and a flag
  `allow_credit`. It exists only once opened, and opening it is itself a journal entry (kind
  `open`), so the journal alone rebuilds every account.
- The journal is a sequence of entries numbered 1, 2, 3, ... with no gap. An entry has a unique
  idempotency key, a kind, a time `at` (given by the caller: this module never reads a clock), a
  JSON object of detail, and legs: (account, delta) pairs, at most one per account, no zero delta.
- Every entry is balanced: its legs sum to zero. Money therefore only moves, and the sum of all
  balances is zero at all times; the treasury's negative balance is the money minted so far.
- An entry with no legs moves no money: an account opening, or a decision recorded for the
  journal (`frozen`, `apoptosis`, ...), so that every decision is a journal event.
- A balance never goes below zero unless its account allows credit (the treasury does; other
  accounts only if opened with `allow_credit=True`). An entry that would break this is refused
  whole (`InsufficientFundsError`) and changes nothing: an entry applies all its legs or none,
  which is what makes a batch (e.g. energy to `grid` + tax to `landauer`) atomic.
- Idempotency: an entry whose key is already in the journal is never applied again. The same
  content (kind, legs, detail; `at` is not content, a retry happens later) returns the original
  entry; different content under that key raises `IdempotencyConflictError`.
- No balance leaves SQLite's signed 64-bit range.

Compaction (`fold`) keeps the journal bounded without losing a proof:

- A checkpoint (kind `checkpoint`, key `checkpoint:<seq>`) replaces the journal's longest prefix of
  entries whose `at` is before a given time; it takes the number of the last entry it folds, so
  the entries after it keep theirs. Only compaction writes one: the kind and the key prefix are
  refused in requests. A checkpoint is only ever the journal's first entry.
- Its legs are, per account, the net of the folded legs (zero nets dropped): it is balanced, and
  the balances after it are exactly those after the prefix, so replaying the rest decides the
  same. Its detail opens the accounts the prefix opened (`accounts`: name -> allow_credit), counts
  the entries folded (`entries`, which equals its number), and keeps a `summary`: per (agent,
  kind), how many entries and, per account, how many legs and the sum of their positive and of
  their negative deltas; it adds up, account by account, to the checkpoint's legs. Totals over the
  journal (`tallies`) are the same before and after compaction. Compacting again folds the
  checkpoint with the entries after it; a prefix that is only the checkpoint folds nothing.
- Idempotency survives: each folded entry leaves a `FoldedKey` (key, number, kind, time and a
  digest of its content). A retry with the same content returns the entry rebuilt; other content
  under that key raises `IdempotencyConflictError`. So a folded key never applies twice.

`decide` is the one function that applies these rules; `Ledger` keeps a journal in memory with it,
and `audit` replays a journal read back from storage and names its first violation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from maxwell.errors import MaxwellError
from maxwell.units import Money, money_to_tokens

__all__ = [
    "CHECKPOINT_KIND",
    "GRID",
    "HOUSE",
    "LANDAUER",
    "MAX_MONEY",
    "OPEN_KIND",
    "SLASHING",
    "SYSTEM_ACCOUNTS",
    "TREASURY",
    "Account",
    "AccountExistsError",
    "AccountTally",
    "Audit",
    "Checkpoint",
    "Effect",
    "Entry",
    "EntryRequest",
    "Fold",
    "FoldedKey",
    "IdempotencyConflictError",
    "InsufficientFundsError",
    "InvalidEntryError",
    "JSONValue",
    "JournalRecord",
    "Ledger",
    "LedgerError",
    "Leg",
    "Movement",
    "StoredAccount",
    "Tally",
    "UnknownAccountError",
    "Violation",
    "agent_account",
    "audit",
    "batch_request",
    "canonical_json",
    "checkpoint_key",
    "checkpoint_of",
    "content_digest",
    "decide",
    "event_request",
    "fold",
    "genesis_requests",
    "open_request",
    "parse_checkpoint",
    "stake_account",
    "tallies",
    "transfer_request",
]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

TREASURY = "treasury"
GRID = "grid"
LANDAUER = "landauer"
SLASHING = "slashing"
HOUSE = "house"
# Opened by every new ledger: (name, allow_credit). Only the treasury mints, so only it has credit.
SYSTEM_ACCOUNTS: tuple[tuple[str, bool], ...] = (
    (TREASURY, True),
    (GRID, False),
    (LANDAUER, False),
    (SLASHING, False),
    (HOUSE, False),
)

OPEN_KIND = "open"
# Written only by compaction (`fold`); refused in requests, kind and key prefix alike.
CHECKPOINT_KIND = "checkpoint"
_CHECKPOINT_KEY_PREFIX = "checkpoint:"
# SQLite stores integers as signed 64-bit; no balance or delta may leave that range.
MAX_MONEY = 2**63 - 1

_ACCOUNT_RE = re.compile(r"^[a-z][a-z_]{0,31}(?::[A-Za-z0-9][A-Za-z0-9._@-]{0,127})?$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_MAX_KEY_LEN = 256


class LedgerError(MaxwellError):
    """A ledger rule refused an entry, or a journal breaks one."""


class InvalidEntryError(LedgerError, ValueError):
    """The caller built an entry the ledger cannot take: a bad amount, name, kind or detail."""


class UnknownAccountError(LedgerError):
    """An entry or a query names an account that was never opened."""

    def __init__(self, account: str) -> None:
        super().__init__(f"no account {account!r} (open it first)")
        self.account = account


class AccountExistsError(LedgerError):
    """An `open` entry under a new key names an account that is already open."""

    def __init__(self, account: str) -> None:
        super().__init__(f"account {account!r} is already open")
        self.account = account


class InsufficientFundsError(LedgerError):
    """An entry would take an account without credit below zero; nothing was applied."""

    def __init__(self, account: str, balance: int, needed: int, key: str) -> None:
        super().__init__(
            f"insufficient funds in {account!r}: balance {balance} µ$J, entry {key!r} "
            f"takes {needed} µ$J"
        )
        self.account = account
        self.balance = balance
        self.needed = needed
        self.key = key


class IdempotencyConflictError(LedgerError):
    """A key already in the journal was reused for different content."""

    def __init__(self, key: str, seq: int) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used by entry {seq} for different content"
        )
        self.key = key
        self.seq = seq


AGENT_PREFIX = "agent:"


@functools.lru_cache(maxsize=1 << 16)  # the node asks for every agent's every tick
def agent_account(agent_id: str) -> str:
    """The account of an agent: `agent:<id>`."""
    return f"{AGENT_PREFIX}{_checked_id(agent_id)}"


def moved_agents(seen: Mapping[str, int], balances: Mapping[str, int]) -> list[str]:
    """The agents whose account's balance in `balances` differs from the one in `seen`."""
    return [
        account.removeprefix(AGENT_PREFIX)
        for account, balance in balances.items()
        if account.startswith(AGENT_PREFIX) and seen.get(account) != balance
    ]


@functools.lru_cache(maxsize=1 << 16)
def stake_account(agent_id: str) -> str:
    """The account holding an agent's bonds: `stake:<id>`."""
    return f"stake:{_checked_id(agent_id)}"


def user_account(uid: int) -> str:
    """The account of a local user, which funds the agents it spawns: `user:<uid>`."""
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 2**32 - 1:
        raise InvalidEntryError(f"uid {uid!r} must be an integer from 0 to 4294967294")
    return f"user:{uid}"


@functools.lru_cache(maxsize=1 << 12)
def job_account(job_id: str) -> str:
    """The account holding a posted job's bounties until they are paid: `job:<id>`."""
    return f"job:{_checked_id(job_id)}"


def _checked_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not _ID_RE.match(agent_id):
        raise InvalidEntryError(
            f"agent id {agent_id!r} must be 1-128 of A-Z a-z 0-9 . _ @ - (not starting with a "
            "symbol)"
        )
    return agent_id


def _check_account_name(name: object) -> str:
    if not isinstance(name, str) or not _ACCOUNT_RE.match(name):
        raise InvalidEntryError(f"{name!r} is not an account name (e.g. 'treasury', 'agent:a1')")
    return name


def _check_money(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEntryError(f"{what} must be an integer of µ$J, got {value!r}")
    if abs(value) > MAX_MONEY:
        raise InvalidEntryError(f"{what} {value} is beyond the ledger's 64-bit range")
    return value


def canonical_json(detail: Mapping[str, object] | None) -> str:
    """The one text form of an entry's detail: sorted keys, no spaces, no NaN."""
    if detail is None:
        detail = {}
    if not isinstance(detail, Mapping):
        raise InvalidEntryError(f"an entry's detail must be a JSON object, got {detail!r}")
    try:
        return json.dumps(
            dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidEntryError(f"an entry's detail is not JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Leg:
    """One account's share of an entry: its balance moves by `delta` (negative: it pays)."""

    account: str
    delta: Money


@dataclass(frozen=True, slots=True)
class Movement:
    """`amount` µ$J leaving `debit` (its balance falls) for `credit` (its balance rises)."""

    debit: str
    credit: str
    amount: int  # µ$J (a `Money`); any int is accepted and checked when the entry is built


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    allow_credit: bool
    balance: Money


@dataclass(frozen=True, slots=True)
class EntryRequest:
    """An entry asked for, not yet in a journal. Valid by construction; legs kept canonical.

    Legs are merged per account, zero deltas dropped, sorted by account name, so that two
    requests with the same effect compare equal (what idempotent retries are judged by).
    """

    key: str
    kind: str
    legs: tuple[Leg, ...] = ()
    detail_json: str = "{}"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key or len(self.key) > _MAX_KEY_LEN:
            raise InvalidEntryError(f"an idempotency key must be 1-{_MAX_KEY_LEN} characters")
        if not self.key.isprintable():
            raise InvalidEntryError(f"idempotency key {self.key!r} has control characters")
        if not isinstance(self.kind, str) or not _KIND_RE.match(self.kind):
            raise InvalidEntryError(f"entry kind {self.kind!r} must match {_KIND_RE.pattern}")
        if self.kind == CHECKPOINT_KIND or self.key.startswith(_CHECKPOINT_KEY_PREFIX):
            raise InvalidEntryError(
                f"kind {CHECKPOINT_KIND!r} and keys {_CHECKPOINT_KEY_PREFIX + '*'!r} are "
                "reserved for compaction"
            )
        asked_to_move_money = bool(self.legs)
        merged: dict[str, int] = {}
        for leg in self.legs:
            account = _check_account_name(leg.account)
            merged[account] = merged.get(account, 0) + _check_money(leg.delta, "a leg's delta")
        legs = tuple(Leg(name, Money(delta)) for name, delta in sorted(merged.items()) if delta)
        for leg in legs:
            _check_money(leg.delta, f"the net delta on {leg.account!r}")
        total = sum(leg.delta for leg in legs)
        if total != 0:
            raise InvalidEntryError(f"entry {self.key!r} is unbalanced: legs sum to {total} µ$J")
        object.__setattr__(self, "legs", legs)
        try:
            detail = json.loads(self.detail_json)
        except (TypeError, ValueError) as exc:
            raise InvalidEntryError(f"entry {self.key!r}: detail is not JSON") from exc
        if not isinstance(detail, dict):
            raise InvalidEntryError(f"entry {self.key!r}: detail must be a JSON object")
        object.__setattr__(self, "detail_json", canonical_json(detail))
        if self.kind == OPEN_KIND:
            if legs:
                raise InvalidEntryError("opening an account moves no money")
            _check_account_name(detail.get("account"))
            if not isinstance(detail.get("allow_credit"), bool):
                raise InvalidEntryError("an open entry needs a boolean allow_credit")
        elif asked_to_move_money and not legs:
            raise InvalidEntryError(f"entry {self.key!r} moves no money once its legs are netted")

    @property
    def opens(self) -> Account | None:
        """The account this request opens, if it is an `open` entry."""
        if self.kind != OPEN_KIND:
            return None
        detail = json.loads(self.detail_json)
        return Account(detail["account"], detail["allow_credit"], Money(0))

    def accounts(self) -> list[str]:
        """Every account name whose state the rules need to decide this request."""
        names = [leg.account for leg in self.legs]
        opened = self.opens
        if opened is not None:
            names.append(opened.name)
        return names


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry in a journal: a request given its sequence number and time."""

    seq: int
    key: str
    kind: str
    at: float
    legs: tuple[Leg, ...]
    detail_json: str

    @property
    def detail(self) -> dict[str, JSONValue]:
        value: dict[str, JSONValue] = json.loads(self.detail_json)
        return value

    @property
    def is_event(self) -> bool:
        """True for an entry that moves no money (an opening or a recorded decision)."""
        return not self.legs

    def same_content(self, request: EntryRequest) -> bool:
        return (self.kind, self.legs, self.detail_json) == (
            request.kind,
            request.legs,
            request.detail_json,
        )

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "seq": self.seq,
            "key": self.key,
            "kind": self.kind,
            "at": self.at,
            "legs": [{"account": leg.account, "delta": leg.delta} for leg in self.legs],
            "detail": self.detail,
        }


def content_digest(kind: str, legs: Iterable[Leg], detail_json: str) -> str:
    """SHA-256 (hex) of an entry's content: what a retry of a folded entry is judged by."""
    content = [kind, [[leg.account, leg.delta] for leg in legs], detail_json]
    text = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class FoldedKey:
    """The idempotency key of an entry folded into a checkpoint, kept so it never applies twice."""

    key: str
    seq: int
    kind: str
    at: float
    digest: str  # `content_digest` of the folded entry

    @classmethod
    def of(cls, entry: Entry) -> FoldedKey:
        digest = content_digest(entry.kind, entry.legs, entry.detail_json)
        return cls(entry.key, entry.seq, entry.kind, entry.at, digest)

    def same_content(self, request: EntryRequest) -> bool:
        return self.digest == content_digest(request.kind, request.legs, request.detail_json)

    def entry_for(self, request: EntryRequest) -> Entry:
        """The folded entry, rebuilt from a retry whose content matches it."""
        return Entry(self.seq, self.key, self.kind, self.at, request.legs, request.detail_json)


@dataclass(frozen=True, slots=True)
class Effect:
    """What `decide` concluded: the entry, and the state to write if it is new.

    `repeated` is True when the key was already in the journal with the same content: nothing is
    to be written and `entry` is the original. Otherwise `balances` holds the new balance of every
    account the entry touches and `opened` the account it opens, if any.
    """

    entry: Entry
    repeated: bool
    balances: Mapping[str, Money] = field(default_factory=dict)
    opened: Account | None = None


def open_request(name: str, *, allow_credit: bool = False) -> EntryRequest:
    """Open account `name`. Its key is fixed (`open:<name>`), so opening twice is a retry."""
    _check_account_name(name)
    if not isinstance(allow_credit, bool):
        raise InvalidEntryError("allow_credit must be True or False")
    detail = canonical_json({"account": name, "allow_credit": allow_credit})
    return EntryRequest(key=f"{OPEN_KIND}:{name}", kind=OPEN_KIND, detail_json=detail)


def transfer_request(
    key: str,
    debit: str,
    credit: str,
    amount: int,
    *,
    kind: str = "transfer",
    memo: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> EntryRequest:
    """Move `amount` (> 0) µ$J from `debit` to `credit`, as one entry with two legs."""
    movement = Movement(debit, credit, amount)
    return batch_request(key, [movement], kind=kind, memo=memo, detail=detail)


def batch_request(
    key: str,
    movements: Iterable[Movement],
    *,
    kind: str = "batch",
    memo: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> EntryRequest:
    """Several movements as ONE entry: applied all together or not at all."""
    legs: list[Leg] = []
    for movement in movements:
        amount = _check_money(movement.amount, "an amount")
        if amount <= 0:
            raise InvalidEntryError(f"an amount must be more than 0 µ$J, got {amount}")
        debit = _check_account_name(movement.debit)
        credit = _check_account_name(movement.credit)
        if debit == credit:
            raise InvalidEntryError(f"a movement from {debit!r} to itself moves nothing")
        legs += [Leg(debit, Money(-amount)), Leg(credit, Money(amount))]
    if not legs:
        raise InvalidEntryError(f"entry {key!r} has no movements")
    if kind == OPEN_KIND:
        raise InvalidEntryError(f"kind {OPEN_KIND!r} is reserved for opening accounts")
    return EntryRequest(key, kind, tuple(legs), _detail_with_memo(detail, memo))


def event_request(key: str, kind: str, detail: Mapping[str, object] | None = None) -> EntryRequest:
    """A decision that moves no money (e.g. `frozen`, `apoptosis`), recorded in the journal."""
    if kind == OPEN_KIND:
        raise InvalidEntryError(f"kind {OPEN_KIND!r} is reserved for opening accounts")
    return EntryRequest(key, kind, (), canonical_json(detail))


def _detail_with_memo(detail: Mapping[str, object] | None, memo: str | None) -> str:
    merged: dict[str, object] = dict(detail or {})
    if memo is not None:
        merged["memo"] = memo
    return canonical_json(merged)


def genesis_requests() -> tuple[EntryRequest, ...]:
    """The entries every new ledger starts with: the system accounts opened."""
    return tuple(open_request(name, allow_credit=credit) for name, credit in SYSTEM_ACCOUNTS)


def decide(
    request: EntryRequest,
    *,
    seq: int,
    at: float,
    accounts: Mapping[str, Account],
    existing: Entry | None,
    folded: FoldedKey | None = None,
) -> Effect:
    """Apply the rules to one request. Pure: raises, or returns what to write.

    `accounts` must hold (at least) every account in `request.accounts()` that exists;
    `existing` is the journal's entry under `request.key`, if any, and `folded` the key as kept by
    a checkpoint, if its entry was folded; `seq` is the next number.
    """
    if existing is None and folded is not None:
        if folded.same_content(request):
            return Effect(entry=folded.entry_for(request), repeated=True)
        raise IdempotencyConflictError(request.key, folded.seq)
    if existing is not None:
        if existing.same_content(request):
            return Effect(entry=existing, repeated=True)
        raise IdempotencyConflictError(request.key, existing.seq)
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise InvalidEntryError(f"an entry's time must be a finite number, got {at!r}")
    entry = Entry(seq, request.key, request.kind, float(at), request.legs, request.detail_json)
    opened = request.opens
    if opened is not None:
        if opened.name in accounts:
            raise AccountExistsError(opened.name)
        return Effect(entry=entry, repeated=False, opened=opened)
    balances: dict[str, Money] = {}
    for leg in request.legs:
        account = accounts.get(leg.account)
        if account is None:
            raise UnknownAccountError(leg.account)
        new_balance = account.balance + leg.delta
        if new_balance < 0 and not account.allow_credit:
            raise InsufficientFundsError(leg.account, account.balance, -leg.delta, request.key)
        if abs(new_balance) > MAX_MONEY:
            raise InvalidEntryError(
                f"entry {request.key!r} would take {leg.account!r} beyond the 64-bit range"
            )
        balances[leg.account] = Money(new_balance)
    return Effect(entry=entry, repeated=False, balances=balances)


# --- compaction: checkpoints that fold a journal's prefix, and the totals they keep ------------


class _Broken(LedgerError):
    """A journal (or a checkpoint in it) breaks a rule; `account` names the account, if one."""

    def __init__(self, reason: str, account: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.account = account


def checkpoint_key(seq: int) -> str:
    """The key of the checkpoint numbered `seq` (the number of the last entry it folds)."""
    return f"{_CHECKPOINT_KEY_PREFIX}{seq}"


@dataclass(frozen=True, slots=True)
class AccountTally:
    """One account's legs in a group of entries: how many, and the sums of their deltas above
    zero (`credited`, >= 0) and below zero (`debited`, <= 0)."""

    legs: int = 0
    credited: int = 0
    debited: int = 0

    @property
    def net(self) -> int:
        return self.credited + self.debited

    def __add__(self, other: AccountTally) -> AccountTally:
        return AccountTally(
            self.legs + other.legs, self.credited + other.credited, self.debited + other.debited
        )


@dataclass(slots=True)
class Tally:
    """A group of entries (one agent, one kind): how many, and per account their legs."""

    entries: int = 0
    legs: dict[str, AccountTally] = field(default_factory=dict)

    def add(self, legs: Iterable[Leg]) -> None:
        """Count one more entry with these legs."""
        self.entries += 1
        for leg in legs:
            one = AccountTally(1, max(leg.delta, 0), min(leg.delta, 0))
            self.legs[leg.account] = self.legs.get(leg.account, AccountTally()) + one

    def merge(self, other: Tally) -> None:
        self.entries += other.entries
        for account, moved in other.legs.items():
            self.legs[account] = self.legs.get(account, AccountTally()) + moved


# (agent, kind): the agent is the entry's detail["agent"] when that is a string, else None.
TallyKey: TypeAlias = tuple[str | None, str]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint entry's detail, checked: the accounts it opens, the count and the summary of
    the entries it folds, and the time they were folded before."""

    accounts: Mapping[str, bool]
    entries: int
    before: float
    summary: Mapping[TallyKey, Tally]


def _tally_entry(summary: dict[TallyKey, Tally], entry: Entry) -> None:
    agent = entry.detail.get("agent")
    group = (agent if isinstance(agent, str) else None, entry.kind)
    summary.setdefault(group, Tally()).add(entry.legs)


def _merge_tallies(summary: dict[TallyKey, Tally], more: Mapping[TallyKey, Tally]) -> None:
    for group, tally in more.items():
        summary.setdefault(group, Tally()).merge(tally)


def tallies(journal: Iterable[Entry]) -> dict[TallyKey, Tally]:
    """Per (agent, kind) over a journal, a checkpoint's summary included: the same before and
    after compaction. Raises `LedgerError` on a malformed checkpoint."""
    summary: dict[TallyKey, Tally] = {}
    for entry in journal:
        if entry.kind == CHECKPOINT_KIND:
            _merge_tallies(summary, checkpoint_of(entry).summary)
        else:
            _tally_entry(summary, entry)
    return summary


def _summary_json(summary: Mapping[TallyKey, Tally]) -> list[JSONValue]:
    rows: list[JSONValue] = []

    def order(group: TallyKey) -> tuple[bool, str, str]:
        return (group[0] is not None, group[0] or "", group[1])

    for (agent, kind), tally in sorted(summary.items(), key=lambda item: order(item[0])):
        legs: dict[str, JSONValue] = {
            account: [moved.legs, moved.credited, moved.debited]
            for account, moved in sorted(tally.legs.items())
        }
        rows.append({"agent": agent, "kind": kind, "entries": tally.entries, "legs": legs})
    return rows


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _summary_row(row: object) -> tuple[TallyKey, Tally]:
    if not isinstance(row, dict) or set(row) != {"agent", "kind", "entries", "legs"}:
        raise _Broken(f"checkpoint summary row {row!r} is not {{agent, kind, entries, legs}}")
    agent, kind, entries, legs = row["agent"], row["kind"], row["entries"], row["legs"]
    if not (agent is None or isinstance(agent, str)):
        raise _Broken(f"checkpoint summary names agent {agent!r}, not a string or null")
    if not isinstance(kind, str) or not _KIND_RE.match(kind) or kind == CHECKPOINT_KIND:
        raise _Broken(f"checkpoint summary names kind {kind!r}")
    if not _int_at_least(entries, 1) or not isinstance(legs, dict):
        raise _Broken(f"checkpoint summary row for {(agent, kind)!r} is malformed")
    tally = Tally(entries)
    for account, moved in legs.items():
        ok = isinstance(moved, list) and len(moved) == 3 and all(_is_int(n) for n in moved)
        if not ok or not 1 <= moved[0] <= entries or moved[1] < 0 or moved[2] > 0:
            raise _Broken(f"checkpoint summary of {(agent, kind)!r} on {account!r} is malformed")
        if moved[1] - moved[2] < moved[0]:
            raise _Broken(f"checkpoint summary of {(agent, kind)!r} has a zero leg on {account!r}")
        tally.legs[_check_name(account)] = AccountTally(*moved)
    return (agent, kind), tally


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _ACCOUNT_RE.match(name):
        raise _Broken(f"checkpoint names account {name!r}, not an account name")
    return name


def _checkpoint_summary(rows: object) -> dict[TallyKey, Tally]:
    if not isinstance(rows, list):
        raise _Broken("checkpoint summary is not a list")
    summary: dict[TallyKey, Tally] = {}
    for row in rows:
        group, tally = _summary_row(row)
        if group in summary:
            raise _Broken(f"checkpoint summary has {group!r} twice")
        summary[group] = tally
    return summary


def _apply_legs(
    legs: Iterable[tuple[object, object]], accounts: Mapping[str, Account]
) -> dict[str, Money]:
    """The balances after `legs` (raw, as stored), or `_Broken` naming the first broken rule:
    a leg on an account not open, two legs on one account, a zero or non-integer delta, legs not
    summing to zero, an account without credit below zero or one beyond the 64-bit range."""
    total = 0
    new_balances: dict[str, Money] = {}
    for account_name, delta in legs:
        if not isinstance(account_name, str):
            raise _Broken(f"a leg names account {account_name!r}, not a string")
        if account_name in new_balances:
            raise _Broken(f"two legs on account {account_name!r}", account_name)
        if not _is_int(delta):
            raise _Broken(
                f"leg on {account_name!r} has delta {delta!r}, not an integer", account_name
            )
        assert isinstance(delta, int)
        if delta == 0:
            raise _Broken(f"leg on {account_name!r} moves nothing (delta 0)", account_name)
        total += delta
        account = accounts.get(account_name)
        if account is None:
            raise _Broken(f"leg on account {account_name!r}, which is not open", account_name)
        new_balances[account_name] = Money(account.balance + delta)
    if total != 0:
        raise _Broken(f"unbalanced: legs sum to {total} µ$J, not 0")
    for account_name, balance in new_balances.items():
        if balance < 0 and not accounts[account_name].allow_credit:
            raise _Broken(
                f"account {account_name!r} goes negative ({balance} µ$J) without credit",
                account_name,
            )
        if abs(balance) > MAX_MONEY:
            raise _Broken(f"account {account_name!r} leaves the 64-bit range", account_name)
    return new_balances


def parse_checkpoint(
    seq: int, key: object, detail: object, legs: Sequence[tuple[object, object]]
) -> tuple[Checkpoint, dict[str, Account]]:
    """Check a checkpoint (as stored) and return it with the accounts it leaves: those it opens,
    at the balances its legs give. Raises `LedgerError` naming the first broken rule."""
    if key != checkpoint_key(seq):
        raise _Broken(f"checkpoint {seq} has key {key!r}, not {checkpoint_key(seq)!r}")
    if not isinstance(detail, dict) or set(detail) != {"accounts", "before", "entries", "summary"}:
        raise _Broken("checkpoint detail is not {accounts, before, entries, summary}")
    opened, before = detail["accounts"], detail["before"]
    if not isinstance(opened, dict) or not all(isinstance(c, bool) for c in opened.values()):
        raise _Broken("checkpoint accounts are not a map of account name to allow_credit")
    if isinstance(before, bool) or not isinstance(before, int | float) or not math.isfinite(before):
        raise _Broken(f"checkpoint time {before!r} is not a finite number")
    if detail["entries"] != seq or not _is_int(detail["entries"]):
        raise _Broken(f"checkpoint {seq} says it folds {detail['entries']!r} entries, not {seq}")
    accounts = {_check_name(n): Account(n, credit, Money(0)) for n, credit in opened.items()}
    summary = _checkpoint_summary(detail["summary"])
    if sum(tally.entries for tally in summary.values()) != seq:
        raise _Broken(f"checkpoint {seq} summarises another number of entries than {seq}")
    if sum(t.entries for (_, kind), t in summary.items() if kind == OPEN_KIND) != len(accounts):
        raise _Broken(f"checkpoint {seq} opens another number of accounts than it folds openings")
    balances = _apply_legs(legs, accounts)
    nets: dict[str, int] = {}
    for tally in summary.values():
        for account, moved in tally.legs.items():
            nets[account] = nets.get(account, 0) + moved.net
    for account in sorted(set(nets) | set(balances)):
        if nets.get(account, 0) != balances.get(account, 0):
            raise _Broken(f"checkpoint summary of {account!r} does not add up to its leg", account)
    for name, balance in balances.items():
        accounts[name] = Account(name, accounts[name].allow_credit, balance)
    return Checkpoint(opened, seq, float(before), summary), accounts


def checkpoint_of(entry: Entry) -> Checkpoint:
    """A checkpoint entry's detail, checked (raises `LedgerError` if it is malformed)."""
    legs = [(leg.account, leg.delta) for leg in entry.legs]
    return parse_checkpoint(entry.seq, entry.key, entry.detail, legs)[0]


@dataclass(frozen=True, slots=True)
class Fold:
    """A compaction decided: `checkpoint` replaces the journal's first `replaced` entries (an
    earlier checkpoint among them); `folded` are the keys it folds for the first time."""

    checkpoint: Entry
    replaced: int
    folded: tuple[FoldedKey, ...]


def fold(journal: Iterable[Entry], *, before: float) -> Fold | None:
    """Fold the journal's longest prefix of entries with `at` < `before` into one checkpoint.

    None when there is nothing to fold: no such prefix, or it is only an earlier checkpoint. The
    journal must be sound (audit it first); a checkpoint past its first entry raises.
    """
    if isinstance(before, bool) or not isinstance(before, int | float) or not math.isfinite(before):
        raise InvalidEntryError(f"compaction needs a finite time, got {before!r}")
    prefix: list[Entry] = []
    for entry in journal:
        if not entry.at < before:
            break
        prefix.append(entry)
    if not prefix or (len(prefix) == 1 and prefix[0].kind == CHECKPOINT_KIND):
        return None
    accounts: dict[str, bool] = {}
    summary: dict[TallyKey, Tally] = {}
    nets: dict[str, int] = {}
    folded: list[FoldedKey] = []
    for index, entry in enumerate(prefix):
        if entry.kind == CHECKPOINT_KIND:
            if index:
                raise LedgerError(f"entry {entry.seq} is a checkpoint after the journal's first")
            checkpoint = checkpoint_of(entry)
            accounts.update(checkpoint.accounts)
            _merge_tallies(summary, checkpoint.summary)
        else:
            if entry.kind == OPEN_KIND:
                opened = EntryRequest(entry.key, entry.kind, entry.legs, entry.detail_json).opens
                assert opened is not None
                accounts[opened.name] = opened.allow_credit
            _tally_entry(summary, entry)
            folded.append(FoldedKey.of(entry))
        for leg in entry.legs:
            nets[leg.account] = nets.get(leg.account, 0) + leg.delta
    last = prefix[-1].seq
    opened_json: dict[str, JSONValue] = dict(sorted(accounts.items()))
    detail: dict[str, JSONValue] = {
        "accounts": opened_json,
        "before": before,
        "entries": last,
        "summary": _summary_json(summary),
    }
    legs = tuple(Leg(name, Money(delta)) for name, delta in sorted(nets.items()) if delta)
    at = max(entry.at for entry in prefix)
    checkpoint_entry = Entry(
        last, checkpoint_key(last), CHECKPOINT_KIND, at, legs, canonical_json(detail)
    )
    checkpoint_of(checkpoint_entry)  # what verify will check, checked before anyone writes it
    return Fold(checkpoint_entry, len(prefix), tuple(folded))


class Ledger:
    """A journal and its balances, in memory. The reference the store is tested against."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}
        self._entries: list[Entry] = []
        self._by_key: dict[str, Entry] = {}
        self._folded: dict[str, FoldedKey] = {}

    @classmethod
    def genesis(cls, *, at: float) -> Ledger:
        """A new ledger with the system accounts open."""
        ledger = cls()
        for request in genesis_requests():
            ledger.submit(request, at=at)
        return ledger

    @classmethod
    def replay(cls, entries: Iterable[Entry], *, folded: Iterable[FoldedKey] = ()) -> Ledger:
        """Rebuild a ledger from a journal, re-deciding every entry (raises on a broken rule).

        A compacted journal starts with its checkpoint; `folded` are the keys it folded.
        """
        ledger = cls()
        ledger._folded = {folded_key.key: folded_key for folded_key in folded}
        for entry in entries:
            if not ledger._entries and entry.kind == CHECKPOINT_KIND:
                ledger._restore(entry)
                continue
            if entry.seq != ledger._next_seq():
                raise LedgerError(f"entry {ledger._next_seq()} is missing from the journal")
            request = EntryRequest(entry.key, entry.kind, entry.legs, entry.detail_json)
            effect = ledger._decide(request, at=entry.at)
            if effect.repeated:
                raise LedgerError(f"entry {entry.seq} reuses key {entry.key!r}")
            ledger._apply(effect)
        return ledger

    def _restore(self, checkpoint: Entry) -> None:
        legs = [(leg.account, leg.delta) for leg in checkpoint.legs]
        _, accounts = parse_checkpoint(checkpoint.seq, checkpoint.key, checkpoint.detail, legs)
        self._accounts = accounts
        self._entries = [checkpoint]
        self._by_key = {checkpoint.key: checkpoint}

    def _next_seq(self) -> int:
        return self._entries[-1].seq + 1 if self._entries else 1

    def _decide(self, request: EntryRequest, *, at: float) -> Effect:
        return decide(
            request,
            seq=self._next_seq(),
            at=at,
            accounts=self._accounts,
            existing=self._by_key.get(request.key),
            folded=self._folded.get(request.key),
        )

    def compact(self, *, before: float) -> Fold | None:
        """Fold the entries before `before` into a checkpoint (see `fold`); None: nothing to fold.

        Balances do not change; folded keys stay idempotent (`folded`).
        """
        plan = fold(self._entries, before=before)
        if plan is None:
            return None
        for entry in self._entries[: plan.replaced]:
            del self._by_key[entry.key]
        self._entries[: plan.replaced] = [plan.checkpoint]
        self._by_key[plan.checkpoint.key] = plan.checkpoint
        self._folded.update((folded_key.key, folded_key) for folded_key in plan.folded)
        return plan

    def _apply(self, effect: Effect) -> None:
        if effect.repeated:
            return
        for name, balance in effect.balances.items():
            self._accounts[name] = Account(name, self._accounts[name].allow_credit, balance)
        if effect.opened is not None:
            self._accounts[effect.opened.name] = effect.opened
        self._entries.append(effect.entry)
        self._by_key[effect.entry.key] = effect.entry

    def submit(self, request: EntryRequest, *, at: float) -> Entry:
        """Apply `request` (or find its earlier application) and return the journal's entry."""
        effect = self._decide(request, at=at)
        self._apply(effect)
        return effect.entry

    def open_account(self, name: str, *, at: float, allow_credit: bool = False) -> Entry:
        return self.submit(open_request(name, allow_credit=allow_credit), at=at)

    def transfer(
        self,
        key: str,
        debit: str,
        credit: str,
        amount: int,
        *,
        at: float,
        kind: str = "transfer",
        memo: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> Entry:
        request = transfer_request(key, debit, credit, amount, kind=kind, memo=memo, detail=detail)
        return self.submit(request, at=at)

    def post(
        self,
        key: str,
        movements: Iterable[Movement],
        *,
        at: float,
        kind: str = "batch",
        memo: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> Entry:
        request = batch_request(key, movements, kind=kind, memo=memo, detail=detail)
        return self.submit(request, at=at)

    def record(
        self, key: str, kind: str, detail: Mapping[str, object] | None = None, *, at: float
    ) -> Entry:
        return self.submit(event_request(key, kind, detail), at=at)

    def balance(self, name: str) -> Money:
        account = self._accounts.get(name)
        if account is None:
            raise UnknownAccountError(name)
        return account.balance

    def balances(self) -> dict[str, Money]:
        return {name: self._accounts[name].balance for name in sorted(self._accounts)}

    def accounts(self) -> dict[str, Account]:
        return {name: self._accounts[name] for name in sorted(self._accounts)}

    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    def entry(self, key: str) -> Entry | None:
        """The journal's entry under `key`; None also for a key folded into the checkpoint."""
        return self._by_key.get(key)

    def folded(self, key: str) -> FoldedKey | None:
        """The key as the checkpoint keeps it, if its entry was folded."""
        return self._folded.get(key)

    def folded_keys(self) -> tuple[FoldedKey, ...]:
        """Every folded key, in entry order."""
        return tuple(sorted(self._folded.values(), key=lambda folded_key: folded_key.seq))

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# --- audit: replaying a journal read back from storage, trusting nothing in it ---------------


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """An entry as storage returned it; any field may be damaged, hence `object`."""

    seq: object
    key: object
    kind: object
    at: object
    detail: object
    legs: tuple[tuple[object, object], ...]


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """An account row as storage returned it."""

    name: object
    allow_credit: object
    balance: object


@dataclass(frozen=True, slots=True)
class Violation:
    """The first broken invariant: which entry (None: not one entry's fault), which account, why."""

    entry: int | None
    reason: str
    account: str | None = None

    def __str__(self) -> str:
        where = f"entry {self.entry}" if self.entry is not None else "accounts"
        return f"{where}: {self.reason}"

    def to_json(self) -> dict[str, JSONValue]:
        return {"entry": self.entry, "account": self.account, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Audit:
    """The verdict of replaying a journal: sound, or its first violation; with counts."""

    violation: Violation | None
    entries: int
    legs: int
    accounts: int
    transfers: int
    events: int
    minted: Money
    to_grid: Money
    to_landauer: Money
    to_slashing: Money
    folded: int = 0  # entries folded into the journal's checkpoint (0: none)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def to_json(self) -> dict[str, JSONValue]:
        """Amounts in integer µ$J (`*_micro`) and in $J."""
        result: dict[str, JSONValue] = {
            "ok": self.ok,
            "violation": None if self.violation is None else self.violation.to_json(),
            "entries": self.entries,
            "accounts": self.accounts,
            "legs": self.legs,
            "transfers": self.transfers,
            "events": self.events,
            "folded": self.folded,
        }
        for name, amount in (
            ("minted", self.minted),
            ("grid", self.to_grid),
            ("landauer", self.to_landauer),
            ("slashing", self.to_slashing),
        ):
            result[f"{name}_micro"] = amount
            result[name] = money_to_tokens(amount)
        return result


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_header(
    record: JournalRecord, expected_seq: int, first_seq_of_key: Mapping[str, int]
) -> dict[str, JSONValue]:
    """A record's number, key, kind, time and detail, checked; its detail; or `_Broken`."""
    if not _is_int(record.seq):
        raise _Broken(f"sequence number {record.seq!r} is not an integer")
    assert isinstance(record.seq, int)
    if record.seq > expected_seq:
        gap = (
            f"{expected_seq}"
            if record.seq == expected_seq + 1
            else f"{expected_seq}-{record.seq - 1}"
        )
        raise _Broken(
            f"entry {gap} missing: the journal jumps from {expected_seq - 1} to {record.seq}"
        )
    if record.seq < expected_seq:
        raise _Broken(f"entry {record.seq} appears again, out of order")
    if not isinstance(record.key, str) or not record.key:
        raise _Broken(f"idempotency key {record.key!r} is not a non-empty string")
    if record.key in first_seq_of_key:
        raise _Broken(
            f"idempotency key {record.key!r} is used again (first by entry "
            f"{first_seq_of_key[record.key]})"
        )
    if not isinstance(record.kind, str) or not _KIND_RE.match(record.kind):
        raise _Broken(f"kind {record.kind!r} is not a valid kind")
    if not isinstance(record.at, int | float) or isinstance(record.at, bool):
        raise _Broken(f"time {record.at!r} is not a number")
    if not math.isfinite(record.at):
        raise _Broken(f"time {record.at!r} is not finite")
    try:
        detail = json.loads(record.detail) if isinstance(record.detail, str) else None
    except ValueError:
        detail = None
    if not isinstance(detail, dict):
        raise _Broken("detail is not a JSON object")
    return detail


def _opened_account(
    record: JournalRecord, detail: Mapping[str, JSONValue], replayed: Mapping[str, Account]
) -> Account | None:
    if record.kind != OPEN_KIND:
        return None
    name, credit = detail.get("account"), detail.get("allow_credit")
    if record.legs:
        raise _Broken("an open entry moves money")
    if not isinstance(name, str) or not _ACCOUNT_RE.match(name):
        raise _Broken(f"opens account {name!r}, not an account name")
    if not isinstance(credit, bool):
        raise _Broken(f"opens {name!r} with allow_credit {credit!r}, not a boolean", name)
    if name in replayed:
        raise _Broken(f"opens account {name!r} a second time", name)
    return Account(name, credit, Money(0))


def _record_violation(
    record: JournalRecord,
    expected_seq: int,
    first_seq_of_key: Mapping[str, int],
    replayed: Mapping[str, Account],
) -> tuple[Violation | None, dict[str, Money], Account | None]:
    """Check one record against the replay so far; return (violation, new balances, opening)."""
    try:
        detail = _checked_header(record, expected_seq, first_seq_of_key)
        if record.kind == CHECKPOINT_KIND:
            raise _Broken("a checkpoint that is not the journal's first entry")
        balances = _apply_legs(record.legs, replayed)
        opened = _opened_account(record, detail, replayed)
    except _Broken as broken:
        return Violation(expected_seq, broken.reason, broken.account), {}, None
    return None, balances, opened


@dataclass(slots=True)
class _Replay:
    """An audit's replay so far: the accounts, where each key was first used, the next number."""

    accounts: dict[str, Account] = field(default_factory=dict)
    first_seq_of_key: dict[str, int] = field(default_factory=dict)
    next_seq: int = 1
    checkpoint: int | None = None

    def step(self, record: JournalRecord, *, first: bool) -> Violation | None:
        if first and record.kind == CHECKPOINT_KIND and _int_at_least(record.seq, 1):
            return self._restore(record)
        violation, balances, opened = _record_violation(
            record, self.next_seq, self.first_seq_of_key, self.accounts
        )
        if violation is not None:
            return violation
        assert isinstance(record.key, str)
        self.first_seq_of_key[record.key] = self.next_seq
        for name, balance in balances.items():
            self.accounts[name] = Account(name, self.accounts[name].allow_credit, balance)
        if opened is not None:
            self.accounts[opened.name] = opened
        self.next_seq += 1
        return None

    def _restore(self, record: JournalRecord) -> Violation | None:
        """The journal starts with a checkpoint: the replay starts from the state it keeps."""
        assert isinstance(record.seq, int)
        seq = record.seq
        try:
            detail = _checked_header(record, seq, {})
            _, self.accounts = parse_checkpoint(seq, record.key, detail, record.legs)
        except _Broken as broken:
            return Violation(seq, broken.reason, broken.account)
        assert isinstance(record.key, str)
        self.first_seq_of_key[record.key] = seq
        self.checkpoint, self.next_seq = seq, seq + 1
        return None


def _folded_keys_violation(
    folded_keys: Iterable[tuple[object, object]],
    checkpoint: int | None,
    first_seq_of_key: Mapping[str, int],
) -> Violation | None:
    """The keys kept for folded entries (in entry order) must be exactly one per entry the
    checkpoint folds (1 to its number), and none may be used again by the journal."""
    expected = 1
    seen: set[str] = set()
    for key, seq in folded_keys:
        if not isinstance(key, str) or not key:
            return Violation(None, f"a folded key {key!r} is not a non-empty string")
        if checkpoint is None:
            return Violation(None, f"key {key!r} is kept as folded, but no checkpoint folds it")
        if seq != expected or not _is_int(seq) or expected > checkpoint:
            return Violation(
                None,
                f"folded key {key!r} is kept for entry {seq!r}; the checkpoint folds entries "
                f"1-{checkpoint}, the next to account for is {expected}",
            )
        if key in seen:
            return Violation(None, f"folded key {key!r} is kept twice")
        if key in first_seq_of_key:
            return Violation(
                first_seq_of_key[key],
                f"idempotency key {key!r} is used again (first by entry {seq}, folded)",
            )
        seen.add(key)
        expected += 1
    if checkpoint is not None and expected - 1 != checkpoint:
        return Violation(
            None,
            f"the checkpoint folds entries 1-{checkpoint}, but {expected - 1} folded keys are kept",
        )
    return None


def audit(
    records: Iterable[JournalRecord],
    stored: Iterable[StoredAccount],
    *,
    orphan_legs: Iterable[object] = (),
    folded_keys: Iterable[tuple[object, object]] = (),
) -> Audit:
    """Replay `records` (in storage order) from nothing and compare with the `stored` accounts.

    Checks, in this order, stopping at the first violation: sequence numbers contiguous from 1
    (or from a checkpoint, which only the first record may be, and whose detail must hold and add
    up); keys unique; every entry well formed and balanced, its accounts open, no account without
    credit below zero; no leg belongs to a missing entry (`orphan_legs`: their entry numbers);
    the `folded_keys` ((key, entry number) in entry order) are one per entry the checkpoint
    folds, none used again; the stored accounts are exactly the replayed ones, with the same
    credit and balance; and stored balances sum to zero. Counts cover every record even past a
    violation.
    """
    violation: Violation | None = None
    replay = _Replay()
    entries = legs = transfers = events = 0
    for record in records:
        entries += 1
        legs += len(record.legs)
        if record.legs:
            transfers += 1
        else:
            events += 1
        if violation is None:
            violation = replay.step(record, first=entries == 1)
    stored_rows = list(stored)
    if violation is None:
        for seq in orphan_legs:
            entry = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            violation = Violation(entry, "legs belong to an entry that is not in the journal")
            break
    if violation is None:
        violation = _folded_keys_violation(folded_keys, replay.checkpoint, replay.first_seq_of_key)
    if violation is None:
        violation = _stored_violation(stored_rows, replay.accounts)

    def final(name: str) -> Money:
        account = replay.accounts.get(name)
        return account.balance if account is not None else Money(0)

    return Audit(
        violation=violation,
        entries=entries,
        legs=legs,
        accounts=len(stored_rows),
        transfers=transfers,
        events=events,
        minted=Money(-final(TREASURY)),
        to_grid=final(GRID),
        to_landauer=final(LANDAUER),
        to_slashing=final(SLASHING),
        folded=replay.checkpoint or 0,
    )


def _stored_violation(
    stored_rows: list[StoredAccount], replayed: Mapping[str, Account]
) -> Violation | None:
    by_name: dict[str, StoredAccount] = {}
    for row in stored_rows:
        if not isinstance(row.name, str):
            return Violation(None, f"a stored account is named {row.name!r}, not a string")
        if row.name in by_name:
            return Violation(None, f"account {row.name!r} is stored twice", row.name)
        by_name[row.name] = row
    total = 0
    for name in sorted(set(by_name) | set(replayed)):
        stored, account = by_name.get(name), replayed.get(name)
        if account is None:
            return Violation(
                None, f"account {name!r} is stored but the journal never opens it", name
            )
        if stored is None:
            return Violation(
                None, f"account {name!r} is opened in the journal but not stored", name
            )
        if stored.allow_credit not in (0, 1) or isinstance(stored.allow_credit, float):
            return Violation(
                None, f"account {name!r} has allow_credit {stored.allow_credit!r}", name
            )
        if bool(stored.allow_credit) != account.allow_credit:
            return Violation(
                None,
                f"account {name!r} is stored with allow_credit={bool(stored.allow_credit)}, "
                f"the journal opened it with {account.allow_credit}",
                name,
            )
        if not _is_int(stored.balance):
            return Violation(None, f"stored balance of {name!r} is {stored.balance!r}", name)
        assert isinstance(stored.balance, int)
        if stored.balance != account.balance:
            return Violation(
                None,
                f"stored balance of {name!r} is {stored.balance} µ$J, the journal gives "
                f"{account.balance} µ$J",
                name,
            )
        total += stored.balance
    if total != 0:
        return Violation(None, f"stored balances sum to {total} µ$J, not 0")
    return None
