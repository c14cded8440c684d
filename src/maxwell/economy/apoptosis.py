"""Apoptosis: which agents to freeze, thaw or kill this tick. Pure policy.

An agent is `solvent` when its balance is positive and covers its burn over the next tick
(`balance > 0 and balance >= burn_per_s x tick_s`); otherwise it is insolvent. Each tick:

- a RUNNING agent that is insolvent is FROZEN (event `frozen`, with the reason);
- a FROZEN agent whose balance again covers `thaw_ticks` ticks of its burn (1 by default) is
  THAWED (event `thawed`) and runs again;
- a FROZEN agent still not funded after `grace_s` since it was frozen is KILLED (event
  `apoptosis`);
- anything else gets no decision.

Rules and invariants:

- Phases move only running -> frozen -> (grace) -> dead, or frozen -> running (thawed). There is
  no running -> dead step, and a dead agent never comes back, however much it is funded.
- No agent is killed unless it has been frozen for at least `grace_s` (`now_s - frozen_since_s`);
  a re-frozen agent starts a new grace period.
- No solvent agent is frozen. At most one decision per agent per tick.
- Decisions are a deterministic function of the arguments, sorted by agent id, whatever the order
  of the input.
- The caller owns the state: it applies each decision (`apply_decision`) and journals it
  (`Decision.to_journal()` gives the non-monetary entry's kind and JSON detail).
- For a frozen agent, `burn_per_s` must be the rate it will burn when it runs again (its last
  running rate), not its burn while frozen (about zero), or every freeze would thaw at once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from maxwell.units import Money


class Phase(enum.Enum):
    RUNNING = "running"
    FROZEN = "frozen"
    DEAD = "dead"


class Action(enum.Enum):
    """What a decision does; the value is the journal event's kind."""

    FREEZE = "frozen"
    THAW = "thawed"
    KILL = "apoptosis"


@dataclass(frozen=True)
class AgentState:
    """One agent as the policy sees it: balance (µ$J), recent burn (µ$J per second), phase."""

    agent: str
    balance: Money
    burn_per_s: float
    phase: Phase = Phase.RUNNING
    frozen_since_s: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.burn_per_s) or self.burn_per_s < 0:
            raise ValueError(f"{self.agent}: burn_per_s must be finite and >= 0")
        if (self.phase is Phase.FROZEN) != (self.frozen_since_s is not None):
            raise ValueError(
                f"{self.agent}: frozen_since_s is set exactly when the agent is frozen"
            )


@dataclass(frozen=True)
class Decision:
    """One transition for one agent at `at_s`; each becomes a journal event."""

    agent: str
    action: Action
    reason: str
    at_s: float
    balance: Money
    required: Money
    frozen_since_s: float | None = None

    def to_journal(self) -> tuple[str, dict[str, object]]:
        """The journal entry's kind and its JSON-serialisable detail."""
        detail: dict[str, object] = {
            "agent": self.agent,
            "reason": self.reason,
            "at_s": self.at_s,
            "balance": int(self.balance),
            "required": int(self.required),
        }
        if self.frozen_since_s is not None:
            detail["frozen_since_s"] = self.frozen_since_s
        return self.action.value, detail


def required_balance(burn_per_s: float, tick_s: float, ticks: float = 1.0) -> Money:
    """Least balance (µ$J) that is positive and covers `ticks` ticks at `burn_per_s`.

    For an integer balance, `balance >= required_balance(...)` is exactly
    `balance > 0 and balance >= burn_per_s x tick_s x ticks`.
    """
    return Money(max(math.ceil(burn_per_s * tick_s * ticks), 1))


def is_solvent(state: AgentState, tick_s: float, ticks: float = 1.0) -> bool:
    """Balance positive and covering `ticks` ticks of the agent's burn."""
    return state.balance >= required_balance(state.burn_per_s, tick_s, ticks)


