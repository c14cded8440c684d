"""`NodeDaemon` end to end: real processes; real cgroups as root (skips with the reason otherwise).

The first tests run anywhere (the /proc fallback: no limits, SIGSTOP for freezing); those marked
`root` run agents in real cgroups, and the recovery test kills a daemon running in a subprocess
with SIGKILL and re-adopts its agent.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import AGENTS_AS_DAEMON, TIME_SCALE, fail_once, maxwell, wait_until
from maxwell.cgroups import CgroupManager
from maxwell.economy.ledger import Entry, EntryRequest, stake_account
from maxwell.economy.store import LedgerStoreError
from maxwell.errors import CgroupUnavailableError
from maxwell.node import tick as ticks_module
from maxwell.node.config import NodeConfig, NodeConfigError
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import (
    AgentGoneError,
    AgentInfo,
    AgentState,
    NodeError,
    Principal,
    Report,
    Role,
    UnknownAgentError,
)
from maxwell.node.metrics import render_metrics
from maxwell.node.state import NodeState
from maxwell.node.supervisor import private_name
from maxwell.node.tick import DERATE_BELOW_HEADROOM_C, MIN_CAPACITY_FRACTION
from maxwell.node.wire import to_json
from maxwell.sensors import NodeSample, Sensors
from maxwell.sensors.model import active_w_per_core
from maxwell.units import Money

SRC = Path(__file__).resolve().parent.parent / "src"
BUSY = ["sh", "-c", "while :; do :; done"]  # any uid may run it, a dynamic one too
J = 1_000_000  # µ$J per $J


def tick_until(daemon: NodeDaemon, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Tick at the daemon's pace until `condition` holds; the deadline scales with the CPU
    (`helpers.TIME_SCALE`: ten times in the emulated v2 VM)."""
    deadline = time.monotonic() + timeout_s * TIME_SCALE
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(daemon.config.tick_s)  # a real tick interval: the tick bills what ran in it
        daemon.tick_once()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def process_state(daemon: NodeDaemon, agent: str) -> str:
    pid = daemon.agent(agent).pid
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def kinds_for(daemon: NodeDaemon, agent: str) -> list[str]:
    return [event.kind for event in daemon.events() if event.agent == agent]


# --- anywhere: the /proc fallback -----------------------------------------------------------


@pytest.fixture
def plain_daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    daemon = NodeDaemon(
        NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, cgroup="none", grace_s=0.3)
    )
    try:
        yield daemon
    finally:
        daemon.shutdown(kill_agents=True)


def test_spawn_fund_bid_kill_and_authentication(plain_daemon: NodeDaemon, tmp_path: Path) -> None:
    daemon = plain_daemon
    assert daemon.authenticate(daemon.admin_token) == Principal(Role.ADMIN)
    assert daemon.authenticate("nonsense") is None
    assert daemon.authenticate("") is None
    spawned = daemon.spawn(
        [
            "sh",
            "-c",
            'echo "env[$MAXWELL_AGENT_TOKEN]"; cat "$MAXWELL_AGENT_TOKEN_FILE"; exec sleep 30',
        ],
        fund=Money(5 * J),
        bid=2.0,
        demand=0.5,
        name="sleeper",
    )
    assert spawned.name == "sleeper"
    assert daemon.authenticate(spawned.token) == Principal(Role.AGENT, spawned.agent)
    info = daemon.agent(spawned.agent)
    assert (info.state, info.balance, info.pid) == (AgentState.RUNNING, 5 * J, spawned.pid)
    # The token reached the agent in a file of its own, not in its environment (its output goes
    # to a log in the state dir).
    log = tmp_path / "state" / "agents" / f"{spawned.agent}.log"
    wait_until(lambda: log.exists() and spawned.token in log.read_text(), what="the agent's log")
    assert "env[]" in log.read_text()
    token_file = tmp_path / "state" / "work" / spawned.agent / "agent.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text() == spawned.token
    assert daemon.fund(spawned.agent, Money(J)).balance == 6 * J
    bid = daemon.bid(spawned.agent, 3.0, 0.25)
    assert (bid.bid, bid.demand) == (3.0, 0.25)
    assert daemon.bid(spawned.agent, 4.0).demand == 0.25
    daemon.tick_once()
    assert daemon.ticks == 1
    killed = daemon.kill(spawned.agent)
    assert killed.state is AgentState.DEAD
    daemon.tick_once()
    assert not alive(spawned.pid)
    assert kinds_for(daemon, spawned.agent)[:4] == ["funded", "spawned", "funded", "bid"]
    assert "killed" in kinds_for(daemon, spawned.agent)
    with pytest.raises(AgentGoneError):
        daemon.fund(spawned.agent, Money(J))
    with pytest.raises(AgentGoneError):
        daemon.bid(spawned.agent, 1.0)
    assert daemon.ledger().verify().ok
    status = daemon.status()
    assert status.ticks == 2 and status.cgroup == "none" and status.mechanism == "uniform"


