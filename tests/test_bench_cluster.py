"""`maxwell bench cluster --quick --json` runs end to end (its figures are in docs/benchmarks.md,
never asserted here but for what is not a timing: where the jobs went, and the money)."""

from __future__ import annotations

import json
import subprocess

import pytest

from gossip_support import needs_serf
from helpers import maxwell, wait_until

pytest.importorskip("ray", reason="ray is not installed (pip install 'maxwell[cluster]')")
pytestmark = needs_serf

SIDE = {"hot_node_share", "placement_ms", "submit_ms", "jobs_per_s", "peak_c", "energy_j_per_job"}


def _raylets() -> int:
    found = subprocess.run(["pgrep", "-f", "--", "ray/raylet/raylet"], capture_output=True)
    return len(found.stdout.split())


def test_the_quick_benchmark_places_nothing_on_the_hot_node_and_conserves_money() -> None:
    said = maxwell("bench", "cluster", "--quick", "--json", timeout=400)
    assert said.returncode == 0, said.stderr[-2000:]
    figures = json.loads(said.stdout)
    assert set(figures) == {"jobs", "busy_s", "maxwell", "ray_default", "money_conserved"}
    assert set(figures["maxwell"]) == set(figures["ray_default"]) == SIDE
    assert figures["money_conserved"] is True
    assert figures["maxwell"]["hot_node_share"] == 0.0  # in distress and dearer than the bid
    assert figures["maxwell"]["energy_j_per_job"] > 0
    assert figures["ray_default"]["energy_j_per_job"] is None  # no meter attributes Ray's tasks
    mine = figures["maxwell"]
    assert 0 < mine["placement_ms"]["p50"] <= mine["submit_ms"]["p50"]  # a part of the call
    wait_until(lambda: _raylets() == 0, timeout_s=30, what="no raylet left")
