"""The node's tables beside the ledger, its tokens, and the pending entries of a tick."""

from __future__ import annotations

import stat
from pathlib import Path

from maxwell.economy.store import LedgerStore
from maxwell.node.state import (
    ADMIN_TOKEN_FILE,
    AgentRow,
    NodeState,
    PendingEntry,
    admin_token,
    hash_token,
    new_token,
)


def open_state(tmp_path: Path) -> tuple[LedgerStore, NodeState]:
    ledger = LedgerStore.open(tmp_path / "state")
    return ledger, NodeState.open(tmp_path / "state")


def row(agent: str = "a1") -> AgentRow:
    return AgentRow(
        id=agent,
        name="worker",
        argv=("sleep", "1"),
        user=None,
        pid=None,
        cgroup={"kind": "v2", "path": "/sys/fs/cgroup/x"},
        token_hash=hash_token(agent),
        state="running",
        bid=1.5,
        demand=0.5,
        bid_seq=0,
        created_at=1.0,
    )


def test_admin_token_is_created_once_mode_0600(tmp_path: Path) -> None:
    first = admin_token(tmp_path)
    assert len(first) >= 32
    path = tmp_path / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin_token(tmp_path) == first
    assert new_token() != new_token()
    assert hash_token("x") == hash_token("x") != "x"


def test_agents_and_bids_live_in_the_ledgers_database(tmp_path: Path) -> None:
    ledger, state = open_state(tmp_path)
    try:
        state.insert_agent(row())
        seq = state.place_bid("a1", 2.0, 0.25, at=5.0)
        state.update_agent("a1", pid=123, state="frozen")
        (found,) = state.agents()
        assert (found.pid, found.state, found.bid, found.demand, found.bid_seq) == (
            123,
            "frozen",
            2.0,
            0.25,
            seq,
        )
        assert found.argv == ("sleep", "1")
        assert found.cgroup == {"kind": "v2", "path": "/sys/fs/cgroup/x"}
        assert (tmp_path / "state" / "maxwell.db").exists()
        # The ledger still verifies with the node's tables beside it.
        assert ledger.verify().ok
    finally:
        state.close()
        ledger.close()


def test_a_tick_commits_counters_and_pending_entries_together(tmp_path: Path) -> None:
    ledger, state = open_state(tmp_path)
    try:
        state.insert_agent(row())
        assert state.last_tick() == (0, None)
        entry = PendingEntry(
            key="bill:1:a1",
            tick=1,
            kind="bill",
            movements=(("agent:a1", "grid", 5),),
            detail={"agent": "a1", "energy_uj": 5},
        )
        state.commit_tick(1, 10.5, {"a1": {"cpu_ns": 1000, "energy_uj": 5}}, [entry])
        assert state.last_tick() == (1, 10.5)
        assert state.pending() == [entry]
        assert state.agents()[0].cpu_ns == 1000
        state.clear_pending([entry.key])
        assert state.pending() == []
    finally:
        state.close()
        ledger.close()


def test_journal_events_read_back_by_kind(tmp_path: Path) -> None:
    ledger, state = open_state(tmp_path)
    try:
        ledger.record("e1", "frozen", {"agent": "a1"})
        ledger.record("e2", "other", {"agent": "a1"})
        ledger.record("e3", "thawed", {"agent": "a1"})
        events = state.journal_events(("frozen", "thawed"), 0, 10)
        assert [e.kind for e in events] == ["frozen", "thawed"]
        assert state.journal_events(("frozen", "thawed"), events[0].seq, 10)[0].kind == "thawed"
        assert state.journal_events(("frozen", "thawed"), 0, 1)[0].kind == "frozen"
    finally:
        state.close()
        ledger.close()
