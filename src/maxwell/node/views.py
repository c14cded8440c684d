"""The node's read models: the API's answers about its agents, its events, its price and itself.

Rules:

- Reading changes nothing: no row, no entry, no agent record is written.
- An agent's balance is the ledger's less what it has accrued and not yet settled, so that what
  the API shows is what the agent could spend now.
- The answers about agents are published: after each tick, and after each call that changes the
  node, `publish` rebuilds the answers of the agents it changed (and of every agent whose ledger
  balance moved) under the daemon's lock, and swaps the whole map in at once. Reads of agents, the
  price and the status take no lock and never wait for a tick: they see what the last tick or
  call left, whole. A bid or report waiting for the next tick (`maxwell.node.inbox`) shows as
  the agent's.
- An ended agent's answer says why it ended (`ended_reason`): "killed" where the journal holds
  its `killed:<id>` entry (a kill on request, or a daemon that stopped with `--kill-agents`),
  else "apoptosis" for a dead agent ("slashed" if an audit slashed it first), "exited N" for one
  whose command ended. The journal is asked once per dead agent.
- A publication that fails (the store cannot be read) is logged and the last answers stay.
- The event log is the ledger's journal, filtered to the kinds in `EVENT_KINDS`, oldest first,
  read through the store's read-only connection (`NodeStore.reader`): no lock, what was last
  committed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import ParamSpec

from maxwell.economy.ledger import UnknownAccountError, moved_agents
from maxwell.economy.store import LedgerStore
from maxwell.errors import MaxwellError
from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry, agent_info, report_of
from maxwell.node.config import NodeConfig
from maxwell.node.eventtally import EventTally
from maxwell.node.facade import AgentInfo, AgentState, Event, NodeStatus, UnknownAgentError
from maxwell.node.reports import QueuedReport
from maxwell.node.state import NodeState
from maxwell.node.supervisor import Supervisor
from maxwell.node.ticker import Ticker
from maxwell.units import Money

log = logging.getLogger(__name__)
P = ParamSpec("P")
EVENT_KINDS = (
    "spawned", "adopted", "funded", "bid", "running", "throttled", "frozen", "thawed",
    "insolvent", "apoptosis", "exited", "killed", "bonded", "unbonded", "released", "audited",
    "slashed", "bounty", "rejected",
)  # fmt: skip


def ended_reason(agent: AgentRecord, killed: bool) -> str | None:
    """Why an agent ended (None while it lives): `killed` says the journal holds its kill."""
    if agent.state in LIVE:
        return None
    if agent.state is AgentState.EXITED:
        code = agent.exit_code
        if code is None:  # it ended while no daemon watched it: its status is lost
            return "exited"
        return f"exited on signal {-code}" if code < 0 else f"exited {code}"
    if killed:
        return "killed"
    return "slashed" if agent.slashed else "apoptosis"


def _logged_failure(publish: Callable[P, None]) -> Callable[P, None]:
    """A publication that fails (the store cannot be read) is logged, and the last answers
    stay: a stale read model must not fail the tick or the call that just succeeded."""

    @functools.wraps(publish)
    def publishing(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            publish(*args, **kwargs)
        except MaxwellError:
            log.exception("cannot publish the agents' answers: the last ones stay")

    return publishing


class NodeViews:
    """Builds the read models from the parts that hold the state (see the module)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        ledger: LedgerStore,
        state: NodeState,
        registry: AgentRegistry,
        ticker: Ticker,
        supervisor: Supervisor,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._state = state
        self._agents = registry
        self._ticker = ticker
        self._supervisor = supervisor
        # What `publish` last made: the answers, the balances they were made from, the rows.
        self._published: dict[str, AgentInfo] = {}
        self._balances: dict[str, Money] = {}
        self._ledger_rows = 0
        self._stale: set[str] = set()  # agents whose answers a failed publication did not make
        self._ended: dict[str, str] = {}  # why each ended agent ended, found once
        self._tally = EventTally(state, EVENT_KINDS, after_seq=ledger.entries_written())

    @_logged_failure
    def publish(self, agent_ids: Iterable[str] | None = None) -> None:
        """After a tick: rebuild the answers of `agent_ids` (every agent when None) and of every
        agent whose ledger balance moved since the last time (a tick's audits may slash agents it
        did not plan). Under the daemon's lock."""
        balances = self._ledger.balances()  # one query at most, and none when nothing changed
        seen, self._balances = self._balances, balances
        changed = list(self._agents.agents) if agent_ids is None else list(agent_ids)
        if not changed and not self._stale and balances == seen:
            return  # a quiet tick: nothing to rebuild, no row written
        if balances != seen:
            changed.extend(moved_agents(seen, balances))
        self._rebuild(changed, balances)

    @_logged_failure
    def publish_calls(self, agent_ids: Iterable[str]) -> None:
        """After a call that changed these agents and no other agent's balance (a spawn, a
        funding, a report, an audit, a proof, a kill). Under the daemon's lock."""
        self._rebuild(agent_ids, {})

    def _rebuild(self, agent_ids: Iterable[str], balances: Mapping[str, Money]) -> None:
        """Rebuild these agents' answers (and those a failed publication left stale) on a copy,
        then swap it in: readers see the old answers or the new, whole. A balance missing from
        `balances` is read from the ledger."""
        self._stale.update(agent_ids)
        ledger_rows = self._ledger.entries_written()
        published = dict(self._published) if self._stale else self._published
        added = [a for a in self._stale if a not in self._published and a in self._agents]
        for agent_id in self._stale:
            agent = self._agents.agents.get(agent_id)
            if agent is None:  # reclaimed (`maxwell.node.retention`)
                published.pop(agent_id, None)
                self._ended.pop(agent_id, None)
            else:
                balance = balances.get(agent.account)
                if balance is None:
                    balance = self._balance(agent.account)
                info = agent_info(agent, Money(balance - agent.accrual.owed))
                published[agent_id] = dataclasses.replace(info, ended=self._why_ended(agent))
        if added:
            published = self._in_registry_order(published, added)
        self._published, self._ledger_rows, self._stale = published, ledger_rows, set()

    def _in_registry_order(
        self, published: dict[str, AgentInfo], added: list[str]
    ) -> dict[str, AgentInfo]:
        """`published` in the registry's order. New agents are mostly the registry's last ones
        (a spawn's): then they alone move to the end, in order; else all is put in order (as
        after a restart's recovery)."""
        last = list(itertools.islice(reversed(self._agents.agents), len(added)))
        if set(last) != set(added):
            return {a: published[a] for a in self._agents.agents if a in published}
        for agent_id in reversed(last):
            published[agent_id] = published.pop(agent_id)
        return published

    def _why_ended(self, agent: AgentRecord) -> str | None:
        """`ended_reason`, the journal asked once per dead agent (an exit status is at hand)."""
        if agent.state is not AgentState.DEAD:
            return ended_reason(agent, killed=False)
        found = self._ended.get(agent.id)
        if found is None:
            killed = self._ledger.key_used(f"killed:{agent.id}")
            found = self._ended[agent.id] = ended_reason(agent, killed) or "apoptosis"
        return found

    def _balance(self, account: str) -> Money:
        try:
            return self._ledger.balance(account)
        except UnknownAccountError:  # none yet: it shows 0
            return Money(0)

    def agent(self, agent_id: str) -> AgentInfo:
        """The agent's published answer (no lock)."""
        found = self._published.get(agent_id)
        if found is None:
            raise UnknownAgentError(f"no agent {agent_id!r}")
        return self._shown(found)

    def answer_to_report(self, queued: QueuedReport) -> AgentInfo:
        """The agent's answer to a report: its published answer, showing at least the counters
        the report arrived at, which its next claim must cover (`maxwell.node.claims`). A tick
        under way may have read them and not yet published them; on cgroup v2 the memory freed
        is the node's lower bound, which only the node knows (`Client.report_usage`)."""
        info = self.agent(queued.agent)
        if queued.arrival is None:
            return info
        return dataclasses.replace(
            info,
            cpu_s=max(info.cpu_s, queued.arrival.cpu_ns / 1e9),
            memory_freed_bytes=max(info.memory_freed_bytes, queued.arrival.freed_bytes),
        )

    def agents(self) -> list[AgentInfo]:
        """Every agent's published answer, oldest first (no lock)."""
        return [self._shown(info) for info in self._published.values()]

    def _shown(self, info: AgentInfo) -> AgentInfo:
        """`info` with the agent's queued bid and report, if it has them."""
        inbox = self._ticker.inbox
        bid, report = inbox.bids.queued(info.id), inbox.reports.queued(info.id)
        if bid is not None:
            info = dataclasses.replace(info, bid=bid.price, demand=bid.demand)
        if report is not None:
            info = dataclasses.replace(info, reported=report_of(report.claim))
        return info

    def events(self, after_seq: int, limit: int) -> list[Event]:
        found = self._state.journal_events(EVENT_KINDS, max(after_seq, 0), max(limit, 0))
        return [
            Event(
                seq=event.seq,
                at=event.at,
                kind=event.kind,
                agent=str(event.detail["agent"]) if "agent" in event.detail else None,
                detail=event.detail,
            )
            for event in found
        ]

    def status(self) -> NodeStatus:
        """The node now: its price, its published agents and its tick figures (no lock)."""
        ticker = self._ticker
        return NodeStatus(
            price=ticker.price(),
            agents=self.agents(),
            tick_s=self._config.tick_s,
            last_tick_duration_s=ticker.last_tick_duration_s,
            ticks=ticker.tick,
            mechanism=self._config.mechanism,
            cgroup=self._supervisor.kind,
            capacity_cores=ticker.sold_cores,
            tick_stats=ticker.stats.snapshot(self._ledger_rows),
            event_counts=self._tally.counts(self._ledger_rows),
            node_cores=ticker.capacity_cores,
        )
