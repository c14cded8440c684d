"""Compaction: the entries before a time folded into one checkpoint, while balances, `verify`,
per-agent totals and idempotency keys stay what they were (pure rules, the SQLite store, a failure
or a SIGKILL in the middle, a busy database, tampering afterwards, the CLI)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_journals import (
    apply,
    build,
    copy,
    folded_pairs,
    journal_ops,
    records,
    stored,
    times,
)
from maxwell import __version__
from maxwell.cli import ledger_cmd
from maxwell.economy.ledger import (
    CHECKPOINT_KIND,
    GRID,
    LANDAUER,
    TREASURY,
    EntryRequest,
    IdempotencyConflictError,
    InvalidEntryError,
    JournalRecord,
    Ledger,
    LedgerError,
    Movement,
    agent_account,
    audit,
    checkpoint_of,
    event_request,
    fold,
    tallies,
    transfer_request,
)
from maxwell.economy.store import (
    DB_NAME,
    LedgerBusyError,
    LedgerStore,
    LedgerUnsoundError,
)
from maxwell.errors import MaxwellError
from test_ledger_cli import json_out, ledger

ALICE = agent_account("alice")
BOB = agent_account("bob")
SRC = Path(__file__).resolve().parent.parent / "src"


def a_day_of_billing(ledger: Ledger | LedgerStore) -> None:
    """Genesis at 0; alice and bob funded at 1; bills and an audit at 2-7; one entry (at 4.5)
    written late, with a time behind the entry before it."""

    def at(when: float) -> dict[str, float]:
        return {"at": when}

    ledger.open_account(ALICE, **at(0.5))
    ledger.open_account(BOB, **at(0.5))
    ledger.transfer("fund-alice", TREASURY, ALICE, 10_000, kind="fund", **at(1.0))
    ledger.transfer("fund-bob", TREASURY, BOB, 5_000, kind="fund", detail={"agent": "bob"}, **at(1))
    for tick in range(2, 8):
        ledger.post(
            f"bill:alice:{tick}",
            [Movement(ALICE, GRID, 100 * tick), Movement(ALICE, LANDAUER, tick)],
            kind="bill",
            detail={"agent": "alice", "tick": tick},
            **at(float(tick)),
        )
        if tick == 5:
            ledger.record("audit:alice", "audited", {"agent": "alice"}, **at(5.0))
            ledger.transfer("late", BOB, GRID, 7, kind="bill", detail={"agent": "bob"}, **at(4.5))


# --- the pure rules -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(ops=journal_ops(), before=times, later=st.floats(min_value=0.0, max_value=20.0))
def test_compaction_keeps_balances_proofs_totals_and_keys(
    ops: list, before: float, later: float
) -> None:
    ledger = build(ops)
    compacted = copy(ledger)
    for cut in (before, before + later):  # then again, later: the checkpoint is folded again
        compacted.compact(before=cut)
        assert compacted.accounts() == ledger.accounts()
        verdict = audit(records(compacted), stored(ledger), folded_keys=folded_pairs(compacted))
        assert verdict.ok, verdict.violation
        assert verdict.minted == audit(records(ledger), stored(ledger)).minted
        assert tallies(compacted.entries()) == tallies(ledger.entries())
        assert copy(compacted).accounts() == ledger.accounts()  # replayed from the checkpoint
        assert compacted.compact(before=cut) is None  # the same time again changes nothing
    first = compacted.entries()[0] if len(compacted) else None
    folded_through = first.seq if first is not None and first.kind == CHECKPOINT_KIND else 0
    assert [e for e in compacted.entries() if e.seq > folded_through] == [
        e for e in ledger.entries() if e.seq > folded_through
    ]
    assert all(e.at < before + later for e in ledger.entries() if e.seq <= folded_through)
    # Every key, folded or not, still answers a retry with its original entry, applying nothing.
    for entry in ledger.entries():
        again = EntryRequest(entry.key, entry.kind, entry.legs, entry.detail_json)
        assert compacted.submit(again, at=1e6) == entry
    assert compacted.accounts() == ledger.accounts()


def test_fold_takes_the_longest_prefix_before_the_time() -> None:
    ledger = Ledger.genesis(at=0.0)
    a_day_of_billing(ledger)
    by_key = {entry.key: entry for entry in ledger.entries()}
    plan = fold(ledger.entries(), before=5.0)
    assert plan is not None
    # bill:alice:5 (at 5) ends the prefix; "late" (at 4.5, written after it) is not folded.
    assert plan.checkpoint.seq == by_key["bill:alice:4"].seq == plan.replaced
    assert [f.key for f in plan.folded][-3:] == ["bill:alice:2", "bill:alice:3", "bill:alice:4"]
    assert plan.checkpoint.key == f"checkpoint:{plan.checkpoint.seq}"
    assert plan.checkpoint.at == 4.0
    detail = plan.checkpoint.detail
    assert detail["accounts"] == {
        ALICE: False,
        BOB: False,
        GRID: False,
        "house": False,
        LANDAUER: False,
        "slashing": False,
        TREASURY: True,
    }
    assert detail["entries"] == plan.checkpoint.seq and detail["before"] == 5.0
    assert {"agent": "alice", "kind": "bill", "entries": 3, "legs": {
        ALICE: [3, 0, -909], GRID: [3, 900, 0], LANDAUER: [3, 9, 0]
    }} in detail["summary"]  # fmt: skip
    legs = {leg.account: leg.delta for leg in plan.checkpoint.legs}
    assert legs == {ALICE: 10_000 - 909, BOB: 5_000, GRID: 900, LANDAUER: 9, TREASURY: -15_000}
    assert fold(ledger.entries(), before=0.0) is None  # genesis is at 0: nothing before it


def test_a_folded_key_with_other_content_is_a_conflict() -> None:
    ledger = Ledger.genesis(at=0.0)
    a_day_of_billing(ledger)
    original = ledger.entry("fund-alice")
    assert original is not None
    ledger.compact(before=100.0)
    assert ledger.entry("fund-alice") is None
    folded = ledger.folded("fund-alice")
    assert folded is not None and folded.seq == original.seq
    with pytest.raises(IdempotencyConflictError) as conflict:
        ledger.transfer("fund-alice", TREASURY, ALICE, 10_001, kind="fund", at=200.0)
    assert conflict.value.seq == original.seq
    again = ledger.transfer("fund-alice", TREASURY, ALICE, 10_000, kind="fund", at=200.0)
    assert again == original
    assert ledger.balance(ALICE) == 10_000 - 2_727 - 0  # bills 2-7: 2700 to grid, 27 to landauer


def test_checkpoint_kind_and_keys_are_reserved() -> None:
    with pytest.raises(InvalidEntryError, match="reserved"):
        event_request("x", CHECKPOINT_KIND)
    with pytest.raises(InvalidEntryError, match="reserved"):
        transfer_request("checkpoint:3", TREASURY, ALICE, 1)


def test_audit_names_a_checkpoint_that_does_not_add_up_or_is_not_first() -> None:
    ledger = Ledger.genesis(at=0.0)
    a_day_of_billing(ledger)
    ledger.compact(before=5.0)
    good = records(ledger)
    checkpoint = good[0]
    detail = json.loads(str(checkpoint.detail))
    detail["summary"][0]["entries"] += 1
    forged = JournalRecord(
        checkpoint.seq, checkpoint.key, checkpoint.kind, checkpoint.at, json.dumps(detail),
        checkpoint.legs,
    )  # fmt: skip
    verdict = audit([forged, *good[1:]], stored(ledger), folded_keys=folded_pairs(ledger))
    assert verdict.violation is not None and verdict.violation.entry == checkpoint.seq
    assert "summarises another number of entries" in verdict.violation.reason
    fresh = Ledger.genesis(at=0.0)
    late = JournalRecord(6, checkpoint.key, checkpoint.kind, 1.0, checkpoint.detail, ())
    verdict = audit([*records(fresh), late], stored(fresh))
    assert verdict.violation is not None
    assert verdict.violation.reason == "a checkpoint that is not the journal's first entry"
    with pytest.raises(LedgerError):
        Ledger.replay([ledger.entries()[1], ledger.entries()[0]])


# --- the store ----------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(ops=journal_ops(max_size=25), before=times, later=st.floats(min_value=0.0, max_value=20.0))
def test_store_compaction_matches_the_rules_and_verifies(
    ops: list, before: float, later: float
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="maxwell-compact-"))
    try:
        with LedgerStore.open(directory / "state", now=lambda: 0.0) as store:
            apply(ops, lambda request, at: store.submit(request, at=at))
            model = build(ops)
            balances = store.balances()
            for cut in (before, before + later):
                done = store.compact(cut)
                plan = model.compact(before=cut)
                assert (done.checkpoint is None) == (plan is None)
                assert store.entries() == list(model.entries())
                assert store.folded_keys() == list(model.folded_keys())
                assert store.balances() == balances
                assert store.verify().ok
                assert store.replay().accounts() == store.accounts()
                entries = store.entries()
                assert store.compact(cut).checkpoint is None and store.entries() == entries
            for op in ops:  # retries of everything: the store answers as the rules do
                try:
                    expected = model.submit(op.request, at=1e6)
                except LedgerError as refused:
                    with pytest.raises(type(refused)):
                        store.submit(op.request, at=1e6)
                else:
                    assert store.submit(op.request, at=1e6) == expected
            assert store.accounts() == model.accounts()
            assert store.verify().ok
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[LedgerStore]:
    with LedgerStore.open(state, now=lambda: 0.0) as opened:
        a_day_of_billing(opened)
        yield opened


def snapshot(store: LedgerStore) -> tuple[object, ...]:
    return (store.entries(), store.folded_keys(), store.accounts())


def tamper(state: Path, *statements: str) -> None:
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        for trigger in connection.execute("SELECT name FROM sqlite_schema WHERE type='trigger'"):
            connection.execute(f"DROP TRIGGER {trigger[0]}")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def verify_fresh(state: Path) -> str | None:
    with LedgerStore.open(state, create=False) as reopened:
        result = reopened.verify()
    return None if result.violation is None else str(result.violation)


def test_compact_verify_and_balances_unchanged(store: LedgerStore, state: Path) -> None:
    balances, totals = store.balances(), tallies(store.entries())
    done = store.compact(5.0)
    assert done.checkpoint is not None and done.entries == len(store.entries()) == 6
    assert (done.replaced, done.folded_keys, done.folded) == (12, 12, 12)
    assert store.balances() == balances and tallies(store.entries()) == totals
    assert verify_fresh(state) is None
    with LedgerStore.open(state, create=False) as reopened:
        assert reopened.verify().folded == 12
    # Later entries continue the numbering; compacting later folds the checkpoint again.
    store.transfer("fund-alice-2", TREASURY, ALICE, 1, kind="fund", at=9.0)
    assert store.entries()[-1].seq == 18
    again = store.compact(100.0)
    assert again.checkpoint is not None and again.checkpoint.seq == 18 and again.replaced == 7
    assert again.folded_keys == 6 and [e.kind for e in store.entries()] == [CHECKPOINT_KIND]
    assert len(store.folded_keys()) == 18 and verify_fresh(state) is None


def test_compacting_twice_with_the_same_time_changes_nothing(store: LedgerStore) -> None:
    store.compact(5.0)
    before = snapshot(store)
    done = store.compact(5.0)
    assert done.checkpoint is None and (done.replaced, done.entries) == (0, 6)
    assert snapshot(store) == before
    assert store.compact(1.0).checkpoint is None  # an earlier time: nothing left before it
    assert snapshot(store) == before


def test_folded_keys_answer_retries_once(store: LedgerStore, state: Path) -> None:
    original = store.entry("fund-bob")
    assert original is not None
    store.compact(100.0)
    assert store.entry("fund-bob") is None and store.key_used("fund-bob")
    assert not store.key_used("never-used")
    balance = store.balance(BOB)
    kwargs = {"kind": "fund", "detail": {"agent": "bob"}, "at": 300.0}
    assert store.transfer("fund-bob", TREASURY, BOB, 5_000, **kwargs) == original
    with pytest.raises(IdempotencyConflictError):
        store.transfer("fund-bob", TREASURY, BOB, 5_001, **kwargs)
    assert store.balance(BOB) == balance
    assert store.open_account(BOB).kind == "open"  # re-opening: a retry, not a second account
    assert verify_fresh(state) is None


@pytest.mark.parametrize("stage", ["planned", "deleted", "written", "audited"])
def test_a_failure_mid_compaction_leaves_the_journal_whole(
    store: LedgerStore, state: Path, stage: str
) -> None:
    before = snapshot(store)

    def fail_at(reached: str) -> None:
        if reached == stage:
            raise RuntimeError(f"injected failure at {stage}")

    with pytest.raises(RuntimeError, match="injected"):
        store.compact(5.0, on_step=fail_at)
    assert snapshot(store) == before
    assert verify_fresh(state) is None
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:  # the append-only triggers dropped inside the transaction are back
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM entries WHERE seq = 1")
    finally:
        connection.close()
    assert store.compact(5.0).checkpoint is not None


KILLER = """\
import os, signal, sys
from maxwell.economy.store import LedgerStore

