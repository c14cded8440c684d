"""The node's own tables, in the ledger's database file (`<state>/maxwell.db`), and its tokens.

The adapter the daemon keeps its agents in; the ledger (`maxwell.economy.store`) keeps the money
and the journal in the same file, each through its own connection (WAL: readers never block the
writer, and SQLite serialises writers).

Tables:

- `node_meta(name, value)`: `last_tick` (the number of the last tick committed) and
  `last_tick_at` (its Unix time).
- `agents`: one row per agent ever spawned: its command, process, cgroup directories (JSON, so a
  restarted daemon can rebuild the group), token hash, state, standing bid, counters. `cpu_ns`
  and `freed_bytes` are the group's absolute counters up to which the agent has been billed:
  after a restart, the interval the daemon was down is billed from them, exactly once.
- `bids`: every bid placed (history); the standing bid is also on the agent's row.
- `reports`: each agent's latest self-report (cumulative claims since spawn: CPU ns, bytes freed,
  work units), when it came, and the group's counters read at that instant (what an audit
  compares the claims with; NULL where the agent has no group to read).
- `manifests`: the code manifest of each agent that declared its code at spawn (JSON,
  `maxwell.audit.CodeManifest`): the pages an audit's instruction-pointer samples must fall in.
- `bounties`: for agents the user pays per valid proof of inference: the model (its path and
  the sha256 of its bytes at spawn) and the bounty in µ$J.
- `claims`: for agents billed by their reports, the claim they are billed up to (CPU ns, bytes
  freed) and what their reports under-billed against the meter since their last audit (µ$J),
  written with each tick, so a restarted daemon neither bills a claim twice nor forgives it.
- `pending`: ledger entries a tick has planned but may not have posted yet. They are written in
  the same transaction as the counters they bill, and deleted once posted; a daemon that
  crashed in between posts them again on start (same keys, same content: applied once).
- `jobs` and `job_inputs`: posted work (`maxwell.node.jobs`, which reads and writes them): each
  job's model and bounty, and each input's digest, lease and payee.

The schema is `MIGRATIONS` (owner `node` in `schema_migrations`; see `maxwell.store.migrations`),
brought up to date in place on open: 1 `initial`, the tables above as Maxwell 0.1.0 made them;
2 `jobs`, the posted work.

Tokens are random (`secrets.token_urlsafe`); only their SHA-256 is stored. The admin token lives
in `<state>/admin.token`, mode 0600, created on first start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from maxwell.economy.store import (
    DB_NAME,
    Guard,
    LedgerSchemaError,
    LedgerStoreError,
    sqlite_error,
)
from maxwell.node.paths import ADMIN_TOKEN_FILE
from maxwell.store.migrations import Migration, MigrationError, migrate

OWNER = "node"  # the node's name in `schema_migrations` (see `maxwell.store.migrations`)

# Version 1 is the schema Maxwell 0.1.0 created on every open, verbatim: IF NOT EXISTS, so that on
# a database from before the migrations table it creates only what is missing, as 0.1.0 did.
_INITIAL_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS node_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    """CREATE TABLE IF NOT EXISTS agents (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        argv TEXT NOT NULL,
        user TEXT,
        pid INTEGER,
        cgroup TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        bid REAL NOT NULL,
        demand REAL NOT NULL,
        bid_seq INTEGER NOT NULL,
        created_at REAL NOT NULL,
        ended_at REAL,
        exit_code INTEGER,
        energy_uj INTEGER NOT NULL DEFAULT 0,
        cpu_ns INTEGER NOT NULL DEFAULT 0,
        freed_bytes INTEGER NOT NULL DEFAULT 0,
        cores REAL NOT NULL DEFAULT 0,
        power_w REAL NOT NULL DEFAULT 0,
        burn_per_s REAL NOT NULL DEFAULT 0,
        insolvent_since REAL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS bids (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        agent TEXT NOT NULL REFERENCES agents (id),
        price REAL NOT NULL,
        demand REAL NOT NULL,
        at REAL NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS reports (
        agent TEXT PRIMARY KEY REFERENCES agents (id),
        at REAL NOT NULL,
        cpu_ns INTEGER NOT NULL,
        freed_bytes INTEGER NOT NULL,
        work INTEGER,
        measured_cpu_ns INTEGER,
        measured_freed_bytes INTEGER
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS manifests (
        agent TEXT PRIMARY KEY REFERENCES agents (id),
        manifest TEXT NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS bounties (
        agent TEXT PRIMARY KEY REFERENCES agents (id),
        model_path TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        bounty INTEGER NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS claims (
        agent TEXT PRIMARY KEY REFERENCES agents (id),
        cpu_ns INTEGER NOT NULL,
        freed_bytes INTEGER NOT NULL,
        shadow INTEGER NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS pending (
        key TEXT PRIMARY KEY,
        tick INTEGER NOT NULL,
        ord INTEGER NOT NULL,
        kind TEXT NOT NULL,
        movements TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT""",
)

_JOBS_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        model_path TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        bounty INTEGER NOT NULL,
        posted_at REAL NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS job_inputs (
        job TEXT NOT NULL REFERENCES jobs (id),
        n INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        taken_by TEXT,
        taken_until REAL,
        paid_to TEXT,
        PRIMARY KEY (job, n)
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS job_inputs_by_sha256 ON job_inputs (sha256)",
)

# The node's schema, in order; released ones never change (add a new one at the end).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", _INITIAL_SCHEMA),
    Migration(2, "jobs", _JOBS_SCHEMA),
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A random token (256 bits, URL-safe) that never starts with "-", so that a command line
    `--token TOKEN` never reads it as a flag."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass  # one chance in 64: draw again
    return token


def admin_token(state_dir: str | os.PathLike[str]) -> str:
    """The admin token of `state_dir`, created (mode 0600) on first use."""
    path = Path(state_dir) / ADMIN_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise LedgerStoreError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
        if not token:
            raise LedgerStoreError(f"{path} is empty: remove it to make a new token") from None
        return token
    except OSError as exc:
        raise LedgerStoreError(f"cannot create {path}: {exc.strerror}", path=str(path)) from exc
    token = new_token()
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


@dataclass(frozen=True)
class AgentRow:
    id: str
    name: str
    argv: tuple[str, ...]
    user: str | None
    pid: int | None
    cgroup: Mapping[str, object]
    token_hash: str
    state: str
    bid: float
    demand: float
    bid_seq: int
    created_at: float
    ended_at: float | None = None
    exit_code: int | None = None
    energy_uj: int = 0
    cpu_ns: int = 0
    freed_bytes: int = 0
    cores: float = 0.0
    power_w: float = 0.0
    burn_per_s: float = 0.0
    insolvent_since: float | None = None


_COLUMNS = (
    "id, name, argv, user, pid, cgroup, token_hash, state, bid, demand, bid_seq, created_at, "
    "ended_at, exit_code, energy_uj, cpu_ns, freed_bytes, cores, power_w, burn_per_s, "
    "insolvent_since"
)


def _row(values: Sequence[object]) -> AgentRow:
    (id_, name, argv, user, pid, cgroup, token_hash, state, bid, demand, bid_seq, created_at,
     ended_at, exit_code, energy_uj, cpu_ns, freed_bytes, cores, power_w, burn_per_s,
     insolvent_since) = values  # fmt: skip
    return AgentRow(
        id=str(id_),
        name=str(name),
        argv=tuple(json.loads(str(argv))),
        user=None if user is None else str(user),
        pid=None if pid is None else int(str(pid)),
        cgroup=json.loads(str(cgroup)),
        token_hash=str(token_hash),
        state=str(state),
        bid=float(str(bid)),
        demand=float(str(demand)),
        bid_seq=int(str(bid_seq)),
        created_at=float(str(created_at)),
        ended_at=None if ended_at is None else float(str(ended_at)),
        exit_code=None if exit_code is None else int(str(exit_code)),
        energy_uj=int(str(energy_uj)),
        cpu_ns=int(str(cpu_ns)),
        freed_bytes=int(str(freed_bytes)),
        cores=float(str(cores)),
        power_w=float(str(power_w)),
        burn_per_s=float(str(burn_per_s)),
        insolvent_since=None if insolvent_since is None else float(str(insolvent_since)),
    )


@dataclass(frozen=True)
class PendingEntry:
    """A ledger entry planned by a tick: a bill (movements) or an event (none)."""

    key: str
    tick: int
    kind: str
    movements: tuple[tuple[str, str, int], ...]  # (debit, credit, amount µ$J)
    detail: Mapping[str, object]


@dataclass(frozen=True)
class ReportRow:
    """An agent's latest self-report, as stored: cumulative claims since spawn."""

    agent: str
    at: float
    cpu_ns: int
    freed_bytes: int
    work: int | None
    measured_cpu_ns: int | None = None
    measured_freed_bytes: int | None = None


@dataclass(frozen=True)
class ClaimRow:
    """The claim an agent billed by its reports is billed up to, and its under-billing since its
    last audit (µ$J)."""

    cpu_ns: int
    freed_bytes: int
    shadow: int


@dataclass(frozen=True)
class JournalEvent:
    seq: int
    at: float
    kind: str
    detail: Mapping[str, object]


class NodeState:
    """The node's tables over one connection, shared by the daemon's threads under its lock."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, guard: Guard | None = None
    ) -> None:
        self._conn = connection
        self.path = path
        self._guard: Guard = guard if guard is not None else threading.RLock()  # see LedgerStore

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> NodeState:
        """Open the node's tables in `<state_dir>/maxwell.db` (the ledger must exist already),
        upgraded in place (`MIGRATIONS`); `now` stamps the migrations applied."""
        path = Path(state_dir) / DB_NAME
        try:
            connection = sqlite3.connect(
                path, isolation_level=None, timeout=busy_timeout_s, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise LedgerStoreError(f"cannot open {path}: {exc}", path=str(path)) from exc
        state = cls(connection, path)
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            state._migrate(now)
        except BaseException:
            connection.close()
            raise
        return state

    def _migrate(self, now: Callable[[], float]) -> None:
        try:
            migrate(self._conn, OWNER, MIGRATIONS, now)
        except MigrationError as exc:
            raise LedgerSchemaError(str(exc), path=str(self.path)) from exc
        except sqlite3.Error as exc:
            raise LedgerStoreError(
                f"cannot upgrade {self.path}: {exc}", path=str(self.path)
            ) from exc

    def close(self) -> None:
        self._conn.close()

    @classmethod
    def attach(
        cls,
        connection: sqlite3.Connection,
        path: Path,
        now: Callable[[], float] = time.time,
        guard: Guard | None = None,
    ) -> NodeState:
        """The node's tables over a connection the caller owns (the node's one store), upgraded
        in place like `open`'s; `guard`: the one its other users' transactions hold."""
        state = cls(connection, path, guard)
        state._migrate(now)
        return state

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._guard:  # another thread's transaction ends first (`LedgerStore.guard`)
            if self._conn.in_transaction:  # part of this thread's unit of work: it commits
                yield self._conn
                return
            with self._begun(mode) as conn:
                yield conn

    @contextlib.contextmanager
    def _begun(self, mode: str) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute(f"BEGIN {mode}")
        except sqlite3.Error as exc:
            raise sqlite_error(exc, "cannot use", self.path) from exc
        try:
            yield self._conn
        except BaseException as exc:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(exc, "cannot use", self.path) from exc
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise sqlite_error(exc, "cannot commit to", self.path) from exc

    # --- meta ----------------------------------------------------------------------------------

    def last_tick(self) -> tuple[int, float | None]:
        with self._transaction("DEFERRED") as conn:
            rows = dict(conn.execute("SELECT name, value FROM node_meta").fetchall())
        at = rows.get("last_tick_at")
        return int(rows.get("last_tick", 0)), None if at is None else float(at)

    # --- agents --------------------------------------------------------------------------------

    def insert_agent(self, row: AgentRow) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO agents ({_COLUMNS}) VALUES ({', '.join('?' * 21)})",
                (
                    row.id, row.name, json.dumps(list(row.argv)), row.user, row.pid,
                    json.dumps(dict(row.cgroup), sort_keys=True), row.token_hash, row.state,
                    row.bid, row.demand, row.bid_seq, row.created_at, row.ended_at,
                    row.exit_code, row.energy_uj, row.cpu_ns, row.freed_bytes, row.cores,
                    row.power_w, row.burn_per_s, row.insolvent_since,
                ),
            )  # fmt: skip

    def delete_agent(self, agent: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM bids WHERE agent = ?", (agent,))
            conn.execute("DELETE FROM reports WHERE agent = ?", (agent,))
            conn.execute("DELETE FROM manifests WHERE agent = ?", (agent,))
            conn.execute("DELETE FROM bounties WHERE agent = ?", (agent,))
            conn.execute("DELETE FROM claims WHERE agent = ?", (agent,))
            conn.execute("DELETE FROM agents WHERE id = ?", (agent,))

    def update_agent(self, agent: str, **fields: object) -> None:
        if not fields:
            return
        unknown = set(fields) - set(_COLUMNS.split(", "))
        if unknown:
            raise ValueError(f"unknown agent columns {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as conn:
            conn.execute(f"UPDATE agents SET {assignments} WHERE id = ?", (*fields.values(), agent))

    def agents(self) -> list[AgentRow]:
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM agents ORDER BY created_at, id")
            return [_row(values) for values in rows.fetchall()]

    def place_bid(self, agent: str, price: float, demand: float, at: float) -> int:
        """Record a bid and make it the agent's standing one; its arrival number."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO bids (agent, price, demand, at) VALUES (?, ?, ?, ?)",
                (agent, price, demand, at),
            )
            seq = int(cursor.lastrowid or 0)
            conn.execute(
                "UPDATE agents SET bid = ?, demand = ?, bid_seq = ? WHERE id = ?",
                (price, demand, seq, agent),
            )
        return seq

    def save_report(self, report: ReportRow) -> None:
        """Make `report` the agent's latest (the caller checked that it claims no less)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO reports (agent, at, cpu_ns, freed_bytes, work, "
                "measured_cpu_ns, measured_freed_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    report.agent, report.at, report.cpu_ns, report.freed_bytes, report.work,
                    report.measured_cpu_ns, report.measured_freed_bytes,
                ),
            )  # fmt: skip

    def save_manifest(self, agent: str, manifest_json: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO manifests (agent, manifest) VALUES (?, ?)",
                (agent, manifest_json),
            )

    def transaction(
        self, mode: str = "IMMEDIATE"
    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A transaction on this connection, joining the caller's unit of work if one is open:
        for the tables another module keeps (`maxwell.node.jobs`)."""
        return self._transaction(mode)

    def save_bounty(self, agent: str, model_path: str, model_sha256: str, bounty: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO bounties (agent, model_path, model_sha256, bounty) "
                "VALUES (?, ?, ?, ?)",
                (agent, model_path, model_sha256, bounty),
            )

    def bounties(self) -> dict[str, tuple[str, str, int]]:
        """agent -> (model path, model sha256, bounty µ$J)."""
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT agent, model_path, model_sha256, bounty FROM bounties"
            ).fetchall()
        return {str(a): (str(path), str(digest), int(b)) for a, path, digest, b in rows}

    def claims(self) -> dict[str, ClaimRow]:
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute("SELECT agent, cpu_ns, freed_bytes, shadow FROM claims").fetchall()
        return {str(a): ClaimRow(int(c), int(f), int(s)) for a, c, f, s in rows}

    def manifests(self) -> dict[str, str]:
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute("SELECT agent, manifest FROM manifests").fetchall()
        return {str(agent): str(manifest) for agent, manifest in rows}

    def reports(self) -> dict[str, ReportRow]:
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT agent, at, cpu_ns, freed_bytes, work, measured_cpu_ns, "
                "measured_freed_bytes FROM reports"
            ).fetchall()

        def optional(value: object) -> int | None:
            return None if value is None else int(str(value))

        return {
            str(row[0]): ReportRow(
                str(row[0]), float(row[1]), int(row[2]), int(row[3]), optional(row[4]),
                optional(row[5]), optional(row[6]),
            )
            for row in rows
        }  # fmt: skip

    # --- ticks ---------------------------------------------------------------------------------

    def commit_tick(
        self,
        tick: int,
        at: float,
        updates: Mapping[str, Mapping[str, object]],
        pending: Sequence[PendingEntry],
        claims: Mapping[str, ClaimRow | None] | None = None,
    ) -> None:
        """Atomically: the agents' new figures and counters, the tick's entries to post, the
        claims billed (None: no longer billed by claims), and `last_tick`. After this, the tick's
        interval is billed (now or by a restart)."""
        columns = set(_COLUMNS.split(", "))
        with self._transaction() as conn:
            for agent, fields in updates.items():
                if not fields:
                    continue
                if not set(fields) <= columns:
                    raise ValueError(f"unknown agent columns {sorted(set(fields) - columns)}")
                assignments = ", ".join(f"{name} = ?" for name in fields)
                conn.execute(
                    f"UPDATE agents SET {assignments} WHERE id = ?", (*fields.values(), agent)
                )
            conn.executemany(
                "INSERT OR IGNORE INTO pending (key, tick, ord, kind, movements, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        entry.key, entry.tick, ordinal, entry.kind,
                        json.dumps([list(m) for m in entry.movements]),
                        json.dumps(dict(entry.detail), sort_keys=True),
                    )
                    for ordinal, entry in enumerate(pending)
                ],
            )  # fmt: skip
            for agent, claim in (claims or {}).items():
                if claim is None:
                    conn.execute("DELETE FROM claims WHERE agent = ?", (agent,))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO claims (agent, cpu_ns, freed_bytes, shadow) "
                        "VALUES (?, ?, ?, ?)",
                        (agent, claim.cpu_ns, claim.freed_bytes, claim.shadow),
                    )
            conn.executemany(
                "INSERT INTO node_meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [("last_tick", str(tick)), ("last_tick_at", repr(at))],
            )

    def pending(self) -> list[PendingEntry]:
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT key, tick, kind, movements, detail FROM pending ORDER BY tick, ord"
            ).fetchall()
        return [
            PendingEntry(
                key=str(key),
                tick=int(tick),
                kind=str(kind),
                movements=tuple((str(d), str(c), int(a)) for d, c, a in json.loads(movements)),
                detail=json.loads(detail),
            )
            for key, tick, kind, movements, detail in rows
        ]

    def clear_pending(self, keys: Sequence[str]) -> None:
        with self._transaction() as conn:
            conn.executemany("DELETE FROM pending WHERE key = ?", [(key,) for key in keys])

    # --- the journal, read back as events ------------------------------------------------------

    def journal_events(
        self, kinds: Sequence[str], after_seq: int, limit: int
    ) -> list[JournalEvent]:
        """Ledger entries of `kinds` after `after_seq`, oldest first (the node's event log)."""
        marks = ", ".join("?" * len(kinds))
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                f"SELECT seq, at, kind, detail FROM entries WHERE seq > ? AND kind IN ({marks}) "
                "ORDER BY seq LIMIT ?",
                (after_seq, *kinds, limit),
            ).fetchall()
        return [
            JournalEvent(seq=int(seq), at=float(at), kind=str(kind), detail=json.loads(detail))
            for seq, at, kind, detail in rows
        ]
