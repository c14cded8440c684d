"""Bids are not free (`maxwell.node.tick`): an agent pays for an interval the price the clearing
that granted it set: the mechanism's unit price, capped at its bid and never below that
clearing's reserve; the reserve when it was not served."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.economy.billing import bill
from maxwell.economy.mechanisms import MECHANISM_NAMES, make_mechanism
from maxwell.node.facade import AgentState
from maxwell.node.tick import AgentTickInput, TickPlan, plan_tick
from maxwell.units import Money
from test_node_tick import agent, agents_strategy, tick_input

J = 1_000_000  # µJ


def next_interval(plan: TickPlan, source: AgentTickInput, energy_uj: int) -> AgentTickInput:
    """The agent as the next tick meters it: it used `energy_uj` under `plan`'s grant."""
    result = plan.agents[source.agent]
    return replace(
        source, state=result.state, balance=result.balance, price=result.price,
        burn_per_s=result.burn_per_s, insolvent_since_s=result.insolvent_since_s,
        energy_uj=energy_uj, bytes_freed=0,
    )  # fmt: skip


def test_with_one_core_for_two_the_winner_pays_the_clearing_price_not_spot() -> None:
    # The measured attack: bidding 3 against 2 for the only core cost exactly spot (1.0).
    high = agent("high", bid=3.0, demand=1.0, bid_seq=1)
    low = agent("low", bid=2.0, demand=1.0, bid_seq=2)
    first = plan_tick(tick_input(high, low, spot_price=1.0, capacity_cores=1.0))
    assert first.clearing_price == 2.0  # scarce: the marginal bid sets the price, above spot
    assert first.agents["high"].cores == 1.0 and first.agents["low"].cores == 0.0
    assert first.agents["high"].price == 2.0 and first.agents["low"].price == 1.0
    used = [next_interval(first, a, J) for a in (high, low)]
    second = plan_tick(tick_input(*used, spot_price=1.0, capacity_cores=1.0, tick=8))
    assert second.agents["high"].paid_energy == 2 * J  # 1 J at the clearing price
    assert second.agents["low"].paid_energy == 1 * J  # what a frozen agent used: at the reserve
    (post,) = [p for p in second.posts if p.detail["agent"] == "high"]
    assert post.detail["price"] == 2.0 and post.detail["spot_price"] == 1.0


def test_with_capacity_to_spare_everyone_pays_spot() -> None:
    agents = [agent(f"a{i}", bid=1.0 + i, demand=0.5, bid_seq=i) for i in range(3)]
    first = plan_tick(tick_input(*agents, spot_price=1.0, capacity_cores=4.0))
    assert first.clearing_price == 1.0
    assert {plan.price for plan in first.agents.values()} == {1.0}


def test_an_agent_not_yet_cleared_pays_spot() -> None:
    plan = plan_tick(tick_input(agent(energy_uj=J, price=0.0), spot_price=1.5))
    assert plan.agents["a"].paid_energy == 1.5 * J


def test_kellys_market_price_is_capped_at_each_winners_bid() -> None:
    # Budgets 4 x 1 and 2 x 1 for one core: p = 6, shares 2/3 and 1/3; each pays its bid.
    rich = agent("rich", bid=4.0, demand=1.0, bid_seq=1)
    poor = agent("poor", bid=2.0, demand=1.0, bid_seq=2)
    plan = plan_tick(
        tick_input(rich, poor, spot_price=1.0, capacity_cores=1.0),
        mechanism=make_mechanism("kelly"),
    )
    assert plan.agents["rich"].price == 4.0 and plan.agents["poor"].price == 2.0
    assert plan.agents["rich"].cores > plan.agents["poor"].cores > 0


@settings(max_examples=300, deadline=None)
@given(
    agents=agents_strategy(),
    data=st.data(),
    mechanism=st.sampled_from(MECHANISM_NAMES),
    spot=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    capacity=st.sampled_from([0.5, 1.0, 2.0, 8.0]),
)
def test_no_agent_pays_above_its_bid_nor_below_the_reserve_when_served(
    agents: list[AgentTickInput],
    data: st.DataObject,
    mechanism: str,
    spot: float,
    capacity: float,
) -> None:
    market = make_mechanism(mechanism)
    first = plan_tick(
        tick_input(*agents, spot_price=spot, capacity_cores=capacity), mechanism=market
    )
    for source in agents:
        result = first.agents[source.agent]
        if result.cores > 0:
            assert spot <= result.price <= max(source.bid, spot)
        elif source.state in (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN):
            assert result.price == spot
    # The next interval is billed at exactly that price, capped at the balance.
    energies = [data.draw(st.sampled_from([0, J, 3 * J])) for _ in agents]
    used = [next_interval(first, a, e) for a, e in zip(agents, energies, strict=True)]
    later_spot = data.draw(st.sampled_from([spot, spot + 1.0]))
    second = plan_tick(
        tick_input(*used, spot_price=later_spot, capacity_cores=capacity, tick=8),
        mechanism=market,
    )
    for source in used:
        result = second.agents.get(source.agent)
        if result is None or not source.energy_uj:
            continue
        price = source.price or later_spot
        expected = bill(energy_uj=source.energy_uj, spot_price=price, temperature_c=50.0)
        assert result.paid_energy == min(expected.energy_cost, source.balance)
        if source.price:  # cleared by the first tick: never above its bid (or that reserve)
            assert result.paid_energy <= source.energy_uj * max(source.bid, spot) + 1


@pytest.mark.parametrize("price", [float("nan"), -1.0, float("inf")])
def test_a_price_that_is_not_a_number_is_refused(price: float) -> None:
    with pytest.raises(ValueError, match="price must be finite"):
        plan_tick(tick_input(agent(price=price)))


def test_the_cheapest_served_price_is_the_reserve_whatever_the_bid() -> None:
    lone = agent(bid=100.0, demand=1.0, balance=Money(10**12))
    plan = plan_tick(tick_input(lone, spot_price=0.25, capacity_cores=2.0))
    assert plan.agents["a"].price == 0.25  # bidding the maximum costs nothing more, alone
