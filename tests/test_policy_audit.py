"""Audit judgement: findings -> verdict -> ledger movements that a real ledger accepts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maxwell.economy.ledger import (
    GRID,
    SLASHING,
    TREASURY,
    Ledger,
    Movement,
    agent_account,
    batch_request,
    open_request,
    stake_account,
    transfer_request,
)
from maxwell.node.policy.audit import judge_audit

amounts = st.integers(min_value=0, max_value=10**12)
findings = st.lists(st.text(min_size=1, max_size=20), max_size=3)


def ledger_holding(agent: str, balance: int, bond: int) -> Ledger:
    """A ledger where `agent` holds `balance` and has `bond` in its stake, funded as the node
    funds (from the treasury) and bonded as the node bonds (agent -> stake)."""
    ledger = Ledger.genesis(at=0.0)
    for account in (agent_account(agent), stake_account(agent)):
        ledger.submit(open_request(account), at=0.0)
    if balance + bond:
        fund = transfer_request("fund", TREASURY, agent_account(agent), balance + bond)
        ledger.submit(fund, at=0.0)
    if bond:
        posted = transfer_request("bond", agent_account(agent), stake_account(agent), bond)
        ledger.submit(posted, at=0.0)
    return ledger


@given(findings, amounts, st.integers(-(10**12), 10**12), amounts)
def test_the_movements_apply_to_a_ledger_holding_the_inputs(
    found: list[str], bond: int, shadow: int, balance: int
) -> None:
    judgement = judge_audit("a1", found, bond=bond, shadow=shadow, balance=balance)
    ledger = ledger_holding("a1", balance, bond)
    if judgement.movements:
        moves = [Movement(d, c, a) for d, c, a in judgement.movements]
        ledger.submit(batch_request("audit", moves), at=1.0)
    balances = ledger.balances()
    assert balances[agent_account("a1")] == balance - judgement.clawback >= 0
    assert balances[stake_account("a1")] == bond - judgement.bond_taken
    assert balances.get(SLASHING, 0) == judgement.bond_taken
    assert balances.get(GRID, 0) == judgement.clawback
    assert sum(balances.values()) == 0  # double entry: the treasury holds the minted debt
    assert judgement.slashed == judgement.bond_taken + judgement.clawback


@given(findings, amounts, st.integers(-(10**12), 10**12), amounts)
def test_an_honest_agent_loses_nothing_and_a_liar_loses_its_bond_and_its_gain(
    found: list[str], bond: int, shadow: int, balance: int
) -> None:
    judgement = judge_audit("a1", found, bond=bond, shadow=shadow, balance=balance)
    assert judgement.honest == (not found)
    if not found:
        assert (judgement.movements, judgement.slashed) == ((), 0)
    else:
        assert judgement.bond_taken == bond
        assert judgement.clawback == min(max(shadow, 0), balance)
