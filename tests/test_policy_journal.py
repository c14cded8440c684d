"""`journal_totals`: per-agent totals read back from the journal, as the daemon computed them,
and the same after any part of the journal is folded into a checkpoint."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_journals import Op, build, copy, journal_ops, times
from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    SLASHING,
    TREASURY,
    Entry,
    Ledger,
    Movement,
    agent_account,
    stake_account,
)
from maxwell.node.policy import journal
from maxwell.node.policy.journal import journal_totals


def daemon_rule(entries: Iterable[Entry]) -> dict[tuple[str, str], int]:
    """`NodeDaemon._journal_totals` as it read the journal before compaction existed (copied)."""
    totals: dict[tuple[str, str], int] = {}

    def add(agent: str, what: str, amount: int) -> None:
        totals[(agent, what)] = totals.get((agent, what), 0) + amount

    for entry in entries:
        agent = entry.detail.get("agent")
        if not isinstance(agent, str):
            continue
        if entry.kind == "bill":
            for leg in entry.legs:
                if leg.account in ("grid", "landauer"):
                    add(agent, leg.account, leg.delta)
        elif entry.kind in ("audited", "slashed"):
            add(agent, "audits", 1)
            if entry.kind == "slashed":
                taken = sum(leg.delta for leg in entry.legs if leg.delta > 0)
                add(agent, "slashed", taken)
        elif entry.kind == "bounty":
            add(agent, "proofs", 1)
            add(agent, "bounty", sum(leg.delta for leg in entry.legs if leg.delta > 0))
    return totals


@settings(max_examples=200, deadline=None)
@given(ops=journal_ops(), before=times, later=st.floats(min_value=0.0, max_value=20.0))
def test_totals_are_the_same_after_compaction_at_any_time(
    ops: list[Op], before: float, later: float
) -> None:
    ledger = build(ops)
    expected = daemon_rule(ledger.entries())
    assert journal_totals(ledger.entries()) == expected
    compacted = copy(ledger)
    for cut in (before, before + later):  # the second folds the first checkpoint again
        compacted.compact(before=cut)
        assert journal_totals(compacted.entries()) == expected


def hand_made() -> Ledger:
    ledger = Ledger.genesis(at=0.0)
    alice, bob, stake = agent_account("alice"), agent_account("bob"), stake_account("alice")
    for account in (alice, bob, stake):
        ledger.open_account(account, at=0.0)
    ledger.transfer("fund-a", TREASURY, alice, 10_000, kind="fund", detail={"agent": "alice"}, at=1)
    ledger.transfer("fund-b", TREASURY, bob, 10_000, kind="fund", at=1)
    ledger.transfer("bond-a", alice, stake, 500, kind="bond", detail={"agent": "alice"}, at=1)
    for tick, (energy, tax) in enumerate([(100, 1), (200, 2)], start=2):
        movements = [Movement(alice, GRID, energy), Movement(alice, LANDAUER, tax)]
        ledger.post(f"bill-a-{tick}", movements, kind="bill", detail={"agent": "alice"}, at=tick)
    ledger.transfer("bill-b", bob, GRID, 10, kind="bill", detail={"agent": "bob"}, at=4)
    ledger.record("audit-1", "audited", {"agent": "alice"}, at=5)
    ledger.transfer("slash-1", stake, SLASHING, 50, kind="slashed", detail={"agent": "alice"}, at=6)
    ledger.record("slash-2", "slashed", {"agent": "alice"}, at=7)  # nothing left to take
    ledger.transfer("proof-1", TREASURY, alice, 300, kind="bounty", detail={"agent": "alice"}, at=8)
    ledger.record("frozen-b", "frozen", {"agent": "bob"}, at=9)
    ledger.record("odd", "audited", {"agent": 7}, at=10)
    return ledger


EXPECTED = {
    ("alice", "grid"): 300,
    ("alice", "landauer"): 3,
    ("alice", "audits"): 3,
    ("alice", "slashed"): 50,
    ("alice", "proofs"): 1,
    ("alice", "bounty"): 300,
    ("bob", "grid"): 10,
}


@pytest.mark.parametrize("before", [None, 0.5, 3.0, 6.5, 7.5, 100.0])
def test_hand_computed_totals(before: float | None) -> None:
    ledger = hand_made()
    if before is not None:
        ledger.compact(before=before)
    assert journal_totals(ledger.entries()) == EXPECTED
    assert journal_totals([]) == {}


def test_the_policy_imports_no_io() -> None:
    """Pure: nothing that reads a clock, a file or a database."""
    tree = ast.parse(Path(journal.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "maxwell.economy.ledger"}
