"""`maxwell experiment NAME`: the evidence's command (issue 14, 4). It runs on the twin, writes
its JSON, PNG and report, and says which claims held; the same seed gives the same result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import maxwell

pytest.importorskip("matplotlib", reason="pip install 'maxwell[experiment]'")


def test_apoptosis_writes_its_result_plot_and_report_and_is_deterministic(tmp_path: Path) -> None:
    said = maxwell("experiment", "apoptosis", "--seed", "7", "--out", str(tmp_path), "--json")
    assert said.returncode == 0, said.stderr
    result = json.loads(said.stdout)
    assert set(result) == {
        "experiment", "seed", "measured_on", "maxwell", "baseline", "claims", "version"
    }  # fmt: skip
    assert (result["experiment"], result["seed"]) == ("apoptosis", 7)
    assert result["measured_on"].startswith("twin")  # simulated, and it says so
    assert len(result["claims"]) == 4
    for claim in result["claims"]:
        assert set(claim) == {"claim", "holds", "figure"} and isinstance(claim["holds"], bool)
    written = json.loads((tmp_path / "apoptosis.json").read_text())
    assert written == {key: value for key, value in result.items() if key != "version"}
    assert (tmp_path / "apoptosis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "apoptosis.md").read_text()
    assert "maxwell experiment apoptosis --seed 7" in report and "twin" in report
    again = maxwell("experiment", "apoptosis", "--seed", "7", "--out", str(tmp_path / "b"),
                    "--json")  # fmt: skip
    assert json.loads(again.stdout) == result
    other = maxwell("experiment", "apoptosis", "--seed", "8", "--out", str(tmp_path / "c"),
                    "--json")  # fmt: skip
    assert json.loads(other.stdout)["maxwell"] != result["maxwell"]  # the seed draws the funds


def test_the_looper_dies_under_the_market_and_runs_on_under_fair_share(tmp_path: Path) -> None:
    said = maxwell("experiment", "apoptosis", "--out", str(tmp_path), "--json")
    result = json.loads(said.stdout)
    assert "looper" in result["maxwell"]["killed"] and result["baseline"]["killed"] == []
    first = result["claims"][0]
    assert first["claim"].startswith("A hallucinating agent runs out of money")
    assert first["holds"] is True


def test_landauer_taxes_the_churning_program_to_death_and_not_the_appending_one(
    tmp_path: Path,
) -> None:
    said = maxwell("experiment", "landauer", "--out", str(tmp_path), "--json")
    assert said.returncode == 0, said.stderr
    result = json.loads(said.stdout)
    fates = result["maxwell"]["by_multiplier"]
    assert set(fates) == {"0", "1", "1e+09", "4e+11", "1e+12"}
    assert fates["4e+11"]["churn"]["state"] == "dead"
    assert fates["4e+11"]["append"] == {**fates["0"]["append"]}  # it frees nothing: no tax
    assert fates["1"]["churn"]["state"] == "finished" and fates["1"]["churn"]["tax_j"] == 0
    assert 0 < fates["1"]["churn"]["physical_j"] < 1e-6  # real, and below the ledger's unit
    taxes = [fates[m]["churn"]["tax_j"] for m in ("1e+09", "4e+11")]
    assert 0 < taxes[0] < taxes[1]
    assert all(fate["state"] == "finished" for fate in result["baseline"].values())
    assert [claim["holds"] for claim in result["claims"]] == [True, True]


def test_limits_shows_the_money_decides_not_the_value(tmp_path: Path) -> None:
    said = maxwell("experiment", "limits", "--out", str(tmp_path), "--json")
    assert said.returncode == 0, said.stderr
    result = json.loads(said.stdout)
    mine, theirs = result["maxwell"]["agents"], result["baseline"]["agents"]
    assert mine["malicious"]["state"] != "dead" and mine["malicious"]["units"] == 0
    assert mine["benign"]["state"] == "dead" and theirs["benign"]["state"] == "exited"
    assert "funded" in result["maxwell"]["jobs_done"]
    assert [claim["holds"] for claim in result["claims"]] == [True, True]


def test_an_unknown_experiment_is_a_usage_error(tmp_path: Path) -> None:
    said = maxwell("experiment", "nonsense", "--out", str(tmp_path))
    assert said.returncode == 2 and "apoptosis" in said.stderr
    assert not any(tmp_path.iterdir())
