"""`maxwell ledger` through the installed entry point: fund, verify, tamper, verify again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpers import maxwell


def test_fund_then_verify_then_tamper_then_verify(tmp_path: Path) -> None:
    state = tmp_path / "state"
    funded = maxwell("ledger", "fund", "--state", str(state), "alice", "12.5")
    assert funded.returncode == 0, funded.stderr
    sound = maxwell("ledger", "verify", "--state", str(state), "--json")
    assert sound.returncode == 0, sound.stderr
    report = json.loads(sound.stdout)
    assert report["ok"] is True
    assert report["minted_micro"] == 12_500_000

    with sqlite3.connect(state / "maxwell.db") as db:
        db.execute("UPDATE accounts SET balance = balance + 1 WHERE name = 'agent:alice'")
    broken = maxwell("ledger", "verify", "--state", str(state))
    assert broken.returncode == 1
    assert len(broken.stdout.strip().splitlines() + broken.stderr.strip().splitlines()) == 1
    assert "agent:alice" in broken.stdout + broken.stderr


def test_verify_of_a_missing_state_dir_is_a_usage_error(tmp_path: Path) -> None:
    result = maxwell("ledger", "verify", "--state", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
