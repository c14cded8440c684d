"""The ledger's SQLite store: persistence, refusals, bad state dirs, tampering caught by verify."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NobodyPython
from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    TREASURY,
    IdempotencyConflictError,
    InsufficientFundsError,
    Ledger,
    Movement,
    UnknownAccountError,
    agent_account,
    batch_request,
    event_request,
    open_request,
    transfer_request,
)
from maxwell.economy.store import (
    DB_NAME,
    BatchRefusedError,
    LedgerSchemaError,
    LedgerStore,
    LedgerStoreError,
    NotALedgerError,
    StateDirError,
)

ALICE = agent_account("alice")
BOB = agent_account("bob")


class Ticks:
    """A fake wall clock for entries written without `at`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[LedgerStore]:
    with LedgerStore.open(state, now=Ticks()) as opened:
        opened.open_account(ALICE)
        opened.open_account(BOB)
        opened.transfer("fund-alice", TREASURY, ALICE, 10_000_000, kind="fund")
        opened.transfer("fund-bob", TREASURY, BOB, 2_000_000, kind="fund")
        yield opened


def tamper(state: Path, *statements: str) -> None:
    """Change the database behind the store's back, as a person with the sqlite3 shell could."""
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        for trigger in connection.execute("SELECT name FROM sqlite_schema WHERE type='trigger'"):
            connection.execute(f"DROP TRIGGER {trigger[0]}")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def verify_fresh(state: Path) -> str | None:
    """Verify from a fresh open; the violation as text, or None when sound."""
    with LedgerStore.open(state, create=False) as reopened:
        result = reopened.verify()
    return None if result.violation is None else str(result.violation)


def test_open_creates_a_private_state_dir_with_a_wal_database(state: Path) -> None:
    with LedgerStore.open(state) as store:
        assert store.path == state / DB_NAME
        assert store.verify().ok
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    connection = sqlite3.connect(state / DB_NAME)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
    finally:
        connection.close()
    assert meta == {"schema": "maxwell-ledger", "version": "2"}


def test_writes_survive_reopening_and_retries_apply_once(store: LedgerStore, state: Path) -> None:
    first = store.transfer("pay", ALICE, BOB, 1_000, memo="lunch")
    store.close()
    with LedgerStore.open(state, create=False) as reopened:
        assert reopened.transfer("pay", ALICE, BOB, 1_000, memo="lunch") == first
        with pytest.raises(IdempotencyConflictError):
            reopened.transfer("pay", ALICE, BOB, 1_001, memo="lunch")
        assert reopened.balances()[BOB] == 2_001_000
        assert reopened.entry("pay") == first
        assert reopened.entry("nope") is None
        assert reopened.replay().balances() == reopened.balances()
        assert reopened.verify().ok


def test_refusals_change_nothing_on_disk(store: LedgerStore) -> None:
    before, entries = store.balances(), store.entries()
    with pytest.raises(InsufficientFundsError):
        store.post("bill", [Movement(ALICE, GRID, 1), Movement(BOB, LANDAUER, 2_000_001)])
    with pytest.raises(UnknownAccountError):
        store.transfer("x", ALICE, agent_account("carol"), 1)
    assert store.balances() == before
    assert store.entries() == entries
    with pytest.raises(UnknownAccountError):
        store.balance(agent_account("carol"))


def test_submit_many_is_one_transaction_in_order(store: LedgerStore, state: Path) -> None:
    carol = agent_account("carol")
    requests = [
        open_request(carol),
        transfer_request("fund-carol", TREASURY, carol, 3_000),
        # Sees the funding just before it, in the same transaction.
        batch_request("bill-carol", [Movement(carol, GRID, 2_000), Movement(carol, LANDAUER, 1)]),
        event_request("frozen-carol", "frozen", {"agent": "carol"}),
    ]
    entries = store.submit_many(requests, at=5000.0)
    assert [entry.key for entry in entries] == [request.key for request in requests]
    assert [entry.seq for entry in entries] == list(range(entries[0].seq, entries[0].seq + 4))
    assert {entry.at for entry in entries} == {5000.0}
    assert store.balance(carol) == 999
    assert store.submit_many([]) == []
    # Retrying the whole batch (say, after a crash before the caller heard back) applies nothing
    # again and returns the same entries.
    before = store.entries()
    assert store.submit_many(requests, at=6000.0) == entries
    assert store.entries() == before
    # So does a batch that repeats a key inside itself, with the same content.
    repeat = transfer_request("twice", ALICE, BOB, 5)
    first, again = store.submit_many([repeat, repeat])
    assert first == again and store.balance(BOB) == 2_000_005
    assert store.verify().ok
    assert verify_fresh(state) is None


