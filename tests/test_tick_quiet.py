"""Quiet agents: planning only the agents a tick changes gives the full plan, less entries that
would change nothing (`maxwell.node.tick`: `is_quiet`, `Standing`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.economy.mechanisms import make_mechanism
from maxwell.node.facade import AgentState
from maxwell.node.tick import (
    AgentTickInput,
    Enforcement,
    Resting,
    TickInput,
    TickPlan,
    is_quiet,
    plan_tick,
)
from maxwell.units import Money
from test_node_tick import NOW, agent, agents_strategy, tick_input


def after(plan: TickPlan, source: AgentTickInput, energy_uj: int, bid: float) -> AgentTickInput:
    """The agent as the next tick sees it, after `plan`."""
    result = plan.agents[source.agent]
    return replace(
        source,
        state=result.state,
        balance=result.balance,
        burn_per_s=result.burn_per_s,
        insolvent_since_s=result.insolvent_since_s,
        price=result.price,
        energy_uj=energy_uj,
        bytes_freed=0,
        bid=bid,
    )


def two_tick_property(test: Callable[..., None]) -> Callable[..., None]:
    """A property over random agents, two ticks apart (`two_ticks`)."""
    cases = given(
        agents=agents_strategy(),
        data=st.data(),
        spot=st.sampled_from([0.0, 1.0, 2.0]),
        capacity=st.sampled_from([0.5, 2.0, 8.0]),
    )
    return settings(max_examples=300, deadline=None)(cases(test))


def two_ticks(
    agents: list[AgentTickInput], data: st.DataObject, spot: float, capacity: float
) -> tuple[TickPlan, list[AgentTickInput], TickInput]:
    """A first plan, the agents after it (some burn, some bid anew), and a second tick's input
    (maybe later, at a new reserve, with less capacity)."""
    first = plan_tick(tick_input(*agents, spot_price=spot, capacity_cores=capacity))
    later = []
    for source in agents:
        energy = data.draw(st.sampled_from([0, 0, 0, 10**6]))
        bid = data.draw(st.sampled_from([source.bid, source.bid, spot + 1.0]))
        later.append(after(first, source, energy, bid))
    second = tick_input(
        *later,
        tick=8,
        now_s=NOW + data.draw(st.sampled_from([1.0, 30.0])),
        spot_price=data.draw(st.sampled_from([spot, spot, spot + 0.5])),
        capacity_cores=data.draw(st.sampled_from([capacity, capacity, capacity / 2])),
    )
    return first, later, second


@two_tick_property
def test_planning_the_agents_that_are_not_quiet_gives_the_full_plan(
    agents: list[AgentTickInput], data: st.DataObject, spot: float, capacity: float
) -> None:
    first, later, second = two_ticks(agents, data, spot, capacity)
    assert first.standing is not None
    full = plan_tick(second)
    partial = plan_tick(second, standing=first.standing)
    assert partial.posts == full.posts
    assert partial.events == full.events
    assert partial.decisions == full.decisions
    assert partial.clearing_price == full.clearing_price
    for name, result in partial.agents.items():
        assert result == full.agents[name]
    by_name = {source.agent: source for source in later}
    for name in full.agents.keys() - partial.agents.keys():
        source, result = by_name[name], full.agents[name]
        assert is_quiet(source, second.tick_s)
        assert result.state is source.state
        assert result.enforcement is Enforcement.NONE
        assert result.bill is None and result.paid == 0
        assert result.balance == source.balance and result.burn_per_s == source.burn_per_s
        assert result.cores == first.agents[name].cores
        assert result.price == source.price  # what it pays for the next interval stands too


def idle(count: int) -> list[AgentTickInput]:
    return [agent(f"a{index:03}", demand=0.01, bid_seq=index) for index in range(count)]


def test_a_tick_of_idle_agents_in_a_standing_market_plans_none_of_them() -> None:
    agents = idle(100)
    first = plan_tick(tick_input(*agents, tick=1))
    assert len(first.agents) == 100
    settled = [after(first, source, 0, source.bid) for source in agents]
    quiet = plan_tick(tick_input(*settled, tick=2), standing=first.standing)
    assert quiet.agents == {} and quiet.posts == () and quiet.events == ()
    assert quiet.standing is first.standing
    # One agent burns: only it is planned, against the same clearing.
    busy = [replace(settled[0], energy_uj=10**6), *settled[1:]]
    one = plan_tick(tick_input(*busy, tick=3), standing=first.standing)
    assert list(one.agents) == ["a000"] and one.standing is first.standing
    assert one.agents["a000"].paid > 0


def test_a_new_bid_or_a_new_reserve_clears_again_and_plans_everyone() -> None:
    agents = idle(20)
    first = plan_tick(tick_input(*agents, tick=1))
    settled = [after(first, source, 0, source.bid) for source in agents]
    outbid = [*settled[:-1], replace(settled[-1], bid=4.0, bid_seq=99)]
    rebid = plan_tick(tick_input(*outbid, tick=2), standing=first.standing)
    assert len(rebid.agents) == 20 and rebid.standing is not first.standing
    dearer = plan_tick(tick_input(*settled, tick=2, spot_price=2.5), standing=first.standing)
    assert len(dearer.agents) == 20


def test_quiet_means_nothing_to_bill_no_decision_and_a_burn_the_tick_keeps() -> None:
    assert is_quiet(agent(), 1.0)
    assert not is_quiet(agent(energy_uj=1), 1.0)
    assert not is_quiet(agent(bytes_freed=1), 1.0)
    assert not is_quiet(agent(burn_per_s=5.0), 1.0)  # running: its burn drops to 0
    assert is_quiet(agent(state=AgentState.FROZEN, burn_per_s=5.0), 1.0)
    assert not is_quiet(agent(state=AgentState.FROZEN, insolvent_since_s=NOW), 1.0)
    assert not is_quiet(agent(balance=Money(0)), 1.0)
    assert not is_quiet(agent(state=AgentState.FROZEN, burn_per_s=5.0, balance=Money(4)), 1.0)
    assert not is_quiet(agent(state=AgentState.EXITED), 1.0)


def test_a_mechanism_other_than_uniform_plans_everyone_every_tick() -> None:
    agents = idle(5)
    mechanism = make_mechanism("vcg")
    first = plan_tick(tick_input(*agents, tick=1), mechanism=mechanism)
    assert first.standing is None
    again = plan_tick(tick_input(*agents, tick=2), mechanism=mechanism, standing=first.standing)
    assert len(again.agents) == 5


@two_tick_property
def test_resting_agents_give_the_plan_they_would_give_among_the_agents(
    agents: list[AgentTickInput], data: st.DataObject, spot: float, capacity: float
) -> None:
    """Any of the quiet agents, kept out of the inputs as `Resting`, leave the plan as it is:
    the market standing or moved (a bid, a new reserve, less capacity), with or without a
    standing to reuse."""
    first, later, second = two_ticks(agents, data, spot, capacity)
    standing = data.draw(st.sampled_from([first.standing, None]))
    quiet = [source for source in later if is_quiet(source, second.tick_s)]
    resting = data.draw(st.lists(st.sampled_from(quiet), unique=True) if quiet else st.just([]))
    rest_ids = {source.agent for source in resting}
    awake = replace(second, agents=tuple(a for a in later if a.agent not in rest_ids))
    full = plan_tick(second, standing=standing)
    split = plan_tick(awake, standing=standing, resting=Resting.of(resting))
    assert split == full


def test_an_agent_both_resting_and_among_the_agents_is_refused() -> None:
    agents = idle(3)
    with pytest.raises(ValueError, match="both resting and among the agents"):
        plan_tick(tick_input(*agents), resting=Resting.of(agents[:1]))
