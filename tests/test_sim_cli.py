"""`maxwell sim FILE.toml`: a scenario file run on the twin, Maxwell beside fair share with the
ratio, labelled as simulated; the same file and seed print the same figures; a bad file, flag
or --out is a one-line usage error (status 2) that names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import maxwell
from maxwell.sim.scenario import load

EXAMPLES = Path(__file__).resolve().parent.parent / "scenarios"
APOPTOSIS = str(EXAMPLES / "apoptosis.toml")
FIGURES = {"energy_j", "value", "value_per_j", "low_value_energy_j", "idle_wanted_core_s",
           "killed", "jobs_done", "peak_c"}  # fmt: skip


def test_json_has_both_policies_and_the_ratio_and_the_same_seed_prints_the_same() -> None:
    said = maxwell("sim", APOPTOSIS, "--seed", "3", "--json")
    assert said.returncode == 0, said.stderr
    result = json.loads(said.stdout)
    assert (result["scenario"], result["seed"], result["nodes"], result["agents"]) == (
        "apoptosis", 3, 1, 3
    )  # fmt: skip
    assert result["measured_on"].startswith("twin")  # simulated, and it says so
    assert set(result["maxwell"]) == set(result["fairshare"]) == set(result["ratio"]) == FIGURES
    mine, theirs = result["maxwell"], result["fairshare"]
    assert result["ratio"]["energy_j"] == round(mine["energy_j"] / theirs["energy_j"], 4)
    assert {"looper", "bloat"} <= set(mine["killed"]) and theirs["killed"] == []
    assert result["ratio"]["killed"] is None  # fair share killed nobody: no ratio
    assert json.loads(maxwell("sim", APOPTOSIS, "--seed", "3", "--json").stdout) == result
    other = json.loads(maxwell("sim", APOPTOSIS, "--seed", "4", "--json").stdout)
    assert other["maxwell"] != mine  # the seed draws the looper's and the bloat's funds


def test_the_table_sets_maxwell_beside_fair_share_and_says_it_is_simulated() -> None:
    said = maxwell("sim", APOPTOSIS)
    assert said.returncode == 0, said.stderr
    lines = said.stdout.splitlines()
    assert "twin" in said.stdout and "not this machine's processes" in said.stdout
    header = next(line for line in lines if "Maxwell" in line and "fair share" in line)
    assert header.split()[-1] == "ratio"
    for label in ("energy (J)", "value per J", "low-value energy (J)", "idle wanted (core-s)",
                  "killed", "jobs done"):  # fmt: skip
        assert any(line.startswith(label) for line in lines), label
    assert "killed under Maxwell: bloat, looper" in said.stdout


def test_one_policy_alone_has_no_ratio() -> None:
    said = maxwell("sim", APOPTOSIS, "--policy", "fairshare", "--json")
    result = json.loads(said.stdout)
    assert "fairshare" in result and "maxwell" not in result and "ratio" not in result
    assert result["fairshare"]["killed"] == []


def test_out_writes_every_agents_figures_and_the_scenario_as_run(tmp_path: Path) -> None:
    said = maxwell("sim", APOPTOSIS, "--seed", "2", "--json", "--out", str(tmp_path / "o"))
    assert said.returncode == 0, said.stderr
    full = json.loads((tmp_path / "o" / "apoptosis.json").read_text())
    assert full["maxwell"]["agents"]["looper"]["state"] == "dead"
    assert {k: full["maxwell"][k] for k in FIGURES} == json.loads(said.stdout)["maxwell"]
    written = load(tmp_path / "o" / "apoptosis.scenario.toml")
    assert written == load(APOPTOSIS, 2)


def test_a_cluster_runs_its_nodes_independently_and_says_so(tmp_path: Path) -> None:
    text = (EXAMPLES / "apoptosis.toml").read_text().replace("[node]", "nodes = 2\n\n[node]")
    path = tmp_path / "pair.toml"
    path.write_text(text)
    said = maxwell("sim", str(path), "--json")
    assert said.returncode == 0, said.stderr
    result = json.loads(said.stdout)
    assert result["nodes"] == 2 and "independently" in result["nodes_run"]
    text_out = maxwell("sim", str(path)).stdout
    assert "the 2 nodes ran independently" in text_out


def test_a_bad_scenario_is_a_one_line_usage_error_naming_the_file_table_and_key(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\ncores = -1\n[[agents]]\nname = "a"\nbehaviour = "looper"\n'
                   "fund = 1\nbid = 1\n")  # fmt: skip
    said = maxwell("sim", str(bad), "--out", str(tmp_path / "o"))
    assert said.returncode == 2 and said.stdout == ""
    assert said.stderr.strip().splitlines() == [
        f"maxwell sim: error: {bad}: [node]: cores: must be more than 0, got -1"
    ]
    assert not (tmp_path / "o").exists()  # nothing written before the file was checked
    bad.write_text("[node\n")
    assert maxwell("sim", str(bad)).returncode == 2
    missing = maxwell("sim", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2 and "cannot read it" in missing.stderr


def test_a_bad_flag_or_out_is_a_usage_error(tmp_path: Path) -> None:
    assert maxwell("sim", APOPTOSIS, "--policy", "lottery").returncode == 2
    assert maxwell("sim", APOPTOSIS, "--seed", "x").returncode == 2
    assert maxwell("sim").returncode == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    said = maxwell("sim", APOPTOSIS, "--out", str(blocker / "o"))
    assert said.returncode == 2 and "--out" in said.stderr
