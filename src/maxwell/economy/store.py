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

`LedgerStore` is the facade: it owns the connection and its transactions, and delegates each
concern to a module of its own, whose functions take the connection (and, but for opening, run
inside a transaction the store holds):

- `store_schema`: the schema (`MIGRATIONS`, owner `ledger` in `schema_migrations`), opening a
  state directory, and checking and upgrading a database in place on open;
- `store_rows`: every SQL read and write of the journal, accounts and folded keys;
- `store_compaction`: `compact`, which folds the journal's entries before a time into one
  checkpoint (`maxwell.economy.ledger.fold`'s rules), audited before and after;
- `store_audit`: `verify`, SQLite's check of the file and then the ledger's audit of its rows;
- `store_transaction`: one transaction, joined by a unit of work, guarded across threads;
- `store_errors`: the errors below, and `sqlite_error`.

sqlite3 and OS errors are translated into `LedgerStoreError` (one line, naming the path) at the
store's boundary (its transactions and its opening) and nowhere deeper: `LedgerBusyError` when
another writer held the lock past the busy timeout, `LedgerDamagedError` when the file itself is
damaged (SQLite's quick_check, or a malformed page). Every name callers use is importable here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType

from maxwell.economy.ledger import (
    Account,
    Audit,
    Effect,
    Entry,
    EntryRequest,
    FoldedKey,
    Ledger,
    LedgerError,
    Movement,
    UnknownAccountError,
    batch_request,
    decide,
    event_request,
    genesis_requests,
    open_request,
    transfer_request,
)
from maxwell.economy.store_audit import audit_stored
from maxwell.economy.store_compaction import Compaction, compact_locked
from maxwell.economy.store_errors import (
    BatchRefusedError,
    LedgerBusyError,
    LedgerDamagedError,
    LedgerSchemaError,
    LedgerStoreError,
    LedgerUnsoundError,
    NotALedgerError,
    StateDirError,
)
from maxwell.economy.store_errors import sqlite_error as sqlite_error
from maxwell.economy.store_rows import (
    entry_by_key,
    folded_by_key,
    folded_rows,
    journal_entries,
    load_accounts,
    next_seq,
    write_effect,
)
from maxwell.economy.store_schema import (
    DB_NAME,
    MIGRATIONS,
    OWNER,
    SCHEMA_VERSION,
    configure,
    connect,
    tables,
)
from maxwell.economy.store_schema import SCHEMA_NAME as SCHEMA_NAME
from maxwell.economy.store_transaction import Guard as Guard
from maxwell.economy.store_transaction import transaction
from maxwell.store.migrations import apply_missing
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
        connection, db_path = connect(Path(state_dir), create=create, busy_timeout_s=busy_timeout_s)
        store = cls(connection, db_path, now)
        try:
            configure(
                connection,
                db_path,
                create=create,
                busy_timeout_s=busy_timeout_s,
                now=now,
                initialise=store._initialise,
            )
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

    def _transaction(self, mode: str = "IMMEDIATE") -> AbstractContextManager[sqlite3.Connection]:
        """One transaction on this store's connection (see `store_transaction`)."""
        return transaction(self._conn, self.guard, self.path, mode)

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

    # --- creating the ledger (opening one: `store_schema`) --------------------------------------

    def _initialise(self) -> None:
        """Create the ledger in one transaction: every migration, recorded, and the genesis."""
        with self._transaction() as conn:
            if tables(conn):
                return  # another process created it while we waited for the lock
            at = self._now()
            apply_missing(conn, OWNER, MIGRATIONS, lambda: at)
            for request in genesis_requests():
                self._submit_locked(request, at)

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
        conn = self._conn
        existing = entry_by_key(conn, request.key)
        folded = None if existing is not None else folded_by_key(conn, request.key)
        accounts = load_accounts(conn, request.accounts())
        seq = next_seq(conn)
        effect = decide(
            request, seq=seq, at=at, accounts=accounts, existing=existing, folded=folded
        )
        if not effect.repeated:
            write_effect(conn, effect)
        return effect

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

    # --- compaction: see `store_compaction` ----------------------------------------------------

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
            return compact_locked(conn, self.path, before, step)

    # --- reads -------------------------------------------------------------------------------

    def folded(self, key: str) -> FoldedKey | None:
        """The key as the checkpoint keeps it, if its entry was folded by `compact`.

        `entry(key)` is None for such a key, yet it is used: a retry with the same content
        returns the entry rebuilt, other content is an `IdempotencyConflictError`.
        """
        with self._transaction("DEFERRED") as conn:
            return folded_by_key(conn, key)

    def key_used(self, key: str) -> bool:
        """Whether `key` is taken: by an entry in the journal, or one folded into the checkpoint."""
        with self._transaction("DEFERRED") as conn:
            return entry_by_key(conn, key) is not None or folded_by_key(conn, key) is not None

    def folded_keys(self) -> list[FoldedKey]:
        """Every key folded into the checkpoint, in entry order."""
        with self._transaction("DEFERRED") as conn:
            rows = list(folded_rows(conn, full=True))
        return [FoldedKey(*row) for row in rows]

    def entries(self) -> list[Entry]:
        """The whole journal, in sequence order (a compacted one starts with its checkpoint)."""
        with self._transaction("DEFERRED") as conn:
            return list(journal_entries(conn))

    def entry(self, key: str) -> Entry | None:
        """The journal's entry under idempotency key `key`, if any (see `key_used`)."""
        with self._transaction("DEFERRED") as conn:
            return entry_by_key(conn, key)

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
        with self._transaction("DEFERRED") as conn:
            entries = list(journal_entries(conn))
            folded = [FoldedKey(*row) for row in folded_rows(conn, full=True)]
        return Ledger.replay(entries, folded=folded)

    # --- verification: see `store_audit` -------------------------------------------------------

    def verify(self) -> Audit:
        """Replay the stored journal from scratch and check it against the stored balances.

        Reads one consistent snapshot (writers may go on meanwhile, in WAL mode). A compacted
        journal starts from its checkpoint, and the folded keys are checked against it. SQLite's
        own check of the file (`PRAGMA quick_check`) comes first: a damaged file raises
        `LedgerDamagedError` rather than returning a verdict on rows that cannot be trusted. A row
        that only breaks a CHECK constraint (tampering, not damage) is left to the audit, which
        names it; the CHECK is the violation only where the audit finds nothing.
        """
        with self._transaction("DEFERRED") as conn:
            return audit_stored(conn, self.path)