def test_a_refused_request_in_a_batch_leaves_nothing(store: LedgerStore, state: Path) -> None:
    before, entries = store.balances(), store.entries()
    good = transfer_request("pay-1", ALICE, BOB, 1_000)
    overdraft = transfer_request("pay-2", BOB, GRID, 2_001_001)  # bob has 2,001,000 after pay-1
    after = event_request("noted", "frozen", {"agent": "bob"})
    with pytest.raises(BatchRefusedError) as refused:
        store.submit_many([good, overdraft, after])
    assert (refused.value.index, refused.value.key) == (1, "pay-2")
    assert isinstance(refused.value.cause, InsufficientFundsError)
    assert isinstance(refused.value.__cause__, InsufficientFundsError)
    assert "request 2 of 3" in str(refused.value) and "'pay-2'" in str(refused.value)
    assert store.balances() == before
    assert store.entries() == entries
    # A key reused for other content refuses the batch too, and names that request.
    store.submit(good)
    with pytest.raises(BatchRefusedError) as conflict:
        store.submit_many([after, transfer_request("pay-1", ALICE, BOB, 999)])
    assert conflict.value.key == "pay-1"
    assert isinstance(conflict.value.cause, IdempotencyConflictError)
    assert store.entry("noted") is None
    # Fixed, the same batch applies once.
    fixed = [good, transfer_request("pay-2", BOB, GRID, 1_000), after]
    assert [entry.key for entry in store.submit_many(fixed)] == ["pay-1", "pay-2", "noted"]
    assert store.balance(BOB) == 2_000_000
    assert verify_fresh(state) is None


def test_batch_events_and_explicit_times_match_the_pure_ledger(store: LedgerStore) -> None:
    store.post(
        "bill-1",
        [Movement(BOB, GRID, 1_500_000), Movement(BOB, LANDAUER, 500_000)],
        kind="bill",
        at=5.0,
    )
    store.record("frozen:bob", "frozen", {"agent": "bob", "reason": "insolvent"}, at=6.0)
    assert store.balance(BOB) == 0
    entries = store.entries()
    assert entries[-1].is_event and entries[-1].detail["reason"] == "insolvent"
    assert entries[-2].at == 5.0
    pure = Ledger.replay(entries)
    assert pure.balances() == store.balances()
    audit = store.verify()
    assert audit.ok
    assert (audit.entries, audit.events, audit.transfers) == (11, 8, 3)
    assert (audit.minted, audit.to_grid, audit.to_landauer) == (12_000_000, 1_500_000, 500_000)


