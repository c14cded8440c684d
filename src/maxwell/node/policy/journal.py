"""Per-agent totals read back from the ledger's journal, so a restarted daemon shows what it
showed before. Pure: entries in, totals out; no clock, file or database.

Rules:

- Only entries whose detail names an `agent` (a string) count; all others are ignored.
- `bill`: its legs on `grid` and on `landauer` add their deltas to ("<agent>", "grid") and
  ("<agent>", "landauer"); a bill with no leg on one of them leaves that total alone.
- `audited` and `slashed`: one more ("<agent>", "audits"); a `slashed` entry also adds the money
  it moved (the sum of its positive deltas, possibly 0) to ("<agent>", "slashed").
- `bounty`: one more ("<agent>", "proofs"), and its positive deltas to ("<agent>", "bounty").
- A total appears as soon as one entry contributes to it, even when its sum is 0.
- A checkpoint (`maxwell ledger compact`) counts as the entries it folded: its summary keeps, per
  agent and kind, the number of entries and, per account, the number of legs and the sums of
  their positive and negative deltas, which is all these rules read. So the totals of a journal
  are the same before and after compaction (property-tested).
"""

from __future__ import annotations

from collections.abc import Iterable

from maxwell.economy.ledger import GRID, LANDAUER, Entry, Tally, tallies

__all__ = ["journal_totals"]

# The kinds of entries these totals read; everything else in the journal is not theirs.
_BILL = "bill"
_AUDITED = "audited"
_SLASHED = "slashed"
_BOUNTY = "bounty"


def journal_totals(entries: Iterable[Entry]) -> dict[tuple[str, str], int]:
    """Per (agent, what): µ$J paid to "grid" and "landauer" by bills, taken by slashing
    ("slashed"), earned by proofs ("bounty"), and the counts of "audits" and "proofs"."""
    totals: dict[tuple[str, str], int] = {}

    def add(agent: str, what: str, amount: int) -> None:
        totals[(agent, what)] = totals.get((agent, what), 0) + amount

    for (agent, kind), tally in tallies(entries).items():
        if agent is None:
            continue
        if kind == _BILL:
            for account in (GRID, LANDAUER):
                moved = tally.legs.get(account)
                if moved is not None:
                    add(agent, account, moved.net)
        elif kind in (_AUDITED, _SLASHED):
            add(agent, "audits", tally.entries)
            if kind == _SLASHED:
                add(agent, "slashed", _credited(tally))
        elif kind == _BOUNTY:
            add(agent, "proofs", tally.entries)
            add(agent, "bounty", _credited(tally))
    return totals


def _credited(tally: Tally) -> int:
    """The money the entries moved: the sum of their positive deltas over every account."""
    return sum(moved.credited for moved in tally.legs.values())
