"""Cheaters and audits on the twin (`maxwell.sim.audits`, the `cheater` and `malicious` kinds):
deterministic under the seed; a persistent cheater is caught at its first audit, loses its bond
and pays back what it kept, then is metered; an intermittent one is caught at its first lie once
audited (claims are cumulative); unaudited (p = 0) a cheater profits; honest agents, reporting or
metered, are never slashed; money is conserved; scenario files take the new kinds and keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from maxwell.node.facade import AgentState
from maxwell.sim.behaviours import DEFAULTS, KINDS, LOW_VALUE, Behaviour
from maxwell.sim.engine import AgentSpec, Outcome, Scenario, SimAgent, run
from maxwell.sim.scenario import ScenarioError, dumps, parse

CHEATER = DEFAULTS["cheater"]  # claims 20 % of its CPU on a lying tick
INTERMITTENT = replace(CHEATER, strategy="intermittent")  # lies on 30 % of its ticks
TRUTHFUL = replace(CHEATER, claim_fraction=1.0)  # reports, honestly
TICK_J = 10.0  # one core for a 1 s tick at 10 W per core, at spot 1: the bill of a tick ($J)
KEPT_J = 0.8 * TICK_J  # what a lying tick leaves unbilled


def _scenario(p: float, seed: int = 0, *extra: AgentSpec, fund: float = 1500.0) -> Scenario:
    """Three cores for a persistent cheater, an intermittent one and an honest looper (one core
    each, none short of cores), plus `extra`."""
    agents = (
        AgentSpec("persistent", CHEATER, fund_j=fund, bid=2.0),
        AgentSpec("intermittent", INTERMITTENT, fund_j=fund, bid=2.0),
        AgentSpec("honest", DEFAULTS["looper"], fund_j=fund, bid=2.0),
        *extra,
    )
    cores = float(sum(a.behaviour.demand for a in agents))
    return Scenario(agents=agents, cores=cores, duration_s=120.0, audit_probability=p, seed=seed)


def _agent(outcome: Outcome, name: str) -> SimAgent:
    return next(a for a in outcome.agents if a.spec.name == name)


def _bond_j(p: float) -> float:
    """Becker's bond for a 10 $J tick, audited with probability p: G (1 - p) / p, >= 1 µ$J."""
    return max(TICK_J * (1 - p) / p, 1e-6)


def test_the_new_kinds_are_known_low_value_and_malicious_is_a_looper() -> None:
    assert {"cheater", "malicious"} <= set(KINDS) and {"cheater", "malicious"} <= LOW_VALUE
    assert DEFAULTS["looper"] == Behaviour("looper")  # the old kinds keep their defaults
    assert CHEATER.reports and not DEFAULTS["malicious"].reports
    with pytest.raises(ValueError, match="strategy"):
        replace(CHEATER, strategy="sometimes")
    with pytest.raises(ValueError, match="claim_fraction"):
        replace(CHEATER, claim_fraction=1.5)
    pair = (AgentSpec("a", DEFAULTS["malicious"], 10_000.0, 5.0),
            AgentSpec("b", DEFAULTS["looper"], 10_000.0, 5.0))  # fmt: skip
    figures = run(Scenario(agents=pair, duration_s=30.0), "maxwell").summary()["agents"]
    assert isinstance(figures, dict)
    assert {**figures["a"], "kind": "looper"} == figures["b"]


def test_a_run_is_the_same_under_the_same_seed_and_audits_move_with_it() -> None:
    first = run(_scenario(0.2, seed=0), "maxwell").summary()
    assert first == run(_scenario(0.2, seed=0), "maxwell").summary()
    caught = {
        _agent(run(_scenario(0.2, seed=seed), "maxwell"), "persistent").reports.caught_at_s
        for seed in range(6)
    }
    assert len(caught) > 1


@pytest.mark.parametrize("seed", range(8))
def test_a_persistent_cheater_is_caught_at_its_first_audit_slashed_and_then_metered(
    seed: int,
) -> None:
    outcome = run(_scenario(0.2, seed=seed), "maxwell")
    cheater = _agent(outcome, "persistent")
    caught = cheater.reports.caught_at_s
    assert caught is not None and cheater.reports.audits == 1  # its first audit catches it
    # Metered on tick 1 (it bonds after it), billed by its claims from tick 2 to its catch.
    lying_ticks = round(caught) - 1
    assert cheater.slashed_j == pytest.approx(_bond_j(0.2) + KEPT_J * lying_ticks, abs=1e-5)
    assert cheater.paid_j + cheater.slashed_j - _bond_j(0.2) == pytest.approx(cheater.energy_j)
    trace = outcome.trace
    after = [i for i, s in enumerate(trace) if s.at_s > caught]
    for i in after:  # metered: each tick costs what it burnt
        burnt = trace[i].energy_j["persistent"] - trace[i - 1].energy_j["persistent"]
        paid = trace[i - 1].balance_j["persistent"] - trace[i].balance_j["persistent"]
        assert paid == pytest.approx(burnt, abs=1e-5) and burnt == pytest.approx(TICK_J)


