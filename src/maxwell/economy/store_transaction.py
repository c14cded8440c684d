"""One SQLite transaction on the ledger's connection, where sqlite3 errors become the store's.

The connection runs in autocommit (`isolation_level=None`), so every transaction is begun here:
`BEGIN <mode>` (IMMEDIATE for a write, taking the write lock at once; DEFERRED for a consistent
read), COMMIT when the block ends, ROLLBACK if it raises. A block inside a transaction this
thread already opened (a unit of work) joins it rather than beginning another, and another
thread's block waits on the guard until it ends. sqlite3 errors leave as `LedgerStoreError`
(`sqlite_error`) naming the database; others pass through after the rollback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeAlias

from maxwell.economy.store_errors import sqlite_error

__all__ = ["Guard", "transaction"]

# What a shared connection's transactions hold (a `threading.RLock`).
Guard: TypeAlias = AbstractContextManager[Any]


@contextmanager
def transaction(
    connection: sqlite3.Connection, guard: Guard, path: Path, mode: str = "IMMEDIATE"
) -> Iterator[sqlite3.Connection]:
    """One SQLite transaction; COMMIT when the block ends, ROLLBACK if it raises. Inside a
    transaction this thread opened (`unit_of_work`), the block joins it; another thread's
    waits for it to end (`guard`)."""
    with guard:
        if connection.in_transaction:
            yield connection
            return
        with _begun(connection, path, mode) as conn:
            yield conn


@contextmanager
def _begun(connection: sqlite3.Connection, path: Path, mode: str) -> Iterator[sqlite3.Connection]:
    try:
        connection.execute(f"BEGIN {mode}")
    except sqlite3.Error as exc:
        raise sqlite_error(exc, "cannot start a transaction on", path) from exc
    try:
        yield connection
    except BaseException as exc:
        if connection.in_transaction:
            with suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise sqlite_error(exc, "cannot use", path) from exc
        raise
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        if connection.in_transaction:
            with suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise sqlite_error(exc, "cannot commit to", path) from exc
