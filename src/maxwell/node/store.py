"""The node's one store: the ledger and the node's tables in `<state>/maxwell.db`, over ONE
SQLite connection, one transaction per unit of work.

Rules:

- A unit of work (`unit_of_work`) is one `BEGIN IMMEDIATE ... COMMIT`: a tick's rows, claims
  and ledger entries, a spawn's agent row, bid and opening entries, a kill's state and event.
  Every write of the ledger (`LedgerStore`) and of the node's tables (`NodeState`) made inside it
  joins it: all of it is durable (synchronous = FULL) or none of it is. There is no outbox.
- Both owners' schemas are migrated when the store opens (`maxwell.store.migrations`).
- The connection is shared by the daemon's threads under the daemon's lock; a read made
  without that lock waits for a unit of work in flight to end (the store's guard, held from
  BEGIN to COMMIT), and never joins another thread's.
- A second connection, read-only (`reader`), serves reads that must not wait for the lock (the
  event log): in WAL mode it sees the last committed state, never a unit of work in flight, and
  neither blocks nor is blocked by the writer. Nothing is ever written through it.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from maxwell.economy.ledger import EntryRequest, Movement, batch_request, event_request
from maxwell.economy.store import DB_NAME, LedgerStore, LedgerStoreError
from maxwell.node.state import NodeState, PendingEntry

__all__ = ["NodeStore"]


class NodeStore:
    """The ledger and the node's tables of one state directory, over one connection."""

    def __init__(self, ledger: LedgerStore, state: NodeState, reader: NodeState) -> None:
        self.ledger = ledger
        self.state = state
        self.reader = reader

    @classmethod
    def open(
        cls, state_dir: Path, now: Callable[[], float], *, busy_timeout_s: float = 30.0
    ) -> NodeStore:
        """Create or check the ledger (`LedgerStore.open`), then open the one connection the
        node works through, configured as `LedgerStore.open` configures its own. A unit of work
        waits `busy_timeout_s` for another writer's lock, then raises `LedgerBusyError`."""
        LedgerStore.open(state_dir, now=now, busy_timeout_s=busy_timeout_s).close()
        path = state_dir / DB_NAME
        connection = _connect(path, "rw", busy_timeout_s)
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = FULL")
            ledger = LedgerStore(connection, path, now)  # its guard, the state's too
            state = NodeState.attach(connection, path, now, ledger.guard)
            reader = NodeState(_connect(path, "ro", busy_timeout_s), path)
        except sqlite3.Error as exc:
            connection.close()
            raise LedgerStoreError(f"cannot open {path}: {exc}", path=str(path)) from exc
        except BaseException:
            connection.close()
            raise
        return cls(ledger, state, reader)

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """One transaction that the ledger's and the node tables' writes inside it join."""
        with self.ledger.unit_of_work():
            yield

    def post(self, entries: Sequence[PendingEntry], *, at: float) -> None:
        """Post planned entries to the ledger in one call (inside a unit of work, they join it):
        batches where money moves, events elsewhere."""
        requests: list[EntryRequest] = []
        for entry in entries:
            if entry.movements:
                movements = [Movement(d, c, a) for d, c, a in entry.movements]
                requests.append(
                    batch_request(entry.key, movements, kind=entry.kind, detail=entry.detail)
                )
            else:
                requests.append(event_request(entry.key, entry.kind, entry.detail))
        self.ledger.submit_many(requests, at=at)

    def close(self) -> None:
        self.reader.close()
        self.ledger.close()  # the one writing connection: the node's tables go with it


def _connect(path: Path, mode: str, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to the database at `path`, which must exist (`mode` "rw" or "ro")."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode={mode}"
    try:
        return sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=busy_timeout_s, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise LedgerStoreError(f"cannot open {path}: {exc}", path=str(path)) from exc
