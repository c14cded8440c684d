"""Self-reports, and the bonds and claims of optimistic billing: an adapter over
`maxwell.node.policy.optimistic`, which decides the money.

Rules:

- A report is an agent's cumulative claim since spawn (CPU time, bytes freed, work): numbers in
  range, never falling. It is checked and queued as it arrives (`receive`; the queue:
  `maxwell.node.reports`), then stored (`store_reports`) with what it must cover: the kernel's
  counters read when the agent's previous report arrived (zero for its first), which a later
  audit compares it with. An honest agent reads its own counters after its previous report was
  answered, so its claim covers them however long a report takes to arrive, and however busy
  its processes are meanwhile; comparing with the counters at its own arrival had judged honest
  families dishonest under load (4.2 CPU-s claimed, 8.9 counted at arrival, under emulation).
- In optimistic mode (`billing="optimistic"`, audits on) an agent that has reported and can
  afford it posts a Becker bond (`bond_for`) from its account to `stake:<id>`, once; one that
  cannot is told so once (`unbonded`) and stays billed by the meter. A slashed agent never
  bonds again. An agent that ended gets its bond back (`released`), in every mode.
- A bonded agent is billed by its claims since the last tick at the tick's joules per CPU
  second; what its claims under-bill against the meter accumulates in its `shadow`, for an
  audit to claw back (`maxwell.node.audits`).
- A claim holds for a lease (`report_lease_s`) of running time: a bonded agent that has run
  (running or throttled: a frozen agent cannot report, and its lease waits) for longer than that
  since its latest report is billed by the meter, tick by tick, until it reports again, and what
  it was billed is taken as claimed (`claim_billed` follows the counters), so its next claim
  bills only what lies beyond. An agent that reports once and then falls silent gains at most
  one lease, which its shadow keeps, and audits judge its stale claim against the counters of
  the moment (`maxwell.node.audits`): caught with probability 1 - (1 - p)^N over N ticks.
- The claim an agent is billed up to is stored with its settlement (a row in the claims table),
  and the row goes when its bond does, so a restart bills from it exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence, Set

from maxwell.audit.policy import Usage
from maxwell.economy.ledger import agent_account, open_request, stake_account
from maxwell.errors import CgroupError
from maxwell.node import tick as ticks
from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry
from maxwell.node.config import NodeConfig
from maxwell.node.facade import (
    MAX_REPORTED_COUNT,
    MAX_REPORTED_CPU_S,
    AgentState,
    NodeError,
    Report,
)
from maxwell.node.policy.optimistic import (
    TickPrices,
    bill_claim,
    bond_for,
    gain_per_tick,
    joules_per_cpu_ns,
)
from maxwell.node.reports import QueuedReport, fell
from maxwell.node.state import ClaimRow, PendingEntry, ReportRow
from maxwell.node.store import NodeStore
from maxwell.units import Money

log = logging.getLogger(__name__)


def check_report(report: Report) -> None:
    """Refuse a malformed report before anything is read (a `NodeError` says why)."""
    cpu_s, freed, work = report.cpu_s, report.memory_freed_bytes, report.work
    if isinstance(cpu_s, bool) or not isinstance(cpu_s, int | float):
        raise NodeError(f"cpu_s must be a number of seconds, got {cpu_s!r}")
    if not math.isfinite(cpu_s) or not 0 <= cpu_s <= MAX_REPORTED_CPU_S:
        raise NodeError(f"cpu_s must be between 0 and {MAX_REPORTED_CPU_S:g}, got {cpu_s!r}")
    for field_name, value in (("memory_freed_bytes", freed), ("work", work)):
        if value is None and field_name == "work":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise NodeError(f"{field_name} must be an integer, got {value!r}")
        if not 0 <= value <= MAX_REPORTED_COUNT:
            raise NodeError(f"{field_name} must be between 0 and 2**62, got {value}")


def _with_cover(agent: AgentRecord, queued: QueuedReport) -> ReportRow:
    """The queued claim as stored: with what it must cover, unless its group was going away."""
    if queued.arrival is None:
        return queued.claim
    cover = queued.covers if queued.replaced and queued.covers is not None else None
    if cover is None:
        cover = _must_cover(agent)
    return dataclasses.replace(
        queued.claim, measured_cpu_ns=cover.cpu_ns, measured_freed_bytes=cover.freed_bytes
    )


def _must_cover(agent: AgentRecord) -> Usage:
    """The counters when the agent's previous report arrived; after a restart, what that report
    had to cover; nothing for a first report."""
    if agent.arrival is not None:
        return agent.arrival
    last = agent.reported
    if last is not None and last.measured_cpu_ns is not None:
        return Usage(last.measured_cpu_ns, last.measured_freed_bytes or 0)
    return Usage(0, 0)


RAN = (AgentState.RUNNING, AgentState.THROTTLED)  # what runs the lease down


def lapsed(agent: AgentRecord, lease_s: float) -> bool:
    """Whether the agent has run longer than its lease since its latest report."""
    return agent.reported is not None and agent.unreported_s > lease_s


def metered_up_to(agent: AgentRecord) -> Usage:
    """What the agent was billed up to, taking what the meter billed as claimed."""
    billed = agent.claim_billed or Usage(0, 0)
    counted = agent.counted
    if counted is None or counted.cpu_ns_seen is None:
        return billed
    return Usage(
        max(billed.cpu_ns, counted.cpu_ns_seen), max(billed.freed_bytes, counted.freed_seen)
    )


class OptimisticBilling:
    """Records reports; posts and releases bonds and bills claims each tick (see the module)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        wall: Callable[[], float],
        store: NodeStore,
        registry: AgentRegistry,
        active_w_per_core: float,
    ) -> None:
        self._config = config
        self._wall = wall
        self._store = store
        self._ledger = store.ledger
        self._agents = registry
        self._active_w_per_core = active_w_per_core
        self._stored: set[str] = set()  # agents with a row in the claims table

    def receive(self, agent: AgentRecord, report: Report) -> QueuedReport:
        """A report as it arrives, checked (`check_report`), with the kernel's counters now:
        what the agent's next claim must cover (a group going away: nothing to check). Outside
        the daemon's lock: `store_reports` stores it (`maxwell.node.reports`)."""
        check_report(report)
        arrival: Usage | None = None
        if agent.group is not None and agent.counted is not None:
            with contextlib.suppress(CgroupError):
                arrival = Usage(agent.group.cpu_ns(), agent.counted.freed_seen)
        claim = ReportRow(
            agent.id, self._wall(), round(report.cpu_s * 1e9), report.memory_freed_bytes,
            report.work,
        )  # fmt: skip
        return QueuedReport(claim, arrival)

    def store_reports(self, reports: Sequence[QueuedReport]) -> set[str]:
        """Store the queued reports of live agents in one unit of work, each with what it must
        cover (see the module), and make each its agent's latest claim; the agents changed."""
        kept: list[tuple[AgentRecord, QueuedReport]] = []
        for queued in reports:
            agent = self._agents.agents.get(queued.agent)
            if agent is None or agent.finished or agent.state not in LIVE:
                log.info("agent %s ended before its report was stored: dropped", queued.agent)
            elif fell(agent.reported, queued.claim):
                log.info("agent %s reported less than its stored claim: dropped", queued.agent)
            else:
                kept.append((agent, queued))
        claims = [_with_cover(agent, queued) for agent, queued in kept]
        if claims:
            with self._store.unit_of_work():
                for claim in claims:
                    self._store.state.save_report(claim)
        for (agent, queued), claim in zip(kept, claims, strict=True):
            agent.reported, agent.unreported_s, agent.arrival = claim, 0.0, queued.arrival
        return {agent.id for agent, _ in kept}

    def restore(self, agent: AgentRecord, claim: ClaimRow | None) -> None:
        """A reloaded agent with a bond is billed by its claims up to its stored claim."""
        if agent.bond and claim is not None:
            agent.claim_billed = Usage(claim.cpu_ns, claim.freed_bytes)
            agent.shadow = claim.shadow
            self._stored.add(agent.id)

    def stakes(
        self, tick: int, balances: dict[str, Money], optimistic: bool, spot: float
    ) -> list[PendingEntry]:
        """Release the bonds of agents that ended; in optimistic mode, post the bond of each
        agent that reports and can afford it (`balances` is updated as if posted). The entries."""
        entries: list[PendingEntry] = []
        p = self._config.audit_probability
        for agent in self._agents:
            if not agent.bond and not optimistic:
                continue  # nothing to release, nothing to bond
            account, stake = agent_account(agent.id), stake_account(agent.id)
            live = agent.state in LIVE and not agent.finished and agent.group is not None
            if agent.bond and not live:
                entries.append(
                    PendingEntry(
                        ticks.event_key(tick, agent.id, "released"), tick, "released",
                        ((stake, account, agent.bond),),
                        {"agent": agent.id, "bond": agent.bond, "reason": f"it {agent.state}"},
                    )
                )  # fmt: skip
                balances[account] = Money(balances.get(account, 0) + agent.bond)
                agent.bond, agent.claim_billed = 0, None
                continue
            wants = optimistic and live and agent.reported is not None and not agent.bond
            if not wants or agent.slashed or p <= 0:
                continue
            entry = self._bond(tick, agent, balances, spot)
            if entry is not None:
                entries.append(entry)
        return entries

    def _bond(
        self, tick: int, agent: AgentRecord, balances: dict[str, Money], spot: float
    ) -> PendingEntry | None:
        """The entry that posts an agent's bond, or says once that it cannot afford it."""
        assert agent.reported is not None
        p = self._config.audit_probability
        account, stake = agent_account(agent.id), stake_account(agent.id)
        gain = gain_per_tick(agent.demand, self._active_w_per_core, self._config.tick_s, spot)
        bond = bond_for(gain, p)
        balance = balances.get(account, Money(0))
        if balance < bond:
            if agent.unbonded_said:
                return None
            agent.unbonded_said = True
            reason = (
                f"its balance {balance / 1e6:.6g} $J cannot post the bond "
                f"{bond / 1e6:.6g} $J: billed by the meter"
            )
            return PendingEntry(
                ticks.event_key(tick, agent.id, "unbonded"), tick, "unbonded", (),
                {"agent": agent.id, "bond": bond, "reason": reason},
            )  # fmt: skip
        if stake not in self._ledger.accounts():  # an agent spawned by an older daemon
            self._ledger.submit(open_request(stake), at=self._wall())
        balances[account] = Money(balance - bond)
        agent.bond = bond
        agent.claim_billed = Usage(agent.reported.cpu_ns, agent.reported.freed_bytes)
        return PendingEntry(
            ticks.event_key(tick, agent.id, "bonded"), tick, "bonded",
            ((account, stake, bond),),
            {"agent": agent.id, "bond": bond, "probability": p, "gain_per_tick": gain},
        )  # fmt: skip

    def claimed(
        self,
        energies: Mapping[str, int],
        freed: Mapping[str, int],
        temperature_c: float,
        spot: float,
        interval_s: float,
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The energy and bytes freed to bill, by the claims of bonded agents: their claimed CPU
        time since the last tick at the tick's joules per CPU second (attribution is by CPU time,
        so that rate is every agent's), their claimed bytes freed. What the claims under-bill
        against the meter accumulates in `shadow`, for an audit to claw back. An agent that ran
        `interval_s` more and whose lease lapsed is billed by the meter (see the module)."""
        cpu_ns: dict[str, int] = {}
        for agent in self._agents:
            counted = agent.counted
            if counted is None or counted.cpu_ns_seen is None or agent.id not in energies:
                continue
            cpu_ns[agent.id] = max(counted.cpu_ns_seen - agent.cpu_ns, 0)
        rate = joules_per_cpu_ns(cpu_ns, energies, self._active_w_per_core)
        prices = TickPrices(spot, temperature_c, self._config.landauer_multiplier)
        billed_energy, billed_freed = dict(energies), dict(freed)
        for agent in self._agents:
            if not agent.bond or agent.claim_billed is None or agent.reported is None:
                continue
            if agent.id not in energies:
                continue
            if agent.state in RAN:
                agent.unreported_s += interval_s
            if lapsed(agent, self._config.report_lease_s):
                agent.claim_billed = metered_up_to(agent)
                continue
            claim = Usage(agent.reported.cpu_ns, agent.reported.freed_bytes)
            metered = Usage(cpu_ns.get(agent.id, 0), freed.get(agent.id, 0))
            billed = bill_claim(
                claim, agent.claim_billed, rate, metered, energies[agent.id], prices
            )
            billed_energy[agent.id], billed_freed[agent.id] = billed.energy_uj, billed.bytes_freed
            agent.claim_billed = billed.billed_up_to
            agent.shadow += billed.under_billed
        return billed_energy, billed_freed

    def forget(self, agent_id: str) -> None:
        """A reclaimed agent: its claims row went with it."""
        self._stored.discard(agent_id)

    def claim_rows(self, settled: Set[str]) -> dict[str, ClaimRow | None]:
        """The claims rows a tick writes: the claim of each bonded agent it settles, and `None`
        (delete) for each stored one whose bond is gone."""
        claims: dict[str, ClaimRow | None] = {}
        for agent_id in (*settled, *(self._stored - settled)):  # no other agent has a row to write
            agent = self._agents[agent_id]
            if agent.claim_billed is not None and agent.id in settled:
                billed = agent.claim_billed
                claims[agent.id] = ClaimRow(billed.cpu_ns, billed.freed_bytes, agent.shadow)
            elif agent.claim_billed is None and agent.id in self._stored:
                claims[agent.id] = None
        return claims

    def committed(self, claims: Mapping[str, ClaimRow | None]) -> None:
        """The tick that wrote `claims` (`claim_rows`) committed."""
        self._stored |= {a for a, claim in claims.items() if claim is not None}
        self._stored -= {a for a, claim in claims.items() if claim is None}