def test_self_reports_are_cumulative_kept_and_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = NodeDaemon(
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, cgroup="none")
    )
    try:
        spawned = daemon.spawn(BUSY, fund=Money(50 * J), bid=2.0, name="honest")
        assert daemon.agent(spawned.agent).reported is None
        first = daemon.report(spawned.agent, Report(cpu_s=0.25, memory_freed_bytes=8192, work=3))
        assert first.reported == Report(0.25, 8192, 3)
        with pytest.raises(NodeError, match=r"cumulative.*cpu_s fell from 0\.25 to 0\.1"):
            daemon.report(spawned.agent, Report(cpu_s=0.1, memory_freed_bytes=8192))
        with pytest.raises(NodeError, match="memory_freed_bytes fell"):
            daemon.report(spawned.agent, Report(cpu_s=0.3, memory_freed_bytes=0))
        for bad in (Report(float("nan")), Report(-1.0), Report(1.0, -5), Report(1.0, 0, -1)):
            with pytest.raises(NodeError):
                daemon.report(spawned.agent, bad)
        with pytest.raises(UnknownAgentError):
            daemon.report("nobody", Report(1.0))
        assert daemon.agent(spawned.agent).reported == Report(0.25, 8192, 3)  # refusals kept it
        tick_until(daemon, lambda: daemon.agent(spawned.agent).cpu_s > 0.05)
        measured = daemon.agent(spawned.agent)
        assert measured.cpu_s > 0.05 and to_json(measured)["reported"] == {
            "cpu_s": 0.25,
            "memory_freed_bytes": 8192,
            "work": 3,
        }
        daemon.kill(spawned.agent)
        with pytest.raises(AgentGoneError):
            daemon.report(spawned.agent, Report(9.0))
    finally:
        daemon.shutdown(kill_agents=True)
    again = NodeDaemon(
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, cgroup="none")
    )
    try:
        assert again.agent(spawned.agent).reported == Report(0.25, 8192, 3)  # kept in SQLite
    finally:
        again.shutdown(kill_agents=True)


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process, as an agent would measure itself."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_optimistic_billing_bonds_reporters_audits_them_and_slashes_a_liar(tmp_path: Path) -> None:
    daemon = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON,
            state_dir=tmp_path / "state",
            tick_s=0.1,
            cgroup="none",
            billing="optimistic",
            audit_probability=0.5,
        ),
        audit_rng=random.Random(4),
    )
    try:
        honest = daemon.spawn(BUSY, fund=Money(500 * J), bid=5.0, demand=1.0, name="honest")
        liar = daemon.spawn(BUSY, fund=Money(500 * J), bid=5.0, demand=1.0, name="liar")
        ledger = daemon.ledger()
        for _ in range(40):
            time.sleep(0.1)  # a real tick interval: the agents burn the CPU they then report
            daemon.report(honest.agent, Report(cpu_s=process_cpu_s(honest.pid)))
            daemon.report(liar.agent, Report(cpu_s=process_cpu_s(liar.pid) * 0.1))
            daemon.tick_once()
            if daemon.agent(liar.agent).slashed and daemon.agent(honest.agent).audits >= 2:
                break
        told = daemon.agent(honest.agent)
        caught = daemon.agent(liar.agent)
        assert told.billing == "reports" and told.bond > 0 and told.slashed == 0
        assert told.audits >= 2
        assert caught.billing == "metered" and caught.bond == 0 and caught.slashed > 0
        slashed = [e for e in daemon.events() if e.kind == "slashed"]
        assert [e.agent for e in slashed] == [liar.agent]
        assert "of CPU, the kernel counted" in str(slashed[0].detail["findings"])
        # Its reports under-billed it against the meter; the audit clawed that back.
        assert isinstance(slashed[0].detail["clawback"], int) and slashed[0].detail["clawback"] > 0
        bonded = {e.agent: e.detail["bond"] for e in daemon.events() if e.kind == "bonded"}
        assert bonded.keys() == {honest.agent, liar.agent}
        assert ledger.balance("slashing") == bonded[liar.agent]  # the liar's bond, all of it
        assert ledger.balance(stake_account(honest.agent)) == told.bond
        audited = [e for e in daemon.events() if e.kind == "audited"]
        assert audited and all(e.detail["honest"] for e in audited)
        assert {e.agent for e in audited} <= {honest.agent, liar.agent}
        # A forced audit: the honest agent passes; a liar without a bond is still named.
        assert daemon.audit(honest.agent).honest
        daemon.report(liar.agent, Report(cpu_s=process_cpu_s(liar.pid) * 0.1 + 1e-3))
        forced = daemon.audit(liar.agent)
        assert not forced.honest and forced.checked == ("reports",) and forced.slashed == 0
        # An agent that ends gets its bond back at the next tick.
        before = daemon.agent(honest.agent).balance
        daemon.kill(honest.agent)
        daemon.tick_once()
        assert ledger.balance(stake_account(honest.agent)) == 0
        assert daemon.agent(honest.agent).balance >= before + told.bond - 5 * J
        assert "released" in kinds_for(daemon, honest.agent)
        assert ledger.verify().ok
    finally:
        daemon.shutdown(kill_agents=True)