def die(stage):
    if stage == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)

with LedgerStore.open(sys.argv[1], create=False) as store:
    store.compact(5.0, on_step=die)
"""


@pytest.mark.parametrize("stage", ["deleted", "audited"])
def test_a_compactor_killed_mid_transaction_changes_nothing(
    store: LedgerStore, state: Path, stage: str
) -> None:
    before = snapshot(store)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(state), stage],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with LedgerStore.open(state, create=False) as reopened:
        assert snapshot(reopened) == before
        assert reopened.verify().ok


def test_a_busy_ledger_is_refused_and_left_alone(state: Path) -> None:
    with LedgerStore.open(state, now=lambda: 0.0, busy_timeout_s=0.1) as store:
        a_day_of_billing(store)
        before = snapshot(store)
        daemon = sqlite3.connect(state / DB_NAME, isolation_level=None)
        try:
            daemon.execute("BEGIN IMMEDIATE")  # a daemon in the middle of a tick
            started = time.monotonic()
            with pytest.raises(LedgerBusyError):
                store.compact(5.0)
            assert time.monotonic() - started < 5.0
        finally:
            daemon.close()
        assert snapshot(store) == before
        assert store.compact(5.0).checkpoint is not None


def test_an_unsound_ledger_is_not_compacted(store: LedgerStore, state: Path) -> None:
    tamper(state, f"UPDATE accounts SET balance = balance + 1 WHERE name = '{ALICE}'")
    before = snapshot(store)
    with pytest.raises(LedgerUnsoundError, match="stored balance of 'agent:alice'"):
        store.compact(5.0)
    assert snapshot(store) == before


# --- tampering after compaction: verify still catches it -----------------------------------------


@pytest.fixture
def compacted(store: LedgerStore, state: Path) -> Path:
    store.compact(5.0)
    assert verify_fresh(state) is None
    return state


def test_verify_catches_a_changed_balance_after_compaction(compacted: Path) -> None:
    tamper(compacted, f"UPDATE accounts SET balance = balance + 1 WHERE name = '{BOB}'")
    assert verify_fresh(compacted) == (
        f"accounts: stored balance of {BOB!r} is 4994 µ$J, the journal gives 4993 µ$J"
    )


def test_verify_catches_a_forged_checkpoint(compacted: Path) -> None:
    """Both legs moved by the same amount: balanced, but the summary no longer adds up."""
    tamper(
        compacted,
        f"UPDATE legs SET delta = delta + 500 WHERE entry_seq = 12 AND account = '{ALICE}'",
        "UPDATE legs SET delta = delta - 500 WHERE entry_seq = 12 AND account = 'treasury'",
        f"UPDATE accounts SET balance = balance + 500 WHERE name = '{ALICE}'",
        "UPDATE accounts SET balance = balance - 500 WHERE name = 'treasury'",
    )
    assert verify_fresh(compacted) == (
        "entry 12: checkpoint summary of 'agent:alice' does not add up to its leg"
    )


def test_verify_catches_a_lost_or_reused_folded_key(compacted: Path) -> None:
    tamper(compacted, "DELETE FROM folded_keys WHERE key = 'fund-alice'")
    violation = verify_fresh(compacted)
    assert violation is not None and "folded key" in violation
    tamper(
        compacted,
        "INSERT INTO folded_keys VALUES ('fund-alice', 8, 'fund', 1.0, 'x')",
        "UPDATE entries SET key = 'bill:alice:2' WHERE key = 'late'",
    )
    assert verify_fresh(compacted) == (
        "entry 15: idempotency key 'bill:alice:2' is used again (first by entry 10, folded)"
    )


def test_verify_catches_entries_restored_before_the_checkpoint(compacted: Path) -> None:
    opening = '{"account":"stake:x","allow_credit":false}'
    tamper(compacted, f"INSERT INTO entries VALUES (1, 'open:stake:x', 'open', 0.0, '{opening}')")
    violation = verify_fresh(compacted)
    assert violation is not None and violation.startswith("entry 2: entry 2-11 missing")


def test_an_old_ledger_upgrades_in_place(store: LedgerStore, state: Path) -> None:
    """A version 1 ledger is version 2 without `folded_keys` (and, made before the migrations
    table, without `schema_migrations`): opened, it gains the table."""
    before = snapshot(store)
    store.close()
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        connection.execute("DROP TABLE folded_keys")  # its triggers go with it
        connection.execute("DROP TABLE schema_migrations")
        connection.execute("UPDATE meta SET value = '1' WHERE name = 'version'")
        with LedgerStore.open(state, create=False) as upgraded:
            assert snapshot(upgraded) == before and upgraded.verify().ok
            assert upgraded.compact(5.0).checkpoint is not None and upgraded.verify().ok
        version = connection.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        triggers = connection.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'folded_keys'"
        ).fetchall()
    finally:
        connection.close()
    assert version == ("2",) and len(triggers) == 2


def test_checkpoint_of_reads_back_what_fold_wrote(store: LedgerStore) -> None:
    done = store.compact(5.0)
    assert done.checkpoint is not None
    checkpoint = checkpoint_of(store.entries()[0])
    assert checkpoint.entries == 12 and checkpoint.before == 5.0
    assert checkpoint.summary[("alice", "bill")].legs[GRID].credited == 900


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_help_documents_time_formats_and_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ledger("compact", "--help") == 0
    out = capsys.readouterr().out
    for text in ("--before TIME", "Unix timestamp", "ISO-8601", "UTC", "checkpoint", "verify"):
        assert text in out
    for code in ("0 ", "1 ", "2 ", "75 ", "125"):
        assert f"\n  {code}" in out
    assert ledger("--help") == 0
    assert "compact" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--before", "yesterday"], "cannot read time 'yesterday'"),
        (["--before", "2024-13-01"], "cannot read time"),
        (["--before", "1e9"], "cannot read time"),
        (["--before", ""], "cannot read time"),
        (["--before", "5", "--busy-timeout", "-1"], "--busy-timeout"),
        (["--before", "5", "--busy-timeout", "soon"], "--busy-timeout"),
    ],
)
def test_cli_bad_values_are_one_line_usage_errors(
    store: LedgerStore, state: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    before = snapshot(store)
    assert ledger("compact", "--state", str(state), *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maxwell ledger compact: error:"), err
    assert message in err[0]
    assert snapshot(store) == before


def test_cli_missing_flags_or_state_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert ledger("compact", "--state", str(tmp_path / "nope"), "--before", "5") == 2
    assert "does not exist" in capsys.readouterr().err
    assert ledger("compact", "--state", str(tmp_path)) == 2
    assert not (tmp_path / "nope").exists()


def test_parse_time_reads_unix_and_iso_8601() -> None:
    june = 1_717_200_000.0  # 2024-06-01T00:00:00Z
    for text in ("1717200000", "1717200000.0", "2024-06-01", "2024-06-01T00:00:00",
                 "2024-06-01T02:00:00+02:00", "2024-06-01T00:00:00Z"):  # fmt: skip
        assert ledger_cmd.parse_time(text) == june, text
    assert ledger_cmd.parse_time("0.25") == 0.25


def test_cli_compacts_then_verify_and_balances_agree(
    store: LedgerStore, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ledger("balances", "--state", str(state), "--json") == 0
    balances = json_out(capsys)
    assert ledger("compact", "--state", str(state), "--before", "5") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "compacted: entries 1-12 (before 1970-01-01T00:00:05+00:00) folded into checkpoint "
        "entry 12, 12 more keys kept for retries; the journal now holds 6 entries; sound, no "
        "balance changed"
    ]
    assert ledger("verify", "--state", str(state)) == 0
    assert "the first, a checkpoint, folds 12" in capsys.readouterr().out
    assert ledger("balances", "--state", str(state), "--json") == 0
    assert json_out(capsys) == balances
    iso = "1970-01-01T00:00:05Z"  # the same time again, in ISO-8601: nothing more to fold
    assert ledger("compact", "--state", str(state), "--before", iso, "--json") == 0
    assert json_out(capsys) == {
        "compacted": False,
        "before": 5.0,
        "before_iso": "1970-01-01T00:00:05+00:00",
        "checkpoint": None,
        "replaced": 0,
        "folded": 0,
        "folded_keys": 0,
        "entries": 6,
        "version": __version__,
    }
    assert ledger("compact", "--state", str(state), "--before", "1") == 0
    assert capsys.readouterr().out.startswith("nothing to compact: no entry before 1970")
    assert ledger("compact", "--state", str(state), "--before", "2099-01-01", "--json") == 0
    report = json_out(capsys)
    assert report["compacted"] is True and report["checkpoint"] == 17
    assert (report["replaced"], report["folded"], report["folded_keys"]) == (6, 17, 5)
    assert ledger("verify", "--state", str(state), "--json") == 0
    verdict = json_out(capsys)
    assert verdict["ok"] is True and verdict["folded"] == 17 and verdict["entries"] == 1


def test_cli_busy_ledger_exits_75(
    store: LedgerStore, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(store)
    daemon = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        daemon.execute("BEGIN IMMEDIATE")
        argv = ["compact", "--state", str(state), "--before", "5", "--busy-timeout", "0.1"]
        assert ledger(*argv) == ledger_cmd.EXIT_BUSY == 75
    finally:
        daemon.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "locked" in err[0] and "nothing was compacted" in err[0], err
    assert snapshot(store) == before


def test_cli_unsound_ledger_exits_1(
    store: LedgerStore, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(state, f"UPDATE accounts SET balance = 1 WHERE name = '{ALICE}'")
    assert ledger("compact", "--state", str(state), "--before", "5") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsound" in err[0] and "nothing was compacted" in err[0], err


def test_errors_are_maxwell_errors() -> None:
    assert issubclass(LedgerUnsoundError, MaxwellError)