def test_an_intermittent_cheater_is_caught_at_its_first_lie_once_audited_every_tick() -> None:
    outcome = run(_scenario(1.0), "maxwell")
    cheater = _agent(outcome, "intermittent")
    lies = [t for t in range(1, 121) if INTERMITTENT.lies(t, cheater.index)]
    assert 0.15 < len(lies) / 120 < 0.45  # about its lie_share
    caught_tick = max(lies[0], 2)  # audited from tick 2, the first billed by its claims
    assert cheater.reports.caught_at_s == caught_tick * 1.0
    assert cheater.reports.audits == caught_tick - 1  # the audits before found it honest
    kept = KEPT_J * sum(1 for t in lies if 2 <= t <= caught_tick)
    assert cheater.slashed_j == pytest.approx(_bond_j(1.0) + kept, abs=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_at_p_0_2_an_intermittent_cheater_is_caught_after_its_first_lie_and_pays_it_back(
    seed: int,
) -> None:
    cheater = _agent(run(_scenario(0.2, seed=seed), "maxwell"), "intermittent")
    lies = [t for t in range(1, 121) if INTERMITTENT.lies(t, cheater.index)]
    caught = cheater.reports.caught_at_s
    assert caught is not None and caught >= max(lies[0], 2)
    kept = KEPT_J * sum(1 for t in lies if 2 <= t <= caught)  # tick 1 was metered
    assert cheater.slashed_j == pytest.approx(_bond_j(0.2) + kept, abs=1e-5)


def test_unaudited_a_cheater_pays_less_than_it_burns_and_is_never_slashed() -> None:
    outcome = run(_scenario(0.0), "maxwell")
    persistent, intermittent = _agent(outcome, "persistent"), _agent(outcome, "intermittent")
    honest = _agent(outcome, "honest")
    for cheater in (persistent, intermittent):
        assert cheater.reports.audits == 0 and cheater.slashed_j == 0.0
        assert cheater.paid_j < cheater.energy_j
    # Tick 1 metered, then 20 % of each tick claimed: 10 + 119 x 2 $J for 1,200 J.
    assert persistent.energy_j == pytest.approx(120 * TICK_J)
    assert persistent.paid_j == pytest.approx(TICK_J + 119 * 0.2 * TICK_J)
    assert honest.paid_j == pytest.approx(honest.energy_j)


def test_honest_agents_reporting_or_metered_are_never_slashed() -> None:
    kinds = ("useful", "looper", "bloat", "hoarder", "bursty", "malicious")
    extra = (
        *(AgentSpec(f"x-{kind}", DEFAULTS[kind], fund_j=400.0, bid=2.0) for kind in kinds),
        AgentSpec("truthful", TRUTHFUL, fund_j=400.0, bid=2.0),
    )
    for p in (0.2, 1.0):
        outcome = run(_scenario(p, 0, *extra), "maxwell")
        for agent in outcome.agents:
            if agent.spec.behaviour.kind != "cheater":
                assert agent.reports.audits == 0 and agent.slashed_j == 0.0
        truthful = _agent(outcome, "truthful")
        assert truthful.reports.audits > 0 and truthful.slashed_j == 0.0
        assert truthful.paid_j == pytest.approx(truthful.energy_j, abs=1e-5)  # shadow: none


def test_a_cheater_that_cannot_post_its_bond_is_metered_and_fair_share_audits_nobody() -> None:
    outcome = run(_scenario(0.2, fund=30.0), "maxwell")  # the bond is 40 $J
    for name in ("persistent", "intermittent"):
        cheater = _agent(outcome, name)
        assert cheater.reports.audits == 0 and cheater.slashed_j == 0.0
        assert cheater.paid_j == pytest.approx(cheater.energy_j, abs=1e-5)
        assert cheater.state is AgentState.DEAD
    fair = run(_scenario(0.2), "fairshare")
    assert all(a.reports.audits == 0 and a.paid_j == 0.0 for a in fair.agents)


@pytest.mark.parametrize("p", [0.0, 0.2, 1.0])
def test_money_is_conserved_paid_slashed_balance_and_bond(p: float) -> None:
    for fund in (30.0, 150.0, 1500.0):  # bond unaffordable, dies holding its bond, lives
        for agent in run(_scenario(p, 3, fund=fund), "maxwell").agents:
            held = agent.reports.bond / 1e6
            total = agent.paid_j + agent.slashed_j + agent.balance / 1e6 + held
            assert total == pytest.approx(agent.spec.fund_j, abs=1e-5)
            assert held == 0.0 or agent.live  # an agent that ended got its bond back


def test_a_scenario_file_takes_cheaters_their_strategy_and_the_audit_probability() -> None:
    text = """
    [node]
    cores = 2
    duration_s = 30
    audit_probability = 0.25
    [[agents]]
    name = "liar"
    behaviour = { kind = "cheater", strategy = "intermittent", lie_share = 0.5, claim_fraction = 0.1 }
    fund = 500
    bid = 2
    [[agents]]
    name = "rich"
    behaviour = "malicious"
    fund = 10000
    bid = 5
    """  # noqa: E501
    loaded = parse(text, "t.toml", seed=7)
    assert loaded.node.audit_probability == 0.25
    liar = loaded.agents[0].behaviour
    assert liar == replace(CHEATER, strategy="intermittent", lie_share=0.5, claim_fraction=0.1)
    assert loaded.node_scenarios()[0].seed == 7
    assert parse(dumps(loaded), "t.toml") == loaded
    bad = {
        ('"intermittent"', '"sometimes"'): "strategy",
        ("claim_fraction = 0.1", "claim_fraction = 1.5"): "claim_fraction",
        ("lie_share = 0.5", "lie_share = -0.1"): "lie_share",
        ("lie_share = 0.5", "lie_shar = 0.5"): "lie_shar",
    }
    for (old, new), key in bad.items():
        with pytest.raises(ScenarioError, match=key):
            parse(text.replace(old, new), "t.toml")
    with pytest.raises(ScenarioError, match="audit_probability"):
        parse(text.replace("0.25", "1.5"), "t.toml")
