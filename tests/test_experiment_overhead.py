"""`maxwell experiment overhead` (issue 14): the auctioneer's cost against n and against the CPU
it allocates. Timings vary, so nothing here asserts one: the tests check that the inputs are
deterministic and are the daemon's paths (the standing book matches, the market stands or moves
as each scenario says), and that the figures and claims follow from given timings (synthetic
power laws whose slopes and fractions are known), plus one quick run's shape."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maxwell.economy.mechanisms import Clearing
from maxwell.experiments import Result
from maxwell.experiments import overhead as experiment
from maxwell.experiments import overhead_workload as workload
from maxwell.experiments.overhead import CASES, Timing
from maxwell.node.tick import TickPlan, book_matches, plan_tick

SIZES = (10, 100, 1_000, 10_000)


def test_the_agents_are_a_function_of_the_seed_and_n() -> None:
    first, again, other = workload.agents(3, 50), workload.agents(3, 50), workload.agents(4, 50)
    assert first.busy == again.busy
    assert first.bids.prices.tolist() == again.bids.prices.tolist()
    assert first.bids.prices.tolist() != other.bids.prices.tolist()
    assert [a.bid_seq for a in first.busy] == list(range(50))  # arrival order is the id order
    low, high = workload.BID_RANGE
    assert all(low <= a.bid < high and a.balance == workload.FUNDS for a in first.busy)
    with pytest.raises(ValueError, match="at least one agent"):
        workload.agents(0, 0)


@pytest.mark.parametrize("n", [1, 37, 400])
def test_the_tick_scenarios_take_the_daemons_paths(n: int) -> None:
    drawn = workload.agents(0, n)
    scenario = workload.ticks(drawn)
    busy, idle, rebid, auction = (case.call() for case in workload.tick_cases(scenario))
    assert isinstance(busy, TickPlan) and isinstance(idle, TickPlan)
    assert isinstance(rebid, TickPlan) and isinstance(auction, Clearing)
    # busy: the standing book holds every bid as it stands (not rebuilt), all n are planned
    assert book_matches(scenario.book, scenario.busy.agents)
    assert len(busy.agents) == n and busy == scenario.busy_plan
    assert busy.granted_cores <= workload.CAPACITY_CORES + 1e-9
    billed = [a for a in scenario.busy.agents if a.energy_uj > 0]
    assert len(busy.posts) == len(billed) > 0
    assert busy == plan_tick(scenario.busy)  # the book changes nothing but the cost
    # idle: nothing planned, the market stands; the same as handing every agent in
    assert idle.agents == {} and idle.standing is scenario.standing
    everyone = workload.tick_input(scenario.idle, tick=4)
    assert plan_tick(everyone, standing=scenario.standing).agents == {}
    # rebid: the moved bid is in the book as it stands, so the market moves: all are planned
    assert book_matches(scenario.moved_book, [scenario.moved, *scenario.idle[1:]])
    assert len(rebid.agents) == n and rebid.standing is not scenario.standing
    # the auctioneer alone clears as the busy tick did
    assert auction.clearing_price == busy.clearing_price


def test_the_busy_outcome_accounts_for_every_agent() -> None:
    for n in (10, 300):
        outcome = workload.outcome(workload.ticks(workload.agents(5, n)).busy_plan)
        assert outcome["served"] + outcome["on_idle_cores"] + outcome["frozen"] == n
        assert 0 < outcome["granted_cores"] <= workload.CAPACITY_CORES
        assert outcome["clearing_price"] >= workload.SPOT_PRICE  # never below the reserve
    low = workload.outcome(workload.ticks(workload.agents(5, 300)).busy_plan)
    assert low["frozen"] > 0  # bids below the reserve freeze


def test_every_bid_update_re_queues_a_bid() -> None:
    drawn = workload.agents(1, 20)
    book = workload.standing_book(drawn.bids)
    case = workload.update_case(drawn, 1, book=book)
    for _ in range(3):
        case.call()
    # each price change takes a new arrival number; an update that kept its price would not
    probe = book.insert("probe", 1.0, 1.0)
    assert probe.seq == 20 + 3 * workload.UPDATES_PER_CALL
    assert len(book) == 21


def test_the_cases_are_the_ones_the_experiment_reports() -> None:
    drawn = workload.agents(0, 30)
    scenario = workload.ticks(drawn)
    names = [
        *(c.name for c in workload.tick_cases(scenario)),
        workload.bills_case(scenario).name,
        *(c.name for c in workload.clearing_cases(drawn, 0)),
        workload.update_case(drawn, 0).name,
        workload.fair_share_case(drawn).name,
    ]
    assert sorted(names) == sorted(CASES)
    shares = workload.fair_share_case(drawn).call()
    assert isinstance(shares, dict)
    assert sum(shares.values()) == pytest.approx(workload.CAPACITY_CORES)  # demand exceeds it


def synthetic(cost: Callable[[str, int], float]) -> dict[str, dict[int, Timing]]:
    """Timings from a cost law (seconds per call), wall = CPU."""
    return {case: {n: Timing(cost(case, n), cost(case, n)) for n in SIZES} for case in CASES}


def outcomes() -> dict[int, dict[str, float | int]]:
    return {n: {"clearing_price": 1.0} for n in SIZES}


def laws(
    case: str, n: int, *, update: str = "log", tick: float = 1.0, busy_s: float = 1e-5
) -> float:
    """Costs: the update O(log n) (or linear), the book walk constant, ticks n^tick."""
    if case == "orderbook_update":
        return 1e-6 * (math.log(n) if update == "log" else n)
    if case in ("uniform_book", "uniform", "vcg", "kelly", "lottery", "posted"):
        return 2e-5
    if case == "plan_tick_busy":
        return busy_s * math.pow(n, tick)
    return 1e-7 * math.pow(n, tick)


def claims_of(cost: Callable[[str, int], float]) -> dict[str, bool]:
    maxwell, baseline = experiment.figures(synthetic(cost), outcomes(), quick=False)
    return {
        claim.claim.split(":")[0]: claim.holds for claim in experiment.claims(maxwell, baseline)
    }


def test_the_figures_follow_from_the_timings() -> None:
    maxwell, baseline = experiment.figures(synthetic(laws), outcomes(), quick=False)
    costs = maxwell["costs"]
    busy = costs["plan_tick_busy"]
    assert busy["exponent"] == pytest.approx(1.0, abs=1e-3)
    assert costs["uniform_book"]["exponent"] == pytest.approx(0.0, abs=1e-3)
    assert busy["cpu_us"]["1000"] == pytest.approx(1e-2 * 1e6)
    assert busy["per_agent_us"]["1000"] == pytest.approx(10.0)
    # the tick's cost over the CPU it allocates: 2 cores x the default 1 s tick, and 100 ms
    assert busy["fraction"]["1000"] == pytest.approx(0.01 / 2.0)
    assert busy["fraction_fast_tick"]["1000"] == pytest.approx(0.01 / 0.2)
    assert maxwell["reference_exponents"]["n_log_n"] == pytest.approx(1.198, abs=1e-3)
    ratio = baseline["market_over_fair_share"]["plan_tick_busy"]["1000"]
    assert ratio == pytest.approx(100.0)
    assert maxwell["timing"]["wall_clock"] is True
    assert json.loads(json.dumps(maxwell)) == maxwell  # JSON-ready, keys as strings


def test_the_claims_hold_or_fail_on_the_figures() -> None:
    sentences = ("A market mechanism runs in O(log n) time", "A market mechanism runs in O(1) time",
                 "Per agent, the tick runs in O(1) or O(log n) time",
                 "The auction mechanism does not consume more compute than the workloads",
                 "The market's whole tick, billing every agent, costs under 1 % of the CPU it "
                 "allocates at 1,000 busy agents.")  # fmt: skip
    assert list(claims_of(laws)) == list(sentences)
    assert all(claims_of(laws).values())  # 5 ms at 1,000 busy agents: 0.5 % of 2 core-seconds
    linear = claims_of(lambda case, n: laws(case, n, update="linear"))
    assert linear[sentences[0]] is False and linear[sentences[1]] is True
    quadratic = claims_of(lambda case, n: laws(case, n, tick=2.0, busy_s=1e-8))
    assert quadratic[sentences[2]] is False
    heavy = claims_of(lambda case, n: laws(case, n, busy_s=3e-5))  # 30 ms: 1.5 %
    assert heavy[sentences[4]] is False and heavy[sentences[3]] is True


@pytest.fixture(scope="module")
def quick() -> Result:
    return experiment.run(0, quick=True)


def test_a_quick_run_reports_every_case_and_says_it_is_timed(quick: Result) -> None:
    result: dict[str, Any] = quick.to_json()
    assert result["experiment"] == "overhead" and not result["measured_on"].startswith("twin")
    maxwell = result["maxwell"]
    assert maxwell["sizes"] == [10, 100, 1_000]
    timing = maxwell["timing"]
    assert timing["wall_clock"] is True and timing["quick"] is True and timing["cpu_count"] >= 1
    for case in CASES:
        row = maxwell["costs"].get(case) or result["baseline"]["fair_share"]
        assert all(value > 0 for value in row["cpu_us"].values()), case
        assert math.isfinite(row["exponent"]), case
    assert len({claim["claim"] for claim in result["claims"]}) == 5
    assert "O(log n)" in result["baseline"]["cfs"]
    assert json.loads(json.dumps(result)) == result


def test_what_the_tick_decided_is_the_same_under_the_seed(quick: Result) -> None:
    decided = quick.to_json()["maxwell"]["outcome"]
    for n in (10, 100, 1_000):
        again = workload.outcome(workload.ticks(workload.agents(0, n)).busy_plan)
        assert decided[str(n)] == again
    other = workload.outcome(workload.ticks(workload.agents(1, 100)).busy_plan)
    assert other != decided["100"]


def test_the_plot_is_a_png(quick: Result, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install 'maxwell[experiment]'")
    paths = quick.write(tmp_path, "maxwell experiment overhead --quick")
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "maxwell experiment overhead --quick" in paths[2].read_text()
