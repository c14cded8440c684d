"""How many events of each kind the node's journal took since the daemon started: the counts
behind `maxwell_events_total{kind}` (apoptosis, audits and slashes as rates on a dashboard).

Rules and invariants:

- Each kind the tally is given starts at 0, so every series exists before its first event
  (a rate over it is 0, not "no data").
- Counts only grow: each entry is counted once, however often and from however many threads the
  counts are read (a lock serialises the reads).
- A read costs the entries written since the last read, never the whole journal: the cursor
  moves to `upto_seq` (the last committed entry the caller knows of), so the entries the kinds
  leave out (bills) are not read again either.
- It only reads, through the store's read-only connection (`NodeStore.reader`): no lock of the
  daemon, never a unit of work in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from maxwell.node.state import JournalEvent

__all__ = ["EventTally"]


class _Journal(Protocol):
    def journal_events(
        self, kinds: Sequence[str], after_seq: int, limit: int
    ) -> list[JournalEvent]: ...


class EventTally:
    """Counts by kind of the journal's entries after `after_seq` (see the module)."""

    def __init__(
        self, journal: _Journal, kinds: Sequence[str], *, after_seq: int, batch: int = 10_000
    ) -> None:
        if batch < 1:
            raise ValueError(f"a batch must hold at least one entry, got {batch}")
        self._journal = journal
        self._kinds = tuple(kinds)
        self._counts = dict.fromkeys(self._kinds, 0)
        self._seq = max(after_seq, 0)
        self._batch = batch
        self._lock = threading.Lock()

    def counts(self, upto_seq: int) -> dict[str, int]:
        """The counts once every entry up to `upto_seq` (inclusive) is counted."""
        with self._lock:
            while self._seq < upto_seq:
                found = self._journal.journal_events(self._kinds, self._seq, self._batch)
                counted = [event for event in found if event.seq <= upto_seq]
                for event in counted:
                    self._counts[event.kind] += 1
                if len(counted) < self._batch:  # all read up to `upto_seq`
                    self._seq = upto_seq
                else:
                    self._seq = counted[-1].seq
            return dict(self._counts)
