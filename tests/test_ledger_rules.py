"""The ledger's pure rules: hand-computed balances, refusals that change nothing, idempotency."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from maxwell.economy.ledger import (
    GRID,
    HOUSE,
    LANDAUER,
    SLASHING,
    TREASURY,
    AccountExistsError,
    Entry,
    EntryRequest,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidEntryError,
    JournalRecord,
    Ledger,
    LedgerError,
    Leg,
    Movement,
    StoredAccount,
    UnknownAccountError,
    agent_account,
    audit,
    batch_request,
    event_request,
    stake_account,
    transfer_request,
)
from maxwell.errors import MaxwellError
from maxwell.units import Money, tokens_to_money

ALICE = agent_account("alice")
BOB = agent_account("bob")


def funded() -> Ledger:
    """Alice 10 $J, Bob 2 $J, minted from the treasury at t=1."""
    ledger = Ledger.genesis(at=0.0)
    ledger.open_account(ALICE, at=0.5)
    ledger.open_account(BOB, at=0.5)
    ledger.transfer("fund-alice", TREASURY, ALICE, tokens_to_money(10), at=1.0, kind="fund")
    ledger.transfer("fund-bob", TREASURY, BOB, tokens_to_money(2), at=1.0, kind="fund")
    return ledger


def test_genesis_opens_the_system_accounts_with_credit_only_for_the_treasury() -> None:
    ledger = Ledger.genesis(at=0.0)
    accounts = ledger.accounts()
    assert set(accounts) == {TREASURY, GRID, LANDAUER, SLASHING, HOUSE}
    assert [name for name, account in accounts.items() if account.allow_credit] == [TREASURY]
    assert all(entry.kind == "open" and entry.is_event for entry in ledger)
    assert [entry.seq for entry in ledger] == [1, 2, 3, 4, 5]


def test_hand_computed_balances_after_funding_transfer_and_bill() -> None:
    ledger = funded()
    ledger.transfer("a->b", ALICE, BOB, 1_500_000, at=2.0, memo="rent")
    ledger.post(
        "bill-bob-1",
        [Movement(BOB, GRID, 3_000_000), Movement(BOB, LANDAUER, 250_000)],
        at=3.0,
        kind="bill",
        detail={"energy_uj": 3_000_000},
    )
    assert ledger.balances() == {
        ALICE: 8_500_000,
        BOB: 2_000_000 + 1_500_000 - 3_250_000,
        GRID: 3_000_000,
        HOUSE: 0,
        LANDAUER: 250_000,
        SLASHING: 0,
        TREASURY: -12_000_000,
    }
    assert sum(ledger.balances().values()) == 0
    bill = ledger.entry("bill-bob-1")
    assert bill is not None
    assert bill.legs == (
        Leg(BOB, Money(-3_250_000)),
        Leg(GRID, Money(3_000_000)),
        Leg(LANDAUER, Money(250_000)),
    )
    assert bill.detail == {"energy_uj": 3_000_000}
    rent = ledger.entry("a->b")
    assert rent is not None and rent.detail == {"memo": "rent"}


def test_insufficient_funds_raises_and_changes_nothing() -> None:
    ledger = funded()
    before_balances, before_entries = ledger.balances(), ledger.entries()
    with pytest.raises(InsufficientFundsError) as caught:
        ledger.transfer("too-much", BOB, GRID, 2_000_001, at=2.0)
    assert caught.value.account == BOB
    assert caught.value.balance == 2_000_000
    assert caught.value.needed == 2_000_001
    assert ledger.balances() == before_balances
    assert ledger.entries() == before_entries
    assert ledger.entry("too-much") is None
    # The key was not consumed: the same key with an amount that fits now applies.
    ledger.transfer("too-much", BOB, GRID, 2_000_000, at=3.0)
    assert ledger.balance(BOB) == 0


def test_a_batch_applies_all_its_legs_or_none() -> None:
    ledger = funded()
    before = ledger.balances()
    with pytest.raises(InsufficientFundsError):
        ledger.post(
            "bill",
            [Movement(ALICE, GRID, 1), Movement(BOB, LANDAUER, 2_000_001)],
            at=2.0,
        )
    assert ledger.balances() == before
    assert len(ledger) == 9
    # Legs on one account are netted before the check: in 1, out 1 + balance is fine.
    ledger.post(
        "pass-through", [Movement(ALICE, BOB, 10_000_000), Movement(BOB, GRID, 12_000_000)], at=3.0
    )
    assert ledger.balance(ALICE) == 0 and ledger.balance(BOB) == 0
    assert ledger.balance(GRID) == 12_000_000


def test_retry_with_same_key_and_content_applies_once_and_returns_the_original() -> None:
    ledger = funded()
    first = ledger.transfer("pay-1", ALICE, BOB, 1_000, at=2.0)
    again = ledger.transfer("pay-1", ALICE, BOB, 1_000, at=99.0)
    assert again == first
    assert again.at == 2.0
    assert ledger.balance(BOB) == 2_001_000
    assert len(ledger) == 10


def test_same_key_with_different_content_is_a_conflict() -> None:
    ledger = funded()
    ledger.transfer("pay-1", ALICE, BOB, 1_000, at=2.0)
    retries: list[Callable[[], Entry]] = [
        lambda: ledger.transfer("pay-1", ALICE, BOB, 1_001, at=2.0),
        lambda: ledger.transfer("pay-1", ALICE, GRID, 1_000, at=2.0),
        lambda: ledger.transfer("pay-1", ALICE, BOB, 1_000, at=2.0, kind="bill"),
        lambda: ledger.transfer("pay-1", ALICE, BOB, 1_000, at=2.0, memo="x"),
        lambda: ledger.record("pay-1", "frozen", {}, at=2.0),
    ]
    for retry in retries:
        with pytest.raises(IdempotencyConflictError) as caught:
            retry()
        assert caught.value.seq == 10
    assert ledger.balance(BOB) == 2_001_000


def test_credit_is_only_for_accounts_that_allow_it() -> None:
    ledger = Ledger.genesis(at=0.0)
    ledger.open_account("house", at=1.0)  # a retry of the genesis opening: no-op
    ledger.open_account(stake_account("alice"), at=1.0)
    ledger.open_account("agent:overdraft", allow_credit=True, at=1.0)
    ledger.transfer("t1", TREASURY, GRID, 5, at=2.0)
    assert ledger.balance(TREASURY) == -5
    ledger.transfer("t2", "agent:overdraft", stake_account("alice"), 7, at=2.0)
    assert ledger.balance("agent:overdraft") == -7
    with pytest.raises(InsufficientFundsError):
        ledger.transfer("t3", HOUSE, GRID, 1, at=2.0)
    with pytest.raises(IdempotencyConflictError):
        ledger.open_account("agent:overdraft", allow_credit=False, at=3.0)
    opener = EntryRequest(
        "another-key", "open", detail_json=json.dumps({"account": "house", "allow_credit": False})
    )
    with pytest.raises(AccountExistsError):
        ledger.submit(opener, at=3.0)


def test_non_monetary_events_share_the_journal() -> None:
    ledger = funded()
    entry = ledger.record(
        "frozen:alice:7", "frozen", {"agent": "alice", "reason": "insolvent"}, at=7.0
    )
    assert entry.is_event and entry.legs == ()
    assert entry.seq == 10
    assert (
        ledger.record("frozen:alice:7", "frozen", {"reason": "insolvent", "agent": "alice"}, at=8.0)
        == entry
    )
    assert sum(ledger.balances().values()) == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: transfer_request("k", ALICE, BOB, 0), "more than 0"),
        (lambda: transfer_request("k", ALICE, BOB, -5), "more than 0"),
        (lambda: transfer_request("k", ALICE, BOB, 1.5), "integer"),  # type: ignore[arg-type]
        (lambda: transfer_request("k", ALICE, BOB, True), "integer"),
        (lambda: transfer_request("k", ALICE, BOB, 2**63), "64-bit"),
        (lambda: transfer_request("k", ALICE, ALICE, 5), "to itself"),
        (lambda: transfer_request("", ALICE, BOB, 5), "key"),
        (lambda: transfer_request("k\n", ALICE, BOB, 5), "control"),
        (lambda: transfer_request("k", "Agent Smith", BOB, 5), "account name"),
        (lambda: transfer_request("k", ALICE, BOB, 5, kind="Bad Kind"), "kind"),
        (lambda: transfer_request("k", ALICE, BOB, 5, detail={"x": float("nan")}), "JSON"),
        (lambda: transfer_request("k", ALICE, BOB, 5, kind="open"), "reserved"),
        (lambda: batch_request("k", []), "no movements"),
        (
            lambda: batch_request("k", [Movement(ALICE, BOB, 5), Movement(BOB, ALICE, 5)]),
            "no money",
        ),
        (lambda: event_request("k", "open"), "reserved"),
        (lambda: EntryRequest("k", "x", (Leg(ALICE, Money(5)),)), "unbalanced"),
        (lambda: agent_account("a b"), "agent id"),
    ],
)
def test_malformed_requests_are_refused_by_cause(build: object, message: str) -> None:
    with pytest.raises(InvalidEntryError, match=message):
        build()  # type: ignore[operator]


def test_unknown_accounts_and_bad_times_are_refused() -> None:
    ledger = funded()
    with pytest.raises(UnknownAccountError):
        ledger.transfer("k", ALICE, agent_account("carol"), 5, at=2.0)
    with pytest.raises(UnknownAccountError):
        ledger.balance("agent:carol")
    with pytest.raises(InvalidEntryError):
        ledger.transfer("k", ALICE, BOB, 5, at=float("inf"))
    assert len(ledger) == 9


def test_errors_derive_from_maxwell_error() -> None:
    for error in (
        LedgerError,
        InvalidEntryError,
        InsufficientFundsError,
        IdempotencyConflictError,
        UnknownAccountError,
        AccountExistsError,
    ):
        assert issubclass(error, MaxwellError)


def test_replay_rebuilds_the_same_ledger() -> None:
    ledger = funded()
    ledger.transfer("x", ALICE, BOB, 5, at=2.0)
    ledger.record("e", "frozen", {"agent": "bob"}, at=3.0)
    replayed = Ledger.replay(ledger.entries())
    assert replayed.balances() == ledger.balances()
    assert replayed.entries() == ledger.entries()


def _records(ledger: Ledger) -> list[JournalRecord]:
    return [
        JournalRecord(
            e.seq,
            e.key,
            e.kind,
            e.at,
            e.detail_json,
            tuple((leg.account, leg.delta) for leg in e.legs),
        )
        for e in ledger
    ]


def _stored(ledger: Ledger) -> list[StoredAccount]:
    return [
        StoredAccount(a.name, int(a.allow_credit), a.balance) for a in ledger.accounts().values()
    ]


def test_audit_of_a_sound_journal_counts_it() -> None:
    ledger = funded()
    ledger.post("bill", [Movement(ALICE, GRID, 3), Movement(ALICE, LANDAUER, 1)], at=2.0)
    result = audit(_records(ledger), _stored(ledger))
    assert result.ok, result.violation
    assert (result.entries, result.transfers, result.events, result.legs) == (10, 3, 7, 7)
    assert result.minted == 12_000_000
    assert (result.to_grid, result.to_landauer) == (3, 1)
    assert result.accounts == 7
    assert result.to_json()["ok"] is True


def test_audit_names_the_first_violation() -> None:
    ledger = funded()
    records, stored = _records(ledger), _stored(ledger)

    def first(records: list[JournalRecord], stored: list[StoredAccount] = stored) -> str:
        result = audit(records, stored)
        assert not result.ok
        assert result.violation is not None
        return str(result.violation)

    unbalanced = [
        *records[:8],
        JournalRecord(9, "fund-bob", "fund", 1.0, "{}", ((BOB, 2_000_001), (TREASURY, -2_000_000))),
    ]
    assert first(unbalanced) == "entry 9: unbalanced: legs sum to 1 µ$J, not 0"
    assert first(records[:7] + records[8:]).startswith("entry 8: entry 8 missing")
    dup = JournalRecord(
        9, "fund-alice", *[getattr(records[8], f) for f in ("kind", "at", "detail", "legs")]
    )
    assert "used again (first by entry 8)" in first([*records[:8], dup])
    overdraft = JournalRecord(
        10, "x", "transfer", 2.0, "{}", ((BOB, -3_000_000), (GRID, 3_000_000))
    )
    assert "goes negative" in first([*records, overdraft])
    wrong = [
        StoredAccount(s.name, s.allow_credit, s.balance + 1 if s.name == BOB else s.balance)  # type: ignore[operator]  # an int: _stored() built it
        for s in stored
    ]
    assert first(records, wrong) == (
        f"accounts: stored balance of {BOB!r} is 2000001 µ$J, the journal gives 2000000 µ$J"
    )
    assert first(records, stored[:-1]) == (
        "accounts: account 'treasury' is opened in the journal but not stored"
    )
    assert first(records, [*stored, StoredAccount("agent:ghost", 0, 0)]) == (
        "accounts: account 'agent:ghost' is stored but the journal never opens it"
    )
    assert first(records, [StoredAccount(s.name, 1, s.balance) for s in stored]) == (
        "accounts: account 'agent:alice' is stored with allow_credit=True, "
        "the journal opened it with False"
    )
    orphaned = audit(records, stored, orphan_legs=[12])
    assert str(orphaned.violation) == "entry 12: legs belong to an entry that is not in the journal"
