"""The pure tick core: hand-computed cases and properties (money conserved, capacity kept)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.economy.billing import bill
from maxwell.economy.ledger import (
    GRID,
    LANDAUER,
    TREASURY,
    Ledger,
    Movement,
    agent_account,
    batch_request,
    open_request,
    transfer_request,
)
from maxwell.economy.mechanisms import make_mechanism
from maxwell.node.facade import AgentState
from maxwell.node.tick import (
    DERATE_BELOW_HEADROOM_C,
    MIN_CAPACITY_FRACTION,
    AgentTickInput,
    Enforcement,
    TickInput,
    bill_key,
    plan_tick,
    thermal_capacity,
)
from maxwell.units import Money

NOW = 1_700_000_000.0


def tick_input(*agents: AgentTickInput, **overrides: object) -> TickInput:
    base = TickInput(
        tick=7,
        now_s=NOW,
        interval_s=1.0,
        tick_s=1.0,
        spot_price=2.0,
        temperature_c=50.0,
        capacity_cores=2.0,
        landauer_multiplier=1.0,
        grace_s=5.0,
        agents=agents,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def agent(name: str = "a", **fields: object) -> AgentTickInput:
    base = AgentTickInput(
        agent=name,
        state=AgentState.RUNNING,
        balance=Money(10_000_000),
        bid=3.0,
        demand=1.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_solvent_agent_is_billed_energy_times_spot_and_keeps_running() -> None:
    plan = plan_tick(tick_input(agent(energy_uj=1_000_000)))
    result = plan.agents["a"]
    # 1 J at 2 $J/J = 2 $J = 2_000_000 µ$J.
    assert result.paid_energy == 2_000_000
    assert result.paid_landauer == 0
    assert result.shortfall == 0
    assert result.balance == 8_000_000
    assert result.burn_per_s == 2_000_000.0
    assert result.state is AgentState.RUNNING
    assert result.cores == 1.0
    assert result.quota_cores == 1.0
    assert result.weight == 100
    assert result.enforcement is Enforcement.NONE
    (post,) = plan.posts
    assert post.key == bill_key(7, "a") == "bill:7:a"
    assert post.kind == "bill"
    assert post.movements == (Movement(agent_account("a"), GRID, 2_000_000),)
    assert post.detail["energy_uj"] == 1_000_000
    assert plan.events == ()
    # Everything fits: the uniform price is the reserve.
    assert plan.clearing_price == 2.0


def test_no_energy_no_bill() -> None:
    plan = plan_tick(tick_input(agent()))
    assert plan.posts == ()
    assert plan.agents["a"].bill is None
    assert plan.agents["a"].balance == 10_000_000


def test_a_bill_is_capped_at_the_balance_and_the_agent_is_frozen() -> None:
    plan = plan_tick(tick_input(agent(balance=Money(500_000), energy_uj=1_000_000)))
    result = plan.agents["a"]
    assert result.paid_energy == 500_000
    assert result.shortfall == 1_500_000
    assert result.balance == 0
    assert result.state is AgentState.FROZEN
    assert result.enforcement is Enforcement.FREEZE
    assert result.insolvent_since_s == NOW
    assert result.cores == 0.0
    assert result.quota_cores is None
    (post,) = plan.posts
    assert post.movements == (Movement(agent_account("a"), GRID, 500_000),)
    assert post.detail["shortfall"] == 1_500_000
    kinds = [event.kind for event in plan.events]
    assert kinds == ["frozen", "insolvent"]
    assert plan.events[0].key == "event:7:a:frozen"
    assert plan.events[0].detail["agent"] == "a"
    assert "not positive" in str(plan.events[0].detail["reason"])


def test_energy_is_paid_before_the_landauer_tax() -> None:
    # 1 GiB freed at 50 °C with a large multiplier: a tax of several $J.
    freed = 1 << 30
    expected = bill(
        energy_uj=1_000_000,
        spot_price=2.0,
        bytes_freed=freed,
        temperature_c=50.0,
        landauer_multiplier=1e12,
    )
    assert expected.landauer_cost > 1_000_000
    balance = Money(expected.energy_cost + 1_000_000)
    plan = plan_tick(
        tick_input(
            agent(balance=balance, energy_uj=1_000_000, bytes_freed=freed),
            landauer_multiplier=1e12,
        )
    )
    result = plan.agents["a"]
    assert result.paid_energy == expected.energy_cost == 2_000_000
    assert result.paid_landauer == 1_000_000
    assert result.shortfall == expected.landauer_cost - 1_000_000
    (post,) = plan.posts
    assert set(post.movements) == {
        Movement(agent_account("a"), GRID, 2_000_000),
        Movement(agent_account("a"), LANDAUER, 1_000_000),
    }


def test_a_frozen_insolvent_agent_is_killed_after_the_grace() -> None:
    frozen = agent(
        state=AgentState.FROZEN,
        balance=Money(0),
        burn_per_s=1000.0,
        insolvent_since_s=NOW - 5.0,
    )
    plan = plan_tick(tick_input(frozen))
    result = plan.agents["a"]
    assert result.state is AgentState.DEAD
    assert result.enforcement is Enforcement.KILL
    assert result.cores == 0.0
    assert [event.kind for event in plan.events] == ["apoptosis"]
    assert "grace" in str(plan.events[0].detail["reason"])
    # Before the grace has run out, nothing happens.
    early = plan_tick(tick_input(replace(frozen, insolvent_since_s=NOW - 4.0)))
    assert early.agents["a"].state is AgentState.FROZEN
    assert early.agents["a"].enforcement is Enforcement.NONE
    assert early.events == ()


def test_a_frozen_insolvent_agent_funded_again_is_thawed() -> None:
    frozen = agent(
        state=AgentState.FROZEN,
        balance=Money(10_000),
        burn_per_s=1000.0,
        insolvent_since_s=NOW - 1.0,
    )
    plan = plan_tick(tick_input(frozen))
    result = plan.agents["a"]
    assert result.state is AgentState.RUNNING
    assert result.enforcement is Enforcement.THAW
    assert result.insolvent_since_s is None
    assert [event.kind for event in plan.events] == ["thawed"]


def test_a_bid_below_the_reserve_is_frozen_but_never_killed() -> None:
    low = agent(bid=1.0)
    plan = plan_tick(tick_input(low))
    result = plan.agents["a"]
    assert result.state is AgentState.FROZEN
    assert result.enforcement is Enforcement.FREEZE
    assert result.insolvent_since_s is None
    assert plan.events[0].detail["reason"] == "bid 1 is below the reserve 2"
    # Frozen for a long time while solvent: still no apoptosis.
    later = plan_tick(tick_input(replace(low, state=AgentState.FROZEN), now_s=NOW + 3600))
    assert later.agents["a"].state is AgentState.FROZEN
    assert later.agents["a"].enforcement is Enforcement.NONE
    # A bid at the reserve again: thawed.
    again = plan_tick(tick_input(replace(low, state=AgentState.FROZEN, bid=2.0)))
    assert again.agents["a"].enforcement is Enforcement.THAW
    assert again.agents["a"].state is AgentState.RUNNING


def test_scarce_capacity_throttles_the_marginal_bid_and_freezes_the_rest() -> None:
    plan = plan_tick(
        tick_input(
            agent("high", bid=5.0, demand=1.0, bid_seq=3),
            agent("mid", bid=4.0, demand=1.0, bid_seq=1),
            agent("low", bid=3.0, demand=1.0, bid_seq=2),
            capacity_cores=1.5,
        )
    )
    high, mid, low = (plan.agents[name] for name in ("high", "mid", "low"))
    assert (high.state, high.cores, high.quota_cores) == (AgentState.RUNNING, 1.0, 1.0)
    assert (mid.state, mid.cores, mid.quota_cores, mid.weight) == (
        AgentState.THROTTLED,
        0.5,
        0.5,
        50,
    )
    assert (low.state, low.cores, low.quota_cores) == (AgentState.FROZEN, 0.0, None)
    assert low.enforcement is Enforcement.FREEZE
    # Uniform price: the marginal (partially filled) bid's.
    assert plan.clearing_price == 4.0
    events = {event.agent: event for event in plan.events}
    assert {agent: event.kind for agent, event in events.items()} == {
        "mid": "throttled",
        "low": "frozen",
    }
    assert events["low"].detail["reason"] == "no capacity left at clearing price 4"


def test_equal_bids_are_served_in_arrival_order() -> None:
    plan = plan_tick(
        tick_input(
            agent("b", bid=3.0, demand=1.0, bid_seq=1),
            agent("a", bid=3.0, demand=1.0, bid_seq=2),
            capacity_cores=1.0,
        )
    )
    assert plan.agents["b"].cores == 1.0
    assert plan.agents["a"].cores == 0.0


def test_ended_agents_are_billed_but_not_enforced() -> None:
    plan = plan_tick(
        tick_input(
            agent("x", state=AgentState.EXITED, energy_uj=1_000_000),
            agent("d", state=AgentState.DEAD, energy_uj=500_000),
        )
    )
    assert {post.key for post in plan.posts} == {"bill:7:x", "bill:7:d"}
    for name, state in (("x", AgentState.EXITED), ("d", AgentState.DEAD)):
        result = plan.agents[name]
        assert result.state is state
        assert result.enforcement is Enforcement.NONE
        assert result.cores == 0.0
        assert result.quota_cores is None
    assert plan.events == ()


def test_other_mechanisms_clear_by_name() -> None:
    for name in ("vcg", "kelly", "lottery", "posted"):
        plan = plan_tick(
            tick_input(agent("a", bid=5.0), agent("b", bid=4.0), capacity_cores=1.5),
            mechanism=make_mechanism(name),
        )
        assert plan.granted_cores <= 1.5 + 1e-9


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        plan_tick(tick_input(agent("a"), agent("a")))
    with pytest.raises(ValueError, match="negative"):
        plan_tick(tick_input(agent(balance=Money(-1))))
    with pytest.raises(ValueError, match="start at 1"):
        plan_tick(tick_input(agent(), tick=0))


# --- properties ------------------------------------------------------------------------------

STATES = [AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN, AgentState.EXITED]


@st.composite
def agents_strategy(draw: st.DrawFn) -> list[AgentTickInput]:
    count = draw(st.integers(0, 8))
    found = []
    for index in range(count):
        state = draw(st.sampled_from(STATES))
        insolvent = state is AgentState.FROZEN and draw(st.booleans())
        found.append(
            AgentTickInput(
                agent=f"a{index}",
                state=state,
                balance=Money(draw(st.integers(0, 10**8))),
                bid=draw(st.floats(0.0, 10.0)),
                demand=draw(st.floats(0.01, 4.0)),
                energy_uj=draw(st.integers(0, 10**8)),
                bytes_freed=draw(st.integers(0, 1 << 32)),
                burn_per_s=draw(st.floats(0.0, 1e8)),
                insolvent_since_s=NOW - draw(st.floats(0.0, 20.0)) if insolvent else None,
                bid_seq=draw(st.integers(0, 100)),
            )
        )
    return found


@settings(max_examples=200, deadline=None)
@given(
    agents=agents_strategy(),
    spot=st.floats(0.0, 5.0),
    capacity=st.floats(0.0, 8.0),
    multiplier=st.sampled_from([0.0, 1.0, 1e9, 1e12]),
)
def test_tick_invariants(
    agents: list[AgentTickInput], spot: float, capacity: float, multiplier: float
) -> None:
    inputs = tick_input(
        *agents, spot_price=spot, capacity_cores=capacity, landauer_multiplier=multiplier
    )
    plan = plan_tick(inputs)
    # Money is conserved: what leaves the agents enters grid + landauer.
    out_of_agents = sum(
        m.amount for post in plan.posts for m in post.movements if m.debit.startswith("agent:")
    )
    into_sinks = sum(
        m.amount for post in plan.posts for m in post.movements if m.credit in (GRID, LANDAUER)
    )
    assert out_of_agents == into_sinks
    assert all(m.amount > 0 for post in plan.posts for m in post.movements)
    # One entry per agent per tick, keyed by (tick, agent).
    keys = [post.key for post in plan.posts] + [event.key for event in plan.events]
    assert len(keys) == len(set(keys))
    by_name = {a.agent: a for a in agents}
    granted = 0.0
    for name, result in plan.agents.items():
        source = by_name[name]
        # Never billed more than the balance.
        assert 0 <= result.paid <= source.balance
        assert result.balance == source.balance - result.paid
        if result.shortfall > 0:
            assert result.balance == 0
        assert result.cores <= source.demand + 1e-9
        granted += result.cores
        # Frozen, dead and exited agents get no cores; served ones get a real quota.
        if result.state in (AgentState.FROZEN, AgentState.DEAD, AgentState.EXITED):
            assert result.cores == 0.0
            assert result.quota_cores is None
        else:
            assert result.cores > 0
            assert result.quota_cores == result.cores
            assert source.bid >= spot
        if result.insolvent_since_s is not None:
            assert result.state is AgentState.FROZEN
        if result.enforcement is Enforcement.KILL:
            assert source.insolvent_since_s is not None
            assert NOW - source.insolvent_since_s >= inputs.grace_s
    assert granted <= capacity + 1e-9
    # Deterministic, whatever the order of the input.
    again = plan_tick(replace(inputs, agents=tuple(reversed(agents))))
    assert again == plan


@settings(max_examples=150, deadline=None)
@given(
    agents=agents_strategy(),
    spot=st.floats(0.0, 5.0),
    multiplier=st.sampled_from([0.0, 1.0, 1e9, 1e12]),
)
def test_the_planned_movements_apply_to_a_ledger_holding_the_input_balances(
    agents: list[AgentTickInput], spot: float, multiplier: float
) -> None:
    """Not the sum of a list against itself: a real ledger, funded with each agent's input
    balance, takes every planned entry (no overdraft, no refusal), and each agent's account then
    holds exactly its input balance less what its plan says it paid."""
    plan = plan_tick(tick_input(*agents, spot_price=spot, landauer_multiplier=multiplier))
    ledger = Ledger.genesis(at=0.0)
    for source in agents:
        ledger.submit(open_request(agent_account(source.agent)), at=0.0)
        if source.balance:
            fund = transfer_request(
                f"fund:{source.agent}", TREASURY, agent_account(source.agent), source.balance
            )
            ledger.submit(fund, at=0.0)
    for post in plan.posts:
        ledger.submit(batch_request(post.key, post.movements, kind=post.kind), at=1.0)
    for source in agents:
        planned = plan.agents[source.agent]
        held = ledger.balance(agent_account(source.agent))
        assert held == source.balance - planned.paid == planned.balance
        assert planned.paid == planned.paid_energy + planned.paid_landauer
    assert ledger.balance(GRID) == sum(p.paid_energy for p in plan.agents.values())
    assert ledger.balance(LANDAUER) == sum(p.paid_landauer for p in plan.agents.values())


# --- capacity when hot ------------------------------------------------------------------------


def test_a_cool_node_sells_every_core_and_a_hot_one_fewer() -> None:
    assert thermal_capacity(2.0, 40.0) == 2.0
    assert thermal_capacity(2.0, DERATE_BELOW_HEADROOM_C) == 2.0
    assert thermal_capacity(2.0, DERATE_BELOW_HEADROOM_C / 2) == pytest.approx(
        2.0 * (MIN_CAPACITY_FRACTION + 1.0) / 2
    )
    assert thermal_capacity(2.0, 0.0) == pytest.approx(2.0 * MIN_CAPACITY_FRACTION)
    assert thermal_capacity(2.0, -7.0) == pytest.approx(2.0 * MIN_CAPACITY_FRACTION)
    assert thermal_capacity(2.0, float("nan")) == 2.0  # no temperature: no derating
    with pytest.raises(ValueError, match="fraction"):
        thermal_capacity(2.0, 5.0, floor=1.5)
    with pytest.raises(ValueError, match="band"):
        thermal_capacity(2.0, 5.0, derate_below_c=0.0)


@given(
    cores=st.floats(0.0, 1e4),
    cooler=st.floats(-50.0, 200.0),
    hotter=st.floats(-50.0, 200.0),
    floor=st.floats(0.0, 1.0),
    band=st.floats(0.1, 50.0),
)
def test_capacity_never_rises_as_the_node_heats_and_stays_in_its_bounds(
    cores: float, cooler: float, hotter: float, floor: float, band: float
) -> None:
    cooler, hotter = max(cooler, hotter), min(cooler, hotter)  # headroom: more is cooler
    high = thermal_capacity(cores, cooler, derate_below_c=band, floor=floor)
    low = thermal_capacity(cores, hotter, derate_below_c=band, floor=floor)
    assert low <= high * (1 + 1e-12)
    for value in (low, high):
        assert cores * floor * (1 - 1e-12) <= value <= cores * (1 + 1e-12)
