"""The ledger's SQLite schema, and how a state directory becomes an open, current ledger.

The schema is `MIGRATIONS` (owner `ledger` in `schema_migrations`; see `maxwell.store.migrations`),
brought up to date in place on open: 1 `initial`, the journal and accounts; 2 `folded_keys`. `meta`
keeps the version too, as every Maxwell before the migrations table reads it: such a ledger is
recognised by it and its migrations recorded as applied, none run again.

Opening: the state directory is made mode 0700 and the database file 0600 (SQLite would take the
umask's mode), then the connection is put in WAL with `synchronous=FULL` and foreign keys on, and
whatever it holds is checked to be a Maxwell ledger of a version this Maxwell reads before it is
upgraded. An empty database is made a ledger by the store (`LedgerStore._initialise`: every
migration and the genesis entries, in one transaction). OS and sqlite3 errors leave here as
`LedgerStoreError`s naming the path (`maxwell.economy.store_errors`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from maxwell.economy.store_errors import (
    LedgerSchemaError,
    LedgerStoreError,
    NotALedgerError,
    StateDirError,
    reason,
    sqlite_error,
)
from maxwell.store.migrations import Migration, MigrationError, migrate

__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "OWNER",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "append_only",
    "configure",
    "connect",
    "tables",
]

DB_NAME = "maxwell.db"
SCHEMA_NAME = "maxwell-ledger"
OWNER = "ledger"  # the ledger's name in `schema_migrations` (see `maxwell.store.migrations`)

_APPEND_ONLY = "BEGIN SELECT RAISE(ABORT, 'the ledger journal is append-only'); END"


def append_only(table: str, verb: str) -> str:
    """The trigger that refuses `verb` (UPDATE or DELETE) on `table`."""
    return (
        f"CREATE TRIGGER {table}_append_only_{verb.lower()} BEFORE {verb} ON {table} {_APPEND_ONLY}"
    )


# Version 2: the keys of entries folded into a checkpoint, what their retries are judged by.
_FOLDED_KEYS_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE folded_keys (
        key TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        digest TEXT NOT NULL
    ) STRICT, WITHOUT ROWID""",
    append_only("folded_keys", "UPDATE"),
    append_only("folded_keys", "DELETE"),
)


def _ledger_migration(version: int, name: str, *statements: str) -> Migration:
    """A ledger migration that also sets `meta`'s version, the record a Maxwell from before
    `schema_migrations` reads: so such a Maxwell refuses a newer ledger rather than misread it."""
    mirror = f"UPDATE meta SET value = '{version}' WHERE name = 'version'"
    return Migration(version, name, (*statements, mirror))


# Version 1 (Maxwell 0.1.0): the journal and the accounts. One statement per item: DDL runs
# inside the creating transaction (executescript would commit).
_INITIAL_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    f"INSERT INTO meta (name, value) VALUES ('schema', '{SCHEMA_NAME}'), ('version', '1')",
    """CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        detail TEXT NOT NULL
    ) STRICT""",
    """CREATE TABLE accounts (
        name TEXT PRIMARY KEY,
        allow_credit INTEGER NOT NULL CHECK (allow_credit IN (0, 1)),
        balance INTEGER NOT NULL,
        opened_by INTEGER NOT NULL REFERENCES entries (seq),
        CHECK (allow_credit = 1 OR balance >= 0)
    ) STRICT""",
    """CREATE TABLE legs (
        entry_seq INTEGER NOT NULL REFERENCES entries (seq),
        account TEXT NOT NULL REFERENCES accounts (name),
        delta INTEGER NOT NULL CHECK (delta <> 0),
        PRIMARY KEY (entry_seq, account)
    ) STRICT, WITHOUT ROWID""",
    *(append_only(table, verb) for table in ("entries", "legs") for verb in ("UPDATE", "DELETE")),
)

# The ledger's schema, in order; released ones never change (add a new one at the end).
MIGRATIONS: tuple[Migration, ...] = (
    _ledger_migration(1, "initial", *_INITIAL_SCHEMA),
    _ledger_migration(2, "folded_keys", *_FOLDED_KEYS_SCHEMA),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


# --- the state directory and the connection --------------------------------------------------


def connect(state: Path, *, create: bool, busy_timeout_s: float) -> tuple[sqlite3.Connection, Path]:
    """The ledger database of state directory `state`, connected in autocommit (the store
    begins its own transactions), and its path; with `create`, the directory and an empty
    file are made if missing. Not yet configured: see `configure`."""
    _check_state_dir(state, create=create)
    db_path = state / DB_NAME
    if not create and not db_path.exists():
        raise NotALedgerError(
            f"no Maxwell ledger in {state} ({DB_NAME} is missing)", path=str(db_path)
        )
    if db_path.exists() and not db_path.is_file():
        raise NotALedgerError(f"{db_path} is not a regular file", path=str(db_path))
    if create:
        _create_private(db_path)
    uri = f"file:{urllib.parse.quote(str(db_path.absolute()))}?mode={'rwc' if create else 'rw'}"
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_s)
    except sqlite3.Error as exc:
        raise LedgerStoreError(f"cannot open {db_path}: {reason(exc)}", path=str(db_path)) from exc
    return connection, db_path


