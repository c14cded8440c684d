"""What the ledger's store raises, and the one translation of sqlite3 errors into it.

Two families, by blame: `LedgerStoreError` (a `MaxwellError`) when the storage failed (a bad
state directory, a damaged or foreign database, a lock held too long, an I/O error), and the
rule errors of `maxwell.economy.ledger` (`LedgerError`) for a batch or journal the rules refuse.
`sqlite_error` is where sqlite3 errors become `LedgerStoreError`, for the ledger's store and the
node's tables (`maxwell.node.state`) alike; callers import all of these from
`maxwell.economy.store`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from maxwell.economy.ledger import LedgerError, Violation
from maxwell.errors import MaxwellError

__all__ = [
    "BatchRefusedError",
    "LedgerBusyError",
    "LedgerDamagedError",
    "LedgerSchemaError",
    "LedgerStoreError",
    "LedgerUnsoundError",
    "NotALedgerError",
    "StateDirError",
    "reason",
    "sqlite_error",
]


class BatchRefusedError(LedgerError):
    """A ledger rule refused one request of a `submit_many` batch, so none of the batch applied.

    `index` and `key` name the refused request; the rule's own error is `cause` (also chained as
    `__cause__`), of the type `submit` would have raised.
    """

    def __init__(self, index: int, key: str, size: int, cause: LedgerError) -> None:
        super().__init__(
            f"request {index + 1} of {size} in the batch (key {key!r}) was refused, so none of "
            f"the batch was applied: {cause}"
        )
        self.index = index
        self.key = key
        self.cause = cause


class LedgerStoreError(MaxwellError):
    """The ledger's storage failed: a bad state directory, a damaged database, an I/O error."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StateDirError(LedgerStoreError):
    """The state directory is missing, not a directory, or not writable."""


class NotALedgerError(LedgerStoreError):
    """The state directory holds no Maxwell ledger, or its database is something else."""


class LedgerSchemaError(LedgerStoreError):
    """A Maxwell ledger of a schema version this Maxwell does not read."""


class LedgerBusyError(LedgerStoreError):
    """Another writer held the ledger's lock for longer than the busy timeout."""


class LedgerDamagedError(LedgerStoreError):
    """The database file is damaged: SQLite's own check of it (`PRAGMA quick_check`) fails, or a
    read met a malformed page. Nothing was written; restore the file from a backup."""


class LedgerUnsoundError(LedgerError):
    """The stored journal fails `verify`, so it was not compacted; `violation` is the first."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(f"the ledger is unsound, so nothing was compacted: {violation}")
        self.violation = violation


def reason(exc: BaseException) -> str:
    """`exc` in one line: an OSError's strerror, else the first line of its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def sqlite_error(exc: sqlite3.Error, doing: str, path: Path) -> LedgerStoreError:
    """`exc` as the store's named error, in one line naming `path` (`doing` says what failed):
    the one translation of sqlite3 errors, the node's tables' (`maxwell.node.state`) included."""
    why = reason(exc)
    where = str(path)
    if "not a database" in why:
        return NotALedgerError(f"{where} is not a Maxwell ledger ({why})", path=where)
    if "malformed" in why:  # SQLITE_CORRUPT
        return LedgerDamagedError(f"{doing} {where}: {why}", path=where)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in why or "busy" in why):
        return LedgerBusyError(f"{doing} {where}: {why} (another writer?)", path=where)
    return LedgerStoreError(f"{doing} {where}: {why}", path=where)
