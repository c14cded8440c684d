"""The node's one store: the ledger and the node's tables in `<state>/maxwell.db`, over ONE
SQLite connection, one transaction per unit of work.

Rules:

- A unit of work (`unit_of_work`) is one `BEGIN IMMEDIATE ... COMMIT`: a tick's rows, claims
  and ledger entries, a spawn's agent row, bid and opening entries, a kill's state and event.
  Every write of the ledger (`LedgerStore`) and of the node's tables (`NodeState`) made inside it
  joins it: all of it is durable (synchronous = FULL) or none of it is. There is no outbox.
- Both owners' schemas are migrated when the store opens (`maxwell.store.migrations`).
- The connection is shared by the daemon's threads under the daemon's lock.
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

    def __init__(self, ledger: LedgerStore, state: NodeState) -> None:
        self.ledger = ledger
        self.state = state

    @classmethod
    def open(
        cls, state_dir: Path, now: Callable[[], float], *, busy_timeout_s: float = 30.0
    ) -> NodeStore:
        """Create or check the ledger (`LedgerStore.open`), then open the one connection the
        node works through, configured as `LedgerStore.open` configures its own. A unit of work
        waits `busy_timeout_s` for another writer's lock, then raises `LedgerBusyError`."""
        LedgerStore.open(state_dir, now=now, busy_timeout_s=busy_timeout_s).close()
        path = state_dir / DB_NAME
        uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=rw"
        try:
            connection = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                timeout=busy_timeout_s,
                check_same_thread=False,
            )
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise LedgerStoreError(f"cannot open {path}: {exc}", path=str(path)) from exc
        try:
            return cls(LedgerStore(connection, path, now), NodeState.attach(connection, path, now))
        except BaseException:
            connection.close()
            raise

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
        self.ledger.close()  # the one connection: the node's tables go with it
