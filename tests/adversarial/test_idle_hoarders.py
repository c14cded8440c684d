"""Attack: hoard the market's cores while idle. Measured before the fix: ten `sleep` agents bidding
5 for a core each won all the capacity, and a busy agent bidding 5 behind them was frozen and did
no work for 30 s while the machine sat idle. Now it runs on what the hoarders leave idle (real
processes in real cgroups: runs as root)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import ledger_verifies, live_daemon

from helpers import TIME_SCALE, process_state, wait_until
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState
from maxwell.units import Money

pytestmark = pytest.mark.root

BUSY = ["sh", "-c", "while :; do :; done"]  # any uid may run it, a dynamic one too
J = 1_000_000
MEASURE_S = 2.0
HOARDERS = 10


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    with live_daemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, grace_s=60.0)) as made:
        yield made


def test_idle_hoarders_that_won_every_core_do_not_starve_a_busy_agent(daemon: NodeDaemon) -> None:
    hoarders = [
        daemon.spawn(["sleep", "600"], fund=Money(1000 * J), bid=5.0, demand=1.0).agent
        for _ in range(HOARDERS)
    ]
    worker = daemon.spawn(BUSY, fund=Money(1000 * J), bid=5.0, demand=1.0, name="worker")
    wait_until(
        lambda: daemon.agent(worker.agent).state is AgentState.THROTTLED,
        what="the worker to run on the leftovers",
    )
    served = [daemon.agent(h).share for h in hoarders]
    assert sum(served) == pytest.approx(daemon.capacity_cores)  # they hold every core on paper
    assert daemon.agent(worker.agent).share == 0.0
    pid = daemon.agent(worker.agent).pid
    assert pid is not None
    # Running or runnable, not stopped or frozen (a v1 freezer holds it in D for good); a
    # moment in D is a page fault being served (the pure v2 VM's root is a 9p mount).
    wait_until(lambda: process_state(pid) in ("R", "S"), timeout_s=10, what="the worker running")
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(MEASURE_S * TIME_SCALE)  # the window its CPU time is measured over, on purpose
    used = (cpu_seconds(pid) - before) / (time.monotonic() - started)
    assert used >= 0.5, f"the worker got {used:.2f} of a core while the hoarders slept"
    assert daemon.agent(worker.agent).state is AgentState.THROTTLED  # never frozen meanwhile
    kinds = {e.kind for e in daemon.events() if e.agent == worker.agent}
    assert "frozen" not in kinds
    daemon.tick_once(settle_all=True)
    paid = daemon.agent(worker.agent).paid
    assert paid > 0  # it pays for what it burned, at the reserve
    assert ledger_verifies(daemon)
