"""Crash safety: a writer process killed with SIGKILL at random points, over and over.

After every kill the ledger is reopened (as a restarted writer would), `verify` must pass, every
transfer the writer acknowledged (printed after the call returned) must be in the journal, and
nothing it never attempted may be. The restarted writer resumes at the first unacknowledged key,
which may or may not have committed before the kill: idempotency must make that retry apply once.

`MAXWELL_KILL_ROUNDS=300 pytest tests/test_ledger_crash.py` runs a longer campaign.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maxwell.economy.ledger import GRID, LANDAUER, TREASURY, agent_account
from maxwell.economy.store import LedgerStore

SRC = Path(__file__).resolve().parent.parent / "src"
ROUNDS = int(os.environ.get("MAXWELL_KILL_ROUNDS", "30"))
SEED = 20_260_611

# Each operation's content depends only on its index, so a retry carries the same content.
WRITER = """\
import sys
from maxwell.economy.ledger import GRID, LANDAUER, TREASURY, Movement, agent_account
from maxwell.economy.store import LedgerStore

state, start, count, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
A, B = agent_account("a"), agent_account("b")
with LedgerStore.open(state) as store:
    store.open_account(A)
    store.open_account(B)
    for i in range(start, start + count):
        key = f"{tag}{i}"
        if i % 4 == 0:
            store.transfer(key, TREASURY, A, 1_000 + i, kind="fund")
        elif i % 4 == 1:
            store.transfer(key, A, B, 500 + i % 7)
        elif i % 4 == 2:
            store.post(key, [Movement(B, GRID, 300), Movement(B, LANDAUER, 7)], kind="bill")
        else:
            store.record(key, "tick", {"i": i})
        sys.stdout.write(key + "\\n")
        sys.stdout.flush()
"""


@pytest.fixture
def writer(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return script


def start_writer(
    script: Path, state: Path, start: int, count: int, tag: str = "op-"
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, str(script), str(state), str(start), str(count), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def acknowledged(stdout: str) -> list[str]:
    """Only whole lines: a key is acknowledged once its newline was written."""
    return stdout.split("\n")[:-1]


def test_sigkill_at_random_points_loses_no_acknowledged_transfer(
    tmp_path: Path, writer: Path
) -> None:
    rng = random.Random(SEED)
    state = tmp_path / "state"
    acked: list[str] = []
    for round_number in range(ROUNDS):
        next_index = len(acked)
        process = start_writer(writer, state, next_index, 1_000_000)
        time.sleep(rng.uniform(0.0, 0.4))  # a real sleep: the kill lands at a random point
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, f"writer failed by itself: {stderr}"
        keys = acknowledged(stdout)
        assert keys == [f"op-{i}" for i in range(next_index, next_index + len(keys))]
        acked += keys

        if not (state / "maxwell.db").exists():
            assert not acked, "acknowledged transfers but no database"
            continue
        with LedgerStore.open(state) as store:
            result = store.verify()
            assert result.ok, f"round {round_number}: {result.violation}"
            journal = {entry.key for entry in store.entries() if entry.key.startswith("op-")}
        missing = set(acked) - journal
        assert not missing, f"round {round_number}: acknowledged but lost: {sorted(missing)[:5]}"
        # At most the one in flight at the kill may be there unacknowledged; nothing beyond it.
        assert journal - set(acked) <= {f"op-{len(acked)}"}, f"round {round_number}"

    assert len(acked) > ROUNDS, "the writer hardly ever got a transfer acknowledged"
    with LedgerStore.open(state, create=False) as store:
        # The last writer was killed too: finish its pending operation by retrying it.
        process = start_writer(writer, state, len(acked), 1)
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        entries = store.entries()
        assert [e.key for e in entries if e.key.startswith("op-")] == [
            f"op-{i}" for i in range(len(acked) + 1)
        ]
        balances = store.balances()
    n = len(acked) + 1
    funded = sum(1_000 + i for i in range(0, n, 4))
    moved = sum(500 + i % 7 for i in range(1, n, 4))
    bills = len(range(2, n, 4))
    assert balances[TREASURY] == -funded
    assert balances[agent_account("a")] == funded - moved
    assert balances[agent_account("b")] == moved - 307 * bills
    assert (balances[GRID], balances[LANDAUER]) == (300 * bills, 7 * bills)


def test_two_writers_at_once_neither_corrupts_nor_doubles(tmp_path: Path) -> None:
    """Two processes on one fresh state dir: own keys, plus 100 keys both write identically."""
    script = tmp_path / "two.py"
    script.write_text(
        WRITER.replace(
            '        key = f"{tag}{i}"',
            '        key = f"{tag}{i}" if i % 2 else f"shared{i}"',
        ).replace("1_000 + i", "5_000 + i")
    )
    state = tmp_path / "state"
    writers = [start_writer(script, state, 0, 200, tag) for tag in ("w1-", "w2-")]
    for process in writers:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    with LedgerStore.open(state, create=False) as store:
        result = store.verify()
        assert result.ok, result.violation
        keys = [entry.key for entry in store.entries()]
    assert len(keys) == len(set(keys))
    assert sum(key.startswith("shared") for key in keys) == 100
    assert sum(key.startswith("w1-") for key in keys) == 100
    assert sum(key.startswith("w2-") for key in keys) == 100
    assert result.entries == 5 + 2 + 300
