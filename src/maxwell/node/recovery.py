"""A restarted daemon takes its agents back: an adapter over `maxwell.node.policy.recovery`,
which decides what the interval it was down bills.

Rules:

- First, entries a daemon of release 0.1.0 committed to its `pending` outbox and did not post
  are posted (same keys, same content: applied once).
- Every agent of the node's tables is reloaded with what the journal says of it (paid, audits,
  slashed, proofs, bounties), its bond (the balance of `stake:<id>`), its latest report, its
  stored claim, its code manifest and, if it is live, its bounty.
- The cgroup tree has a stable name, so a live agent's group is found again from the
  directories recorded at spawn and the agent is re-adopted (same pids), metered again. An agent
  whose group is gone ended while the daemon was down (`exited`); an agent that ended before
  the crash only loses its leftover group.
- The interval the daemon was down is billed once, as its first tick: from each agent's recorded
  counters to the current ones, the energy modelled from CPU time (an `adopted` event each,
  labelled modelled), settling every agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from maxwell.audit.manifest import CodeManifest, ManifestError
from maxwell.economy.ledger import stake_account
from maxwell.meter import LiveMeter
from maxwell.node import tick as ticks
from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry, CountedGroup, agent_from_row
from maxwell.node.bounties import Bounties
from maxwell.node.claims import OptimisticBilling
from maxwell.node.facade import AgentState
from maxwell.node.policy.journal import journal_totals
from maxwell.node.policy.recovery import DownInterval, down_interval
from maxwell.node.state import PendingEntry
from maxwell.node.store import NodeStore
from maxwell.node.supervisor import Supervisor
from maxwell.node.ticker import Ticker, exited_event

log = logging.getLogger(__name__)


class Recovery:
    """Reloads, re-adopts and bills the down interval, once, as the daemon starts."""

    def __init__(
        self,
        *,
        wall: Callable[[], float],
        store: NodeStore,
        meter: LiveMeter,
        supervisor: Supervisor,
        registry: AgentRegistry,
        billing: OptimisticBilling,
        bounties: Bounties,
        ticker: Ticker,
        active_w_per_core: float,
    ) -> None:
        self._wall = wall
        self._store = store
        self._meter = meter
        self._supervisor = supervisor
        self._agents = registry
        self._billing = billing
        self._bounties = bounties
        self._ticker = ticker
        self._active_w_per_core = active_w_per_core

    def recover(self) -> None:
        """Post what a killed daemon left pending, reload the agents, re-adopt the live ones and
        bill the interval the daemon was down (one tick)."""
        at = self._wall()
        self._flush_outbox()
        down: dict[str, DownInterval] = {}
        ended: list[AgentRecord] = []
        for agent in self._load_agents():
            self._agents.add(agent)
            was_live = agent.state in LIVE
            interval = self._readopt(agent, at)
            if interval is not None:
                down[agent.id] = interval
            if was_live and agent.state is AgentState.EXITED:  # it ended while no daemon ran
                ended.append(agent)
        if down or ended:
            self._bill_down_interval(down, ended)

    def _flush_outbox(self) -> None:
        """Post what a daemon of release 0.1.0 committed to its `pending` outbox and had not
        posted when it died (same keys, same content: applied once). This release writes a
        tick's rows and entries in one transaction and leaves the outbox empty."""
        state = self._store.state
        left = state.pending()
        if left:
            with self._store.unit_of_work():
                self._store.post(left, at=self._wall())
                state.clear_pending([entry.key for entry in left])

    def _load_agents(self) -> list[AgentRecord]:
        """Every agent of the node's tables, with what the journal and the ledger say of it."""
        state, ledger = self._store.state, self._store.ledger
        paid = journal_totals(ledger.entries())
        reports, claims = state.reports(), state.claims()
        manifests, bounties = state.manifests(), state.bounties()
        balances = ledger.balances()
        agents = []
        for row in state.agents():
            agent = agent_from_row(row, paid, balances.get(stake_account(row.id), 0))
            agent.reported = reports.get(row.id)
            self._billing.restore(agent, claims.get(row.id))
            if row.id in bounties and agent.state in LIVE:
                self._bounties.restore(agent, *bounties[row.id])
            if row.id in manifests:
                try:
                    agent.manifest = CodeManifest.from_json(manifests[row.id])
                except ManifestError:
                    log.warning("agent %s: its code manifest is unreadable", row.id, exc_info=True)
            agents.append(agent)
        return agents

    def _readopt(self, agent: AgentRecord, at: float) -> DownInterval | None:
        """Take a live agent back into its group, metered again; what it used while the daemon
        was down. An agent whose group is gone has ended (`EXITED` at `at`). One that ended just
        before the crash (killed, exited) and whose group is still there is billed its last
        interval from the group's counters, then its group is removed."""
        group = self._supervisor.rebuild(agent.id, agent.cgroup)
        if agent.state not in LIVE:
            if group is None:
                return None
            agent.finished = True  # billed by the recovery tick, then its group goes
        elif group is None:
            # Its group is gone (removed by hand, or a reboot): nothing left to bill or run.
            agent.state, agent.ended_at = AgentState.EXITED, at
            self._store.state.update_agent(agent.id, state=str(agent.state), ended_at=at)
            return None
        agent.group, agent.counted = group, CountedGroup(group)
        self._meter.add(agent.id, agent.counted)
        agent.freed_metered = self._meter.usage(agent.id).memory_freed_bytes
        if agent.state in LIVE and group.is_empty():
            agent.state, agent.ended_at, agent.finished = AgentState.EXITED, at, True
        return down_interval(
            billed_cpu_ns=agent.cpu_ns,
            billed_freed_bytes=agent.freed_bytes,
            now_cpu_ns=agent.counted.cpu_ns_seen or 0,
            now_freed_bytes=agent.counted.freed_seen,
            active_w_per_core=self._active_w_per_core,
        )

    def _bill_down_interval(
        self, down: Mapping[str, DownInterval], ended: Sequence[AgentRecord]
    ) -> None:
        """The restarted daemon's first tick: the interval it was down, with an `adopted` event
        per live agent and an `exited` one per agent that ended meanwhile."""
        tick = self._ticker.tick + 1
        events: list[PendingEntry] = []
        for agent_id, interval in sorted(down.items()):
            agent = self._agents[agent_id]
            detail = {
                "agent": agent_id,
                "pid": agent.pid,
                "cpu_ns": interval.cpu_ns,
                "bytes_freed": interval.bytes_freed,
                "energy_uj": interval.energy_uj,
                "energy_source": "modelled from CPU time while the daemon was down",
                "alive": not agent.finished,
            }
            key = ticks.event_key(tick, agent_id, "adopted")
            events.append(PendingEntry(key, tick, "adopted", (), detail))
        for agent in ended:
            events.append(exited_event(tick, agent, "its process ended while the daemon was down"))
        energies = {agent: interval.energy_uj for agent, interval in down.items()}
        freed_by = {agent: interval.bytes_freed for agent, interval in down.items()}
        self._ticker.run_tick(
            energies,
            freed_by,
            self._ticker.now(),
            extra_events=events,
            interval_s=0.0,
            force_all=True,
        )
