"""Random journals for property tests of compaction: the entries a node writes (funding, bills,
audits, slashing, bonds, bounties, decisions), with retries, refusals and times that sometimes
run backwards (an entry's `at` comes from its writer's clock)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    SLASHING,
    TREASURY,
    EntryRequest,
    JournalRecord,
    Ledger,
    LedgerError,
    Movement,
    StoredAccount,
    agent_account,
    batch_request,
    event_request,
    open_request,
    stake_account,
    transfer_request,
)

AGENTS = ("a", "b", "c")
amounts = st.integers(min_value=1, max_value=3_000_000)


@dataclass(frozen=True)
class Op:
    """A request and the time its writer stamps it with."""

    request: EntryRequest
    at: float


def _request(draw: st.DrawFn, key: str, earlier: list[Op]) -> EntryRequest:
    agent = draw(st.sampled_from(AGENTS))
    account, stake = agent_account(agent), stake_account(agent)
    who = {"agent": agent}
    choice = draw(st.integers(min_value=0, max_value=11))
    if choice == 0:
        return open_request(draw(st.sampled_from([account, stake])))
    if choice == 1:
        return transfer_request(key, TREASURY, account, draw(amounts), kind="fund", detail=who)
    if choice == 2:
        movements = [Movement(account, GRID, draw(amounts))]
        if draw(st.booleans()):
            movements.append(Movement(account, LANDAUER, draw(amounts)))
        return batch_request(key, movements, kind="bill", detail=who)
    if choice == 3:  # a refund billed back: a negative leg on grid
        return transfer_request(key, GRID, account, draw(amounts), kind="bill", detail=who)
    if choice == 4:
        return event_request(key, "audited", who)
    if choice == 5:
        if draw(st.booleans()):
            return event_request(key, "slashed", who)  # nothing left to take
        return transfer_request(key, stake, SLASHING, draw(amounts), kind="slashed", detail=who)
    if choice == 6:
        return transfer_request(key, TREASURY, account, draw(amounts), kind="bounty", detail=who)
    if choice == 7:
        return transfer_request(key, account, stake, draw(amounts), kind="bond", detail=who)
    if choice == 8:
        other = agent_account(draw(st.sampled_from(AGENTS)))
        if other == account:
            return event_request(key, "frozen", who)
        return transfer_request(key, account, other, draw(amounts))
    if choice == 9:  # details whose agent the totals must ignore, or count under ""
        odd = draw(st.sampled_from([7, None, "", ["a"]]))
        return event_request(key, draw(st.sampled_from(["audited", "bounty"])), {"agent": odd})
    if choice == 10 and earlier:  # a retry: same key, same content
        return draw(st.sampled_from(earlier)).request
    return event_request(key, "frozen", who)


@st.composite
def journal_ops(draw: st.DrawFn, max_size: int = 40) -> list[Op]:
    """Requests in order, each with a time: mostly rising, sometimes a little behind. Most
    journals start by opening and funding every agent's accounts, so that money moves."""
    ops: list[Op] = []
    if draw(st.integers(min_value=0, max_value=4)):
        for agent in AGENTS:
            account, stake = agent_account(agent), stake_account(agent)
            ops += [Op(open_request(account), 0.5), Op(open_request(stake), 0.5)]
            funding = draw(st.integers(min_value=1, max_value=20_000_000))
            fund = transfer_request(f"fund:{agent}", TREASURY, account, funding, kind="fund")
            ops.append(Op(fund, 0.5))
    for index in range(draw(st.integers(min_value=0, max_value=max_size))):
        request = _request(draw, f"k{index}", ops)
        jitter = draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, -1.5]))
        ops.append(Op(request, 1.0 + index + jitter))
    return ops


def apply(ops: list[Op], submit: Callable[[EntryRequest, float], object]) -> None:
    """Submit every op, skipping those the rules refuse (as a writer that was told no would)."""
    for op in ops:
        with contextlib.suppress(LedgerError):  # refused: nothing was applied, go on
            submit(op.request, op.at)


def build(ops: list[Op]) -> Ledger:
    """The in-memory ledger the ops make, from genesis at time 0."""
    ledger = Ledger.genesis(at=0.0)
    apply(ops, lambda request, at: ledger.submit(request, at=at))
    return ledger


def copy(ledger: Ledger) -> Ledger:
    return Ledger.replay(ledger.entries(), folded=ledger.folded_keys())


def records(ledger: Ledger) -> list[JournalRecord]:
    """The ledger's journal as storage would return it, for `audit`."""
    return [
        JournalRecord(
            e.seq, e.key, e.kind, e.at, e.detail_json, tuple((g.account, g.delta) for g in e.legs)
        )
        for e in ledger.entries()
    ]


def stored(ledger: Ledger) -> list[StoredAccount]:
    return [
        StoredAccount(a.name, int(a.allow_credit), a.balance) for a in ledger.accounts().values()
    ]


def folded_pairs(ledger: Ledger) -> list[tuple[object, object]]:
    return [(folded.key, folded.seq) for folded in ledger.folded_keys()]


times = st.floats(min_value=-2.0, max_value=45.0, allow_nan=False)
