"""Audit judgement: from what an audit found to the ledger movements that settle it. Pure.

Rules:

- No finding: the agent is honest. Nothing moves, and nothing is forgiven: what its reports
  have under-billed so far (`shadow`) is what its claims have not covered yet (they lag the
  meter by at most a lease), and stays for the claims to come or for a later slash.
- Any finding: the agent is slashed. Its whole bond moves from its stake account to the slashing
  pool, and what its reports under-billed since the last audit is clawed back from its balance to
  the grid: `min(max(shadow, 0), balance)`, so a claw-back never overdraws the agent (the
  movements apply to a ledger that holds `balance` in the agent's account and `bond` in its stake).
- After a slash the shadow starts again from zero; a slashed agent loses its bond and goes back
  to being billed by the meter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maxwell.economy.ledger import GRID, SLASHING, agent_account, stake_account

__all__ = ["Judgement", "judge_audit"]

Movement = tuple[str, str, int]  # (debit, credit, µ$J)


@dataclass(frozen=True)
class Judgement:
    """The verdict on one audit and the money it moves."""

    honest: bool
    movements: tuple[Movement, ...]
    bond_taken: int  # µ$J moved from the stake to the slashing pool
    clawback: int  # µ$J moved from the agent's balance to the grid

    @property
    def slashed(self) -> int:
        return self.bond_taken + self.clawback


def judge_audit(
    agent: str, findings: Sequence[str], *, bond: int, shadow: int, balance: int
) -> Judgement:
    """The judgement on `agent`, holding `bond` in its stake and `balance` in its account."""
    if not findings:
        return Judgement(honest=True, movements=(), bond_taken=0, clawback=0)
    clawback = min(max(shadow, 0), max(balance, 0))
    movements: list[Movement] = []
    if bond > 0:
        movements.append((stake_account(agent), SLASHING, bond))
    if clawback > 0:
        movements.append((agent_account(agent), GRID, clawback))
    return Judgement(
        honest=False, movements=tuple(movements), bond_taken=max(bond, 0), clawback=clawback
    )
