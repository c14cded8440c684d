"""`maxwell experiment mechanisms` (issue 14, 4): the market's mechanisms under truthful and
strategic bidders beside fair share. Checked against figures worked out by hand (the optimum, a
uniform bidder's gain from shading, VCG's zero gap), invariants (nobody served past capacity or
demand, no welfare above the optimum, truthful bidders never pay above their value) and
determinism under the seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maxwell.economy.mechanisms import make_mechanism
from maxwell.experiments import Result
from maxwell.experiments.bidding import (
    GAIN_TOLERANCE,
    Market,
    Population,
    best_response,
    draw_population,
    truthfulness_gap,
)
from maxwell.experiments.mechanisms import QUICK, fair_share, posted_over_ticks, run

MECHANISMS = ("uniform", "vcg", "kelly", "lottery", "posted")


@pytest.fixture(scope="module")
def quick() -> Result:
    return run(0, quick=True)


def _population(values: list[float], demands: list[float], capacity: float) -> Population:
    agents = ("cure", *(f"b{i:02d}" for i in range(1, len(values))))
    return Population(agents, np.array(values), np.array(demands), capacity, spot=0.5)


def test_the_same_seed_gives_the_same_json_and_another_seed_another_population(
    quick: Result,
) -> None:
    again = run(0, quick=True).to_json()
    assert json.dumps(again) == json.dumps(quick.to_json())
    other = run(1, quick=True).to_json()
    assert other["maxwell"]["population"] != again["maxwell"]["population"]
    assert set(again) == {"experiment", "seed", "measured_on", "maxwell", "baseline", "claims"}
    assert again["measured_on"].startswith("twin")
    assert set(again["maxwell"]["mechanisms"]) == set(MECHANISMS)


def test_the_optimum_is_the_highest_values_first_up_to_demand() -> None:
    population = _population([10.0, 2.0, 3.0, 1.0], [1.0, 2.0, 1.5, 5.0], capacity=3.0)
    assert population.optimal_welfare() == pytest.approx(10 * 1.0 + 3 * 1.5 + 2 * 0.5)
    roomy = _population([10.0, 2.0], [1.0, 2.0], capacity=9.0)
    assert roomy.optimal_welfare() == pytest.approx(14.0)


@pytest.mark.parametrize("name", MECHANISMS)
def test_every_outcome_respects_capacity_demand_the_optimum_and_the_bids(name: str) -> None:
    population = draw_population(3, 8, 4.0)
    market = Market(make_mechanism(name), population, QUICK.grid, seed=3, draws=2)
    optimum = population.optimal_welfare()
    for bids in (market.truthful, (0,) * 8, (len(QUICK.grid) - 1,) * 8):
        outcome = market.outcome(bids)
        assert outcome.cores.sum() <= population.capacity + 1e-9
        assert (outcome.cores <= population.demands + 1e-9).all()
        assert outcome.welfare(population) <= optimum + 1e-9
        served = outcome.cores > 0
        # The daemon's bill: never above the bid, never below spot, per core served.
        assert (outcome.payments <= outcome.bids * outcome.cores + 1e-9).all()
        assert (outcome.payments[served] >= population.spot * outcome.cores[served] - 1e-9).all()
    truthful = market.outcome(market.truthful)
    assert truthful.revenue <= truthful.welfare(population) + 1e-9  # nobody pays above value


def test_uniform_and_vcg_allocate_efficiently_and_fair_share_does_not(quick: Result) -> None:
    figures = quick.to_json()
    mechanisms, fair = figures["maxwell"]["mechanisms"], figures["baseline"]["fair_share"]
    for name in ("uniform", "vcg"):
        assert mechanisms[name]["truthful"]["efficiency"] == pytest.approx(1.0)
    demand = figures["maxwell"]["population"]["cure"]["demand"]
    assert mechanisms["uniform"]["truthful"]["cure_cores"] == pytest.approx(demand)
    assert fair["cure_cores"] < demand and fair["revenue"] == 0.0
    for name in MECHANISMS:
        for way in ("truthful", "strategic"):
            assert fair["efficiency"] < mechanisms[name][way]["efficiency"] <= 1.0 + 1e-9


def test_fair_share_is_an_equal_split_capped_by_demand() -> None:
    population = _population([9.0, 1.0, 1.0], [2.0, 0.5, 3.0], capacity=3.0)
    # 1 core each; b01 wants 0.5, so its other 0.5 is split between cure and b02: 1.25 each.
    expected = 9.0 * 1.25 + 1.0 * 0.5 + 1.0 * 1.25
    figures = fair_share(population)
    assert figures["cure_cores"] == pytest.approx(1.25)
    assert figures["welfare"] == pytest.approx(expected)
    assert figures["efficiency"] == pytest.approx(expected / population.optimal_welfare(), 1e-5)


def test_a_partially_filled_uniform_bidder_gains_by_shading_and_vcg_gives_it_nothing() -> None:
    # tests/test_mechanisms.py's worked example: two cores and a half, the third bidder marginal.
    population = _population([5.0, 4.0, 3.0], [1.0, 1.0, 1.0], capacity=2.5)
    grid = (1 / 3, 1.0)
    gap = truthfulness_gap(Market(make_mechanism("uniform"), population, grid, seed=0))
    # Truthful: it pays its own 3 for half a core (utility 0); at 1 it pays 1: (3 - 1) x 0.5.
    assert (gap.agent, gap.multiplier, gap.truthful_utility) == ("b02", 1 / 3, 0.0)
    assert gap.gain == pytest.approx(1.0) and gap.relative is None
    assert gap.share_of_value == pytest.approx(1 / 3)
    vcg = truthfulness_gap(Market(make_mechanism("vcg"), population, grid, seed=0))
    assert vcg.gain == 0.0 and vcg.agent is None and vcg.bidders_who_gain == 0


def test_kelly_bidders_gain_by_shading_and_lose_money_truthful_under_its_own_payments() -> None:
    population = _population([1.0, 1.0, 1.0], [10.0, 1.0, 1.0], capacity=1.0)
    population = Population(population.agents, population.values, population.demands, 1.0, 0.0)
    grid = (0.4, 1.0)
    charged = Market(make_mechanism("kelly"), population, grid, seed=0)
    assert truthfulness_gap(charged).gain > 0.1
    own = Market(make_mechanism("kelly"), population, grid, seed=0, payments="mechanism")
    # Kelly charges an uncapped bidder its whole budget (price x demand) for a share of it.
    assert own.outcome(own.truthful).utility(population).min() < 0


@pytest.mark.parametrize("name", MECHANISMS)
def test_best_response_stops_where_nobody_gains_by_moving(name: str) -> None:
    population = draw_population(5, 6, 3.0)
    market = Market(make_mechanism(name), population, QUICK.grid, seed=5, draws=2)
    dynamics = best_response(market, range(6), rounds=8)
    assert dynamics.converged, f"{name} did not settle in 8 rounds on this population"
    for bidder in range(6):
        now = market.utility_of(bidder, dynamics.bids, dynamics.bids[bidder])
        for choice in range(len(QUICK.grid)):
            assert market.utility_of(bidder, dynamics.bids, choice) <= now + GAIN_TOLERANCE


def test_vcg_best_response_never_leaves_truthful_bids() -> None:
    population = draw_population(11, 8, 4.0)
    market = Market(make_mechanism("vcg"), population, QUICK.grid, seed=11)
    dynamics = best_response(market, range(8), rounds=3)
    assert dynamics == type(dynamics)(market.truthful, 1, True, 0)


def test_posted_carries_no_state_from_tick_to_tick_and_lands_near_uniform() -> None:
    ticks = posted_over_ticks(draw_population(2, 8, 4.0), 4)
    assert ticks["same_every_tick"] is True and len(ticks["prices"]) == 4
    assert abs(ticks["price_gap"]) < 0.01


def test_the_claims_as_measured(quick: Result) -> None:
    cure, by_value, vcg, shading = quick.claims
    assert cure.claim.startswith("An agent solving a cure for cancer gets funded by the user")
    assert by_value.claim.startswith("Kubernetes schedules by fairness") and by_value.holds
    assert vcg.claim.startswith("Mechanism design: Vickrey") and vcg.holds
    figures: dict[str, Any] = quick.to_json()["maxwell"]["mechanisms"]
    assert shading.holds == (
        figures["uniform"]["over_populations"]["where_someone_gains"] > 0
        and figures["kelly"]["over_populations"]["where_someone_gains"] > 0
    )
    demand = quick.to_json()["maxwell"]["population"]["cure"]["demand"]
    rationed = [n for n, f in figures.items() if f["strategic"]["cure_cores"] < demand * 0.999999]
    assert cure.holds == (not rationed)  # posted rations every taker, the cure agent included
    assert "fair share gives it" in cure.figure


def test_it_writes_its_json_plot_and_report(quick: Result, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install 'maxwell[experiment]'")
    paths = quick.write(tmp_path, "maxwell experiment mechanisms --seed 0")
    assert json.loads(paths[0].read_text()) == quick.to_json()
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "maxwell experiment mechanisms --seed 0" in paths[2].read_text()
