"""The ledger's one adapter: an append-only journal in SQLite, in a state directory.

Layout: `<state>/maxwell.db` (WAL, `synchronous=FULL`, foreign keys on); the directory is created
mode 0700. Every write is one `BEGIN IMMEDIATE ... COMMIT`: it takes the write lock, reads the rows
the rules need, runs `maxwell.economy.ledger.decide` on them, then writes the journal rows and the
new stored balances in that same transaction. A crash, even SIGKILL, leaves all of it or none of
it, and two writers (threads or processes) are serialised by SQLite's lock.

`submit_many` puts many requests in one such transaction (a node's tick: every bill and event of
the tick, one fsync rather than one each), all or nothing.

A write returns only after COMMIT: returned means acknowledged and durable. A write that raised
may or may not have committed (COMMIT itself can fail); retrying with the same key is always safe,
which is what idempotency keys are for. Triggers refuse UPDATE and DELETE on the journal.

`compact` folds the journal's entries before a time into one checkpoint (the rules are
`maxwell.economy.ledger.fold`'s) in one such transaction: it audits the journal first and refuses
an unsound one (folding would hide the damage), deletes the folded rows, writes the checkpoint and
the folded keys (table `folded_keys`, append-only: a retry of a folded key must never apply
again), and audits again before COMMIT. Balances never change; a crash leaves all of it or none.

The schema is `MIGRATIONS` (owner `ledger` in `schema_migrations`; see `maxwell.store.migrations`),
brought up to date in place on open: 1 `initial`, the journal and accounts; 2 `folded_keys`. `meta`
keeps the version too, as every Maxwell before the migrations table reads it: such a ledger is
recognised by it and its migrations recorded as applied, none run again.

sqlite3 and OS errors are translated into `LedgerStoreError` (one line, naming the path) here and
nowhere deeper: `LedgerBusyError` when another writer held the lock past the busy timeout,
`LedgerDamagedError` when the file itself is damaged (SQLite's quick_check, or a malformed page).
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

from maxwell.economy.ledger import (
    Account,
    Audit,
    Effect,
    Entry,
    EntryRequest,
    Fold,
    FoldedKey,
    JournalRecord,
    Ledger,
    LedgerError,
    Leg,
    Movement,
    StoredAccount,
    UnknownAccountError,
    Violation,
    audit,
    batch_request,
    decide,
    event_request,
    fold,
    genesis_requests,
    open_request,
    transfer_request,
)
from maxwell.errors import MaxwellError
from maxwell.store.migrations import Migration, MigrationError, apply_missing, migrate
from maxwell.units import Money

__all__ = [
    "DB_NAME",
    "MIGRATIONS",
    "OWNER",
    "SCHEMA_VERSION",
    "BatchRefusedError",
    "Compaction",
    "LedgerBusyError",
    "LedgerDamagedError",
    "LedgerSchemaError",
    "LedgerStore",
    "LedgerStoreError",
    "LedgerUnsoundError",
    "NotALedgerError",
    "StateDirError",
]

DB_NAME = "maxwell.db"
SCHEMA_NAME = "maxwell-ledger"
OWNER = "ledger"  # the ledger's name in `schema_migrations` (see `maxwell.store.migrations`)

_APPEND_ONLY = "BEGIN SELECT RAISE(ABORT, 'the ledger journal is append-only'); END"


def _append_only(table: str, verb: str) -> str:
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
    _append_only("folded_keys", "UPDATE"),
    _append_only("folded_keys", "DELETE"),
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
    *(_append_only(table, verb) for table in ("entries", "legs") for verb in ("UPDATE", "DELETE")),
)

# The ledger's schema, in order; released ones never change (add a new one at the end).
MIGRATIONS: tuple[Migration, ...] = (
    _ledger_migration(1, "initial", *_INITIAL_SCHEMA),
    _ledger_migration(2, "folded_keys", *_FOLDED_KEYS_SCHEMA),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def sqlite_error(exc: sqlite3.Error, doing: str, path: Path) -> LedgerStoreError:
    """`exc` as the store's named error, in one line naming `path` (`doing` says what failed):
    the one translation of sqlite3 errors, the node's tables' (`maxwell.node.state`) included."""
    reason = _reason(exc)
    where = str(path)
    if "not a database" in reason:
        return NotALedgerError(f"{where} is not a Maxwell ledger ({reason})", path=where)
    if "malformed" in reason:  # SQLITE_CORRUPT
        return LedgerDamagedError(f"{doing} {where}: {reason}", path=where)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in reason or "busy" in reason):
        return LedgerBusyError(f"{doing} {where}: {reason} (another writer?)", path=where)
    return LedgerStoreError(f"{doing} {where}: {reason}", path=where)


# What a shared connection's transactions hold (a `threading.RLock`).
Guard: TypeAlias = AbstractContextManager[Any]


class LedgerStore:
    """The journal and balances of one state directory. One connection; not for sharing
    across threads (open one store per thread or process: SQLite serialises them)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        now: Callable[[], float],
        guard: Guard | None = None,
    ) -> None:
        self._conn = connection
        self.path = path
        self._now = now
        # Held by a transaction from BEGIN to its end (`_transaction`): with a connection shared
        # by threads (the node's one store passes the same guard to its node tables), another
        # thread's read waits for the end instead of joining it or beginning inside it.
        self.guard: Guard = guard if guard is not None else threading.RLock()
        # `balances()` as last read, and the database's version then (see `_version`).
        self._balances: tuple[tuple[int, int], dict[str, Money]] | None = None

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        create: bool = True,
        now: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> LedgerStore:
        """Open the ledger in `state_dir`; with `create`, make the directory and ledger if missing.

        `now` stamps entries written without an explicit `at` (and the genesis entries).
        """
        state = Path(state_dir)
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
            connection = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=busy_timeout_s
            )
        except sqlite3.Error as exc:
            raise LedgerStoreError(
                f"cannot open {db_path}: {_reason(exc)}", path=str(db_path)
            ) from exc
        store = cls(connection, db_path, now)
        try:
            store._configure(create=create, busy_timeout_s=busy_timeout_s)
        except BaseException:
            connection.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- boundary: sqlite3 errors become LedgerStoreError here ---------------------------------

    def _error(self, exc: sqlite3.Error, doing: str) -> LedgerStoreError:
        return sqlite_error(exc, doing, self.path)

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One SQLite transaction; COMMIT when the block ends, ROLLBACK if it raises. Inside a
        transaction this thread opened (`unit_of_work`), the block joins it; another thread's
        waits for it to end (`guard`)."""
        with self.guard:
            if self._conn.in_transaction:
                yield self._conn
                return
            with self._begun(mode) as conn:
                yield conn

    @contextmanager
    def _begun(self, mode: str) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute(f"BEGIN {mode}")
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot start a transaction on") from exc
        try:
            yield self._conn
        except BaseException as exc:
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, "cannot use") from exc
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise self._error(exc, "cannot commit to") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection this store writes through (for a unit of work that spans stores)."""
        return self._conn

    @contextmanager
    def unit_of_work(self) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE) that every write through this connection joins,
        the node's tables included: all of it commits, or none."""
        with self._transaction("IMMEDIATE") as conn:
            yield conn

    def _configure(self, *, create: bool, busy_timeout_s: float) -> None:
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._enter_wal(busy_timeout_s)
            self._conn.execute("PRAGMA synchronous = FULL")
            tables = self._tables()
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot open") from exc
        if str(mode).lower() != "wal":
            raise LedgerStoreError(
                f"cannot put {self.path} in WAL mode (journal mode is {mode})", path=str(self.path)
            )
        if not tables:
            if not create:
                raise NotALedgerError(
                    f"{self.path} is empty, not a Maxwell ledger", path=str(self.path)
                )
            self._initialise()
            tables = self._tables()
        self._check_schema(tables)

    def _enter_wal(self, busy_timeout_s: float) -> object:
        """Switch to WAL, retrying while another process holds the lock it needs.

        Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked"
        at once, without its busy handler, while another connection is creating the database:
        two processes opening a new ledger together would otherwise fail.
        """
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                return self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        return {str(row[0]) for row in rows}

    def _initialise(self) -> None:
        """Create the ledger in one transaction: every migration, recorded, and the genesis."""
        with self._transaction() as conn:
            if self._tables():
                return  # another process created it while we waited for the lock
            at = self._now()
            apply_missing(conn, OWNER, MIGRATIONS, lambda: at)
            for request in genesis_requests():
                self._submit_locked(request, at)

    def _check_schema(self, tables: set[str]) -> None:
        where = str(self.path)
        if "meta" not in tables:
            raise NotALedgerError(
                f"{where} is an SQLite database, not a Maxwell ledger", path=where
            )
        try:
            meta = dict(self._conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot read") from exc
        if meta.get("schema") != SCHEMA_NAME:
            raise NotALedgerError(
                f"{where} is an SQLite database, not a Maxwell ledger", path=where
            )
        version = meta.get("version")
        if version not in {str(known) for known in range(1, SCHEMA_VERSION + 1)}:
            raise LedgerSchemaError(
                f"{where} is a Maxwell ledger of schema version {version}; this "
                f"Maxwell reads versions 1-{SCHEMA_VERSION}",
                path=where,
            )
        self._migrate()
        missing = {"entries", "legs", "accounts", "folded_keys"} - self._tables()
        if missing:
            raise NotALedgerError(
                f"{where} is a damaged Maxwell ledger: no table {', '.join(sorted(missing))}",
                path=where,
            )

    def _migrate(self) -> None:
        """Upgrade the ledger in place (`maxwell.store.migrations`); a ledger from before the
        migrations table is recognised by its `meta` version, and nothing it has is run again."""
        try:
            migrate(self._conn, OWNER, MIGRATIONS, self._now, legacy=_meta_version)
        except MigrationError as exc:
            raise LedgerSchemaError(str(exc), path=str(self.path)) from exc
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot upgrade") from exc

    # --- writes ------------------------------------------------------------------------------

    def submit(self, request: EntryRequest, *, at: float | None = None) -> Entry:
        """Apply `request` atomically and durably (or find its earlier application).

        Returns the journal's entry once committed. Raises the rule's `LedgerError` (nothing
        written) or `LedgerStoreError` (storage failed; retry with the same key).
        """
        when = self._now() if at is None else at
        with self._transaction():
            effect = self._submit_locked(request, when)
        return effect.entry

    def submit_many(
        self, requests: Sequence[EntryRequest], *, at: float | None = None
    ) -> list[Entry]:
        """Apply `requests`, in order, in one transaction: all of them or none (one fsync).

        Each request follows `submit`'s rules and idempotency, in order: a later request sees the
        earlier ones' balances, a request already in the journal (from an earlier batch, or earlier
        in this one) is found rather than applied again, so retrying a whole batch is safe. Returns
        the journal's entries, one per request. A refused request raises `BatchRefusedError`
        naming it, with nothing of the batch written; `LedgerStoreError`: storage failed, retry.
        """
        when = self._now() if at is None else at
        if not requests:
            return []
        entries: list[Entry] = []
        with self._transaction():
            for index, request in enumerate(requests):
                try:
                    effect = self._submit_locked(request, when)
                except LedgerError as exc:
                    raise BatchRefusedError(index, request.key, len(requests), exc) from exc
                entries.append(effect.entry)
        return entries

    def _submit_locked(self, request: EntryRequest, at: float) -> Effect:
        existing = self._entry_by_key(request.key)
        folded = None if existing is not None else self._folded_by_key(request.key)
        accounts = self._load_accounts(request.accounts())
        (seq,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM entries").fetchone()
        effect = decide(
            request, seq=seq, at=at, accounts=accounts, existing=existing, folded=folded
        )
        if not effect.repeated:
            self._write(effect)
        return effect

    def _write(self, effect: Effect) -> None:
        entry = effect.entry
        conn = self._conn
        conn.execute(
            "INSERT INTO entries (seq, key, kind, at, detail) VALUES (?, ?, ?, ?, ?)",
            (entry.seq, entry.key, entry.kind, entry.at, entry.detail_json),
        )
        if effect.opened is not None:
            conn.execute(
                "INSERT INTO accounts (name, allow_credit, balance, opened_by) VALUES (?, ?, ?, ?)",
                (effect.opened.name, int(effect.opened.allow_credit), 0, entry.seq),
            )
        conn.executemany(
            "INSERT INTO legs (entry_seq, account, delta) VALUES (?, ?, ?)",
            [(entry.seq, leg.account, leg.delta) for leg in entry.legs],
        )
        conn.executemany(
            "UPDATE accounts SET balance = ? WHERE name = ?",
            [(balance, name) for name, balance in effect.balances.items()],
        )

    def open_account(
        self, name: str, *, allow_credit: bool = False, at: float | None = None
    ) -> Entry:
        """Open `name` (idempotent: opening it again with the same credit returns the opening)."""
        return self.submit(open_request(name, allow_credit=allow_credit), at=at)

    def transfer(
        self,
        key: str,
        debit: str,
        credit: str,
        amount: int,
        *,
        kind: str = "transfer",
        memo: str | None = None,
        detail: Mapping[str, object] | None = None,
        at: float | None = None,
    ) -> Entry:
        """Move `amount` µ$J from `debit` to `credit` under idempotency key `key`."""
        request = transfer_request(key, debit, credit, amount, kind=kind, memo=memo, detail=detail)
        return self.submit(request, at=at)

    def post(
        self,
        key: str,
        movements: Iterable[Movement],
        *,
        kind: str = "batch",
        memo: str | None = None,
        detail: Mapping[str, object] | None = None,
        at: float | None = None,
    ) -> Entry:
        """Several movements as one entry, applied all together or not at all."""
        return self.submit(
            batch_request(key, movements, kind=kind, memo=memo, detail=detail), at=at
        )

    def record(
        self,
        key: str,
        kind: str,
        detail: Mapping[str, object] | None = None,
        *,
        at: float | None = None,
    ) -> Entry:
        """Journal a decision that moves no money (`frozen`, `apoptosis`, ...)."""
        return self.submit(event_request(key, kind, detail), at=at)

    # --- compaction ----------------------------------------------------------------------------

    def compact(self, before: float, *, on_step: Callable[[str], None] | None = None) -> Compaction:
        """Fold the journal's entries before `before` into one checkpoint, in one transaction.

        See `maxwell.economy.ledger.fold` for which entries and what the checkpoint keeps. Refuses
        an unsound journal (`LedgerUnsoundError`, nothing written); returns a `Compaction` whose
        checkpoint is None when there was nothing to fold. Balances never change. `on_step` is
        called with each stage's name ("planned", "deleted", "written", "audited") inside the
        transaction: a seam for tests, where raising from it must leave the journal untouched.
        """
        step = on_step if on_step is not None else (lambda _stage: None)
        with self._transaction() as conn:
            result = self._audit_locked()
            if result.violation is not None:
                raise LedgerUnsoundError(result.violation)
            with closing(self._journal_entries()) as journal:  # fold reads only the prefix
                plan = fold(journal, before=before)
            if plan is None:
                return Compaction(before, None, 0, 0, result.entries)
            step("planned")
            self._replace_prefix(conn, plan, step)
            after = self._audit_locked()
            if after.violation is not None:  # a bug in fold: roll back rather than commit it
                raise LedgerError(f"compaction would break the ledger: {after.violation}")
            step("audited")
        return Compaction(before, plan.checkpoint, plan.replaced, len(plan.folded), after.entries)

    def _replace_prefix(
        self, conn: sqlite3.Connection, plan: Fold, step: Callable[[str], None]
    ) -> None:
        """Delete the folded rows and write the checkpoint and the folded keys.

        The journal's delete triggers are dropped and created again inside the transaction, so
        no other connection ever sees the journal without them; foreign keys (accounts opened by
        a folded entry point at the checkpoint afterwards) are checked at COMMIT.
        """
        last = plan.checkpoint.seq
        conn.execute("PRAGMA defer_foreign_keys = ON")
        for table in ("entries", "legs"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_delete")
        conn.execute("DELETE FROM legs WHERE entry_seq <= ?", (last,))
        conn.execute("DELETE FROM entries WHERE seq <= ?", (last,))
        step("deleted")
        self._write(Effect(entry=plan.checkpoint, repeated=False))
        conn.execute("UPDATE accounts SET opened_by = ? WHERE opened_by < ?", (last, last))
        conn.executemany(
            "INSERT INTO folded_keys (key, seq, kind, at, digest) VALUES (?, ?, ?, ?, ?)",
            [(f.key, f.seq, f.kind, f.at, f.digest) for f in plan.folded],
        )
        step("written")
        for table in ("entries", "legs"):
            conn.execute(_append_only(table, "DELETE"))

    # --- reads -------------------------------------------------------------------------------

    def _folded_by_key(self, key: str) -> FoldedKey | None:
        row = self._conn.execute(
            "SELECT key, seq, kind, at, digest FROM folded_keys WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else FoldedKey(*row)

    def folded(self, key: str) -> FoldedKey | None:
        """The key as the checkpoint keeps it, if its entry was folded by `compact`.

        `entry(key)` is None for such a key, yet it is used: a retry with the same content
        returns the entry rebuilt, other content is an `IdempotencyConflictError`.
        """
        with self._transaction("DEFERRED"):
            return self._folded_by_key(key)

    def key_used(self, key: str) -> bool:
        """Whether `key` is taken: by an entry in the journal, or one folded into the checkpoint."""
        with self._transaction("DEFERRED"):
            return self._entry_by_key(key) is not None or self._folded_by_key(key) is not None

    def folded_keys(self) -> list[FoldedKey]:
        """Every key folded into the checkpoint, in entry order."""
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT key, seq, kind, at, digest FROM folded_keys ORDER BY seq"
            ).fetchall()
        return [FoldedKey(*row) for row in rows]

    def _load_accounts(self, names: Iterable[str]) -> dict[str, Account]:
        accounts: dict[str, Account] = {}
        for name in set(names):
            row = self._conn.execute(
                "SELECT allow_credit, balance FROM accounts WHERE name = ?", (name,)
            ).fetchone()
            if row is not None:
                accounts[name] = Account(name, bool(row[0]), Money(row[1]))
        return accounts

    def _entry_by_key(self, key: str) -> Entry | None:
        row = self._conn.execute(
            "SELECT seq, key, kind, at, detail FROM entries WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        legs = self._conn.execute(
            "SELECT account, delta FROM legs WHERE entry_seq = ? ORDER BY account", (row[0],)
        ).fetchall()
        return Entry(
            row[0], row[1], row[2], row[3], tuple(Leg(a, Money(d)) for a, d in legs), row[4]
        )

    def _journal_rows(
        self,
    ) -> Generator[tuple[Any, Any, Any, Any, Any, tuple[tuple[Any, Any], ...]], None, None]:
        """The journal in sequence order: (seq, key, kind, at, detail, legs) as stored."""
        with closing(self._conn.cursor()) as cursor:  # closed early when a reader stops early
            yield from self._grouped_rows(cursor)

    @staticmethod
    def _grouped_rows(
        cursor: sqlite3.Cursor,
    ) -> Iterator[tuple[Any, Any, Any, Any, Any, tuple[tuple[Any, Any], ...]]]:
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

    def _journal_entries(self) -> Generator[Entry, None, None]:
        with closing(self._journal_rows()) as rows:
            for seq, key, kind, at, detail, legs in rows:
                yield Entry(seq, key, kind, at, tuple(Leg(a, Money(d)) for a, d in legs), detail)

    def entries(self) -> list[Entry]:
        """The whole journal, in sequence order (a compacted one starts with its checkpoint)."""
        with self._transaction("DEFERRED"):
            return list(self._journal_entries())

    def entry(self, key: str) -> Entry | None:
        """The journal's entry under idempotency key `key`, if any (see `key_used`)."""
        with self._transaction("DEFERRED"):
            return self._entry_by_key(key)

    def entries_written(self) -> int:
        """How many entries the journal has taken since it began (compaction keeps numbering)."""
        with self._transaction("DEFERRED") as conn:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()
        return int(row[0])

    def accounts(self) -> dict[str, Account]:
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT name, allow_credit, balance FROM accounts ORDER BY name"
            ).fetchall()
        return {name: Account(name, bool(credit), Money(balance)) for name, credit, balance in rows}

    def balances(self) -> dict[str, Money]:
        """Every account's balance: one query, or none while the database is as it was at the
        last one (the node reads them every tick, and an idle node changes nothing). Inside a
        transaction it always queries (what it reads may yet be rolled back)."""
        with self.guard:
            return self._balances_now()

    def _balances_now(self) -> dict[str, Money]:
        if self._conn.in_transaction:
            return dict(self._conn.execute("SELECT name, balance FROM accounts ORDER BY name"))
        version = self._version()
        if self._balances is not None and self._balances[0] == version:
            return dict(self._balances[1])
        with self._transaction("DEFERRED") as conn:
            balances = dict(conn.execute("SELECT name, balance FROM accounts ORDER BY name"))
        self._balances = (version, balances)
        return dict(balances)

    def _version(self) -> tuple[int, int]:
        """What changes whenever the database may have: the rows this connection changed so
        far (`total_changes`, rolled back ones included) and SQLite's `data_version`, which
        changes when another connection commits."""
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot read") from exc
        return self._conn.total_changes, int(row[0])

    def balance(self, name: str) -> Money:
        with self._transaction("DEFERRED") as conn:
            row = conn.execute("SELECT balance FROM accounts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownAccountError(name)
        return Money(row[0])

    def replay(self) -> Ledger:
        """The journal re-decided in memory from nothing (raises `LedgerError` on a broken rule)."""
        with self._transaction("DEFERRED"):
            entries = list(self._journal_entries())
            folded = [FoldedKey(*row) for row in self._folded_rows(full=True)]
        return Ledger.replay(entries, folded=folded)

    def verify(self) -> Audit:
        """Replay the stored journal from scratch and check it against the stored balances.

        Reads one consistent snapshot (writers may go on meanwhile, in WAL mode). A compacted
        journal starts from its checkpoint, and the folded keys are checked against it. SQLite's
        own check of the file (`PRAGMA quick_check`) comes first: a damaged file raises
        `LedgerDamagedError` rather than returning a verdict on rows that cannot be trusted. A row
        that only breaks a CHECK constraint (tampering, not damage) is left to the audit, which
        names it; the CHECK is the violation only where the audit finds nothing.
        """
        with self._transaction("DEFERRED"):
            return self._audit_locked()

    def _audit_locked(self) -> Audit:
        conn = self._conn
        problems = _quick_check(conn)
        damage = [problem for problem in problems if not _ROW_RULE.match(problem)]
        if damage:
            more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
            raise LedgerDamagedError(
                f"{self.path} is damaged: SQLite's quick_check says {damage[0]}{more}",
                path=str(self.path),
            )
        result = self._audit_rows()
        if result.ok and problems:  # a row breaks a rule of the schema that audit does not judge
            violation = Violation(None, f"SQLite's quick_check: {problems[0]}")
            return replace(result, violation=violation)
        return result

    def _audit_rows(self) -> Audit:
        conn = self._conn
        stored = [
            StoredAccount(*row)
            for row in conn.execute(
                "SELECT name, allow_credit, balance FROM accounts ORDER BY name"
            )
        ]
        orphans = [
            row[0]
            for row in conn.execute(
                """SELECT DISTINCT entry_seq FROM legs
                   WHERE entry_seq NOT IN (SELECT seq FROM entries) ORDER BY entry_seq"""
            )
        ]
        records = (JournalRecord(*row[:5], legs=row[5]) for row in self._journal_rows())
        folded = ((row[0], row[1]) for row in self._folded_rows(full=False))
        return audit(records, stored, orphan_legs=orphans, folded_keys=folded)

    def _folded_rows(self, *, full: bool) -> Iterator[tuple[Any, ...]]:
        columns = "key, seq, kind, at, digest" if full else "key, seq"
        yield from self._conn.execute(f"SELECT {columns} FROM folded_keys ORDER BY seq")


# quick_check's problems that are a row breaking a rule of the schema (a CHECK, NOT NULL, a STRICT
# type), as tampering leaves it, rather than a damaged file: the audit judges such rows itself.
_ROW_RULE = re.compile(r"^(?:CHECK constraint failed in|NULL value in|non-\w+ value in) ")


def _quick_check(connection: sqlite3.Connection) -> list[str]:
    """SQLite's `PRAGMA quick_check`, one problem a line; [] when it says ok. (A row of its
    answer may hold several lines, the first of them a heading.)"""
    rows = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    if rows == ["ok"]:
        return []
    lines = [line for row in rows for line in row.splitlines()]
    return [line for line in lines if line and not line.startswith("***")] or ["no answer"]


def _meta_version(connection: sqlite3.Connection) -> int:
    """The ledger's version as recorded before `schema_migrations`: `meta`'s `version` row."""
    row = connection.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
    return 0 if row is None else int(row[0])


def _create_private(db_path: Path) -> None:
    """Make the database file, empty and mode 0600, if it is missing: SQLite would make it with
    the umask's mode (0644), and its journal files take the database's mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(db_path, flags, 0o600))
    except FileExistsError:
        pass  # there already (the caller checked what it is)
    except OSError as exc:
        raise LedgerStoreError(
            f"cannot create {db_path}: {_reason(exc)}", path=str(db_path)
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
            state.mkdir(mode=0o700, parents=True)
            state.chmod(0o700)  # mkdir's mode passes through the umask
        except FileExistsError:
            pass  # created meanwhile by another process; checked below
        except OSError as exc:
            raise StateDirError(
                f"cannot create state directory {state}: {_reason(exc)}", path=str(state)
            ) from exc
        mode = _stat_mode(state)
    except OSError as exc:
        raise StateDirError(
            f"cannot use state directory {state}: {_reason(exc)}", path=str(state)
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
            f"cannot use state directory {state}: {_reason(exc)}", path=str(state)
        ) from exc
