"""The ledger's rows: every SQL read and write of its entries, legs, accounts and folded keys.

Functions of a connection, run inside a transaction their caller holds (`LedgerStore`'s): they
never begin, commit or roll back, and leave sqlite3 errors to the caller's boundary. What they
read is turned into `maxwell.economy.ledger`'s types (`Entry`, `Account`, `FoldedKey`); what they
write is what `decide` or `fold` returned, as it returned it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from typing import Any, TypeAlias

from maxwell.economy.ledger import Account, Effect, Entry, FoldedKey, Leg
from maxwell.units import Money

__all__ = [
    "JournalRow",
    "entry_by_key",
    "folded_by_key",
    "folded_rows",
    "journal_entries",
    "journal_rows",
    "load_accounts",
    "next_seq",
    "write_effect",
]

# One entry as stored: (seq, key, kind, at, detail, ((account, delta), ...)), unchecked.
JournalRow: TypeAlias = tuple[Any, Any, Any, Any, Any, tuple[tuple[Any, Any], ...]]


def folded_by_key(connection: sqlite3.Connection, key: str) -> FoldedKey | None:
    row = connection.execute(
        "SELECT key, seq, kind, at, digest FROM folded_keys WHERE key = ?", (key,)
    ).fetchone()
    return None if row is None else FoldedKey(*row)


def folded_rows(connection: sqlite3.Connection, *, full: bool) -> Iterator[tuple[Any, ...]]:
    """The folded keys in entry order: every column with `full`, else (key, seq)."""
    columns = "key, seq, kind, at, digest" if full else "key, seq"
    yield from connection.execute(f"SELECT {columns} FROM folded_keys ORDER BY seq")


def load_accounts(connection: sqlite3.Connection, names: Iterable[str]) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    for name in set(names):
        row = connection.execute(
            "SELECT allow_credit, balance FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        if row is not None:
            accounts[name] = Account(name, bool(row[0]), Money(row[1]))
    return accounts


def entry_by_key(connection: sqlite3.Connection, key: str) -> Entry | None:
    row = connection.execute(
        "SELECT seq, key, kind, at, detail FROM entries WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    legs = connection.execute(
        "SELECT account, delta FROM legs WHERE entry_seq = ? ORDER BY account", (row[0],)
    ).fetchall()
    return Entry(row[0], row[1], row[2], row[3], tuple(Leg(a, Money(d)) for a, d in legs), row[4])


def next_seq(connection: sqlite3.Connection) -> int:
    """The sequence number the journal's next entry takes."""
    row: tuple[int] = connection.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM entries").fetchone()
    return row[0]


def journal_rows(connection: sqlite3.Connection) -> Generator[JournalRow, None, None]:
    """The journal in sequence order: (seq, key, kind, at, detail, legs) as stored."""
    with closing(connection.cursor()) as cursor:  # closed early when a reader stops early
        yield from _grouped_rows(cursor)


def _grouped_rows(cursor: sqlite3.Cursor) -> Iterator[JournalRow]:
    rows = cursor.execute(
        """SELECT e.seq, e.key, e.kind, e.at, e.detail, l.account, l.delta
           FROM entries AS e LEFT JOIN legs AS l ON l.entry_seq = e.seq
           ORDER BY e.seq, l.account"""
    )
    current: tuple[Any, Any, Any, Any, Any] | None = None
    legs: list[tuple[Any, Any]] = []
    for seq, key, kind, at, detail, account, delta in rows:
        if current is None or current[0] != seq:
            if current is not None:
                yield (*current, tuple(legs))
            current, legs = (seq, key, kind, at, detail), []
        if account is not None:
            legs.append((account, delta))
    if current is not None:
        yield (*current, tuple(legs))


def journal_entries(connection: sqlite3.Connection) -> Generator[Entry, None, None]:
    """The journal in sequence order, as `Entry`s."""
    with closing(journal_rows(connection)) as rows:
        for seq, key, kind, at, detail, legs in rows:
            yield Entry(seq, key, kind, at, tuple(Leg(a, Money(d)) for a, d in legs), detail)


def write_effect(connection: sqlite3.Connection, effect: Effect) -> None:
    """Write what `decide` (or `fold`, for a checkpoint) decided: the entry, its legs, an account
    it opens, and the accounts' new balances."""
    entry = effect.entry
    connection.execute(
        "INSERT INTO entries (seq, key, kind, at, detail) VALUES (?, ?, ?, ?, ?)",
        (entry.seq, entry.key, entry.kind, entry.at, entry.detail_json),
    )
    if effect.opened is not None:
        connection.execute(
            "INSERT INTO accounts (name, allow_credit, balance, opened_by) VALUES (?, ?, ?, ?)",
            (effect.opened.name, int(effect.opened.allow_credit), 0, entry.seq),
        )
    connection.executemany(
        "INSERT INTO legs (entry_seq, account, delta) VALUES (?, ?, ?)",
        [(entry.seq, leg.account, leg.delta) for leg in entry.legs],
    )
    connection.executemany(
        "UPDATE accounts SET balance = ? WHERE name = ?",
        [(balance, name) for name, balance in effect.balances.items()],
    )
