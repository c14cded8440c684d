"""The budget policy of `maxwell run`: when to warn, terminate and kill. Pure.

Rules and invariants:

- The policy sees only cumulative attributed energy (integer µJ), the recent burn rate and `now`;
  it never reads a clock or touches a process. It returns what to do and when to look again.
- Phases only move forward: RUNNING -> TERMINATING (SIGTERM sent, grace running) -> KILLED.
  With zero grace RUNNING goes straight to KILLED.
- Apoptosis strikes at the first observation where used >= budget. To keep the overshoot within
  one interval's energy (usually far less), the next observation is scheduled no later than the
  moment the current burn rate would exhaust the budget, bounded below by `min_interval_s`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

UJ_PER_J = 1_000_000


class Phase(enum.Enum):
    RUNNING = "running"
    TERMINATING = "terminating"
    KILLED = "killed"


class Action(enum.Enum):
    NONE = "none"
    TERMINATE = "terminate"  # SIGTERM to the whole group, start the grace period
    KILL = "kill"  # freeze, then SIGKILL every process in the group


@dataclass(frozen=True)
class Decision:
    action: Action
    next_check_s: float  # seconds until the next observation


@dataclass
class BudgetPolicy:
    budget_uj: int
    interval_s: float
    grace_s: float = 0.0
    min_interval_s: float = 0.01
    phase: Phase = Phase.RUNNING
    apoptosis_at_s: float | None = None
    energy_at_apoptosis_uj: int | None = None

    def __post_init__(self) -> None:
        if self.budget_uj <= 0:
            raise ValueError("budget must be positive")
        if self.interval_s <= 0:
            raise ValueError("interval must be positive")
        if self.grace_s < 0:
            raise ValueError("grace must not be negative")
        self.min_interval_s = min(self.min_interval_s, self.interval_s)

    @property
    def exhausted(self) -> bool:
        return self.apoptosis_at_s is not None

    def observe(self, *, now_s: float, used_uj: int, power_w: float) -> Decision:
        """Decide after one observation of cumulative energy `used_uj` at burn rate `power_w`."""
        if self.phase is Phase.KILLED:
            return Decision(Action.NONE, self.interval_s)
        if self.phase is Phase.RUNNING and used_uj >= self.budget_uj:
            self.apoptosis_at_s = now_s
            self.energy_at_apoptosis_uj = used_uj
            if self.grace_s > 0:
                self.phase = Phase.TERMINATING
                return Decision(Action.TERMINATE, min(self.interval_s, self.grace_s))
            self.phase = Phase.KILLED
            return Decision(Action.KILL, self.interval_s)
        if self.phase is Phase.TERMINATING:
            assert self.apoptosis_at_s is not None
            remaining_grace = self.apoptosis_at_s + self.grace_s - now_s
            if remaining_grace <= 0:
                self.phase = Phase.KILLED
                return Decision(Action.KILL, self.interval_s)
            return Decision(Action.NONE, max(min(self.interval_s, remaining_grace), 0.0))
        return Decision(Action.NONE, self._next_check(used_uj, power_w))

    def _next_check(self, used_uj: int, power_w: float) -> float:
        if power_w <= 0:
            return self.interval_s
        seconds_left = (self.budget_uj - used_uj) / UJ_PER_J / power_w
        return max(self.min_interval_s, min(self.interval_s, seconds_left))
