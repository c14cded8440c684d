"""Landauer's tax on overwrites (issue 11, 5): the erasure meter's bytes re-written are billed as
bits erased beside the bytes freed, by the meter, the tick and the daemon; `--erasure soft-dirty`
is refused on a kernel without soft-dirty bits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import maxwell
from maxwell.economy.billing import bill
from maxwell.meter import LiveMeter
from maxwell.meter.erasure import soft_dirty_support
from maxwell.node.config import NodeConfig, NodeConfigError
from maxwell.node.daemon import NodeDaemon
from maxwell.node.tick import AgentState, AgentTickInput, TickInput, is_quiet, plan_tick
from maxwell.units import Money
from test_live_meter import ScriptedGroup, ScriptedNode
from test_node_daemon import tick_until

J = 1_000_000
MIB = 1 << 20
BUSY = ["sh", "-c", "while :; do :; done"]  # any uid may run it, a dynamic one too


class CountingSampler:
    """A stand-in erasure meter: each sample of a pid set reports `per_sample` bytes."""

    def __init__(self, per_sample: int) -> None:
        self.per_sample = per_sample
        self.sampled: list[list[int]] = []

    def sample_tree(self, pids: list[int]) -> int:
        self.sampled.append(list(pids))
        return self.per_sample if pids else 0


class PidGroup(ScriptedGroup):
    def pids(self) -> list[int]:
        return [4242]


def test_rewritten_bytes_are_taxed_like_freed_bytes() -> None:
    freed = bill(energy_uj=0, spot_price=1.0, bytes_freed=MIB, temperature_c=50.0,
                 landauer_multiplier=1e12)  # fmt: skip
    rewritten = bill(energy_uj=0, spot_price=1.0, bytes_rewritten=MIB, temperature_c=50.0,
                     landauer_multiplier=1e12)  # fmt: skip
    both = bill(energy_uj=0, spot_price=1.0, bytes_freed=MIB, bytes_rewritten=MIB,
                temperature_c=50.0, landauer_multiplier=1e12)  # fmt: skip
    assert rewritten.landauer_cost == freed.landauer_cost > 0
    assert both.physical_landauer_j == pytest.approx(2 * freed.physical_landauer_j)
    assert (rewritten.bytes_rewritten, rewritten.bytes_freed) == (MIB, 0)
    with pytest.raises(ValueError, match="re-written"):
        bill(energy_uj=0, spot_price=1.0, bytes_rewritten=-1, temperature_c=50.0)


def test_the_meter_samples_only_the_workloads_that_ran() -> None:
    node, sampler = ScriptedNode(), CountingSampler(3 * 4096)
    meter = LiveMeter(node, erasure=sampler)
    busy, idle = PidGroup(), PidGroup()
    meter.add("busy", busy)
    meter.add("idle", idle)
    for _ in range(3):
        node.advance(0.1, 1_000, 0, 1_000)
        busy.cpu += 1_000
        meter.tick()
    assert meter.usage("busy").memory_rewritten_bytes == 3 * 3 * 4096
    assert meter.usage("idle").memory_rewritten_bytes == 0
    assert sampler.sampled == [[4242]] * 3


def _tick_input(agent: AgentTickInput) -> TickInput:
    return TickInput(
        tick=1, now_s=100.0, interval_s=1.0, tick_s=1.0, spot_price=1.0, temperature_c=50.0,
        capacity_cores=2.0, landauer_multiplier=1e12, grace_s=5.0, agents=(agent,),
    )  # fmt: skip


def test_the_tick_bills_rewritten_bytes_and_records_them() -> None:
    agent = AgentTickInput(
        agent="a1", state=AgentState.RUNNING, balance=Money(100 * J), bid=1.0, demand=1.0,
        bytes_rewritten=MIB,
    )  # fmt: skip
    assert not is_quiet(agent, 1.0)
    plan = plan_tick(_tick_input(agent))
    (post,) = [post for post in plan.posts if post.kind == "bill"]
    assert post.detail["bytes_rewritten"] == MIB and post.detail["bytes_freed"] == 0
    expected = bill(energy_uj=0, spot_price=1.0, bytes_rewritten=MIB, temperature_c=50.0,
                    landauer_multiplier=1e12)  # fmt: skip
    assert post.detail["landauer_cost"] == expected.landauer_cost > 0


@pytest.fixture
def taxed_daemon(tmp_path: Path) -> Iterator[tuple[NodeDaemon, CountingSampler]]:
    sampler = CountingSampler(64 * MIB)
    config = NodeConfig(
        state_dir=tmp_path / "state", tick_s=0.1, cgroup="none", landauer_multiplier=1e12,
        settlement_s=0.0,
    )  # fmt: skip
    daemon = NodeDaemon(config, erasure=sampler)
    try:
        yield daemon, sampler
    finally:
        daemon.shutdown(kill_agents=True)


def test_the_daemon_bills_a_busy_agent_for_what_it_rewrites(
    taxed_daemon: tuple[NodeDaemon, CountingSampler],
) -> None:
    daemon, sampler = taxed_daemon
    spawned = daemon.spawn(BUSY, fund=Money(1_000 * J), bid=1.0)
    tick_until(daemon, lambda: len(sampler.sampled) >= 2)
    daemon.tick_once(settle_all=True)
    bills = [
        entry
        for entry in daemon.ledger().entries()
        if entry.kind == "bill" and entry.detail.get("agent") == spawned.agent
    ]
    rewritten = sum(int(str(e.detail.get("bytes_rewritten", 0))) for e in bills)
    assert sampler.sampled and all(spawned.pid in pids for pids in sampler.sampled)
    assert rewritten == 64 * MIB * len(sampler.sampled)
    assert daemon.agent(spawned.agent).landauer > 0


def test_soft_dirty_is_refused_where_the_kernel_has_none(tmp_path: Path) -> None:
    support = soft_dirty_support()
    if support.available:
        pytest.skip("this kernel has soft-dirty bits: the refusal cannot be seen here")
    state = tmp_path / "state"
    with pytest.raises(NodeConfigError, match="soft-dirty") as caught:
        NodeDaemon(NodeConfig(state_dir=state, cgroup="none", erasure="soft-dirty"))
    assert support.reason in str(caught.value)
    assert not state.exists()  # refused before anything was made
    result = maxwell("daemon", "--state", str(state), "--erasure", "soft-dirty", "--cgroup", "none")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "CONFIG_MEM_SOFT_DIRTY" in result.stderr
    assert not any(state.iterdir())  # the command makes the directory; the daemon put nothing in it


def test_an_unknown_erasure_meter_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="--erasure 'bits': unknown"):
        NodeConfig.from_sources({"erasure": "bits"}, {})
