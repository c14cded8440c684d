from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.runner.policy import Action, BudgetPolicy, Phase

J = 1_000_000


def test_kill_at_first_observation_over_budget_without_grace() -> None:
    policy = BudgetPolicy(budget_uj=10 * J, interval_s=0.5)
    assert policy.observe(now_s=0.5, used_uj=4 * J, power_w=8.0).action is Action.NONE
    decision = policy.observe(now_s=1.0, used_uj=10 * J, power_w=12.0)
    assert decision.action is Action.KILL
    assert policy.phase is Phase.KILLED
    assert policy.apoptosis_at_s == 1.0
    assert policy.energy_at_apoptosis_uj == 10 * J
    assert policy.observe(now_s=1.5, used_uj=11 * J, power_w=1.0).action is Action.NONE


def test_grace_period_terminates_then_kills_after_grace() -> None:
    policy = BudgetPolicy(budget_uj=J, interval_s=1.0, grace_s=2.0)
    first = policy.observe(now_s=3.0, used_uj=2 * J, power_w=1.0)
    assert first.action is Action.TERMINATE
    assert first.next_check_s == 1.0
    assert policy.observe(now_s=4.0, used_uj=3 * J, power_w=1.0).action is Action.NONE
    last = policy.observe(now_s=4.5, used_uj=3 * J, power_w=1.0)
    assert last.action is Action.NONE
    assert last.next_check_s == pytest.approx(0.5)
    assert policy.observe(now_s=5.0, used_uj=4 * J, power_w=1.0).action is Action.KILL


def test_next_check_comes_early_when_the_budget_is_about_to_run_out() -> None:
    policy = BudgetPolicy(budget_uj=10 * J, interval_s=1.0)
    # 1 J left at 4 W: the budget runs out in 0.25 s, so look again then.
    assert policy.observe(now_s=0, used_uj=9 * J, power_w=4.0).next_check_s == pytest.approx(0.25)
    # Never busier than the floor.
    assert policy.observe(now_s=0, used_uj=10 * J - 1, power_w=1e6).next_check_s == 0.01


def test_invalid_policies_are_rejected() -> None:
    with pytest.raises(ValueError):
        BudgetPolicy(budget_uj=0, interval_s=1.0)
    with pytest.raises(ValueError):
        BudgetPolicy(budget_uj=1, interval_s=0)
    with pytest.raises(ValueError):
        BudgetPolicy(budget_uj=1, interval_s=1, grace_s=-1)


@given(
    budget_j=st.integers(min_value=1, max_value=50),
    power_w=st.floats(min_value=1.0, max_value=500.0),
    interval_s=st.floats(min_value=0.05, max_value=2.0),
)
def test_overshoot_is_within_one_interval_of_energy(
    budget_j: int, power_w: float, interval_s: float
) -> None:
    """A constant burn observed when the policy asks: apoptosis within one interval's energy."""
    policy = BudgetPolicy(budget_uj=budget_j * J, interval_s=interval_s)
    now = 0.0
    while True:
        used = round(power_w * now * J)
        decision = policy.observe(now_s=now, used_uj=used, power_w=power_w)
        if decision.action is Action.KILL:
            break
        now += decision.next_check_s
    assert policy.energy_at_apoptosis_uj is not None
    overshoot_uj = policy.energy_at_apoptosis_uj - budget_j * J
    assert 0 <= overshoot_uj <= power_w * interval_s * J + 1
