"""Bids between ticks: an agent's bid is checked and queued at once, never waiting for a tick;
the next tick stores the queued bids, each with its `bid` event, in one unit of work before it
plans, and clears with them. A call that changes the node (a funding, a kill, an audit...)
stores them first too, so that the journal keeps the order things happened in.

Rules:

- One queued bid per agent: a later one replaces it and goes to the back, so bids are stored in
  the order they last arrived and their arrival numbers (the book's tie-break) follow arrival.
- The queue's lock is held only to put or take a bid: never across a tick, a query or a write.
- A bid queued for an agent that is no longer live when the tick takes it is dropped (its kill,
  exit or apoptosis came first), with a log line.
- If storing fails, the bids go back to the queue (unless a later bid of the same agent arrived
  meanwhile), and the tick fails and is retried.
- A daemon killed between a bid and the next tick forgets that bid: the agent's standing bid is
  the last one stored (at most one tick old when the daemon is healthy).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maxwell.economy.ledger import event_request
from maxwell.economy.orderbook import InvalidBidError, check_demand, check_price
from maxwell.node.agents import LIVE, AgentRecord
from maxwell.node.facade import NodeError
from maxwell.node.store import NodeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedBid:
    """A checked bid waiting for the next tick; `at` is when it arrived (wall time)."""

    agent: str
    price: float
    demand: float
    at: float


def checked_bid(
    agent: AgentRecord, price: float, demand: float | None, at: float, queued: QueuedBid | None
) -> QueuedBid:
    """The bid `agent` asks for, checked (a `NodeError` says why not); without a `demand` it
    keeps the cores it last asked for, queued or standing."""
    if demand is None:
        demand = queued.demand if queued is not None else agent.demand
    try:
        return QueuedBid(agent.id, check_price(price), check_demand(demand), at)
    except InvalidBidError as exc:
        raise NodeError(str(exc)) from exc


class BidQueue:
    """The latest bid of each agent since the last tick, in arrival order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bids: dict[str, QueuedBid] = {}

    def put(self, bid: QueuedBid) -> None:
        with self._lock:
            self._bids.pop(bid.agent, None)
            self._bids[bid.agent] = bid

    def queued(self, agent_id: str) -> QueuedBid | None:
        """The agent's bid waiting for the next tick, if any."""
        return self._bids.get(agent_id)

    def take(self) -> list[QueuedBid]:
        """Every queued bid, oldest first; the queue is then empty."""
        with self._lock:
            bids, self._bids = list(self._bids.values()), {}
        return bids

    def put_back(self, bids: Sequence[QueuedBid]) -> None:
        """Bids taken and not stored, ahead of those that arrived since; a later bid of the
        same agent wins."""
        with self._lock:
            older = {bid.agent: bid for bid in bids if bid.agent not in self._bids}
            self._bids = {**older, **self._bids}

    def __len__(self) -> int:
        return len(self._bids)


def store_bids(
    store: NodeStore, agents: Mapping[str, AgentRecord], bids: Sequence[QueuedBid]
) -> list[tuple[AgentRecord, QueuedBid, int]]:
    """Store the bids of agents still live, each with its `bid` event, in one unit of work;
    each stored bid with its agent and arrival number. The caller then makes them stand."""
    live: list[tuple[AgentRecord, QueuedBid]] = []
    for bid in bids:
        agent = agents.get(bid.agent)
        if agent is None or agent.finished or agent.state not in LIVE:
            log.info(
                "agent %s ended before its bid of %g was stored: dropped", bid.agent, bid.price
            )
            continue
        live.append((agent, bid))
    stored: list[tuple[AgentRecord, QueuedBid, int]] = []
    if not live:
        return stored
    with store.unit_of_work():  # the bids and their events, together
        for agent, bid in live:
            seq = store.state.place_bid(agent.id, bid.price, bid.demand, bid.at)
            detail = {"agent": agent.id, "price": bid.price, "demand": bid.demand}
            store.ledger.submit(event_request(f"bid:{agent.id}:{seq}", "bid", detail), at=bid.at)
            stored.append((agent, bid, seq))
    return stored
