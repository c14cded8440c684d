"""Work conservation (`maxwell.node.tick`, `share_idle`): a solvent bidder at or above the
reserve that the auction did not serve runs on what the winners leave idle (throttled, the least
weight) instead of being frozen, while the node sells every core the machine has."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.economy.mechanisms import MECHANISM_NAMES, make_mechanism
from maxwell.node.facade import AgentState
from maxwell.node.tick import IDLE_WEIGHT, AgentTickInput, Enforcement, plan_tick
from maxwell.units import Money
from test_node_tick import agent, agents_strategy, tick_input

LIVE = (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN)


def hoarders_and_a_worker(worker_state: AgentState = AgentState.RUNNING) -> list[AgentTickInput]:
    """Ten idle agents that arrived first and bid 5 for a core each, then a busy one bidding 5."""
    hoarders = [agent(f"h{i}", bid=5.0, demand=1.0, bid_seq=i) for i in range(10)]
    worker = agent("w", bid=5.0, demand=1.0, bid_seq=10, energy_uj=10**6, state=worker_state)
    return [*hoarders, worker]


def test_idle_hoarders_do_not_freeze_a_busy_agent_on_a_machine_sold_whole() -> None:
    plan = plan_tick(tick_input(*hoarders_and_a_worker(), spot_price=1.0, share_idle=True))
    served = [a for a, p in plan.agents.items() if p.cores > 0]
    assert len(served) == 2 and "w" not in served  # the hoarders hold every core on paper
    worker = plan.agents["w"]
    assert worker.state is AgentState.THROTTLED and worker.enforcement is Enforcement.NONE
    assert (worker.cores, worker.quota_cores, worker.weight) == (0.0, 1.0, IDLE_WEIGHT)
    assert worker.price == 1.0  # what it burns on leftovers: the reserve
    assert min(plan.agents[a].weight or 0 for a in served) > IDLE_WEIGHT
    assert "frozen" not in {event.kind for event in plan.events if event.agent == "w"}


def test_a_worker_frozen_for_want_of_capacity_is_thawed_onto_the_leftovers() -> None:
    agents = hoarders_and_a_worker(AgentState.FROZEN)
    plan = plan_tick(tick_input(*agents, spot_price=1.0, share_idle=True))
    assert plan.agents["w"].enforcement is Enforcement.THAW
    assert [e.kind for e in plan.events if e.agent == "w"] == ["thawed"]


def test_a_node_that_does_not_sell_all_its_cores_freezes_the_unserved() -> None:
    plan = plan_tick(tick_input(*hoarders_and_a_worker(), spot_price=1.0, share_idle=False))
    assert plan.agents["w"].state is AgentState.FROZEN
    assert plan.agents["w"].enforcement is Enforcement.FREEZE


def test_below_the_reserve_or_insolvent_is_frozen_whatever_is_idle() -> None:
    cheap = agent("cheap", bid=0.5, demand=1.0, bid_seq=1)
    broke = agent("broke", bid=5.0, demand=1.0, bid_seq=2, balance=Money(0), energy_uj=10**6)
    plan = plan_tick(tick_input(cheap, broke, spot_price=1.0, share_idle=True))
    assert plan.agents["cheap"].state is AgentState.FROZEN
    assert plan.agents["broke"].state is AgentState.FROZEN


@settings(max_examples=300, deadline=None)
@given(
    agents=agents_strategy(),
    mechanism=st.sampled_from(MECHANISM_NAMES),
    spot=st.sampled_from([0.0, 1.0, 2.0]),
    capacity=st.sampled_from([0.5, 2.0, 8.0]),
)
def test_sold_whole_no_solvent_bidder_at_the_reserve_is_frozen_and_grants_fit(
    agents: list[AgentTickInput], mechanism: str, spot: float, capacity: float
) -> None:
    plan = plan_tick(
        tick_input(*agents, spot_price=spot, capacity_cores=capacity, share_idle=True),
        mechanism=make_mechanism(mechanism),
    )
    assert plan.granted_cores <= capacity + 1e-9
    for source in agents:
        result = plan.agents[source.agent]
        if source.state not in LIVE or result.state is AgentState.DEAD:
            continue
        held = result.insolvent_since_s is not None
        if not held and source.bid >= spot and source.demand > 0:
            assert result.state is not AgentState.FROZEN, result
        if result.cores == 0 and result.state is AgentState.THROTTLED:
            assert result.weight == IDLE_WEIGHT
            assert result.quota_cores == min(source.demand, capacity)