def test_an_agent_that_cannot_afford_the_bond_is_billed_by_the_meter(tmp_path: Path) -> None:
    daemon = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON,
            state_dir=tmp_path / "state",
            tick_s=0.1,
            cgroup="none",
            billing="optimistic",
            audit_probability=0.001,
        )
    )
    try:
        poor = daemon.spawn(["sleep", "30"], fund=Money(J), bid=5.0, name="poor")
        daemon.report(poor.agent, Report(cpu_s=0.0))
        daemon.tick_once()
        daemon.tick_once()
        info = daemon.agent(poor.agent)
        assert info.billing == "metered" and info.bond == 0
        said = [e for e in daemon.events() if e.kind == "unbonded"]
        assert len(said) == 1 and "cannot post the bond" in str(said[0].detail["reason"])
    finally:
        daemon.shutdown(kill_agents=True)
    with pytest.raises(NodeConfigError, match="billing"):
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON,
            state_dir=tmp_path / "x",
            cgroup="none",
            billing="honour system",
        )
    with pytest.raises(NodeConfigError, match="probability"):
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON,
            state_dir=tmp_path / "y",
            cgroup="none",
            audit_probability=1.5,
        )
    assert not (tmp_path / "x").exists()  # refused before anything is made


@pytest.mark.root
def test_a_restart_neither_rebills_a_claim_nor_forgives_an_under_billing(tmp_path: Path) -> None:
    cgroups_or_skip()
    state = tmp_path / "state"

    def optimistic() -> NodeDaemon:
        return NodeDaemon(
            NodeConfig(
                dynamic_uids=AGENTS_AS_DAEMON,
                state_dir=state,
                tick_s=0.1,
                grace_s=30,
                billing="optimistic",
                audit_probability=0.001,
            ),
            audit_rng=random.Random(1),
        )  # no sampled audit in these few ticks

    first = optimistic()
    second: NodeDaemon | None = None
    spawned = first.spawn(BUSY, fund=Money(2_000 * J), bid=5.0, demand=1.0, name="liar")
    try:
        for _ in range(15):
            time.sleep(0.1)  # a real tick interval: the liar burns the CPU it under-reports
            first.report(spawned.agent, Report(cpu_s=process_cpu_s(spawned.pid) * 0.1))
            first.tick_once()
        bond = first.agent(spawned.agent).bond
        assert bond > 0
        first.shutdown()  # the agent keeps running in its group
        stored = NodeState.open(state)
        try:
            claim = stored.claims()[spawned.agent]
        finally:
            stored.close()
        assert claim.shadow > 0 and claim.cpu_ns > 0  # it has been under-billing
        second = optimistic()
        assert second.agent(spawned.agent).billing == "reports"  # re-adopted, still bonded
        caught = second.audit(spawned.agent)
        assert not caught.honest
        # The claw-back is what the reports under-billed before the restart, not forgiven.
        assert caught.slashed == bond + claim.shadow
        assert second.ledger().verify().ok
    finally:
        (second or first).shutdown(kill_agents=True)
        popen = first._registry.get(spawned.agent).popen  # reap the child the first daemon started
        if popen is not None:
            popen.wait(timeout=10)


class HotSensors:
    """The machine's sensors, with the die `headroom_c` below its limit (a hot node)."""

    def __init__(self, headroom_c: float) -> None:
        self._sensors = Sensors.detect(nvml=None)
        self.headroom_c = headroom_c

    def sample(self) -> NodeSample:
        sample = self._sensors.sample()
        return replace(sample, temperature_c=sample.critical_c - self.headroom_c)

    def close(self) -> None:
        self._sensors.close()


def test_a_hot_node_sells_fewer_cores(tmp_path: Path) -> None:
    sensors = HotSensors(headroom_c=DERATE_BELOW_HEADROOM_C / 4)
    daemon = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON,
            state_dir=tmp_path / "state",
            tick_s=0.1,
            cgroup="none",
            capacity_cores=2.0,
        ),
        sensors=sensors,
    )
    try:
        for name in ("first", "second"):
            daemon.spawn(["sleep", "30"], fund=Money(100 * J), bid=50.0, demand=1.0, name=name)
        daemon.tick_once()
        sold = 2.0 * (MIN_CAPACITY_FRACTION + (1 - MIN_CAPACITY_FRACTION) / 4)
        assert daemon.status().capacity_cores == pytest.approx(sold)
        assert sum(info.share for info in daemon.agents()) == pytest.approx(sold)
        sensors.headroom_c = 30.0  # cooled down: every core is for sale again
        daemon.tick_once()
        assert daemon.status().capacity_cores == 2.0
        assert sum(info.share for info in daemon.agents()) == pytest.approx(2.0)
    finally:
        daemon.shutdown(kill_agents=True)
        sensors.close()
    with pytest.raises(NodeConfigError, match="fraction"):
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON,
            state_dir=tmp_path / "other",
            cgroup="none",
            min_capacity_fraction=2.0,
        )


