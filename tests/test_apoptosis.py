"""Apoptosis policy: freeze the insolvent, thaw the refunded, kill after the grace period."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.economy.apoptosis import (
    Action,
    AgentState,
    Decision,
    Phase,
    apply_decision,
    apply_decisions,
    decide,
    required_balance,
)
from maxwell.units import Money


def running(agent: str, balance: int, burn_per_s: float) -> AgentState:
    return AgentState(agent, Money(balance), burn_per_s)


def frozen(agent: str, balance: int, burn_per_s: float, since_s: float) -> AgentState:
    return AgentState(agent, Money(balance), burn_per_s, Phase.FROZEN, since_s)


def test_a_solvent_agent_is_left_alone() -> None:
    # 100 µ$J/s over a 1 s tick needs 100 µ$J: exactly enough is enough.
    assert decide([running("a", 100, 100.0)], now_s=10.0, tick_s=1.0, grace_s=5.0) == []
    assert decide([running("a", 1, 0.0)], now_s=10.0, tick_s=1.0, grace_s=5.0) == []


def test_an_agent_that_cannot_cover_the_next_tick_is_frozen() -> None:
    [decision] = decide([running("a", 99, 100.0)], now_s=10.0, tick_s=1.0, grace_s=5.0)
    assert decision.action is Action.FREEZE
    assert (decision.agent, decision.at_s, decision.balance, decision.required) == (
        "a",
        10.0,
        99,
        100,
    )
    assert "cannot cover the next tick" in decision.reason
    assert "needs 100 µ$J" in decision.reason


@pytest.mark.parametrize("balance", [0, -5])
def test_an_agent_with_nothing_left_is_frozen_even_if_it_burns_nothing(balance: int) -> None:
    [decision] = decide([running("a", balance, 0.0)], now_s=0.0, tick_s=1.0, grace_s=5.0)
    assert decision.action is Action.FREEZE
    assert "not positive" in decision.reason


def test_a_refunded_frozen_agent_is_thawed() -> None:
    agent = frozen("a", 150, 100.0, since_s=3.0)
    [decision] = decide([agent], now_s=5.0, tick_s=1.0, grace_s=5.0)
    assert decision.action is Action.THAW
    assert decision.frozen_since_s == 3.0
    assert apply_decision(agent, decision) == running("a", 150, 100.0)


def test_thaw_ticks_asks_for_more_than_one_tick_before_thawing() -> None:
    agent = frozen("a", 250, 100.0, since_s=3.0)
    assert decide([agent], now_s=4.0, tick_s=1.0, grace_s=5.0, thaw_ticks=3) == []
    [decision] = decide(
        [frozen("a", 300, 100.0, since_s=3.0)], now_s=4.0, tick_s=1.0, grace_s=5.0, thaw_ticks=3
    )
    assert decision.action is Action.THAW
    assert decision.required == 300


def test_a_frozen_agent_is_killed_only_once_the_grace_period_is_over() -> None:
    agent = frozen("a", 10, 100.0, since_s=3.0)
    assert decide([agent], now_s=7.9, tick_s=1.0, grace_s=5.0) == []
    [decision] = decide([agent], now_s=8.0, tick_s=1.0, grace_s=5.0)
    assert decision.action is Action.KILL
    assert "after 5 s frozen (grace 5 s)" in decision.reason
    assert apply_decision(agent, decision).phase is Phase.DEAD


def test_with_no_grace_a_kill_still_comes_a_tick_after_the_freeze() -> None:
    states = {"a": running("a", 0, 10.0)}
    first = decide(states.values(), now_s=0.0, tick_s=1.0, grace_s=0.0)
    assert [d.action for d in first] == [Action.FREEZE]
    states = apply_decisions(states, first)
    second = decide(states.values(), now_s=1.0, tick_s=1.0, grace_s=0.0)
    assert [d.action for d in second] == [Action.KILL]


def test_the_dead_stay_dead_however_rich() -> None:
    dead = AgentState("a", Money(10**12), 1.0, Phase.DEAD)
    assert decide([dead], now_s=100.0, tick_s=1.0, grace_s=0.0) == []


def test_decisions_are_sorted_by_agent_whatever_the_input_order() -> None:
    agents = [running("c", 0, 1.0), running("a", 0, 1.0), running("b", 10, 1.0)]
    decisions = decide(agents, now_s=0.0, tick_s=1.0, grace_s=1.0)
    assert [d.agent for d in decisions] == ["a", "c"]
    assert decide(reversed(agents), now_s=0.0, tick_s=1.0, grace_s=1.0) == decisions


def test_each_decision_is_a_journal_event() -> None:
    decision = Decision("a", Action.KILL, "why", 8.0, Money(10), Money(100), 3.0)
    kind, detail = decision.to_journal()
    assert kind == "apoptosis"
    assert detail == {
        "agent": "a",
        "reason": "why",
        "at_s": 8.0,
        "balance": 10,
        "required": 100,
        "frozen_since_s": 3.0,
    }
    json.dumps(detail)
    kinds = {
        action: Decision("a", action, "", 0.0, Money(0), Money(1)).to_journal()[0]
        for action in Action
    }
    assert kinds == {Action.FREEZE: "frozen", Action.THAW: "thawed", Action.KILL: "apoptosis"}


def test_required_balance_rounds_up_and_is_at_least_one() -> None:
    assert required_balance(0.0, 1.0) == 1
    assert required_balance(10.5, 1.0) == 11
    assert required_balance(100.0, 0.5, ticks=3) == 150


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tick_s": 0.0},
        {"tick_s": float("nan")},
        {"grace_s": -1.0},
        {"thaw_ticks": 0.5},
        {"now_s": float("inf")},
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, float]) -> None:
    arguments = {"now_s": 0.0, "tick_s": 1.0, "grace_s": 1.0, **kwargs}
    with pytest.raises(ValueError):
        decide([running("a", 10, 1.0)], **arguments)


def test_bad_states_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        decide([running("a", 1, 1.0), running("a", 2, 1.0)], now_s=0.0, tick_s=1.0, grace_s=1.0)
    with pytest.raises(ValueError, match="before"):
        decide([frozen("a", 0, 1.0, since_s=5.0)], now_s=4.0, tick_s=1.0, grace_s=1.0)
    with pytest.raises(ValueError):
        AgentState("a", Money(1), 1.0, Phase.FROZEN)
    with pytest.raises(ValueError):
        AgentState("a", Money(1), 1.0, Phase.RUNNING, 3.0)
    with pytest.raises(ValueError):
        AgentState("a", Money(1), -1.0)


def test_illegal_transitions_cannot_be_applied() -> None:
    kill = Decision("a", Action.KILL, "", 0.0, Money(0), Money(1))
    with pytest.raises(ValueError, match="cannot apply apoptosis to a running agent"):
        apply_decision(running("a", 0, 1.0), kill)
    with pytest.raises(ValueError):
        apply_decision(running("b", 0, 1.0), kill)


def test_an_agent_burning_down_its_balance_is_frozen_then_killed() -> None:
    """A 1 s tick, 100 µ$J/s, 450 µ$J and a 3 s grace: the journal tells the whole story."""
    state = running("worker", 450, 100.0)
    journal: list[tuple[str, dict[str, object]]] = []
    for tick in range(12):
        now_s = float(tick)
        for decision in decide([state], now_s=now_s, tick_s=1.0, grace_s=3.0):
            journal.append(decision.to_journal())
            state = apply_decision(state, decision)
        if state.phase is Phase.RUNNING:
            state = AgentState(state.agent, Money(state.balance - 100), 100.0)
    assert [(kind, detail["at_s"]) for kind, detail in journal] == [
        ("frozen", 4.0),  # 50 µ$J left cannot cover 100
        ("apoptosis", 7.0),
    ]
    assert state.phase is Phase.DEAD


TICKS_S = [0.25, 0.5, 1.0, 2.0]  # exact in binary, so the test's exact arithmetic agrees


@given(
    tick_s=st.sampled_from(TICKS_S),
    grace_ticks=st.integers(min_value=0, max_value=6),
    thaw_ticks=st.sampled_from([1, 2, 3]),
    history=st.lists(
        st.lists(
            st.tuples(
                st.integers(min_value=-200, max_value=1_500),
                st.integers(min_value=0, max_value=800),
            ),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_invariants_over_random_balance_and_burn_sequences(
    tick_s: float, grace_ticks: int, thaw_ticks: int, history: list[list[tuple[int, int]]]
) -> None:
    agents = ["a", "b", "c"]
    grace_s = grace_ticks * tick_s
    states = {agent: running(agent, 0, 0.0) for agent in agents}
    frozen_at: dict[str, float] = {}
    dead: set[str] = set()
    for tick, readings in enumerate(history):
        now_s = tick * tick_s
        for agent, (balance, burn) in zip(agents, readings, strict=True):
            old = states[agent]
            states[agent] = AgentState(
                agent, Money(balance), float(burn), old.phase, old.frozen_since_s
            )
        decisions = decide(
            list(states.values()),
            now_s=now_s,
            tick_s=tick_s,
            grace_s=grace_s,
            thaw_ticks=thaw_ticks,
        )
        # Deterministic and independent of input order; sorted; one per agent at most.
        assert decisions == decide(
            list(reversed(states.values())),
            now_s=now_s,
            tick_s=tick_s,
            grace_s=grace_s,
            thaw_ticks=thaw_ticks,
        )
        assert [d.agent for d in decisions] == sorted({d.agent for d in decisions})
        decided = {d.agent: d for d in decisions}
        for agent, state in states.items():
            need = Fraction(int(state.burn_per_s)) * Fraction(tick_s)
            covers_tick = state.balance > 0 and state.balance >= need
            covers_thaw = state.balance > 0 and state.balance >= need * thaw_ticks
            decision = decided.get(agent)
            if agent in dead:
                assert decision is None  # the dead never come back
                continue
            if state.phase is Phase.RUNNING:
                if covers_tick:
                    assert decision is None  # no agent with enough balance is frozen
                else:
                    assert decision is not None and decision.action is Action.FREEZE
            else:
                assert state.phase is Phase.FROZEN
                frozen_for_s = now_s - frozen_at[agent]
                if covers_thaw:
                    assert decision is not None and decision.action is Action.THAW
                elif frozen_for_s >= grace_s:
                    assert decision is not None and decision.action is Action.KILL
                else:
                    assert decision is None
            if decision is not None:
                assert decision.at_s == now_s
                if decision.action is Action.FREEZE:
                    frozen_at[agent] = now_s
                elif decision.action is Action.THAW:
                    del frozen_at[agent]
                else:
                    # Killed only after being frozen, continuously, for at least the grace.
                    assert now_s - frozen_at.pop(agent) >= grace_s
                    dead.add(agent)
        states = apply_decisions(states, decisions)
        for agent, state in states.items():
            assert (state.phase is Phase.DEAD) == (agent in dead)
            assert (state.phase is Phase.FROZEN) == (agent in frozen_at)
            if agent in frozen_at:
                assert state.frozen_since_s == frozen_at[agent]
