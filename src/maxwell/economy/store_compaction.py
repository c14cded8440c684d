"""Compaction of the stored journal: its entries before a time folded into one checkpoint.

Which entries fold and what the checkpoint keeps are `maxwell.economy.ledger.fold`'s rules; this
is how the store applies them, inside one transaction its caller holds (`LedgerStore.compact`):
audit the journal first and refuse an unsound one (folding would hide the damage), delete the
folded rows, write the checkpoint and the folded keys (table `folded_keys`, append-only: a retry
of a folded key must never apply again), and audit again before COMMIT. Balances never change; a
crash leaves all of it or none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from maxwell.economy.ledger import Effect, Entry, Fold, LedgerError, fold
from maxwell.economy.store_audit import audit_stored
from maxwell.economy.store_errors import LedgerUnsoundError
from maxwell.economy.store_rows import journal_entries, write_effect
from maxwell.economy.store_schema import append_only

__all__ = ["Compaction", "compact_locked"]


@dataclass(frozen=True, slots=True)
class Compaction:
    """What `LedgerStore.compact` did: `checkpoint` is None when there was nothing to fold."""

    before: float
    checkpoint: Entry | None
    replaced: int  # journal entries the checkpoint replaced (an earlier checkpoint included)
    folded_keys: int  # keys kept for the first time
    entries: int  # journal entries after compaction

    @property
    def folded(self) -> int:
        """Entries folded into the checkpoint since the first compaction (its number)."""
        return 0 if self.checkpoint is None else self.checkpoint.seq


def compact_locked(
    connection: sqlite3.Connection, path: Path, before: float, step: Callable[[str], None]
) -> Compaction:
    """Fold the entries before `before`, in the caller's write transaction (see the module).

    Raises `LedgerUnsoundError` on an unsound journal, with nothing written; `step` is called
    with each stage's name ("planned", "deleted", "written", "audited").
    """
    result = audit_stored(connection, path)
    if result.violation is not None:
        raise LedgerUnsoundError(result.violation)
    with closing(journal_entries(connection)) as journal:  # fold reads only the prefix
        plan = fold(journal, before=before)
    if plan is None:
        return Compaction(before, None, 0, 0, result.entries)
    step("planned")
    _replace_prefix(connection, plan, step)
    after = audit_stored(connection, path)
    if after.violation is not None:  # a bug in fold: roll back rather than commit it
        raise LedgerError(f"compaction would break the ledger: {after.violation}")
    step("audited")
    return Compaction(before, plan.checkpoint, plan.replaced, len(plan.folded), after.entries)


def _replace_prefix(
    connection: sqlite3.Connection, plan: Fold, step: Callable[[str], None]
) -> None:
    """Delete the folded rows and write the checkpoint and the folded keys.

    The journal's delete triggers are dropped and created again inside the transaction, so
    no other connection ever sees the journal without them; foreign keys (accounts opened by
    a folded entry point at the checkpoint afterwards) are checked at COMMIT.
    """
    last = plan.checkpoint.seq
    connection.execute("PRAGMA defer_foreign_keys = ON")
    for table in ("entries", "legs"):
        connection.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_delete")
    connection.execute("DELETE FROM legs WHERE entry_seq <= ?", (last,))
    connection.execute("DELETE FROM entries WHERE seq <= ?", (last,))
    step("deleted")
    write_effect(connection, Effect(entry=plan.checkpoint, repeated=False))
    connection.execute("UPDATE accounts SET opened_by = ? WHERE opened_by < ?", (last, last))
    connection.executemany(
        "INSERT INTO folded_keys (key, seq, kind, at, digest) VALUES (?, ?, ?, ?, ?)",
        [(f.key, f.seq, f.kind, f.at, f.digest) for f in plan.folded],
    )
    step("written")
    for table in ("entries", "legs"):
        connection.execute(append_only(table, "DELETE"))
