"""A state directory made by Maxwell 0.1.0 upgrades in place (issue 9).

`tests/fixtures/state-0.1.0/` was written by the release's own daemon (its `make_fixture.py`
says how). Each test works on a copy: what the fixture holds is read with plain sqlite3 before
the current code opens it, and must read back the same through the ledger, the node's tables and
the full daemon, with every owner's migrations recorded at the latest version.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from maxwell.cli.main import main as maxwell_main
from maxwell.economy import store as ledger_store
from maxwell.economy.store import DB_NAME, LedgerSchemaError, LedgerStore
from maxwell.errors import MaxwellError
from maxwell.node import state as node_state
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.paths import ADMIN_TOKEN_FILE
from maxwell.node.state import NodeState
from maxwell.store.migrations import TABLE, migrate

FIXTURE = Path(__file__).parent / "fixtures" / "state-0.1.0"
LATEST = {"ledger": ledger_store.SCHEMA_VERSION, "node": 1}

_AGENT_COLUMNS = "id, name, state, argv, pid, exit_code, energy_uj, cpu_ns, created_at, ended_at"


@dataclass(frozen=True)
class Held:
    """What a state directory holds, read with plain sqlite3."""

    balances: dict[str, int]
    agents: list[tuple[object, ...]]
    entries: int
    last_tick: str
    ledger_version: str
    tables: frozenset[str]


def read_held(state: Path) -> Held:
    connection = sqlite3.connect(state / DB_NAME)
    try:
        balances = dict(connection.execute("SELECT name, balance FROM accounts").fetchall())
        agents = [
            (*row[:3], json.loads(row[3]), *row[4:])
            for row in connection.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY created_at, id"
            )
        ]
        (entries,) = connection.execute("SELECT COUNT(*) FROM entries").fetchone()
        meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
        node_meta = dict(connection.execute("SELECT name, value FROM node_meta").fetchall())
        tables = connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        return Held(
            balances,
            agents,
            entries,
            node_meta["last_tick"],
            meta["version"],
            frozenset(str(row[0]) for row in tables),
        )
    finally:
        connection.close()


def migrations_recorded(state: Path) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(state / DB_NAME)
    try:
        return connection.execute(
            f"SELECT owner, version, name, adopted FROM {TABLE} ORDER BY owner, version"
        ).fetchall()
    finally:
        connection.close()


def checkpointed_bytes(state: Path) -> bytes:
    """The database file with its write-ahead log folded in (and none left behind)."""
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    assert not (state / f"{DB_NAME}-wal").exists()
    return (state / DB_NAME).read_bytes()


def open_and_close(state: Path) -> None:
    LedgerStore.open(state, create=False).close()
    NodeState.open(state).close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A copy of the release's state directory, private as a daemon keeps it."""
    copy = tmp_path / "state"
    copy.mkdir(mode=0o700)
    for name in (DB_NAME, ADMIN_TOKEN_FILE):
        shutil.copyfile(FIXTURE / name, copy / name)
    (copy / ADMIN_TOKEN_FILE).chmod(0o600)
    return copy


def test_the_fixture_is_a_release_state_dir(state: Path) -> None:
    """Made by 0.1.0: the ledger's version in `meta` only, no migrations table, real activity."""
    held = read_held(state)
    assert held.ledger_version == "1" and TABLE not in held.tables
    assert "folded_keys" not in held.tables
    assert len(held.agents) == 2 and {row[2] for row in held.agents} == {"dead"}
    assert held.balances["grid"] > 0 and held.entries > 10 and int(held.last_tick) > 0
    assert sum(held.balances.values()) == 0
    assert not (FIXTURE / f"{DB_NAME}-wal").exists() and not (FIXTURE / f"{DB_NAME}-shm").exists()


def test_the_stores_upgrade_it_in_place_keeping_what_it_held(state: Path) -> None:
    held = read_held(state)
    with LedgerStore.open(state, create=False) as ledger:
        assert ledger.balances() == held.balances
        result = ledger.verify()
        assert result.ok and result.entries == held.entries
    node = NodeState.open(state)
    try:
        agents = node.agents()
        assert node.last_tick()[0] == int(held.last_tick)
    finally:
        node.close()
    assert [
        (a.id, a.name, a.state, list(a.argv), a.pid, a.exit_code, a.energy_uj, a.cpu_ns,
         a.created_at, a.ended_at)
        for a in agents
    ] == held.agents  # fmt: skip
    # The ledger's 0.1.0 schema was recognised by its `meta` version, not run again (it would
    # fail: its tables exist); folded_keys and the node's tables were applied.
    assert migrations_recorded(state) == [
        ("ledger", 1, "initial", 1),
        ("ledger", 2, "folded_keys", 0),
        ("node", 1, "initial", 0),
        ("node", 2, "jobs", 0),
    ]
    upgraded = read_held(state)
    assert upgraded.ledger_version == str(LATEST["ledger"]) and "folded_keys" in upgraded.tables


