"""Verification of the stored journal: SQLite's own check of the file, then the ledger's audit.

`audit_stored` runs inside a transaction its caller holds (one consistent snapshot): first
`PRAGMA quick_check`, whose damage (a malformed page, a broken index) raises `LedgerDamagedError`
rather than let the audit judge rows that cannot be trusted; then `maxwell.economy.ledger.audit`
over the journal, the stored balances, orphaned legs and the folded keys. A row that only breaks
a rule of the schema (a CHECK, NOT NULL, a STRICT type) is tampering, not damage: the audit names
it, and quick_check's line is the violation only where the audit finds nothing.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from pathlib import Path

from maxwell.economy.ledger import Audit, JournalRecord, StoredAccount, Violation, audit
from maxwell.economy.store_errors import LedgerDamagedError
from maxwell.economy.store_rows import folded_rows, journal_rows

__all__ = ["audit_stored"]

# quick_check's problems that are a row breaking a rule of the schema (a CHECK, NOT NULL, a STRICT
# type), as tampering leaves it, rather than a damaged file: the audit judges such rows itself.
_ROW_RULE = re.compile(r"^(?:CHECK constraint failed in|NULL value in|non-\w+ value in) ")


def audit_stored(connection: sqlite3.Connection, path: Path) -> Audit:
    """The verdict on the ledger stored at `path`; raises `LedgerDamagedError` on a damaged file."""
    problems = _quick_check(connection)
    damage = [problem for problem in problems if not _ROW_RULE.match(problem)]
    if damage:
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        raise LedgerDamagedError(
            f"{path} is damaged: SQLite's quick_check says {damage[0]}{more}",
            path=str(path),
        )
    result = _audit_rows(connection)
    if result.ok and problems:  # a row breaks a rule of the schema that audit does not judge
        violation = Violation(None, f"SQLite's quick_check: {problems[0]}")
        return replace(result, violation=violation)
    return result


def _audit_rows(connection: sqlite3.Connection) -> Audit:
    stored = [
        StoredAccount(*row)
        for row in connection.execute(
            "SELECT name, allow_credit, balance FROM accounts ORDER BY name"
        )
    ]
    orphans = [
        row[0]
        for row in connection.execute(
            """SELECT DISTINCT entry_seq FROM legs
               WHERE entry_seq NOT IN (SELECT seq FROM entries) ORDER BY entry_seq"""
        )
    ]
    records = (JournalRecord(*row[:5], legs=row[5]) for row in journal_rows(connection))
    folded = ((row[0], row[1]) for row in folded_rows(connection, full=False))
    return audit(records, stored, orphan_legs=orphans, folded_keys=folded)


def _quick_check(connection: sqlite3.Connection) -> list[str]:
    """SQLite's `PRAGMA quick_check`, one problem a line; [] when it says ok. (A row of its
    answer may hold several lines, the first of them a heading.)"""
    rows = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    if rows == ["ok"]:
        return []
    lines = [line for row in rows for line in row.splitlines()]
    return [line for line in lines if line and not line.startswith("***")] or ["no answer"]
