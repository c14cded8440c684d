"""`maxwell experiment thermal` (quick form): a cluster under a heat spike with gossip price
coupling and without, and dissemination time against N. Checked: the JSON's shape and that it
says what it measured, figures against what they must be whatever the seed (the baseline's cool
nodes sell at exactly the grid price; coupling's discount within the rule's floor; the measured
Serf points carried unchanged), and each claim's verdict against its own figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maxwell.experiments import TWIN, Result
from maxwell.experiments.thermal import NAME, NODE, SIZES, run, scenario
from maxwell.sim.gossip import MEASURED


@pytest.fixture(scope="module")
def result() -> Result:
    return run(0, quick=True)


def test_it_reports_both_arms_on_the_twin(result: Result) -> None:
    found: dict[str, Any] = result.to_json()
    json.dumps(found)  # JSON-ready
    assert found["experiment"] == NAME == "thermal" and found["measured_on"] == TWIN
    assert found["maxwell"]["coupled"] is True and found["baseline"]["coupled"] is False
    for arm in (found["maxwell"], found["baseline"]):
        assert arm["jobs"] + arm["dropped"] == len(scenario(0, True, True).jobs)
        assert len(arm["spikes"]) == 1 and arm["spikes"][0]["node"] == 0
        # the spiked node passed its price setpoint under both: the spike is a real one
        assert arm["hot_peak_c"] > NODE.thermal.critical_c - 15
        assert arm["hot_over_setpoint_s"] > 0


def test_the_same_jobs_and_spike_in_both_arms() -> None:
    coupled, alone = scenario(3, True, True), scenario(3, True, False)
    assert coupled.jobs == alone.jobs and coupled.spikes == alone.spikes
    assert coupled.coupled and not alone.coupled


def test_prices_say_who_coupled(result: Result) -> None:
    mine, theirs = result.maxwell, result.baseline
    # without coupling a node below its setpoint sells at the grid price, never less
    assert theirs["cool_nodes_price"] == 1.0
    assert 0.7 <= mine["cool_nodes_price"] < 1.0


def test_dissemination_against_n_beside_the_measured_points(result: Result) -> None:
    spread = result.maxwell["dissemination"]
    assert [row["nodes"] for row in spread["model"]] == list(SIZES[:-1])  # quick: up to 1,000
    assert all(row["missed"] == 0 for row in spread["model"])
    assert all(row["p50_ms"] <= row["p99_ms"] for row in spread["model"])
    p50s = [row["p50_ms"] for row in spread["model"]]
    assert p50s == sorted(p50s)  # a bigger cluster never hears faster at the median
    assert [(m["nodes"], m["p50_ms"], m["p99_ms"]) for m in spread["measured"]] == [
        (m.nodes, m.p50_ms, m.p99_ms) for m in MEASURED
    ]


def test_each_verdict_follows_its_figures(result: Result) -> None:
    mine, theirs = result.maxwell, result.baseline
    told, cheaper, rebalanced = result.claims
    largest = mine["dissemination"]["model"][-1]
    assert told.holds == (largest["p99_ms"] < NODE.thermal.time_constant_s * 1e3)
    assert cheaper.holds == (mine["cool_nodes_price"] < theirs["cool_nodes_price"])
    assert rebalanced.holds == (mine["hot_over_setpoint_s"] < theirs["hot_over_setpoint_s"])
    assert "rebalances the thermodynamics of the data center" in rebalanced.claim
    assert f"{mine['hot_over_setpoint_s']:g} s over its setpoint" in rebalanced.figure
    assert f"its peak {mine['hot_peak_c']} vs {theirs['hot_peak_c']}" in rebalanced.figure


def test_it_draws_its_plot(result: Result, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot needs the [experiment] extra")
    paths = result.write(tmp_path, "maxwell experiment thermal --seed 0 --quick")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
