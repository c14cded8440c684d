"""Experiments on the audit policy, deterministic under a seed: how soon a persistent cheater is
caught, against the closed form `1 - (1 - p)^N`, and what cheating earns it over time: an
under-reporter (`cheater_profit`) and a silent cheater (`silent_cheater_profit`).

The model is the daemon's: each tick the cheater under-reports and keeps `gain` it should have
paid; each tick it is audited with probability `p` (`draw_audits`); an audit catches the lie
(q = 1, the counters check), takes the Becker bond (`becker_bond`) and claws back everything the
cheater kept since its last audit. After being caught it is billed by the meter: it gains nothing
more. Pure: the random generator is seeded by the caller.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from maxwell.audit.policy import becker_bond, detection_probability, draw_audits
from maxwell.units import Money


@dataclass(frozen=True)
class DetectionPoint:
    ticks: int
    measured: float  # fraction of cheaters caught within `ticks`
    expected: float  # 1 - (1 - p)^ticks


def detection_curve(
    p: float, checkpoints: list[int], trials: int, seed: int
) -> list[DetectionPoint]:
    """Run `trials` persistent cheaters for `max(checkpoints)` ticks; the fraction caught by each
    checkpoint, beside the closed form."""
    rng = random.Random(seed)
    horizon = max(checkpoints)
    caught_at: list[int | None] = []
    for _ in range(trials):
        tick_caught: int | None = None
        for tick in range(1, horizon + 1):
            if draw_audits(["cheater"], p, rng):
                tick_caught = tick
                break
        caught_at.append(tick_caught)
    points = []
    for ticks in checkpoints:
        caught = sum(1 for at in caught_at if at is not None and at <= ticks)
        points.append(DetectionPoint(ticks, caught / trials, detection_probability(p, ticks)))
    return points


@dataclass(frozen=True)
class ProfitPath:
    """A cheater's mean cumulative profit (µ$J) at each checkpoint, over many runs."""

    bond: int
    checkpoints: list[int]
    mean_profit: list[float]


def cheater_profit(
    p: float, gain: int, checkpoints: list[int], trials: int, seed: int, *, bonded: bool = True
) -> ProfitPath:
    """Mean cumulative profit of a cheater that keeps `gain` µ$J per tick until it is caught:
    what it kept, less the bond and the claw-back when an audit catches it (`bonded=False`: no
    bond, only the claw-back, for comparison)."""
    rng = random.Random(seed)
    bond = becker_bond(Money(gain), p) if bonded else 0
    horizon = max(checkpoints)
    totals = [0.0] * len(checkpoints)
    for _ in range(trials):
        profit = 0
        kept_since_audit = 0
        caught = False
        index = 0
        for tick in range(1, horizon + 1):
            if not caught:
                profit += gain
                kept_since_audit += gain
                if draw_audits(["cheater"], p, rng):
                    profit -= kept_since_audit + bond
                    caught = True
            while index < len(checkpoints) and checkpoints[index] == tick:
                totals[index] += profit
                index += 1
    return ProfitPath(bond, list(checkpoints), [total / trials for total in totals])


def silent_cheater_profit(
    p: float, gain: int, lease_ticks: int, checkpoints: list[int], trials: int, seed: int
) -> ProfitPath:
    """Mean cumulative profit of the silent cheater: it reports honestly once, then never again.
    Its claim holds for its lease (`lease_ticks`, the node's `report_lease_s` over its tick):
    meanwhile it keeps `gain` µ$J a tick unbilled, and an audit compares the claim with what the
    claim had to cover, which it does. Once the lease lapses it is billed by the meter (it
    gains nothing more) and every audit compares its stale claim with the counters of the
    moment: the first one catches it, takes the Becker bond and claws back what it kept."""
    rng = random.Random(seed)
    bond = becker_bond(Money(gain), p)
    horizon = max(checkpoints)
    totals = [0.0] * len(checkpoints)
    for _ in range(trials):
        profit = kept = 0
        caught = False
        index = 0
        for tick in range(1, horizon + 1):
            if not caught and tick <= lease_ticks:
                profit += gain
                kept += gain
            elif not caught and draw_audits(["cheater"], p, rng):
                profit -= kept + bond
                caught = True
            while index < len(checkpoints) and checkpoints[index] == tick:
                totals[index] += profit
                index += 1
    return ProfitPath(bond, list(checkpoints), [total / trials for total in totals])
