"""Every violation the ledger's audit (`LedgerStore.verify`, `maxwell ledger verify`) can name.

Each case tampers a real database with plain sqlite3, as a person with the sqlite3 shell could
(the append-only triggers dropped, CHECK constraints ignored where a case needs a value they
refuse), then asserts that `verify` names exactly that violation and that `maxwell ledger verify`
exits 1 printing it. A row that breaks a CHECK constraint is reported by SQLite's quick_check
too; the store leaves such rows to the audit (it names them better) and names the CHECK itself
only when the audit finds nothing. The branches that SQLite's own schema rules out (STRICT column
types, primary keys, NOT NULL) are driven through the pure `audit` instead, at the end. The
branches already tested elsewhere are listed where they are, so the list here reads as the whole
audit. (A damaged file, as opposed to a tampered one, is in test_store_failures.py.)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ledger_journals import folded_pairs, records, stored
from maxwell.cli import ledger_cmd
from maxwell.cli.common import OneLineParser
from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    MAX_MONEY,
    TREASURY,
    JournalRecord,
    Ledger,
    Movement,
    StoredAccount,
    agent_account,
    audit,
)
from maxwell.economy.store import DB_NAME, LedgerStore

ALICE = agent_account("alice")
BOB = agent_account("bob")

Tampering = str | Callable[[sqlite3.Connection], None]


def day_of_billing(ledger: Ledger | LedgerStore) -> None:
    """Genesis (entries 1-5), alice and bob opened (6, 7) and funded (8, 9), two bills of alice
    (10, 11, at 2 and 3), then a bill of bob at 6 and an audit at 7 (12, 13)."""
    ledger.open_account(ALICE, at=0.5)
    ledger.open_account(BOB, at=0.5)
    ledger.transfer("fund-alice", TREASURY, ALICE, 10_000_000, kind="fund", at=1.0)
    ledger.transfer("fund-bob", TREASURY, BOB, 2_000_000, kind="fund", at=1.0)
    for tick in (2, 3):
        ledger.post(
            f"bill:alice:{tick}",
            [Movement(ALICE, GRID, 100 * tick), Movement(ALICE, LANDAUER, tick)],
            kind="bill",
            detail={"agent": "alice"},
            at=float(tick),
        )
    ledger.transfer("bill:bob:6", BOB, GRID, 7, kind="bill", detail={"agent": "bob"}, at=6.0)
    ledger.record("audit:alice", "audited", {"agent": "alice"}, at=7.0)


def build(state: Path, *, compacted: bool) -> None:
    """The day of billing in a store at `state`; `compacted`: entries 1-11 folded into the
    checkpoint entry 11 (keys 1-11 kept in `folded_keys`), 12 and 13 after it."""
    with LedgerStore.open(state, now=lambda: 0.0) as store:
        day_of_billing(store)
        if compacted:
            done = store.compact(5.0)
            assert done.checkpoint is not None and done.checkpoint.seq == 11
        assert store.verify().ok


def tamper(state: Path, *changes: Tampering) -> None:
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        for trigger in connection.execute("SELECT name FROM sqlite_schema WHERE type='trigger'"):
            connection.execute(f"DROP TRIGGER {trigger[0]}")
        connection.execute("PRAGMA ignore_check_constraints = ON")
        for change in changes:
            if isinstance(change, str):
                connection.execute(change)
            else:
                change(connection)
    finally:
        connection.close()


def checkpoint_detail(change: Callable[[dict[str, Any]], object]) -> Tampering:
    """Rewrite the checkpoint's (entry 11's) detail JSON with `change` applied to it."""

    def rewrite(connection: sqlite3.Connection) -> None:
        (text,) = connection.execute("SELECT detail FROM entries WHERE seq = 11").fetchone()
        detail = json.loads(text)
        change(detail)
        connection.execute("UPDATE entries SET detail = ? WHERE seq = 11", (json.dumps(detail),))

    return rewrite


def summary_row(index: int, **fields: object) -> Tampering:
    return checkpoint_detail(lambda detail: detail["summary"][index].update(fields))


def ledger(*argv: str) -> int:
    """Parse `argv` as `maxwell ledger ARGV` would and run it; the exit status."""
    root = OneLineParser(prog="maxwell")
    commands = root.add_subparsers(dest="command_name", required=True)
    ledger_cmd.add_arguments(commands.add_parser("ledger"))
    return ledger_cmd.run(root.parse_args(["ledger", *argv]))


def _open(account: str, credit: object) -> str:
    return json.dumps({"account": account, "allow_credit": credit}, separators=(",", ":"))


# (tamperings, the violation `verify` names). Already tested elsewhere, so not here: a gap
# (test_ledger_store, test_ledger_compact: "entry 2-11 missing"), legs of a missing entry, an
# unbalanced entry, an overdraft, a changed stored balance (test_ledger_store), a checkpoint
# summary that does not add up to its leg or miscounts its entries, a folded key out of order
# or reused (test_ledger_compact), a key used twice in the journal (test_ledger_rules: UNIQUE
# keeps it out of SQLite). The stored sum of balances is checked last, yet cannot fail there:
# every replayed entry is balanced and every stored balance equals its replay by then.
JOURNAL_CASES = {
    "a number below 1": (
        ["INSERT INTO entries VALUES (0, 'zero', 'event', 0.0, '{}')"],
        "entry 1: entry 0 appears again, out of order",
    ),
    "an empty key": (
        ["UPDATE entries SET key = '' WHERE seq = 9"],
        "entry 9: idempotency key '' is not a non-empty string",
    ),
    "a malformed kind": (
        ["UPDATE entries SET kind = 'Fund Alice' WHERE seq = 8"],
        "entry 8: kind 'Fund Alice' is not a valid kind",
    ),
    "an infinite time": (
        ["UPDATE entries SET at = 1e999 WHERE seq = 8"],
        "entry 8: time inf is not finite",
    ),
    "a detail that is not JSON": (
        ["UPDATE entries SET detail = '{\"memo\": ' WHERE seq = 8"],
        "entry 8: detail is not a JSON object",
    ),
    "a detail that is JSON but not an object": (
        ["UPDATE entries SET detail = '[1, 2]' WHERE seq = 8"],
        "entry 8: detail is not a JSON object",
    ),
    "a checkpoint that is not first": (
        ["UPDATE entries SET kind = 'checkpoint' WHERE seq = 9"],
        "entry 9: a checkpoint that is not the journal's first entry",
    ),
    "a leg that moves nothing": (
        [f"UPDATE legs SET delta = 0 WHERE entry_seq = 9 AND account = '{BOB}'"],
        f"entry 9: leg on {BOB!r} moves nothing (delta 0)",
    ),
    "a leg on an account never opened": (
        [f"UPDATE legs SET account = 'agent:ghost' WHERE entry_seq = 9 AND account = '{BOB}'"],
        "entry 9: leg on account 'agent:ghost', which is not open",
    ),
    "a balance beyond 64 bits": (
        [
            "INSERT INTO entries VALUES (14, 'mint-max', 'fund', 8.0, '{}')",
            f"INSERT INTO legs VALUES (14, '{ALICE}', {MAX_MONEY}), (14, 'treasury', -{MAX_MONEY})",
        ],
        f"entry 14: account {ALICE!r} leaves the 64-bit range",
    ),
    "an opening that moves money": (
        ["INSERT INTO legs VALUES (6, 'treasury', -1), (6, 'grid', 1)"],
        "entry 6: an open entry moves money",
    ),
    "an opening of a malformed name": (
        [f"UPDATE entries SET detail = '{_open('Alice', False)}' WHERE seq = 6"],
        "entry 6: opens account 'Alice', not an account name",
    ),
    "an opening with a credit flag that is not a boolean": (
        [f"UPDATE entries SET detail = '{_open(ALICE, 0)}' WHERE seq = 6"],
        f"entry 6: opens {ALICE!r} with allow_credit 0, not a boolean",
    ),
    "an account opened twice": (
        [f"UPDATE entries SET detail = '{_open(ALICE, False)}' WHERE seq = 7"],
        f"entry 7: opens account {ALICE!r} a second time",
    ),
    "a folded key without a checkpoint": (
        ["INSERT INTO folded_keys VALUES ('ghost', 1, 'fund', 1.0, 'digest')"],
        "accounts: key 'ghost' is kept as folded, but no checkpoint folds it",
    ),
    "an account stored but never opened": (
        ["INSERT INTO accounts VALUES ('agent:ghost', 0, 0, 1)"],
        "accounts: account 'agent:ghost' is stored but the journal never opens it",
    ),
    "an account opened but not stored": (
        ["DELETE FROM accounts WHERE name = 'house'"],
        "accounts: account 'house' is opened in the journal but not stored",
    ),
    "a stored credit flag that is not 0 or 1": (
        ["UPDATE accounts SET allow_credit = 2 WHERE name = 'grid'"],
        "accounts: account 'grid' has allow_credit 2",
    ),
    "a row breaking a CHECK that the audit does not judge": (
        ["UPDATE schema_migrations SET adopted = 2 WHERE owner = 'ledger' AND version = 1"],
        "accounts: SQLite's quick_check: CHECK constraint failed in schema_migrations",
    ),
    "a stored credit flag the journal did not open": (
        [f"UPDATE accounts SET allow_credit = 1 WHERE name = '{BOB}'"],
        f"accounts: account {BOB!r} is stored with allow_credit=True, the journal opened it "
        "with False",
    ),
}

# On the compacted ledger: the checkpoint (entry 11) and the folded keys.
CHECKPOINT_CASES = {
    "a checkpoint's detail that is not JSON": (
        ["UPDATE entries SET detail = 'checkpoint' WHERE seq = 11"],
        "entry 11: detail is not a JSON object",
    ),
    "a checkpoint under another key": (
        ["UPDATE entries SET key = 'checkpoint:7' WHERE seq = 11"],
        "entry 11: checkpoint 11 has key 'checkpoint:7', not 'checkpoint:11'",
    ),
    "a checkpoint's detail without its time": (
        [checkpoint_detail(lambda detail: detail.pop("before"))],
        "entry 11: checkpoint detail is not {accounts, before, entries, summary}",
    ),
    "a checkpoint's credit flag that is not a boolean": (
        [checkpoint_detail(lambda detail: detail["accounts"].update(grid=0))],
        "entry 11: checkpoint accounts are not a map of account name to allow_credit",
    ),
    "a checkpoint's time that is not a number": (
        [checkpoint_detail(lambda detail: detail.update(before="yesterday"))],
        "entry 11: checkpoint time 'yesterday' is not a finite number",
    ),
    "a checkpoint that miscounts what it folds": (
        [checkpoint_detail(lambda detail: detail.update(entries=10))],
        "entry 11: checkpoint 11 says it folds 10 entries, not 11",
    ),
    "a checkpoint opening a malformed name": (
        [checkpoint_detail(lambda detail: detail["accounts"].update({"Ghost": False}))],
        "entry 11: checkpoint names account 'Ghost', not an account name",
    ),
    "a checkpoint's summary that is not a list": (
        [checkpoint_detail(lambda detail: detail.update(summary={}))],
        "entry 11: checkpoint summary is not a list",
    ),
    "a summary row without its fields": (
        [checkpoint_detail(lambda detail: detail["summary"].__setitem__(0, {"agent": None}))],
        "entry 11: checkpoint summary row {'agent': None} is not {agent, kind, entries, legs}",
    ),
    "a summary row naming an agent that is not a string": (
        [summary_row(0, agent=7)],
        "entry 11: checkpoint summary names agent 7, not a string or null",
    ),
    "a summary row of the checkpoint kind": (
        [summary_row(0, kind="checkpoint")],
        "entry 11: checkpoint summary names kind 'checkpoint'",
    ),
    "a summary row of no entries": (
        [summary_row(0, entries=0)],
        "entry 11: checkpoint summary row for (None, 'fund') is malformed",
    ),
    "a summary row's tally that is not three integers": (
        [summary_row(0, legs={ALICE: [1, 10_000_000]})],
        f"entry 11: checkpoint summary of (None, 'fund') on {ALICE!r} is malformed",
    ),
    "a summary row with a leg that moved nothing": (
        [summary_row(2, legs={ALICE: [2, 0, -1]})],
        f"entry 11: checkpoint summary of ('alice', 'bill') has a zero leg on {ALICE!r}",
    ),
    "a summary row on a malformed account name": (
        [summary_row(0, legs={"Ghost": [1, 1, 0]})],
        "entry 11: checkpoint names account 'Ghost', not an account name",
    ),
    "a summary with a group twice": (
        [checkpoint_detail(lambda detail: detail["summary"].append(detail["summary"][0]))],
        "entry 11: checkpoint summary has (None, 'fund') twice",
    ),
    "a checkpoint opening fewer accounts than it folds openings": (
        [checkpoint_detail(lambda detail: detail["accounts"].pop("house"))],
        "entry 11: checkpoint 11 opens another number of accounts than it folds openings",
    ),
    "a checkpoint's leg on an account it does not open": (
        [f"UPDATE legs SET account = 'agent:ghost' WHERE entry_seq = 11 AND account = '{BOB}'"],
        "entry 11: leg on account 'agent:ghost', which is not open",
    ),
    "a folded key that is empty": (
        ["UPDATE folded_keys SET key = '' WHERE seq = 3"],
        "accounts: a folded key '' is not a non-empty string",
    ),
    "a folded key past the checkpoint": (
        ["INSERT INTO folded_keys VALUES ('ghost', 12, 'fund', 1.0, 'digest')"],
        "accounts: folded key 'ghost' is kept for entry 12; the checkpoint folds entries 1-11, "
        "the next to account for is 12",
    ),
    "the last folded key lost": (
        ["DELETE FROM folded_keys WHERE seq = 11"],
        "accounts: the checkpoint folds entries 1-11, but 10 folded keys are kept",
    ),
}


def _verify_names(
    state: Path, violation: str, capsys: pytest.CaptureFixture[str], *changes: Tampering
) -> None:
    tamper(state, *changes)
    with LedgerStore.open(state, create=False) as store:
        result = store.verify()
    assert str(result.violation) == violation
    assert ledger("verify", "--state", str(state)) == 1
    assert capsys.readouterr().out.splitlines() == [f"unsound: {violation}"]


@pytest.mark.parametrize(("changes", "violation"), JOURNAL_CASES.values(), ids=JOURNAL_CASES)
def test_verify_names_each_journal_violation(
    tmp_path: Path, changes: list[Tampering], violation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path, compacted=False)
    _verify_names(tmp_path, violation, capsys, *changes)


@pytest.mark.parametrize(("changes", "violation"), CHECKPOINT_CASES.values(), ids=CHECKPOINT_CASES)
def test_verify_names_each_checkpoint_violation(
    tmp_path: Path, changes: list[Tampering], violation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build(tmp_path, compacted=True)
    _verify_names(tmp_path, violation, capsys, *changes)


# --- branches SQLite's schema rules out: the pure audit, on records as storage might return ---


def _day() -> Ledger:
    day = Ledger.genesis(at=0.0)
    day_of_billing(day)
    return day


def _with_record(day: Ledger, number: int, /, **fields: object) -> list[JournalRecord]:
    """The day's records with entry `number`'s fields replaced."""
    rows = records(day)
    rows[number - 1] = replace(rows[number - 1], **fields)
    return rows


def _with_account(day: Ledger, name: str, **fields: object) -> list[StoredAccount]:
    """The day's stored accounts with `name`'s fields replaced."""
    return [replace(row, **fields) if row.name == name else row for row in stored(day)]


RECORD_CASES = {
    "a sequence number that is not an integer": (
        {"seq": "9"},
        "entry 9: sequence number '9' is not an integer",
    ),
    "a time that is not a number": ({"at": "1.0"}, "entry 9: time '1.0' is not a number"),
    "a leg naming no string": (
        {"legs": ((None, 2_000_000), (TREASURY, -2_000_000))},
        "entry 9: a leg names account None, not a string",
    ),
    "two legs on one account": (
        {"legs": ((BOB, 1), (BOB, -1))},
        f"entry 9: two legs on account {BOB!r}",
    ),
    "a delta that is not an integer": (
        {"legs": ((BOB, 2_000_000.0), (TREASURY, -2_000_000))},
        f"entry 9: leg on {BOB!r} has delta 2000000.0, not an integer",
    ),
    "a delta that is a boolean": (
        {"legs": ((BOB, True), (TREASURY, -1))},
        f"entry 9: leg on {BOB!r} has delta True, not an integer",
    ),
}


@pytest.mark.parametrize(("fields", "violation"), RECORD_CASES.values(), ids=RECORD_CASES)
def test_audit_names_records_sqlite_would_refuse(fields: dict[str, object], violation: str) -> None:
    day = _day()
    result = audit(_with_record(day, 9, **fields), stored(day))
    assert str(result.violation) == violation


def test_audit_names_stored_accounts_sqlite_would_refuse() -> None:
    day = _day()
    journal = records(day)

    def named(rows: list[StoredAccount]) -> str:
        return str(audit(journal, rows).violation)

    assert named([*stored(day), StoredAccount(None, 0, 0)]) == (
        "accounts: a stored account is named None, not a string"
    )
    assert named([*stored(day), stored(day)[0]]) == f"accounts: account {ALICE!r} is stored twice"
    assert named(_with_account(day, GRID, allow_credit=0.0)) == (
        "accounts: account 'grid' has allow_credit 0.0"
    )
    assert named(_with_account(day, GRID, balance=507.0)) == (
        "accounts: stored balance of 'grid' is 507.0"
    )


def test_audit_names_a_folded_key_kept_twice_and_legs_of_no_numbered_entry() -> None:
    day = _day()
    day.compact(before=5.0)
    pairs = folded_pairs(day)
    twice = [pairs[0], (pairs[0][0], 2), *pairs[2:]]
    assert str(audit(records(day), stored(day), folded_keys=twice).violation) == (
        "accounts: folded key 'open:treasury' is kept twice"
    )
    assert audit(records(day), stored(day), folded_keys=pairs).ok
    orphans = audit(records(day), stored(day), orphan_legs=["x"], folded_keys=pairs)
    assert str(orphans.violation) == "accounts: legs belong to an entry that is not in the journal"
