"""The node's read models: the API's answers about its agents, its events, its price and itself.

Rules:

- Reading changes nothing: no row, no entry, no agent record is written.
- An agent's balance is the ledger's less what it has accrued and not yet settled, so that what
  the API shows is what the agent could spend now.
- The event log is the ledger's journal, filtered to the kinds in `EVENT_KINDS`, oldest first.
- Called under the daemon's lock, but for `info_seen`, which must not wait for a tick.
- A bid waiting for the next tick (`maxwell.node.bids`) shows as the agent's bid.
"""

from __future__ import annotations

from maxwell.economy.store import LedgerStore
from maxwell.node.agents import AgentRecord, AgentRegistry, agent_info, settled_balance
from maxwell.node.config import NodeConfig
from maxwell.node.facade import AgentInfo, Event, NodeStatus
from maxwell.node.state import NodeState
from maxwell.node.supervisor import Supervisor
from maxwell.node.ticker import Ticker
from maxwell.units import Money

EVENT_KINDS = (
    "spawned", "adopted", "funded", "bid", "running", "throttled", "frozen", "thawed",
    "insolvent", "apoptosis", "exited", "killed", "bonded", "unbonded", "released", "audited",
    "slashed", "bounty", "rejected",
)  # fmt: skip


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

    def info(self, agent: AgentRecord) -> AgentInfo:
        return agent_info(agent, settled_balance(self._ledger, agent), self._queued(agent))

    def info_seen(self, agent: AgentRecord) -> AgentInfo:
        """`info` without the store, so without waiting for a tick: the agent as it stands, its
        balance as the last tick left it (called without the daemon's lock)."""
        seen = self._ticker.balances_seen.get(agent.account, Money(0))
        return agent_info(agent, Money(seen - agent.accrual.owed), self._queued(agent))

    def _queued(self, agent: AgentRecord) -> tuple[float, float] | None:
        bid = self._ticker.bids.queued(agent.id)
        return None if bid is None else (bid.price, bid.demand)

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
        balances = self._agents.available(self._ledger.balances())
        ticker = self._ticker
        return NodeStatus(
            price=ticker.price(),
            agents=[
                agent_info(agent, balances.get(agent.account, Money(0)), self._queued(agent))
                for agent in self._agents
            ],
            tick_s=self._config.tick_s,
            last_tick_duration_s=ticker.last_tick_duration_s,
            ticks=ticker.tick,
            mechanism=self._config.mechanism,
            cgroup=self._supervisor.kind,
            capacity_cores=ticker.sold_cores,
            tick_stats=ticker.stats.snapshot(self._ledger.entries_written()),
        )
