"""`EventTally`: the journal's events by kind since the daemon started, behind
`maxwell_events_total`, read from a real node store through its read-only connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.economy.ledger import event_request
from maxwell.node.eventtally import EventTally
from maxwell.node.store import NodeStore

KINDS = ("apoptosis", "audited", "slashed")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    opened = NodeStore.open(tmp_path, time.time)
    try:
        yield opened
    finally:
        opened.close()


def _journal(store: NodeStore, *kinds: str) -> int:
    """Write one event entry per kind (in one unit of work); the last entry's seq."""
    with store.unit_of_work():
        for kind in kinds:
            store.ledger.submit(event_request(f"{kind}-{time.monotonic_ns()}", kind))
    return store.ledger.entries_written()


def test_every_kind_starts_at_zero_and_counts_only_entries_after_the_start(
    store: NodeStore,
) -> None:
    before = _journal(store, "apoptosis", "apoptosis")  # the daemon's last run: not counted
    tally = EventTally(store.reader, KINDS, after_seq=before)
    assert tally.counts(before) == dict.fromkeys(KINDS, 0)
    upto = _journal(store, "apoptosis", "bill", "audited", "slashed", "audited", "test")
    assert tally.counts(upto) == {"apoptosis": 1, "audited": 2, "slashed": 1}
    assert tally.counts(upto) == {"apoptosis": 1, "audited": 2, "slashed": 1}  # once each


def test_entries_after_upto_wait_for_a_later_read(store: NodeStore) -> None:
    tally = EventTally(store.reader, KINDS, after_seq=0)
    first = _journal(store, "audited")
    second = _journal(store, "audited", "slashed")
    assert tally.counts(first) == {"apoptosis": 0, "audited": 1, "slashed": 0}
    assert tally.counts(second) == {"apoptosis": 0, "audited": 2, "slashed": 1}


def test_small_batches_count_a_long_journal_whole(store: NodeStore) -> None:
    upto = _journal(store, *(["audited", "bill", "slashed"] * 7))
    tally = EventTally(store.reader, KINDS, after_seq=0, batch=2)
    assert tally.counts(upto) == {"apoptosis": 0, "audited": 7, "slashed": 7}


def test_threads_reading_at_once_count_each_entry_once(store: NodeStore) -> None:
    upto = _journal(store, *(["apoptosis"] * 50))
    tally = EventTally(store.reader, KINDS, after_seq=0, batch=3)
    seen: list[dict[str, int]] = []
    readers = [threading.Thread(target=lambda: seen.append(tally.counts(upto))) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert seen == [{"apoptosis": 50, "audited": 0, "slashed": 0}] * 4


def test_a_batch_below_one_is_refused(store: NodeStore) -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        EventTally(store.reader, KINDS, after_seq=0, batch=0)