def _create_private(db_path: Path) -> None:
    """Make the database file, empty and mode 0600, if it is missing: SQLite would make it with
    the umask's mode (0644), and its journal files take the database's mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with contextlib.suppress(FileExistsError):  # there already (the caller checked it)
            os.close(os.open(db_path, flags, 0o600))
    except OSError as exc:
        raise LedgerStoreError(
            f"cannot create {db_path}: {reason(exc)}", path=str(db_path)
        ) from exc


def _check_state_dir(state: Path, *, create: bool) -> None:
    try:
        mode = state.stat().st_mode
    except FileNotFoundError:
        if not create:
            raise StateDirError(
                f"state directory {state} does not exist", path=str(state)
            ) from None
        try:
            with contextlib.suppress(FileExistsError):  # made meanwhile by another: checked below
                state.mkdir(mode=0o700, parents=True)
                state.chmod(0o700)  # mkdir's mode passes through the umask
        except OSError as exc:
            raise StateDirError(
                f"cannot create state directory {state}: {reason(exc)}", path=str(state)
            ) from exc
        mode = _stat_mode(state)
    except OSError as exc:
        raise StateDirError(
            f"cannot use state directory {state}: {reason(exc)}", path=str(state)
        ) from exc
    if not stat.S_ISDIR(mode):
        raise StateDirError(f"state directory {state} is not a directory", path=str(state))
    if not os.access(state, os.W_OK | os.X_OK):
        raise StateDirError(f"state directory {state} is not writable", path=str(state))


def _stat_mode(state: Path) -> int:
    try:
        return state.stat().st_mode
    except OSError as exc:
        raise StateDirError(
            f"cannot use state directory {state}: {reason(exc)}", path=str(state)
        ) from exc


# --- configuring, checking and upgrading the database ----------------------------------------


def configure(
    connection: sqlite3.Connection,
    path: Path,
    *,
    create: bool,
    busy_timeout_s: float,
    now: Callable[[], float],
    initialise: Callable[[], None],
) -> None:
    """Put the connection in WAL, `synchronous=FULL`, foreign keys on; make an empty database a
    ledger with `initialise` (only with `create`); check it is one, and upgrade it in place."""
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        mode = _enter_wal(connection, busy_timeout_s)
        connection.execute("PRAGMA synchronous = FULL")
        present = tables(connection)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, "cannot open", path) from exc
    if str(mode).lower() != "wal":
        raise LedgerStoreError(
            f"cannot put {path} in WAL mode (journal mode is {mode})", path=str(path)
        )
    if not present:
        if not create:
            raise NotALedgerError(f"{path} is empty, not a Maxwell ledger", path=str(path))
        initialise()
        present = tables(connection)
    _check_schema(connection, path, present, now)


def _enter_wal(connection: sqlite3.Connection, busy_timeout_s: float) -> object:
    """Switch to WAL, retrying while another process holds the lock it needs.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked"
    at once, without its busy handler, while another connection is creating the database:
    two processes opening a new ledger together would otherwise fail.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            return connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def tables(connection: sqlite3.Connection) -> set[str]:
    """The names of the database's tables."""
    rows = connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
    return {str(row[0]) for row in rows}


def _check_schema(
    connection: sqlite3.Connection, path: Path, present: set[str], now: Callable[[], float]
) -> None:
    where = str(path)
    if "meta" not in present:
        raise NotALedgerError(f"{where} is an SQLite database, not a Maxwell ledger", path=where)
    try:
        meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise sqlite_error(exc, "cannot read", path) from exc
    if meta.get("schema") != SCHEMA_NAME:
        raise NotALedgerError(f"{where} is an SQLite database, not a Maxwell ledger", path=where)
    version = meta.get("version")
    if version not in {str(known) for known in range(1, SCHEMA_VERSION + 1)}:
        raise LedgerSchemaError(
            f"{where} is a Maxwell ledger of schema version {version}; this "
            f"Maxwell reads versions 1-{SCHEMA_VERSION}",
            path=where,
        )
    _migrate(connection, path, now)
    missing = {"entries", "legs", "accounts", "folded_keys"} - tables(connection)
    if missing:
        raise NotALedgerError(
            f"{where} is a damaged Maxwell ledger: no table {', '.join(sorted(missing))}",
            path=where,
        )


def _migrate(connection: sqlite3.Connection, path: Path, now: Callable[[], float]) -> None:
    """Upgrade the ledger in place (`maxwell.store.migrations`); a ledger from before the
    migrations table is recognised by its `meta` version, and nothing it has is run again."""
    try:
        migrate(connection, OWNER, MIGRATIONS, now, legacy=_meta_version)
    except MigrationError as exc:
        raise LedgerSchemaError(str(exc), path=str(path)) from exc
    except sqlite3.Error as exc:
        raise sqlite_error(exc, "cannot upgrade", path) from exc


def _meta_version(connection: sqlite3.Connection) -> int:
    """The ledger's version as recorded before `schema_migrations`: `meta`'s `version` row."""
    row = connection.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
    return 0 if row is None else int(row[0])