def test_a_tick_is_one_transaction_and_a_failed_one_is_retried_whole(
    plain_daemon: NodeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick writes its rows and its ledger entries in one transaction: when the ledger's part
    fails, nothing of the tick is written (no row, no entry, no outbox), its plan is not carried
    out, and the next tick does it all again under the same keys, once."""
    daemon = plain_daemon
    ledger = daemon.ledger()
    # Bids below the reserve (spot 1 $J/J): the first tick freezes all three, three events.
    agents = [daemon.spawn(["sleep", "30"], fund=Money(J), bid=0.5).agent for _ in range(3)]
    real_submit_many = ledger.submit_many
    batches: list[list[str]] = []

    def failing(requests: Sequence[EntryRequest], *, at: float | None = None) -> list[Entry]:
        batches.append([request.key for request in requests])
        real_submit_many(requests, at=at)  # written inside the tick's transaction...
        raise LedgerStoreError("disk I/O error", path=str(ledger.path))  # ...which then fails

    def rows() -> list[tuple[object, ...]]:
        with sqlite3.connect(daemon.config.state_dir / "maxwell.db") as db:
            return db.execute("SELECT id, state FROM agents ORDER BY id").fetchall()

    before = rows()
    monkeypatch.setattr(ledger, "submit_many", failing)
    with pytest.raises(LedgerStoreError):
        daemon.tick_once()
    frozen_keys = sorted(f"event:1:{agent}:frozen" for agent in agents)
    # The whole tick in one call: the three events, and the bill of any CPU an agent's start
    # used (none at all here, usually; a slow or emulated CPU spends enough to bill).
    bill_keys = {f"bill:1:{agent}" for agent in agents}
    first = sorted(batches[0])
    assert [key for key in first if key.startswith("event:")] == frozen_keys
    assert set(first) - set(frozen_keys) <= bill_keys
    assert all(ledger.entry(key) is None for key in first)  # rolled back
    assert rows() == before and daemon.ticks == 0
    assert all(daemon.agent(agent).state is AgentState.RUNNING for agent in agents)

    posted: list[list[str]] = []

    def counting(requests: Sequence[EntryRequest], *, at: float | None = None) -> list[Entry]:
        posted.append([request.key for request in requests])
        return real_submit_many(requests, at=at)

    monkeypatch.setattr(ledger, "submit_many", counting)
    daemon.tick_once()  # tick 1 again, whole, under the same keys (bills once more if it ran)
    assert len(posted) == 1 and set(first) <= set(posted[0]) <= set(frozen_keys) | bill_keys
    wait_until(
        lambda: all(process_state(daemon, agent) == "T" for agent in agents),
        what="every agent to stop",
    )
    daemon.tick_once()  # nothing changed: nothing to write, no call
    assert len(posted) == 1
    assert [kinds_for(daemon, agent).count("frozen") for agent in agents] == [1, 1, 1]
    assert ledger.verify().ok


def test_bad_requests_change_nothing(plain_daemon: NodeDaemon) -> None:
    daemon = plain_daemon
    before = len(daemon.events())
    with pytest.raises(NodeError, match="non-empty"):
        daemon.spawn([], fund=Money(J), bid=1.0)
    with pytest.raises(NodeError, match="price"):
        daemon.spawn(["true"], fund=Money(J), bid=float("nan"))
    with pytest.raises(NodeError, match="demand"):
        daemon.spawn(["true"], fund=Money(J), bid=1.0, demand=0.0)
    with pytest.raises(NodeError, match="funding"):
        daemon.spawn(["true"], fund=Money(-1), bid=1.0)
    with pytest.raises(NodeError, match="not found"):
        daemon.spawn(["/nonexistent/command"], fund=Money(J), bid=1.0)
    with pytest.raises(NodeError, match="no such user"):
        daemon.spawn(["true"], fund=Money(J), bid=1.0, user="no-such-user-maxwell")
    with pytest.raises(UnknownAgentError):
        daemon.fund("nobody", Money(J))
    with pytest.raises(UnknownAgentError):
        daemon.agent("nobody")
    assert daemon.agents() == []
    assert len(daemon.events()) == before
    assert daemon.ledger().verify().ok
    spawned = daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0)
    with pytest.raises(NodeError, match="positive"):
        daemon.fund(spawned.agent, Money(0))
    with pytest.raises(NodeError, match="price"):
        daemon.bid(spawned.agent, -1.0)


# --- root: real cgroups -----------------------------------------------------------------------


def cgroups_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups under /sys/fs/cgroup")
    try:
        CgroupManager.detect(prefix="maxwell-probe").close()
    except CgroupUnavailableError as exc:
        pytest.skip(f"needs root and a writable cgroup hierarchy: {exc}")


def tree_dirs(state: Path) -> list[Path]:
    """Every directory of the daemon's stable tree that exists, in any hierarchy."""
    name = private_name(state)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.startswith(("cgroup ", "cgroup2 ")):
            for dirpath, dirnames, _files in os.walk(left.split()[4]):
                found += [Path(dirpath) / d for d in dirnames if d == name]
    return found


def frozen_on_disk(daemon: NodeDaemon, agent: str) -> bool:
    """`cgroup.freeze` where the group has one (v2, hybrid), else the v1 `freezer.state`."""
    dirs = [Path(directory) for directory in daemon.group_dirs(agent)]
    for freeze in (d / "cgroup.freeze" for d in dirs):
        if freeze.exists():
            return freeze.read_text().strip() == "1"
    for state in (d / "freezer.state" for d in dirs):
        if state.exists():
            return state.read_text().strip() == "FROZEN"
    raise AssertionError("no freezer file")


@pytest.fixture
def cgroup_daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    cgroups_or_skip()
    state = tmp_path / "state"
    daemon = NodeDaemon(
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.2, grace_s=0.6)
    )
    try:
        yield daemon
    finally:
        pids = [agent.pid for agent in daemon.agents() if agent.pid is not None]
        daemon.shutdown(kill_agents=True)
        assert tree_dirs(state) == []
        wait_until(lambda: not any(alive(pid) for pid in pids), what="the agents to die")


