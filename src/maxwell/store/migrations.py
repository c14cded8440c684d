"""Named, versioned migrations for the tables of one SQLite file shared by several owners.

In the spirit of sqlite-utils' `Migrations`. Each owner of tables in the state directory's
database (`ledger`, `node`) keeps an ordered list of `Migration`s, numbered 1, 2, 3, ... with a
name each; what was applied is recorded in one table, shared by every owner:

    schema_migrations(owner, version, name, applied_at, adopted)

Rules and invariants:

- A released migration never changes: not its number, not its name, not its statements. A change
  to the schema is a new migration at the end of its owner's list.
- `missing` (pure) decides what to apply: the owner's migrations after its highest recorded
  version, in order. A recorded version beyond the code's last is refused (`SchemaTooNewError`,
  naming the file and both versions): a newer Maxwell wrote it, and this one would misread it.
  A record that is not 1..n under this code's names is refused too (`MigrationHistoryError`).
- `migrate` applies each missing migration and records it in one `BEGIN IMMEDIATE` transaction:
  all of a migration or none of it. It decides again under the write lock, so processes opening
  the file together apply each migration once. It decides first without the lock, and when
  nothing is missing it writes nothing: opening an up-to-date file, or refusing a newer one,
  leaves the file as it was, byte for byte.
- `apply_missing` does the same within a transaction its caller holds (a new ledger is created,
  recorded and seeded in one transaction).
- An owner that recorded its version another way before this table existed (the ledger's `meta`
  row) passes `legacy`, read when the table holds no row for the owner: versions 1..legacy are
  recorded with `adopted = 1` (known to be applied; never run again).

A migration is SQL statements, run one at a time (`executescript` would COMMIT), or a function of
the connection; neither may BEGIN, COMMIT or ROLLBACK. sqlite3 errors pass through untranslated:
each owner translates them at its own boundary.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from maxwell.errors import MaxwellError

__all__ = [
    "TABLE",
    "Migration",
    "MigrationError",
    "MigrationHistoryError",
    "SchemaTooNewError",
    "adopted",
    "apply_missing",
    "database_file",
    "migrate",
    "missing",
    "recorded",
]

_log = logging.getLogger(__name__)

TABLE = "schema_migrations"

_CREATE_TABLE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    owner TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    name TEXT NOT NULL,
    applied_at REAL NOT NULL,
    adopted INTEGER NOT NULL DEFAULT 0 CHECK (adopted IN (0, 1)),
    PRIMARY KEY (owner, version)
) STRICT, WITHOUT ROWID"""

Legacy = Callable[[sqlite3.Connection], int]


class MigrationError(MaxwellError):
    """A database whose recorded migrations this Maxwell cannot bring up to date."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class SchemaTooNewError(MigrationError):
    """The database records a version of an owner's schema newer than this Maxwell knows."""

    def __init__(self, path: str, owner: str, recorded: int, known: int) -> None:
        super().__init__(
            f"{path} holds {owner} schema version {recorded}, newer than this Maxwell knows "
            f"(up to version {known}): a newer Maxwell wrote it; upgrade Maxwell to open it",
            path=path,
        )
        self.owner = owner
        self.recorded = recorded
        self.known = known


class MigrationHistoryError(MigrationError):
    """The recorded migrations are not this code's 1..n (gaps, or other names)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of an owner's schema: `apply` is SQL statements or a function of the connection."""

    version: int
    name: str
    apply: tuple[str, ...] | Callable[[sqlite3.Connection], None]

    def run(self, connection: sqlite3.Connection) -> None:
        if callable(self.apply):
            self.apply(connection)
            return
        for statement in self.apply:
            connection.execute(statement)


# --- the decision (pure) ---------------------------------------------------------------------


def _check_list(owner: str, migrations: Sequence[Migration]) -> None:
    """The code's own list must be 1..n with distinct names: anything else is our bug."""
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"the {owner} migrations must be numbered 1..n in order, not {versions}")
    names = [migration.name for migration in migrations]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"the {owner} migrations need distinct, non-empty names: {names}")


def missing(
    owner: str,
    recorded: Sequence[tuple[int, str]],
    migrations: Sequence[Migration],
    *,
    where: str,
) -> tuple[Migration, ...]:
    """The migrations of `owner` to apply, in order, given its `recorded` (version, name) rows.

    `where` names the database in errors. Raises `SchemaTooNewError` when a recorded version is
    beyond the code's last, `MigrationHistoryError` when the record is not 1..n under the code's
    names.
    """
    _check_list(owner, migrations)
    versions = sorted(version for version, _ in recorded)
    latest = versions[-1] if versions else 0
    if latest > len(migrations):
        raise SchemaTooNewError(where, owner, latest, len(migrations))
    if versions != list(range(1, latest + 1)):
        raise MigrationHistoryError(
            f"{where} records {owner} migrations {versions}, not 1-{latest} once each: "
            "it was edited by hand or damaged",
            path=where,
        )
    for version, name in recorded:
        expected = migrations[version - 1].name
        if name != expected:
            raise MigrationHistoryError(
                f"{where} records {owner} migration {version} as {name!r}, but this Maxwell's "
                f"migration {version} is {expected!r}: it was made by another Maxwell",
                path=where,
            )
    return tuple(migrations[latest:])


