"""Attack: the silent cheater (issue 11, 3). Under optimistic billing an agent reported honestly
once and never again: billing followed claim increases, so it was billed nothing more; every
audit compared its stale claim with the counters read when that claim arrived, so it passed; and
an honest audit then forgave what had been under-billed (12.36 J metered, 1.65 $J paid, 17
audits passed). Now a claim holds for a lease of running time, after which the agent is billed
by the meter and audited against the counters of the moment; an honest audit forgives nothing.
(On `maxwell.testing`'s fakes and a fake clock: deterministic.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from maxwell.node.facade import AgentState, Report
from maxwell.units import Money
from test_node_settlement import J, Node

LEASE_S = 0.5  # five ticks of running time


def optimistic(tmp_path: Path, probability: float) -> Node:
    return Node(
        tmp_path / "state", billing="optimistic", audit_probability=probability,
        report_lease_s=LEASE_S, settlement_s=0.0, grace_s=60.0,
    )  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[Node]:
    node = optimistic(tmp_path, probability=1.0)  # every bonded agent, every tick
    try:
        yield node
    finally:
        node.daemon.shutdown(kill_agents=True)


def report_truth(node: Node, agent: str) -> None:
    node.daemon.report(agent, Report(cpu_s=node.supervisor.groups[agent].cpu / 1e9))


def spawn_bonded(node: Node) -> str:
    """A busy agent that reported its truth and posted its bond."""
    agent = node.daemon.spawn(["work"], fund=Money(1_000 * J), bid=5.0, demand=1.0).agent
    node.ticks(1, (agent,))
    report_truth(node, agent)
    node.ticks(1, (agent,))
    assert node.daemon.agent(agent).billing == "reports"
    return agent


def test_silence_is_caught_by_the_first_audit_after_the_lease(audited: Node) -> None:
    agent = spawn_bonded(audited)
    for _ in range(4):  # within its lease: its claim lags, as an honest one does
        audited.ticks(1, (agent,))
        assert audited.daemon.agent(agent).slashed == 0
    audited.ticks(3, (agent,))  # past the lease: judged against the counters now
    info = audited.daemon.agent(agent)
    assert info.slashed > 0 and info.billing == "metered"
    slashed = [e for e in audited.daemon.events() if e.kind == "slashed"]
    assert len(slashed) == 1 and slashed[0].detail["lapsed"] is True
    assert int(str(slashed[0].detail["clawback"])) > 0  # the lease it burned unbilled, clawed back
    assert audited.daemon.ledger().verify().ok


def test_an_honest_agent_reporting_within_its_lease_is_never_slashed(audited: Node) -> None:
    agent = spawn_bonded(audited)
    for _ in range(30):
        audited.ticks(1, (agent,))
        report_truth(audited, agent)
    info = audited.daemon.agent(agent)
    assert info.slashed == 0 and info.audits >= 30 and info.billing == "reports"


def test_a_frozen_agent_s_lease_waits(audited: Node) -> None:
    """Frozen, an agent cannot report: its lease does not run down, and the CPU it burned between
    its last report and the freeze is not judged a lie."""
    agent = spawn_bonded(audited)
    audited.ticks(1, (agent,))  # burns past its report, then loses the auction
    audited.daemon.bid(agent, 0.5)  # below the spot price (1.0): frozen
    audited.ticks(20)
    info = audited.daemon.agent(agent)
    assert info.state is AgentState.FROZEN and info.slashed == 0


def test_a_lapsed_agent_is_billed_by_the_meter_and_its_next_claim_bills_only_what_is_new(
    tmp_path: Path,
) -> None:
    node = optimistic(tmp_path, probability=0.01)  # no audit in these ticks (seeded): billing
    try:
        agent = spawn_bonded(node)
        node.ticks(20, (agent,))  # silent: billed by the meter once its lease lapsed
        report_truth(node, agent)  # honest again: covers what the meter already billed
        node.ticks(10, (agent,))
        report_truth(node, agent)
        node.ticks(1)
        node.daemon.tick_once(settle_all=True)
        assert node.daemon.agent(agent).audits == 0
        info = node.daemon.agent(agent)
        lease_uj = 3.0 * LEASE_S * 1e6  # the fake node: 3 W per busy core, at 1 $J per J
        # Billed once (never twice), and short by at most the lease it was silent within.
        assert info.energy_uj - lease_uj * 1.05 <= info.paid <= info.energy_uj * 1.001
        assert info.energy_uj > 4 * lease_uj  # most of it was metered, not claimed
    finally:
        node.daemon.shutdown(kill_agents=True)