@pytest.mark.root
def test_agents_in_cgroups_are_metered_billed_and_enforced(cgroup_daemon: NodeDaemon) -> None:
    daemon = cgroup_daemon
    busy = daemon.spawn(BUSY, fund=Money(1000 * J), bid=5.0, demand=0.5, name="busy")
    idle = daemon.spawn(["sleep", "60"], fund=Money(1000 * J), bid=5.0, demand=0.1, name="idle")
    low = daemon.spawn(["sleep", "60"], fund=Money(10 * J), bid=0.5, demand=0.1, name="low")
    ends = daemon.spawn(["sh", "-c", "sleep 0.3; exit 3"], fund=Money(J), bid=5.0, demand=0.1)
    for directory in daemon.group_dirs(busy.agent):
        quota = Path(directory) / "cpu.cfs_quota_us"
        if quota.exists():
            assert quota.read_text().strip() == "50000"  # 0.5 cores of a 100 ms period
        pids_max = Path(directory) / "pids.max"
        if pids_max.exists():
            assert pids_max.read_text().strip() == "256"
    tick_until(daemon, lambda: daemon.agent(busy.agent).energy_uj > 500_000)
    tick_until(daemon, lambda: daemon.agent(ends.agent).state is AgentState.EXITED)
    # Bills are posted, the busy agent used more than the idle one, the ledger verifies.
    daemon.tick_once(settle_all=True)  # the ledger takes what the ticks accrued
    bills = [e for e in daemon.ledger().entries() if e.kind == "bill"]
    assert {e.detail["agent"] for e in bills} >= {busy.agent}
    busy_info, idle_info = daemon.agent(busy.agent), daemon.agent(idle.agent)
    assert busy_info.energy_uj > 10 * idle_info.energy_uj
    assert busy_info.paid > 0 and busy_info.balance == 1000 * J - busy_info.paid
    assert busy_info.state is AgentState.RUNNING and busy_info.share == 0.5
    assert daemon.ledger().verify().ok
    # The command that ended: `exited`, its exit code, its group removed.
    ended = daemon.agent(ends.agent)
    assert (ended.state, ended.exit_code) == (AgentState.EXITED, 3)
    assert "exited" in kinds_for(daemon, ends.agent)
    assert not any(os.path.exists(d) for d in daemon.group_dirs(ends.agent))
    # A bid below the reserve (the spot price, >= 1): frozen in the kernel; outbid no more: thawed.
    assert daemon.agent(low.agent).state is AgentState.FROZEN
    assert frozen_on_disk(daemon, low.agent)
    frozen = [e for e in daemon.events() if e.agent == low.agent and e.kind == "frozen"]
    assert "below the reserve" in str(frozen[0].detail["reason"])
    daemon.bid(low.agent, 5.0)
    daemon.tick_once()
    assert daemon.agent(low.agent).state is AgentState.RUNNING
    assert not frozen_on_disk(daemon, low.agent)
    assert "thawed" in kinds_for(daemon, low.agent)


