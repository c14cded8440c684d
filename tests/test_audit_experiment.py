"""The audit experiments: detection against the closed form, a cheater's profit, seeded."""

from __future__ import annotations

import pytest

from maxwell.audit.experiment import cheater_profit, detection_curve, silent_cheater_profit
from maxwell.audit.policy import becker_bond
from maxwell.units import Money


def test_detection_follows_one_minus_one_minus_p_to_the_n() -> None:
    points = detection_curve(0.01, [10, 69, 200, 460], trials=4_000, seed=1)
    for point in points:
        # 4,000 trials: the binomial standard error is under 0.008; allow 4 of them.
        assert point.measured == pytest.approx(point.expected, abs=0.032)
    assert [p.ticks for p in points] == [10, 69, 200, 460]
    assert points[-1].expected == pytest.approx(0.99, abs=0.001)


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    first = detection_curve(0.05, [5, 20], trials=300, seed=9)
    assert detection_curve(0.05, [5, 20], trials=300, seed=9) == first
    assert detection_curve(0.05, [5, 20], trials=300, seed=10) != first
    assert cheater_profit(0.05, 10, [5, 50], 200, seed=3) == cheater_profit(
        0.05, 10, [5, 50], 200, seed=3
    )


def test_with_the_becker_bond_cheating_loses_money_and_without_it_does_not() -> None:
    bonded = cheater_profit(0.01, 1_000, [1, 100, 1_000], trials=2_000, seed=5)
    assert bonded.bond == 99_000  # (1 - p) / p x gain
    assert bonded.mean_profit[-1] < 0  # in the long run, the bond outweighs what was kept
    assert bonded.mean_profit[-1] < bonded.mean_profit[1] < bonded.mean_profit[0]
    free = cheater_profit(0.01, 1_000, [1, 100, 1_000], trials=2_000, seed=5, bonded=False)
    assert free.bond == 0 and min(free.mean_profit) >= 0


def test_the_silent_cheater_keeps_at_most_its_lease_and_then_loses_its_bond() -> None:
    p, gain, lease = 0.05, 1_000, 10
    bond = becker_bond(Money(gain), p)
    checkpoints = [5, lease, 60, 400]
    path = silent_cheater_profit(p, gain, lease, checkpoints, trials=3_000, seed=7)
    assert path.bond == bond
    assert path.mean_profit[0] == 5 * gain and path.mean_profit[1] == lease * gain  # no audit
    for ticks, measured in zip(checkpoints[2:], path.mean_profit[2:], strict=True):
        caught = 1 - (1 - p) ** (ticks - lease)  # audits after the lease catch it
        expected = lease * gain - caught * (lease * gain + bond)
        assert measured == pytest.approx(expected, abs=0.05 * (lease * gain + bond))
    assert path.mean_profit[-1] < 0
    again = silent_cheater_profit(p, gain, lease, checkpoints, trials=3_000, seed=7)
    assert again == path  # deterministic under its seed
