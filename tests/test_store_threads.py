"""The node's one store is one SQLite connection shared by the daemon's threads
(`maxwell.node.store`). A read made without the daemon's lock (the API's transfers, a user's
account) while another thread's unit of work is in flight must wait for it to end: before, it
joined that transaction (reading what was then rolled back) or began inside it ("cannot start a
transaction within a transaction", seen as an HTTP 500 on `POST /transfers/{job}/settle` under
`maxwell bench cluster`), and its COMMIT could have cut the other thread's unit in two."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from maxwell.economy.ledger import event_request
from maxwell.node.store import NodeStore


class RolledBack(Exception):
    pass


def test_a_read_from_another_thread_waits_for_a_unit_of_work_and_sees_only_what_it_committed(
    tmp_path: Path,
) -> None:
    store = NodeStore.open(tmp_path, time.time)
    inside, seen, errors = threading.Event(), [], []

    def read() -> None:
        inside.wait(10)
        try:
            seen.append((store.ledger.entry("half-done"), store.ledger.balances()))
            seen.append(store.state.agents())
        except Exception as exc:  # the failure this test is about
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    with pytest.raises(RolledBack), store.unit_of_work():
        store.ledger.submit(event_request("half-done", "test"))
        inside.set()
        time.sleep(0.3)  # the reader's window: it must wait, not join
        raise RolledBack
    reader.join(10)
    assert errors == [] and not reader.is_alive()
    assert seen[0][0] is None and seen[1] == []  # nothing of the rolled-back unit
    store.close()


def test_units_of_work_from_two_threads_each_commit_whole(tmp_path: Path) -> None:
    store = NodeStore.open(tmp_path, time.time)
    errors: list[Exception] = []

    def writes(name: str) -> None:
        try:
            for i in range(50):
                with store.unit_of_work():
                    store.ledger.submit(event_request(f"{name}-{i}-a", "test"))
                    store.ledger.submit(event_request(f"{name}-{i}-b", "test"))
                store.ledger.entry(f"{name}-{i}-a")  # a read outside any unit, meanwhile
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writes, args=(n,)) for n in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    keys = {entry.key for entry in store.ledger.entries()}
    assert all(f"{n}-{i}-{s}" in keys for n in "xy" for i in range(50) for s in "ab")
    assert store.ledger.verify().ok
    store.close()