@pytest.mark.root
def test_an_underfunded_busy_agent_is_frozen_refunded_then_killed(
    cgroup_daemon: NodeDaemon,
) -> None:
    daemon = cgroup_daemon
    poor = daemon.spawn(BUSY, fund=Money(J // 5), bid=5.0, demand=0.5, name="poor")
    group_dirs = daemon.group_dirs(poor.agent)
    tick_until(daemon, lambda: daemon.agent(poor.agent).state is AgentState.FROZEN)
    assert frozen_on_disk(daemon, poor.agent)
    assert alive(poor.pid)
    # Funded again within the grace: thawed.
    daemon.fund(poor.agent, Money(J))  # more than a tick of its burn (~0.28 $J)
    tick_until(daemon, lambda: daemon.agent(poor.agent).state is AgentState.RUNNING)
    assert "thawed" in kinds_for(daemon, poor.agent)
    # It burns through that too, is frozen, and is killed once the grace has run out.
    tick_until(daemon, lambda: daemon.agent(poor.agent).state is AgentState.DEAD)
    kinds = kinds_for(daemon, poor.agent)
    assert kinds.count("frozen") == 2 and kinds[-1] == "apoptosis"
    apoptosis = [e for e in daemon.events() if e.kind == "apoptosis"][-1]
    assert apoptosis.detail["agent"] == poor.agent
    wait_until(lambda: not alive(poor.pid), what="the poor agent to die")
    assert not any(os.path.exists(d) for d in group_dirs)
    info = daemon.agent(poor.agent)
    # It paid what it had, short of a tick's burn (~0.28 $J): no more.
    assert info.paid + info.balance == J // 5 + J
    assert info.balance < J // 2
    assert daemon.ledger().verify().ok


# --- root: recovery after SIGKILL -------------------------------------------------------------

DAEMON_SCRIPT = """
import json, sys, threading
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
config = NodeConfig(
    dynamic_uids="none", state_dir=sys.argv[1], tick_s=0.1, grace_s=30,
    settlement_s=float(sys.argv[2]),
)
daemon = NodeDaemon(config)
spawned = daemon.spawn(
    [sys.executable, "-c", "while True: pass"], fund=1000 * 10**6, bid=5.0, demand=0.5
)
print(json.dumps({"agent": spawned.agent, "pid": spawned.pid}), flush=True)
daemon.run_forever(threading.Event())
"""


def end_child(child: subprocess.Popen[bytes]) -> None:
    """The killed daemon's process reaped (killed first if the test failed before)."""
    if child.poll() is None:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()


def assert_adopted_once(
    daemon: NodeDaemon,
    agent: str,
    pid: int,
    billed_up_to: int,
    counter_before: int,
    cgroup: dict[str, object],
) -> AgentInfo:
    """A daemon just restarted re-adopted `agent` (same pid) and billed the interval it was down
    exactly once: from where billing stopped to where metering resumed. Its view of the agent."""
    counter_after = group_cpu_ns(cgroup)
    info = daemon.agent(agent)
    assert (info.state, info.pid) == (AgentState.RUNNING, pid)
    adopted = [e for e in daemon.events() if e.kind == "adopted"]
    assert len(adopted) == 1 and adopted[0].agent == agent
    down_cpu_ns = int(str(adopted[0].detail["cpu_ns"]))
    assert counter_before <= billed_up_to + down_cpu_ns <= counter_after
    assert down_cpu_ns > 0.1e9
    assert int(str(adopted[0].detail["energy_uj"])) == round(
        down_cpu_ns * active_w_per_core() / 1000
    )
    return info


def recorded(state: Path, agent: str) -> tuple[int, dict[str, object]]:
    """The CPU counter an agent is billed up to, and its cgroup record, as the database holds."""
    with sqlite3.connect(state / "maxwell.db") as db:
        cpu_ns, cgroup = db.execute(
            "SELECT cpu_ns, cgroup FROM agents WHERE id = ?", (agent,)
        ).fetchone()
    return int(cpu_ns), json.loads(cgroup)


def group_cpu_ns(cgroup: dict[str, object]) -> int:
    dirs = cgroup.get("dirs")
    if isinstance(dirs, dict) and "cpuacct" in dirs:
        return int((Path(dirs["cpuacct"]) / "cpuacct.usage").read_text())
    directory = cgroup.get("unified") if cgroup.get("kind") == "v1" else cgroup.get("path")
    for line in (Path(str(directory)) / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    raise AssertionError("no CPU counter")


@pytest.mark.root
@pytest.mark.parametrize(
    "settlement_s", [1.0, 60.0], ids=["settling-each-second", "killed-between-settlements"]
)
def test_a_daemon_killed_with_sigkill_is_recovered(tmp_path: Path, settlement_s: float) -> None:
    """Killed while it runs, the daemon leaves the counters it last settled up to; the next one
    bills from them to now exactly once. With a 60 s settlement the kill lands between two
    settlements: everything the ticks accrued in memory is billed again from the counters."""
    cgroups_or_skip()
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", DAEMON_SCRIPT, str(state), str(settlement_s)],
        stdout=subprocess.PIPE,
        env=env,
    )
    daemon: NodeDaemon | None = None
    pid = 0
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        agent, pid = started["agent"], started["pid"]
        if settlement_s < 10:
            wait_until(lambda: recorded(state, agent)[0] > 0.2e9, what="a settlement of 0.2 s")
        else:
            wait_until(
                lambda: group_cpu_ns(recorded(state, agent)[1]) - recorded(state, agent)[0] > 0.3e9,
                what="0.3 s of CPU accrued and not settled",
            )
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert alive(pid), "the agent outlives its daemon"
        # `maxwell run`'s stale sweep leaves the daemon's tree alone.
        with CgroupManager.detect() as runner:
            runner.sweep_stale()
        assert tree_dirs(state)
        billed_up_to, cgroup = recorded(state, agent)
        wait_until(  # the agent keeps burning CPU while no daemon watches it
            lambda: group_cpu_ns(cgroup) - billed_up_to > 0.2e9,
            what="the unwatched agent to burn 0.2 s of CPU",
        )
        counter_before = group_cpu_ns(cgroup)

        daemon = NodeDaemon(
            NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, grace_s=30)
        )
        info = assert_adopted_once(daemon, agent, pid, billed_up_to, counter_before, cgroup)
        tick_until(daemon, lambda: daemon.agent(agent).energy_uj > info.energy_uj)
        after = daemon.agent(agent)
        assert after.state is AgentState.RUNNING
        assert after.energy_uj > info.energy_uj
        # Energy continuity: the agent is credited with exactly what was billed, once.
        daemon.tick_once(settle_all=True)
        after = daemon.agent(agent)
        bills = [e for e in daemon.ledger().entries() if e.kind == "bill"]
        assert sum(int(str(e.detail["energy_uj"])) for e in bills) == after.energy_uj
        to_grid = sum(leg.delta for e in bills for leg in e.legs if leg.account == "grid")
        assert to_grid == after.paid == 1000 * J - after.balance
        assert daemon.ledger().verify().ok
        # A second restart adopts it again, billing only the new (short) gap.
        billed_up_to, _ = recorded(state, agent)
        daemon.shutdown()
        daemon = NodeDaemon(
            NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, grace_s=30)
        )
        adopted = [e for e in daemon.events() if e.kind == "adopted"]
        assert len(adopted) == 2
        assert billed_up_to + int(str(adopted[1].detail["cpu_ns"])) <= group_cpu_ns(cgroup)
        assert daemon.agent(agent).pid == pid
        assert daemon.ledger().verify().ok
        verified = maxwell("ledger", "verify", "--state", str(state))
        assert verified.returncode == 0, verified.stderr
    finally:
        end_child(child)
        if daemon is None:
            daemon = NodeDaemon(
                NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1)
            )
        daemon.shutdown(kill_agents=True)
    # Nothing is left: no cgroup directory of the daemon's tree, no agent process.
    assert tree_dirs(state) == []
    wait_until(lambda: not alive(pid), what="the agent to die")


