"""`maxwell demo` end to end: four real agents, four intended outcomes, a sound ledger."""

from __future__ import annotations

from helpers import last_json, maxwell
from maxwell.sensors import Sensors


def test_demo_ends_with_the_four_intended_outcomes_and_a_sound_ledger() -> None:
    result = maxwell("demo", "--json", "--duration", "110", timeout=180)
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    outcomes = {agent["name"]: agent["outcome"] for agent in report["agents"]}
    assert outcomes == {
        "useful": "finished",
        "looper": "apoptosis",
        "bloat": "apoptosis",
        "cheater": "slashed",
    }
    assert report["ledger_ok"] is True
    # The label follows what this machine's sensors are (a VM without RAPL: modelled).
    sensors = Sensors.detect(nvml=None)
    try:
        sample = sensors.sample()
    finally:
        sensors.close()
    assert report["measured"] is (sample.energy_measured and sample.temperature_measured)
    by_name = {agent["name"]: agent for agent in report["agents"]}
    # The bloat agent is drained by the Landauer tax, the looper by its energy bill.
    assert by_name["bloat"]["landauer_j"] > by_name["bloat"]["paid_j"]
    assert by_name["looper"]["paid_j"] > by_name["looper"]["landauer_j"]
    # Physical and taxed figures side by side: the physical one is the taxed over the multiplier.
    assert by_name["bloat"]["landauer_physical_j"] < 1e-6 < by_name["bloat"]["landauer_j"]
    assert report["duration_s"] < 120
    # The cheater under-reported, was caught by a sampled audit and lost money to slashing; the
    # useful agent reported honestly and passed every audit it drew.
    assert report["audit_probability"] == 0.2
    cheater, useful = by_name["cheater"], by_name["useful"]
    assert cheater["slashed_j"] > 0 and cheater["slashed_after_audits"] >= 1
    assert useful["reported"] is True and useful["slashed_j"] == 0
    # Every 50 of its 400 batches it proved its inference and earned the bounty for it.
    assert useful["proofs"] == 8
    assert useful["bounty_j"] == 8 * report["bounty_per_proof_j"]