def decide(
    agents: Iterable[AgentState],
    *,
    now_s: float,
    tick_s: float,
    grace_s: float,
    thaw_ticks: float = 1.0,
) -> list[Decision]:
    """This tick's transitions for `agents`, sorted by agent id (see the module comment)."""
    if not math.isfinite(now_s):
        raise ValueError(f"now_s must be finite, got {now_s!r}")
    if not math.isfinite(tick_s) or tick_s <= 0:
        raise ValueError(f"tick_s must be > 0, got {tick_s!r}")
    if not math.isfinite(grace_s) or grace_s < 0:
        raise ValueError(f"grace_s must be >= 0, got {grace_s!r}")
    if not math.isfinite(thaw_ticks) or thaw_ticks < 1:
        raise ValueError(f"thaw_ticks must be >= 1, got {thaw_ticks!r}")
    by_id: dict[str, AgentState] = {}
    for state in agents:
        if state.agent in by_id:
            raise ValueError(f"agent {state.agent!r} appears twice")
        by_id[state.agent] = state
    decisions: list[Decision] = []
    for agent in sorted(by_id):
        decision = _decide_one(
            by_id[agent], now_s=now_s, tick_s=tick_s, grace_s=grace_s, thaw_ticks=thaw_ticks
        )
        if decision is not None:
            decisions.append(decision)
    return decisions


def _decide_one(
    state: AgentState, *, now_s: float, tick_s: float, grace_s: float, thaw_ticks: float
) -> Decision | None:
    if state.phase is Phase.DEAD:
        return None
    required = required_balance(state.burn_per_s, tick_s)
    if state.phase is Phase.RUNNING:
        if is_solvent(state, tick_s):
            return None
        if state.balance <= 0:
            reason = f"balance {state.balance} µ$J is not positive"
        else:
            reason = (
                f"balance {state.balance} µ$J cannot cover the next tick: needs {required} µ$J "
                f"({state.burn_per_s:g} µ$J/s for {tick_s:g} s)"
            )
        return Decision(state.agent, Action.FREEZE, reason, now_s, state.balance, required, now_s)
    frozen_since_s = state.frozen_since_s
    assert frozen_since_s is not None  # AgentState guarantees it for a frozen agent
    if now_s < frozen_since_s:
        raise ValueError(f"{state.agent}: now_s {now_s} is before frozen_since_s {frozen_since_s}")
    if is_solvent(state, tick_s, thaw_ticks):
        thaw_required = required_balance(state.burn_per_s, tick_s, thaw_ticks)
        reason = f"funded again: balance {state.balance} µ$J covers {thaw_ticks:g} tick(s)"
        return Decision(
            state.agent, Action.THAW, reason, now_s, state.balance, thaw_required, frozen_since_s
        )
    frozen_for_s = now_s - frozen_since_s
    if frozen_for_s >= grace_s:
        reason = (
            f"still insolvent after {frozen_for_s:g} s frozen (grace {grace_s:g} s): "
            f"balance {state.balance} µ$J"
        )
        return Decision(
            state.agent, Action.KILL, reason, now_s, state.balance, required, frozen_since_s
        )
    return None


def apply_decision(state: AgentState, decision: Decision) -> AgentState:
    """The agent's state after `decision` (which must be about it and legal from its phase)."""
    if decision.agent != state.agent:
        raise ValueError(f"decision for {decision.agent!r} applied to {state.agent!r}")
    legal = {
        Action.FREEZE: Phase.RUNNING,
        Action.THAW: Phase.FROZEN,
        Action.KILL: Phase.FROZEN,
    }
    if state.phase is not legal[decision.action]:
        raise ValueError(
            f"{state.agent}: cannot apply {decision.action.value} to a {state.phase.value} agent"
        )
    if decision.action is Action.FREEZE:
        return replace(state, phase=Phase.FROZEN, frozen_since_s=decision.at_s)
    if decision.action is Action.THAW:
        return replace(state, phase=Phase.RUNNING, frozen_since_s=None)
    return replace(state, phase=Phase.DEAD, frozen_since_s=None)


def apply_decisions(
    states: Mapping[str, AgentState], decisions: Iterable[Decision]
) -> dict[str, AgentState]:
    """Every agent's state after this tick's decisions (agents without one are unchanged)."""
    after = dict(states)
    for decision in decisions:
        after[decision.agent] = apply_decision(after[decision.agent], decision)
    return after