TREE_DAEMON_SCRIPT = """
import json, sys, threading
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
daemon = NodeDaemon(NodeConfig(dynamic_uids="none", state_dir=sys.argv[1], tick_s=0.1,
                               cgroup="none", settlement_s=0.5))
busy = daemon.spawn([sys.executable, "-c", "while True: pass"], fund=1000 * 10**6, bid=5.0)
brief = daemon.spawn(["sh", "-c", "sleep 1"], fund=10**6, bid=5.0)
print(json.dumps({"busy": [busy.agent, busy.pid], "brief": [brief.agent, brief.pid]}), flush=True)
daemon.run_forever(threading.Event())
"""


def test_a_process_tree_agent_outlives_its_killed_daemon_and_is_adopted_again(
    tmp_path: Path,
) -> None:
    """Without cgroups (`--cgroup none`) a SIGKILLed daemon's agents run on; the next daemon
    finds each again by its root process (pid and start time), bills it and can kill it, and
    marks the one that ended meanwhile exited. Before, it marked them all exited and left the
    running ones behind, unbilled and out of reach."""
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen([sys.executable, "-c", TREE_DAEMON_SCRIPT, str(state)],
                             stdout=subprocess.PIPE, env=env)  # fmt: skip
    daemon: NodeDaemon | None = None
    busy_pid = 0
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        (busy, busy_pid), (brief, brief_pid) = started["busy"], started["brief"]
        wait_until(lambda: recorded(state, busy)[0] > 0.1e9, what="a settlement")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        wait_until(lambda: not alive(brief_pid), what="the brief agent to end meanwhile")
        assert alive(busy_pid), "the agent outlives its daemon"
        daemon = NodeDaemon(NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state,
                                       tick_s=0.1, cgroup="none"))  # fmt: skip
        adopted = [e.agent for e in daemon.events() if e.kind == "adopted"]
        assert busy in adopted  # (the brief one too where its root is a zombie not yet reaped)
        assert daemon.agent(busy).state is AgentState.RUNNING
        assert daemon.agent(busy).pid == busy_pid
        assert daemon.agent(brief).state is AgentState.EXITED
        energy = daemon.agent(busy).energy_uj
        tick_until(daemon, lambda: daemon.agent(busy).energy_uj > energy)
        assert daemon.kill(busy).state is AgentState.DEAD
        wait_until(lambda: not alive(busy_pid), what="the adopted agent killed")
        daemon.tick_once(settle_all=True)
        assert daemon.ledger().verify().ok
    finally:
        end_child(child)
        if daemon is None:
            daemon = NodeDaemon(NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state,
                                           tick_s=0.1, cgroup="none"))  # fmt: skip
        daemon.shutdown(kill_agents=True)
    try:
        wait_until(lambda: not alive(busy_pid), what="no agent left")
    finally:  # a failed run (a daemon that lost it) leaves no busy loop behind either
        if busy_pid and alive(busy_pid):
            os.kill(busy_pid, signal.SIGKILL)


