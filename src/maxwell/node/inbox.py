"""The calls an agent makes often, answered without waiting for a tick: bids
(`maxwell.node.bids`) and self-reports (`maxwell.node.reports`), checked and queued at once. The
next tick takes them before it plans, and so does each call that changes the node before it
acts, so that the journal and the claims keep the order things happened in.

Rules:

- Taking stores the bids first, then the reports, each kind in one unit of work. A kind that fails
  to be stored goes back to its queue and the failure is raised; a kind stored before it stays.
- A stored bid stands at once (the ticker's `place`); an agent whose bid or report was stored
  wakes (`maxwell.node.resting`), and the caller publishes it again.
"""

from __future__ import annotations

from collections.abc import Callable

from maxwell.node.agents import AgentRecord, AgentRegistry
from maxwell.node.bids import BidQueue, QueuedBid, checked_bid, store_bids
from maxwell.node.claims import OptimisticBilling
from maxwell.node.facade import Report
from maxwell.node.reports import QueuedReport, ReportQueue
from maxwell.node.resting import RestingAgents
from maxwell.node.store import NodeStore


class Inbox:
    """Bids and reports since the last tick (see the module). Queuing is thread-safe and takes
    no lock of the daemon's; `take` runs under the daemon's lock."""

    def __init__(
        self,
        *,
        store: NodeStore,
        registry: AgentRegistry,
        billing: OptimisticBilling,
        wall: Callable[[], float],
        place: Callable[[AgentRecord], None],
        resting: RestingAgents,
    ) -> None:
        self._store = store
        self._agents = registry
        self._billing = billing
        self._wall = wall
        self._place = place
        self._resting = resting
        self.bids = BidQueue()
        self.reports = ReportQueue()

    def queue_bid(self, agent: AgentRecord, price: float, demand: float | None) -> QueuedBid:
        """Check a bid and queue it (a `NodeError` says why not)."""
        bid = checked_bid(agent, price, demand, self._wall(), self.bids.queued(agent.id))
        self.bids.put(bid)
        return bid

    def queue_report(self, agent: AgentRecord, report: Report) -> QueuedReport:
        """Check a report, read the counters it arrived at, and queue it (a `NodeError` says
        why not: malformed, or below the agent's latest claim)."""
        queued = self._billing.receive(agent, report)
        self.reports.put(queued, agent.reported)
        return queued

    def take(self) -> set[str]:
        """Store what is queued (see the module); the agents it changed."""
        changed = self._take_bids()
        self._resting.wake(changed)
        reports = self.reports.take()
        if reports:
            try:
                stored = self._billing.store_reports(reports)
            except Exception:
                self.reports.put_back(reports)
                raise
            self._resting.wake(stored)
            changed |= stored
        return changed

    def _take_bids(self) -> set[str]:
        bids = self.bids.take()
        if not bids:
            return set()
        try:
            stored = store_bids(self._store, self._agents.agents, bids)
        except Exception:
            self.bids.put_back(bids)
            raise
        for agent, bid, seq in stored:
            agent.bid_seq, agent.bid, agent.demand = seq, bid.price, bid.demand
            agent.settle_next = True
            if agent.group is not None:
                self._place(agent)
        return {agent.id for agent, _, _ in stored}