def test_a_version_2_ledger_from_before_the_migrations_table_is_adopted_whole(
    state: Path,
) -> None:
    """Builds between 0.1.0 and the migrations table kept version 2 (`folded_keys`) in `meta`
    alone: both ledger migrations are recognised, neither run again (both would fail)."""
    open_and_close(state)
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        connection.execute(f"DROP TABLE {TABLE}")
    finally:
        connection.close()
    held = read_held(state)
    assert held.ledger_version == "2" and "folded_keys" in held.tables
    open_and_close(state)
    assert migrations_recorded(state) == [
        ("ledger", 1, "initial", 1),
        ("ledger", 2, "folded_keys", 1),
        ("node", 1, "initial", 0),
        ("node", 2, "jobs", 0),
    ]
    with LedgerStore.open(state, create=False) as ledger:
        assert ledger.balances() == held.balances and ledger.verify().ok


def test_opening_it_a_second_time_applies_nothing(state: Path) -> None:
    open_and_close(state)
    recorded = migrations_recorded(state)
    before = checkpointed_bytes(state)
    open_and_close(state)
    assert migrations_recorded(state) == recorded
    assert checkpointed_bytes(state) == before
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        assert migrate(connection, "ledger", ledger_store.MIGRATIONS, _no_clock) == ()
        assert migrate(connection, "node", node_state.MIGRATIONS, _no_clock) == ()
    finally:
        connection.close()


def _no_clock() -> float:
    raise AssertionError("nothing should be written, so nothing stamped")


def test_the_current_daemon_runs_on_it(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = read_held(state)
    token = (state / ADMIN_TOKEN_FILE).read_text().strip()
    daemon = NodeDaemon(NodeConfig(state_dir=state, cgroup="none", tick_s=0.1))
    try:
        agents = daemon.agents()
        assert daemon.admin_token == token
        assert daemon.ledger().verify().ok
    finally:
        daemon.shutdown()
    assert [(a.id, a.name, str(a.state), a.pid, a.exit_code) for a in agents] == [
        (row[0], row[1], row[2], row[4], row[5]) for row in held.agents
    ]
    for agent in agents:
        assert agent.balance == held.balances[f"agent:{agent.id}"]
    assert {(owner, version) for owner, version, *_ in migrations_recorded(state)} == {
        ("ledger", 1),
        ("ledger", 2),
        ("node", 1),
        ("node", 2),
    }
    capsys.readouterr()
    assert maxwell_main(["ledger", "verify", "--state", str(state)]) == 0
    assert capsys.readouterr().out.startswith("sound:")
    assert LedgerStore.open(state, create=False).balances() == read_held(state).balances


@dataclass(frozen=True)
class Newer:
    """How a newer Maxwell might have left the file, and what this one must say about it."""

    statements: tuple[str, ...]
    says: str


_NEWER = {
    "ledger, in the migrations table": Newer(
        (f"INSERT INTO {TABLE} VALUES ('ledger', 3, 'from-a-newer-maxwell', 0.0, 0)",),
        r"ledger schema version 3, newer than this Maxwell knows \(up to version 2\)",
    ),
    "ledger, in the table and in meta": Newer(
        (
            f"INSERT INTO {TABLE} VALUES ('ledger', 3, 'from-a-newer-maxwell', 0.0, 0)",
            "UPDATE meta SET value = '3' WHERE name = 'version'",
        ),
        r"schema version 3; this Maxwell reads versions 1-2",
    ),
    "node": Newer(
        (f"INSERT INTO {TABLE} VALUES ('node', 3, 'from-a-newer-maxwell', 0.0, 0)",),
        r"node schema version 3, newer than this Maxwell knows \(up to version 2\)",
    ),
}


def _open_daemon(state: Path) -> None:
    NodeDaemon(NodeConfig(state_dir=state, cgroup="none", tick_s=0.1)).shutdown()


@pytest.mark.parametrize("case", sorted(_NEWER))
@pytest.mark.parametrize("opener", [open_and_close, _open_daemon])
def test_a_newer_database_is_refused_and_left_unchanged(
    state: Path, case: str, opener: Callable[[Path], None]
) -> None:
    open_and_close(state)  # upgraded by this Maxwell; then a newer one moved it on
    newer = _NEWER[case]
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        for statement in newer.statements:
            connection.execute(statement)
    finally:
        connection.close()
    before = checkpointed_bytes(state)
    with pytest.raises(MaxwellError, match=newer.says) as caught:
        opener(state)
    assert str(state / DB_NAME) in str(caught.value) and "\n" not in str(caught.value)
    if opener is open_and_close:
        assert isinstance(caught.value, LedgerSchemaError)
    assert checkpointed_bytes(state) == before


def test_the_ledger_cli_refuses_a_newer_ledger_in_one_line(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_and_close(state)
    connection = sqlite3.connect(state / DB_NAME, isolation_level=None)
    try:
        connection.execute(f"INSERT INTO {TABLE} VALUES ('ledger', 3, 'newer', 0.0, 0)")
    finally:
        connection.close()
    assert maxwell_main(["ledger", "verify", "--state", str(state)]) == 2  # EXIT_USAGE
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "ledger schema version 3" in error
