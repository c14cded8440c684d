"""The twin's engine (`maxwell.sim.engine`): the daemon's own tick on virtual time beside fair
share, with the same agents. What must hold whatever the figures: determinism, money conserved
per agent, no more cores used than the node has, fair share's max-min fairness and work
conservation, and the market's first claims on a small mix (a looper dies by apoptosis, the
funded useful job finishes, value per joule is higher than under fair share)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.node.facade import AgentState
from maxwell.sim.behaviours import DEFAULTS, Behaviour
from maxwell.sim.engine import AgentSpec, Scenario, run, water_fill

USEFUL, LOOPER, BLOAT = DEFAULTS["useful"], DEFAULTS["looper"], DEFAULTS["bloat"]
MIX = Scenario(
    agents=(
        AgentSpec("useful", USEFUL, fund_j=600.0, bid=2.0),
        AgentSpec("looper", LOOPER, fund_j=20.0, bid=1.0),
        AgentSpec("bloat", BLOAT, fund_j=20.0, bid=1.0),
        AgentSpec("hoarder", DEFAULTS["hoarder"], fund_j=20.0, bid=1.5),
    ),
    duration_s=90.0,
)


def test_a_run_is_the_same_each_time() -> None:
    for policy in ("maxwell", "fairshare"):
        assert run(MIX, policy).summary() == run(MIX, policy).summary()


def test_the_market_kills_the_looper_and_finishes_the_useful_job_fair_share_kills_nobody() -> None:
    market, fair = run(MIX, "maxwell").summary(), run(MIX, "fairshare").summary()
    assert {"looper", "bloat"} <= set(market["killed"])  # type: ignore[arg-type]
    assert "useful" in market["jobs_done"] and "useful" in fair["jobs_done"]  # type: ignore[operator]
    assert fair["killed"] == []
    assert market["value"] == fair["value"] == USEFUL.job_units
    assert market["value_per_j"] > fair["value_per_j"]  # type: ignore[operator]
    assert market["low_value_energy_j"] < fair["low_value_energy_j"]  # type: ignore[operator]
    finished = market["agents"]["useful"]["ended_at_s"]  # type: ignore[index]
    assert finished <= fair["agents"]["useful"]["ended_at_s"]  # type: ignore[index]


CHEATERS = (  # billed by their reports once bonded (a 40 $J bond at p = 0.2)
    AgentSpec("cheater", DEFAULTS["cheater"], fund_j=300.0, bid=1.5),
    AgentSpec("cheater-i", replace(DEFAULTS["cheater"], strategy="intermittent"), 60.0, 1.5),
)


@pytest.mark.parametrize(
    "scenario",
    [MIX, replace(MIX, agents=MIX.agents + CHEATERS, cores=3.0, audit_probability=0.2)],
    ids=["mix", "mix-with-cheaters"],
)
def test_money_is_conserved_for_every_agent_and_no_core_is_used_twice(scenario: Scenario) -> None:
    outcome = run(scenario, "maxwell")
    for agent in outcome.agents:  # paid + slashed + balance + bond held = funding
        held = agent.slashed_j + agent.balance / 1e6 + agent.reports.bond / 1e6
        assert agent.paid_j + held == pytest.approx(agent.spec.fund_j, abs=1e-5)
        assert agent.paid_j + agent.slashed_j <= agent.spec.fund_j + 1e-9
        assert agent.reports.bond == 0 or agent.live  # an agent that ended got its bond back
    if scenario.agents != MIX.agents:  # one is slashed, the other dies holding its bond
        assert [a.spec.name for a in outcome.agents if a.slashed_j > 0] == ["cheater"]
    assert all(sample.cores_used <= scenario.cores + 1e-9 for sample in outcome.trace)
    total_core_s = sum(a.energy_j for a in outcome.agents) / scenario.w_per_core
    used_core_s = sum(s.cores_used for s in outcome.trace) * scenario.tick_s
    assert total_core_s == pytest.approx(used_core_s)


def test_fair_share_gives_equal_shares_and_leaves_no_wanted_core_idle() -> None:
    loopers = tuple(AgentSpec(f"l{i}", LOOPER, fund_j=1.0, bid=1.0) for i in range(3))
    lazy = AgentSpec("lazy", Behaviour("hoarder", demand=2.0, use_fraction=0.1), 1.0, 1.0)
    outcome = run(Scenario(agents=(*loopers, lazy), duration_s=10.0), "fairshare")
    energies = {a.spec.name: a.energy_j for a in outcome.agents}
    assert energies["lazy"] == pytest.approx(0.2 * 10 * 10)  # it burns what it would: 0.2 cores
    assert energies["l0"] == energies["l1"] == energies["l2"] == pytest.approx(0.6 * 10 * 10)
    assert outcome.idle_wanted_core_s == pytest.approx(0.0)
    assert all(a.state is AgentState.RUNNING for a in outcome.agents)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.0, 64.0),
    st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.floats(0.0, 8.0), max_size=8),
)
def test_water_filling_is_max_min_fair(capacity: float, demands: dict[str, float]) -> None:
    given_ = water_fill(capacity, demands)
    assert sum(given_.values()) <= capacity + 1e-9
    assert all(-1e-12 <= given_[n] <= demands[n] + 1e-9 for n in demands)
    unmet = [n for n in demands if given_[n] < demands[n] - 1e-9]
    if unmet:  # someone wanted more: everything was given, none got more than the unmet
        assert sum(given_.values()) == pytest.approx(capacity, abs=1e-6)
        top = max(given_[n] for n in unmet)
        assert all(given_[n] <= top + 1e-6 for n in demands)