def node_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the daemon logged at WARNING or above (a failed tick, an enforcement that failed)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("maxwell") and record.levelno >= logging.WARNING
    ]


def test_the_api_may_call_while_the_tick_thread_runs(
    plain_daemon: NodeDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = plain_daemon
    stop = threading.Event()
    ticker = threading.Thread(target=daemon.run_forever, args=(stop,))
    ticker.start()
    try:
        spawned = [
            daemon.spawn(["sleep", "30"], fund=Money(J), bid=2.0, demand=0.1) for _ in range(3)
        ]
        for round_ in range(20):
            for agent in spawned:
                daemon.fund(agent.agent, Money(1000))
                daemon.bid(agent.agent, 2.0 + round_ / 10)
            daemon.status()
        wait_until(lambda: daemon.ticks >= 3, what="three ticks")
    finally:
        stop.set()
        ticker.join(timeout=10)
    assert not ticker.is_alive()
    assert node_warnings(caplog) == []
    assert daemon.ledger().verify().ok
    assert sum(1 for e in daemon.events() if e.kind == "funded") == 3 + 60


@pytest.mark.root
def test_an_agent_runs_as_the_user_asked_for(cgroup_daemon: NodeDaemon, tmp_path: Path) -> None:
    daemon = cgroup_daemon
    spawned = daemon.spawn(
        ["sh", "-c", 'echo "uid=$(id -u)"; exec sleep 30'],
        fund=Money(J),
        bid=2.0,
        demand=0.1,
        user="nobody",
    )
    log = tmp_path / "state" / "agents" / f"{spawned.agent}.log"
    wait_until(lambda: log.exists() and "uid=" in log.read_text(), what="the agent's log")
    assert "uid=65534" in log.read_text()
    # setpriv execs the command in place: the recorded pid is the agent's own, in its group.
    wait_until(
        lambda: Path(f"/proc/{spawned.pid}/status").read_text().count("65534") >= 4,
        what="the agent to run as nobody",
    )
    assert any(
        str(spawned.pid) in (Path(d) / "cgroup.procs").read_text()
        for d in daemon.group_dirs(spawned.agent)
    )


def test_a_failed_tick_is_logged_counted_and_retried(
    plain_daemon: NodeDaemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = plain_daemon
    daemon.spawn(["sleep", "30"], fund=Money(J), bid=2.0)
    fail_once(monkeypatch, daemon._meter, "tick", OSError("the meter broke, on purpose"))
    stop = threading.Event()
    ticker = threading.Thread(target=daemon.run_forever, args=(stop,))
    ticker.start()
    try:
        wait_until(lambda: daemon.ticks >= 2, what="two ticks after the failed one")
    finally:
        stop.set()
        ticker.join(timeout=10)
    stats = daemon.status().tick_stats
    assert stats is not None
    assert stats.failures == 1 and stats.ticks >= 2
    assert stats.last_error == "OSError: the meter broke, on purpose"
    [failed] = [r for r in caplog.records if r.getMessage() == "tick 1 failed"]
    assert failed.levelno == logging.ERROR and failed.exc_info is not None
    assert render_metrics(daemon.status()).count(b"maxwell_tick_failures_total 1.0") == 1
    assert daemon.ledger().verify().ok


@pytest.mark.parametrize("failing", ["commit_tick", "plan_tick"])
def test_a_tick_that_fails_before_it_commits_bills_its_energy_at_the_next(
    plain_daemon: NodeDaemon, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Billed energy equals metered energy: the meter's interval of a failed tick is consumed,
    so the next tick bills it with its own, once (issue 9: 1.40 J of 3.25 J were lost)."""
    daemon = plain_daemon
    busy = daemon.spawn(BUSY, fund=Money(1000 * J), bid=2.0, demand=1.0).agent
    for _ in range(3):
        time.sleep(daemon.config.tick_s)  # real intervals: the meter reads real counters
        daemon.tick_once()
    target = daemon._state if failing == "commit_tick" else ticks_module
    real = getattr(target, failing)
    calls = iter([True])

    def fails_once(*args: object, **kwargs: object) -> object:
        for _ in calls:
            raise OSError(f"{failing} failed on purpose")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, failing, fails_once)
    time.sleep(daemon.config.tick_s)
    with pytest.raises(OSError, match="on purpose"):
        daemon.tick_once(settle_all=True)  # a tick that settles: it writes, so it can fail
    for _ in range(3):
        time.sleep(daemon.config.tick_s)
        daemon.tick_once()
    daemon.tick_once(settle_all=True)
    metered = daemon._meter.usage(busy).energy_uj
    bills = [e for e in daemon.ledger().entries() if e.kind == "bill" and e.detail["agent"] == busy]
    billed = sum(int(str(e.detail["energy_uj"])) for e in bills)
    assert metered > 0
    assert billed == metered == daemon.agent(busy).energy_uj
    assert daemon.ledger().verify().ok