def test_the_journal_refuses_update_and_delete(store: LedgerStore, state: Path) -> None:
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        for statement in (
            "UPDATE legs SET delta = delta + 1",
            "DELETE FROM entries WHERE seq = 9",
            "UPDATE entries SET kind = 'x'",
            "DELETE FROM legs",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(statement)
    finally:
        connection.close()
    assert verify_fresh(state) is None


# --- bad state directories: one-line errors by cause -----------------------------------------


def test_a_missing_state_dir_is_not_created_for_reading(state: Path) -> None:
    with pytest.raises(StateDirError, match="does not exist"):
        LedgerStore.open(state, create=False)
    assert not state.exists()


def test_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StateDirError, match="not a directory"):
        LedgerStore.open(path)
    with pytest.raises(StateDirError):
        LedgerStore.open(path / "below")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_a_state_dir_that_is_not_writable(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StateDirError, match="not writable"):
            LedgerStore.open(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_a_state_dir_not_writable_for_user_nobody(nobody_python: NobodyPython) -> None:
    """Root may write anywhere, so the check is run as nobody on a root-owned 0755 directory."""
    root = Path(tempfile.mkdtemp(prefix="maxwell-ledger-", dir="/tmp"))
    try:
        root.chmod(0o755)
        snippet = (
            "import sys\n"
            "from maxwell.economy.store import LedgerStore, StateDirError\n"
            "try:\n"
            "    LedgerStore.open(sys.argv[1])\n"
            "except StateDirError as exc:\n"
            "    print(exc)\n"
        )
        result = subprocess.run(
            [nobody_python.python, "-c", snippet, str(root)],
            env=nobody_python.env,
            user=65534,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"state directory {root} is not writable"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_dir_without_a_ledger_or_with_something_else(tmp_path: Path) -> None:
    with pytest.raises(NotALedgerError, match="missing"):
        LedgerStore.open(tmp_path, create=False)
    (tmp_path / DB_NAME).write_bytes(b"this is not SQLite at all, just text " * 200)
    with pytest.raises(NotALedgerError, match="not a Maxwell ledger"):
        LedgerStore.open(tmp_path)
    (tmp_path / DB_NAME).unlink()
    other = sqlite3.connect(tmp_path / DB_NAME)
    other.execute("CREATE TABLE photos (id INTEGER)")
    other.commit()
    other.close()
    with pytest.raises(NotALedgerError, match="not a Maxwell ledger"):
        LedgerStore.open(tmp_path)


def test_an_empty_database_is_initialised_only_when_creating(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / DB_NAME).close()
    with pytest.raises(NotALedgerError, match="empty"):
        LedgerStore.open(tmp_path, create=False)
    with LedgerStore.open(tmp_path) as store:
        assert store.verify().ok


def test_another_schema_version_is_refused(store: LedgerStore, state: Path) -> None:
    tamper(state, "UPDATE meta SET value = '99' WHERE name = 'version'")
    with pytest.raises(LedgerSchemaError, match="version 99"):
        LedgerStore.open(state)


def test_store_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(LedgerStoreError) as caught:
        LedgerStore.open(tmp_path)
    assert "\n" not in str(caught.value)
    assert str(tmp_path) in str(caught.value)


# --- tampering: verify names the first violation ---------------------------------------------


def test_verify_catches_an_edited_leg(store: LedgerStore, state: Path) -> None:
    tamper(state, f"UPDATE legs SET delta = 9000000 WHERE entry_seq = 9 AND account = '{BOB}'")
    assert verify_fresh(state) == "entry 9: unbalanced: legs sum to 7000000 µ$J, not 0"


def test_verify_catches_a_deleted_entry(store: LedgerStore, state: Path) -> None:
    tamper(state, "DELETE FROM legs WHERE entry_seq = 8", "DELETE FROM entries WHERE seq = 8")
    violation = verify_fresh(state)
    assert violation is not None and violation.startswith("entry 8: entry 8 missing")


def test_verify_catches_an_entry_deleted_without_its_legs(store: LedgerStore, state: Path) -> None:
    tamper(state, "DELETE FROM entries WHERE seq = 9")
    assert verify_fresh(state) == "entry 9: legs belong to an entry that is not in the journal"


def test_verify_catches_a_gap_left_by_a_deleted_entry(store: LedgerStore, state: Path) -> None:
    tamper(state, "DELETE FROM entries WHERE seq = 8")
    assert verify_fresh(state) == "entry 8: entry 8 missing: the journal jumps from 7 to 9"


def test_verify_catches_a_changed_stored_balance(store: LedgerStore, state: Path) -> None:
    tamper(state, f"UPDATE accounts SET balance = balance + 1 WHERE name = '{ALICE}'")
    assert verify_fresh(state) == (
        f"accounts: stored balance of {ALICE!r} is 10000001 µ$J, the journal gives 10000000 µ$J"
    )


def test_verify_catches_an_inserted_unbalanced_entry(store: LedgerStore, state: Path) -> None:
    tamper(
        state,
        "INSERT INTO entries VALUES (10, 'forged', 'transfer', 7.0, '{}')",
        f"INSERT INTO legs VALUES (10, '{ALICE}', 5000000)",
        f"UPDATE accounts SET balance = balance + 5000000 WHERE name = '{ALICE}'",
    )
    assert verify_fresh(state) == "entry 10: unbalanced: legs sum to 5000000 µ$J, not 0"


def test_verify_catches_a_consistent_forgery_by_its_balances(
    store: LedgerStore, state: Path
) -> None:
    """Both legs of entry 8 inflated: balanced, but the stored balances no longer replay."""
    tamper(
        state,
        f"UPDATE legs SET delta = 20000000 WHERE entry_seq = 8 AND account = '{ALICE}'",
        "UPDATE legs SET delta = -20000000 WHERE entry_seq = 8 AND account = 'treasury'",
    )
    violation = verify_fresh(state)
    assert violation is not None and "stored balance of 'agent:alice'" in violation


def test_verify_catches_an_overdraft_and_a_forged_credit_flag(
    store: LedgerStore, state: Path
) -> None:
    tamper(
        state,
        "INSERT INTO entries VALUES (10, 'drain', 'transfer', 7.0, '{}')",
        f"INSERT INTO legs VALUES (10, '{BOB}', -3000000)",
        "INSERT INTO legs VALUES (10, 'grid', 3000000)",
        f"UPDATE accounts SET allow_credit = 1, balance = -1000000 WHERE name = '{BOB}'",
        "UPDATE accounts SET balance = 3000000 WHERE name = 'grid'",
    )
    assert verify_fresh(state) == (
        f"entry 10: account {BOB!r} goes negative (-1000000 µ$J) without credit"
    )


def test_balances_are_read_again_whenever_the_database_may_have_changed(
    store: LedgerStore, state: Path
) -> None:
    first = store.balances()
    assert store.balances() == first  # nothing changed: the same balances
    store.transfer("pay-cache-1", ALICE, BOB, 7)  # through this connection
    assert store.balances()[BOB] == first[BOB] + 7
    with LedgerStore.open(state) as other:  # another connection commits
        other.transfer("pay-cache-2", ALICE, BOB, 5)
    assert store.balances()[BOB] == first[BOB] + 12
    with pytest.raises(RuntimeError), store.unit_of_work():  # a write rolled back
        store.transfer("pay-cache-3", ALICE, BOB, 100)
        assert store.balances()[BOB] == first[BOB] + 112  # inside it: what it wrote
        raise RuntimeError("abandon")
    assert store.balances()[BOB] == first[BOB] + 12
    mine = store.balances()
    mine[BOB] = -1  # a caller's copy: the store's own stays as it was
    assert store.balances()[BOB] == first[BOB] + 12
