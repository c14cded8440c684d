"""The migrations runner (`maxwell.store.migrations`): what is missing (pure), and applying it in
place, one transaction per migration, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.store.migrations import (
    TABLE,
    Migration,
    MigrationHistoryError,
    SchemaTooNewError,
    adopted,
    apply_missing,
    migrate,
    missing,
    recorded,
)

NOTES = (
    Migration(1, "initial", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",)),
    Migration(2, "tags", ("ALTER TABLE notes ADD COLUMN tag TEXT",)),
    Migration(3, "pinned", ("ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",)),
)


def clock() -> float:
    return 1234.5


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "maxwell.db"


@pytest.fixture
def connection(db_path: Path) -> Iterator[sqlite3.Connection]:
    opened = sqlite3.connect(db_path, isolation_level=None)
    opened.execute("PRAGMA journal_mode = WAL")
    yield opened
    opened.close()


def rows(connection: sqlite3.Connection) -> list[tuple[object, ...]]:
    return connection.execute(
        f"SELECT owner, version, name, applied_at, adopted FROM {TABLE} ORDER BY owner, version"
    ).fetchall()


def columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in connection.execute(f"PRAGMA table_info({table})")]


# --- the decision (pure) ---------------------------------------------------------------------


def test_missing_is_everything_after_the_last_recorded_version() -> None:
    assert missing("notes", [], NOTES, where="db") == NOTES
    assert missing("notes", [(1, "initial")], NOTES, where="db") == NOTES[1:]
    assert missing("notes", [(2, "tags"), (1, "initial")], NOTES, where="db") == NOTES[2:]
    recorded_all = [(m.version, m.name) for m in NOTES]
    assert missing("notes", recorded_all, NOTES, where="db") == ()


def test_a_version_newer_than_the_code_is_refused_naming_file_and_versions() -> None:
    history = [(1, "initial"), (2, "tags"), (3, "pinned"), (4, "archive")]
    with pytest.raises(SchemaTooNewError) as caught:
        missing("notes", history, NOTES, where="/state/maxwell.db")
    error = caught.value
    assert (error.path, error.owner, error.recorded, error.known) == (
        "/state/maxwell.db",
        "notes",
        4,
        3,
    )
    assert "/state/maxwell.db" in str(error) and "version 4" in str(error)
    assert "up to version 3" in str(error) and "\n" not in str(error)


@pytest.mark.parametrize(
    ("history", "says"),
    [
        ([(2, "tags")], r"migrations \[2\], not 1-2"),
        ([(1, "initial"), (3, "pinned")], r"migrations \[1, 3\], not 1-3"),
        ([(1, "first")], "migration 1 as 'first', but this Maxwell's migration 1 is 'initial'"),
    ],
)
def test_a_history_that_is_not_the_codes_is_refused(
    history: list[tuple[int, str]], says: str
) -> None:
    with pytest.raises(MigrationHistoryError, match=says):
        missing("notes", history, NOTES, where="db")


@pytest.mark.parametrize(
    "broken",
    [
        (NOTES[1], NOTES[0]),
        (NOTES[0], NOTES[2]),
        (NOTES[0], Migration(2, "initial", ())),
        (Migration(1, "", ()),),
    ],
)
def test_the_codes_own_list_must_be_numbered_and_named(broken: tuple[Migration, ...]) -> None:
    with pytest.raises(ValueError, match="migrations"):
        missing("notes", [], broken, where="db")


def test_adopted_is_the_prefix_an_old_version_record_stands_for() -> None:
    assert adopted("notes", 0, NOTES, where="db") == ()
    assert adopted("notes", 2, NOTES, where="db") == NOTES[:2]
    with pytest.raises(SchemaTooNewError, match="version 9"):
        adopted("notes", 9, NOTES, where="db")


# --- the runner --------------------------------------------------------------------------------


def test_migrate_applies_in_order_records_each_and_is_idempotent(
    connection: sqlite3.Connection,
) -> None:
    assert migrate(connection, "notes", NOTES[:2], clock) == NOTES[:2]
    assert columns(connection, "notes") == ["id", "text", "tag"]
    assert migrate(connection, "notes", NOTES, clock) == NOTES[2:]
    assert columns(connection, "notes") == ["id", "text", "tag", "pinned"]
    assert rows(connection) == [
        ("notes", 1, "initial", 1234.5, 0),
        ("notes", 2, "tags", 1234.5, 0),
        ("notes", 3, "pinned", 1234.5, 0),
    ]
    assert migrate(connection, "notes", NOTES, clock) == ()
    assert len(rows(connection)) == 3


def test_owners_are_recorded_apart(connection: sqlite3.Connection) -> None:
    other = (Migration(1, "initial", ("CREATE TABLE other (x INTEGER)",)),)
    migrate(connection, "notes", NOTES, clock)
    assert migrate(connection, "other", other, clock) == other
    assert recorded(connection, "other") == [(1, "initial")]
    assert recorded(connection, "notes") == [(1, "initial"), (2, "tags"), (3, "pinned")]
    assert recorded(connection, "nobody") == []


def test_a_failing_migration_leaves_none_of_itself_and_keeps_the_earlier_ones(
    connection: sqlite3.Connection,
) -> None:
    broken = (
        *NOTES[:2],
        Migration(
            3,
            "half",
            ("ALTER TABLE notes ADD COLUMN half INTEGER", "INSERT INTO nowhere VALUES (1)"),
        ),
    )
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(connection, "notes", broken, clock)
    assert not connection.in_transaction
    assert recorded(connection, "notes") == [(1, "initial"), (2, "tags")]
    assert columns(connection, "notes") == ["id", "text", "tag"]  # no `half`


def test_a_function_migration_gets_the_connection(connection: sqlite3.Connection) -> None:
    def seed(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO notes (text) VALUES (?)", [("a",), ("b",)])

    seeded = (NOTES[0], Migration(2, "seed", seed))
    assert migrate(connection, "notes", seeded, clock) == seeded
    assert connection.execute("SELECT text FROM notes ORDER BY id").fetchall() == [("a",), ("b",)]


def test_an_old_version_record_is_adopted_without_running_anything(
    connection: sqlite3.Connection,
) -> None:
    """A database that kept its version its own way before the table: 1..v recorded, not run."""

    def never(_: sqlite3.Connection) -> None:
        raise AssertionError("an adopted migration ran again")

    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, tag TEXT)")
    old_way = (Migration(1, "initial", never), Migration(2, "tags", never), NOTES[2])
    assert migrate(connection, "notes", old_way, clock, legacy=lambda _: 2) == (NOTES[2],)
    assert rows(connection) == [
        ("notes", 1, "initial", 1234.5, 1),
        ("notes", 2, "tags", 1234.5, 1),
        ("notes", 3, "pinned", 1234.5, 0),
    ]
    # Once recorded, the table is the truth: the old record is no longer read.
    assert migrate(connection, "notes", old_way, clock, legacy=lambda _: 99) == ()


def test_an_up_to_date_adoption_is_recorded_alone(connection: sqlite3.Connection) -> None:
    def never(_: sqlite3.Connection) -> None:
        raise AssertionError("an adopted migration ran again")

    old_way = (Migration(1, "initial", never),)
    assert migrate(connection, "notes", old_way, clock, legacy=lambda _: 1) == ()
    assert rows(connection) == [("notes", 1, "initial", 1234.5, 1)]


def test_a_newer_database_is_refused_and_left_byte_for_byte(
    connection: sqlite3.Connection, db_path: Path
) -> None:
    migrate(connection, "notes", NOTES, clock)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db_path.read_bytes()
    stamps: list[str] = []

    def stamping_clock() -> float:
        stamps.append("read")
        return 0.0

    with pytest.raises(SchemaTooNewError, match=r"notes schema version 3, .*up to version 2"):
        migrate(connection, "notes", NOTES[:2], stamping_clock)
    assert not connection.in_transaction and stamps == []
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db_path.read_bytes() == before


def test_apply_missing_runs_in_the_callers_transaction(connection: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="caller's transaction"):
        apply_missing(connection, "notes", NOTES, clock)
    connection.execute("BEGIN IMMEDIATE")
    assert apply_missing(connection, "notes", NOTES, clock) == NOTES
    connection.execute("ROLLBACK")
    assert recorded(connection, "notes") == []  # rolled back with the caller's transaction
    connection.execute("BEGIN IMMEDIATE")
    with pytest.raises(ValueError, match="its own transactions"):
        migrate(connection, "notes", NOTES, clock)
    connection.execute("ROLLBACK")


def test_processes_opening_together_apply_each_migration_once(db_path: Path) -> None:
    """Each migration is decided again under the write lock: racing openers never repeat one
    (CREATE TABLE would fail the second time)."""
    setup = sqlite3.connect(db_path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.close()
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def opener() -> None:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
        try:
            start.wait()
            migrate(conn, "notes", NOTES, clock)
        except BaseException as exc:  # reported below, with the thread's own traceback
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    check = sqlite3.connect(db_path)
    try:
        assert [row[:3] for row in rows(check)] == [
            ("notes", 1, "initial"),
            ("notes", 2, "tags"),
            ("notes", 3, "pinned"),
        ]
    finally:
        check.close()