def adopted(
    owner: str, legacy_version: int, migrations: Sequence[Migration], *, where: str
) -> tuple[Migration, ...]:
    """The migrations to record as already applied for a database at `legacy_version` by its
    owner's old record: 1..legacy_version. Refuses a version beyond the code's last."""
    _check_list(owner, migrations)
    if legacy_version > len(migrations):
        raise SchemaTooNewError(where, owner, legacy_version, len(migrations))
    return tuple(migrations[: max(legacy_version, 0)])


# --- the runner (I/O on the caller's connection) ----------------------------------------------


def database_file(connection: sqlite3.Connection) -> str:
    """The file behind the connection's main database (for errors and logs)."""
    for _, schema, file in connection.execute("PRAGMA database_list").fetchall():
        if schema == "main":
            return str(file) or ":memory:"
    return ":memory:"


def recorded(connection: sqlite3.Connection, owner: str) -> list[tuple[int, str]]:
    """The (version, name) rows recorded for `owner`, in version order; none without the table."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (TABLE,)
    ).fetchone()
    if exists is None:
        return []
    rows = connection.execute(
        f"SELECT version, name FROM {TABLE} WHERE owner = ? ORDER BY version", (owner,)
    ).fetchall()
    return [(int(version), str(name)) for version, name in rows]


def _plan(
    connection: sqlite3.Connection,
    owner: str,
    migrations: Sequence[Migration],
    legacy: Legacy | None,
) -> tuple[tuple[Migration, ...], tuple[Migration, ...]]:
    """(to record as adopted, to apply), as the database stands now."""
    where = database_file(connection)
    rows = recorded(connection, owner)
    adopt: tuple[Migration, ...] = ()
    if not rows and legacy is not None:
        adopt = adopted(owner, legacy(connection), migrations, where=where)
        rows = [(migration.version, migration.name) for migration in adopt]
    return adopt, missing(owner, rows, migrations, where=where)


def _record(
    connection: sqlite3.Connection, owner: str, migration: Migration, at: float, *, adopt: bool
) -> None:
    connection.execute(_CREATE_TABLE)
    connection.execute(
        f"INSERT INTO {TABLE} (owner, version, name, applied_at, adopted) VALUES (?, ?, ?, ?, ?)",
        (owner, migration.version, migration.name, at, int(adopt)),
    )


def _adopt(
    connection: sqlite3.Connection,
    owner: str,
    adopt: Sequence[Migration],
    now: Callable[[], float],
) -> None:
    if not adopt:
        return
    at = now()
    for migration in adopt:
        _record(connection, owner, migration, at, adopt=True)
    _log.info(
        "recorded %s migrations 1-%d of %s as applied (from its earlier version record)",
        owner,
        len(adopt),
        database_file(connection),
    )


def _apply(
    connection: sqlite3.Connection, owner: str, migration: Migration, now: Callable[[], float]
) -> None:
    migration.run(connection)
    _record(connection, owner, migration, now(), adopt=False)
    _log.info(
        "applied %s migration %d (%s) to %s",
        owner,
        migration.version,
        migration.name,
        database_file(connection),
    )


def apply_missing(
    connection: sqlite3.Connection,
    owner: str,
    migrations: Sequence[Migration],
    now: Callable[[], float],
    *,
    legacy: Legacy | None = None,
) -> tuple[Migration, ...]:
    """Within the transaction the caller holds (its write lock taken): bring `owner` up to date.

    Returns the migrations applied. The caller's COMMIT makes them durable, its ROLLBACK undoes
    them all.
    """
    if not connection.in_transaction:
        raise ValueError("apply_missing runs in the caller's transaction: BEGIN IMMEDIATE first")
    adopt, pending = _plan(connection, owner, migrations, legacy)
    _adopt(connection, owner, adopt, now)
    for migration in pending:
        _apply(connection, owner, migration, now)
    return pending


@contextmanager
def _transaction(connection: sqlite3.Connection, mode: str) -> Iterator[None]:
    connection.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def migrate(
    connection: sqlite3.Connection,
    owner: str,
    migrations: Sequence[Migration],
    now: Callable[[], float],
    *,
    legacy: Legacy | None = None,
) -> tuple[Migration, ...]:
    """Bring `owner`'s tables up to date in place: each missing migration in a transaction of its
    own, recorded with it. Returns those applied (empty: the database was up to date).

    `connection` must be in autocommit mode (`isolation_level=None`) and outside a transaction.
    `now` (wall time) stamps the records; it is read only when something is written. `legacy`
    reads the owner's version from its record before `schema_migrations` existed.
    """
    if connection.in_transaction:
        raise ValueError("migrate runs its own transactions: call it outside one")
    with _transaction(connection, "DEFERRED"):
        adopt, pending = _plan(connection, owner, migrations, legacy)
    if not adopt and not pending:
        return ()
    applied: list[Migration] = []
    while True:
        with _transaction(connection, "IMMEDIATE"):
            adopt, pending = _plan(connection, owner, migrations, legacy)  # again, under the lock
            _adopt(connection, owner, adopt, now)
            if pending:
                _apply(connection, owner, pending[0], now)
        if not pending:
            return tuple(applied)
        applied.append(pending[0])
