"""`maxwell report` (issue 14, 5): every experiment in one self-contained HTML page, each claim
as measured (one that does not hold shown as such), an experiment that cannot run here listed
with its reason, and the command that reproduces each."""

from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path

import pytest

from helpers import maxwell
from maxwell.errors import MaxwellError
from maxwell.experiments import Claim, Result
from maxwell.experiments.report import failed, render, run_all, write

pytest.importorskip("matplotlib", reason="pip install 'maxwell[experiment]'")


def test_the_report_gathers_each_experiments_claims_plots_and_commands(tmp_path: Path) -> None:
    said = maxwell("report", "--quick", "--out", str(tmp_path), "--only", "apoptosis,limits")
    assert said.returncode == 0, said.stderr
    assert "2 experiments" in said.stdout
    page = (tmp_path / "report.html").read_text()
    gathered = json.loads((tmp_path / "report.json").read_text())
    assert (gathered["seed"], gathered["quick"]) == (0, True)
    for name in ("apoptosis", "limits"):
        result = json.loads((tmp_path / name / f"{name}.json").read_text())
        assert gathered["experiments"][name] == result
        assert f"maxwell experiment {name} --seed 0 --quick" in page
        for claim in result["claims"]:
            assert html.escape(claim["claim"]) in page and html.escape(claim["figure"]) in page
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == 2
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched when opened


def test_a_claim_that_does_not_hold_and_an_experiment_that_cannot_run_are_shown(
    tmp_path: Path,
) -> None:
    def falls_short(seed: int, quick: bool) -> Result:
        claim = Claim("<b>Cheating</b> is impossible.", False, "caught 3 of 10")
        return Result("short", seed, "twin", {"caught": 3}, {"caught": 0}, (claim,),
                      lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\nfake"))  # fmt: skip

    def needs_root(seed: int, quick: bool) -> Result:
        raise MaxwellError("needs root and cgroups")

    ticks = iter(range(100))
    entries = run_all({"short": falls_short, "real": needs_root}, seed=3, quick=False,
                      out=tmp_path, clock=lambda: float(next(ticks)))  # fmt: skip
    assert [e.name for e in failed(entries)] == ["real"]
    assert entries[0].seconds == 1.0 and entries[0].command == "maxwell experiment short --seed 3"
    page = write(entries, tmp_path, seed=3, quick=False).read_text()
    assert "does not hold" in page and "&lt;b&gt;Cheating&lt;/b&gt;" in page and "<b>" not in page
    assert "Not run: needs root and cgroups" in page
    gathered = json.loads((tmp_path / "report.json").read_text())
    assert gathered["experiments"]["real"] == {"not_run": "needs root and cgroups"}
    assert gathered["experiments"]["short"]["claims"][0]["holds"] is False
    assert (tmp_path / "short" / "short.json").exists()
    assert render(entries, seed=3, quick=False) == page


def test_an_unknown_experiment_is_a_usage_error(tmp_path: Path) -> None:
    said = maxwell("report", "--out", str(tmp_path), "--only", "apoptosis,nosuch")
    assert said.returncode == 2
    assert "'nosuch'" in said.stderr and "apoptosis" in said.stderr
    assert not (tmp_path / "report.html").exists()


def test_the_agents_own_report_keeps_its_form_and_out_chooses_the_evidence(tmp_path: Path) -> None:
    agents = maxwell(
        "report", "--cpu", "1.0", env=os.environ | {"MAXWELL_SOCKET": str(tmp_path / "no.sock")}
    )
    assert agents.returncode == 125 and "no.sock" in agents.stderr  # it went to the daemon
    assert not list(tmp_path.iterdir())
    bare = maxwell("report")
    assert bare.returncode == 2 and "--cpu" in bare.stderr  # the agent's form, as before


def test_the_quick_report_runs_every_experiment(tmp_path: Path) -> None:
    """What CI runs: every experiment's quick form, in one page; the real-process one needs
    root, and without it the report says so and exits 1."""
    from maxwell.experiments import experiments

    said = maxwell("report", "--quick", "--out", str(tmp_path), timeout=300)
    gathered = json.loads((tmp_path / "report.json").read_text())
    assert set(gathered["experiments"]) == set(experiments())
    not_run = {n for n, e in gathered["experiments"].items() if "not_run" in e}
    if os.geteuid() == 0:
        assert said.returncode == 0, said.stderr
        assert not_run == set()
    else:
        assert said.returncode == 1 and not_run == {"fairshare"}
        assert "fairshare did not run" in said.stderr
    for name, result in gathered["experiments"].items():
        if name not in not_run:
            assert result["claims"], name  # each experiment states what it measured
    page = (tmp_path / "report.html").read_text()
    assert all(f'id="{name}"' in page for name in experiments())
