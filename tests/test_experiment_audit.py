"""`maxwell experiment audit`: detection against 1 - (1 - p)^N, cheaters' profit with and without
the bond, and honest agents never slashed, on the daemon's own audit cores. Deterministic."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from maxwell.audit.experiment import cheater_profit
from maxwell.audit.policy import CPU_TOLERANCE, MEMORY_TOLERANCE, Usage, judge
from maxwell.experiments import audit
from maxwell.experiments.audit_agents import (
    Node,
    Strategy,
    allowance,
    cheater_trial,
    edge_claim,
    honest_audits,
    noisy_claim,
    profit_paths,
)

NODE = Node()


@pytest.fixture(scope="module")
def quick() -> dict[str, object]:
    return audit.run(0, quick=True).to_json()


def test_the_same_seed_gives_the_same_json_and_another_seed_other_figures(
    quick: dict[str, object],
) -> None:
    assert json.dumps(audit.run(0, quick=True).to_json()) == json.dumps(quick)
    other = audit.run(1, quick=True).to_json()
    assert other["maxwell"] != quick["maxwell"] and other["seed"] == 1


def test_the_result_has_the_evidence_shape_and_says_where_it_was_measured(
    quick: dict[str, object],
) -> None:
    assert set(quick) == {"experiment", "seed", "measured_on", "maxwell", "baseline", "claims"}
    assert quick["experiment"] == "audit" and str(quick["measured_on"]).startswith("twin")
    claims = quick["claims"]
    assert isinstance(claims, list) and len(claims) == 4
    held = [claim["holds"] for claim in claims]
    # Detection follows the closed form, lies beyond the tolerance lose money, honest agents are
    # never slashed; a lie inside the tolerance is not caught, and the result says so.
    assert held == [True, True, False, True]


def test_the_figures_agree_with_the_closed_forms_and_the_baseline(
    quick: dict[str, object],
) -> None:
    found = quick["maxwell"]
    assert isinstance(found, dict)
    assert found["daemon_audit_probability"] == 0.001
    assert found["daemon_ticks_to_catch"]["half"] == 693  # ln 2 / -ln 0.999, rounded up
    assert found["daemon_bond_j"] == pytest.approx(10.0 * 999)  # (1 - p) / p x the full bill
    detection = found["detection"]
    for curve in detection["by_p"].values():
        assert curve["max_deviation"] <= detection["tolerance"]
    cheaters = found["cheaters"]["strategies"]
    assert cheaters["persistent"]["kept_per_lying_tick_j"] == 5.0  # half of a 10 $J tick
    baseline = quick["baseline"]
    assert isinstance(baseline, dict)
    assert baseline["cheaters"]["persistent"]["profit_j"] == 5.0 * found["cheaters"]["ticks"]
    assert found["honest"]["slashed"] == 0 and found["honest"]["audits"] > 1_000


def test_a_cheater_that_claims_nothing_earns_what_the_audit_experiment_predicts() -> None:
    """The trial drives the policy's verdict and judgement; `cheater_profit` assumes q = 1. Same
    seed, same draws: the same mean profit, tick by tick."""
    everything = Strategy("claims nothing", lie=1.0)
    paths = profit_paths(everything, NODE, 0.05, 80, 300, random.Random(11))
    expected = cheater_profit(0.05, NODE.full_bill, list(range(1, 81)), 300, seed=11)
    assert paths.bond == expected.bond == 190 * 10**6
    assert paths.bonded == expected.mean_profit


@pytest.mark.parametrize("lie", [0.5, 0.05])
def test_the_mean_profit_follows_its_closed_form(lie: float) -> None:
    """Caught at the first audit (a lie beyond the tolerance from tick 1): by tick N the mean
    profit is -bond (1 - q^N) + g N q^N, q = 1 - p."""
    p, ticks, trials = 0.05, 60, 3_000
    paths = profit_paths(Strategy("steady", lie), NODE, p, ticks, trials, random.Random(5))
    gain, bond = NODE.kept(lie), NODE.bond(p)
    for n in (1, 10, 20, 60):
        survive = (1 - p) ** n
        expected = -bond * (1 - survive) + gain * n * survive
        spread = (bond + gain * n) * math.sqrt(survive * (1 - survive) / trials)
        assert paths.bonded[n - 1] == pytest.approx(expected, abs=4 * spread + 1)
    assert paths.bonded[-1] < 0 < paths.unaudited[-1] == gain * ticks


def test_the_bond_is_the_only_difference_between_the_audited_paths() -> None:
    paths = profit_paths(Strategy("mixed", 1.0, 0.2), NODE, 0.1, 100, 400, random.Random(2))
    for bonded, clawed, unaudited, caught in zip(
        paths.bonded, paths.clawback_only, paths.unaudited, paths.caught, strict=True
    ):
        assert bonded == pytest.approx(clawed - paths.bond * caught, abs=1e-3)
        assert 0 <= clawed <= unaudited  # the claw-back returns at most what was kept
    assert paths.caught == sorted(paths.caught) and paths.caught[-1] == 1.0


def test_the_verdict_catches_a_lie_once_it_leaves_the_tolerance() -> None:
    """Audited every tick (p = 1). 5 % short: beyond 2 % + 20 ms at once. 3 % short: inside it
    until the 1 % beyond the relative part exceeds the 20 ms (tick 3). 1 % short: never."""
    for lie, caught_at in ((0.05, 1), (0.03, 3), (0.01, None)):
        trial = cheater_trial(Strategy("s", lie), NODE, 1.0, 50, random.Random(0))
        assert trial.caught_at == caught_at, lie
    kept = NODE.kept(0.01)
    assert kept == NODE.full_bill // 100
    assert cheater_trial(Strategy("s", 0.01), NODE, 1.0, 50, random.Random(0)).unaudited == [
        kept * tick for tick in range(1, 51)
    ]


def test_an_intermittent_cheater_is_caught_at_its_first_lie_when_every_tick_is_audited() -> None:
    rng = random.Random(4)
    for _ in range(20):
        trial = cheater_trial(Strategy("i", 1.0, 0.1), NODE, 1.0, 200, rng)
        first_lie = next((i + 1 for i, kept in enumerate(trial.unaudited) if kept > 0), None)
        assert trial.caught_at == first_lie
        if first_lie is not None:
            assert trial.clawback == NODE.full_bill and trial.bond_taken == NODE.bond(1.0)


def test_honest_claims_stay_within_the_tolerance_and_are_never_slashed() -> None:
    honest = honest_audits(100, 200, 0.1, NODE, random.Random(3))
    assert honest.audits > 1_000 and honest.edge_audits > 0
    assert honest.slashed == 0 and honest.slashed_money == 0
    assert 0.99 <= honest.worst_cpu < 1 and 0.99 <= honest.worst_memory < 1  # the edge agents
    assert honest.strict_slashed > honest.audits // 2  # the tolerance is what spares them


def test_the_edge_is_the_edge_a_little_further_is_a_lie() -> None:
    rng = random.Random(8)
    for _ in range(500):
        measured = Usage(rng.randrange(10**6, 10**14), rng.randrange(0, 10**13))
        assert judge(edge_claim(measured), measured).honest
        assert judge(noisy_claim(measured, rng.uniform(0.05, 4), rng), measured).honest
        beyond = Usage(
            measured.cpu_ns - math.ceil(1.001 * allowance(CPU_TOLERANCE, measured.cpu_ns)),
            measured.freed_bytes,
        )
        assert not judge(beyond, measured).honest
    assert allowance(MEMORY_TOLERANCE, 0) == 1 << 20


def test_the_detection_tolerance_and_the_closed_form() -> None:
    assert audit.tolerance(10_000) == pytest.approx(0.02)
    assert audit.ticks_to(0.01, 0.5) == 69 and 1 - 0.99**69 >= 0.5 > 1 - 0.99**68
    assert audit.log_spaced(5, 30) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        profit_paths(Strategy("s", 0.5), NODE, 0.1, 10, 0, random.Random(0))


def test_the_experiment_writes_its_json_plot_and_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install 'maxwell[experiment]'")
    result = audit.run(3, quick=True)
    paths = result.write(tmp_path, "maxwell experiment audit --seed 3")
    assert json.loads(paths[0].read_text()) == result.to_json()
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "maxwell experiment audit --seed 3" in paths[2].read_text()
