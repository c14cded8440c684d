"""When a node tells the cluster about itself (issue 12, 2): the publication rule, pure.

A node's record is made from what its last tick published (`NodeStatus`): the spot price, the
temperature and headroom, the node's power, the cores it sells (`capacity_cores`), the cores its
live agents were granted (`load`) and the cores no live agent asks for (`free_cores`: room for
a newcomer). It goes out as the node's tags

- when a figure moved by more than its threshold since the last one published (temperature or
  headroom by `moved_c`, price or power by the fraction `moved_fraction`, cores by
  `moved_cores`), but not sooner than `spacing_s` after the last one;
- at once when the node enters distress, whatever the spacing;
- and at least every `refresh_s` (or the spacing, if longer) whatever moved, so that a silent
  node's record grows stale (`trust.Verifier`'s 30 s) and the others stop counting it.

Why a spacing: a tag update is a memberlist "alive" message, about 300 bytes with a record in
it, that every node relays `4 x ceil(log10(N + 1))` times (Serf's LAN retransmit rule), and
Serf's LAN gossip carries about 21 KB a second per node (1,400-byte packets to three peers every
200 ms), which Serf's own traffic and the distress events share. Measured here: five agents
updating 400-byte tags every second, or ten updating 260-byte tags every two seconds, had
updates refused with "timeout waiting for update broadcast" (and events wait behind them); with
20-byte tags, none. So a node spaces its records so that the cluster's records take about a
fifth of the gossip (15 updates a second per node): `spacing_s(N) = max(1, N x 4
ceil(log10(N + 1)) / 15)` seconds, with a random tenth added so that nodes do not update in step:
1 s up to 3 nodes, 5.3 s at 10, 16 s at 30. Past about 50 nodes the spacing nears the 30 s
after which a record is stale.

A **distress** record (headroom under `distress_below_c`: about to throttle) also goes out as a
Serf user event, `maxwell-distress`, first (before the tags, which Serf may take seconds to
broadcast), at once when the node enters distress and again every `refresh_s` while it stays
there.

Sequence numbers are milliseconds of Unix time, and above the last one used: a restarted daemon
goes on above what its peers last accepted from it, as long as its clock does not go back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from maxwell.errors import UsageError
from maxwell.gossip.record import HeatRecord
from maxwell.node.facade import AgentState, NodeStatus

DISTRESS_EVENT: Final = "maxwell-distress"
RECORD_BUDGET_PER_S: Final = 15.0  # tag updates a second a node relays for the cluster
_LIVE: Final = (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN)


@dataclass(frozen=True)
class Publication:
    """The rule's constants (see the module)."""

    refresh_s: float = 5.0
    distress_below_c: float = 5.0
    spacing_s: float = 1.0  # at least this long between two records (`spacing_s(members)`)
    moved_c: float = 0.5
    moved_fraction: float = 0.02
    moved_cores: float = 0.1

    def __post_init__(self) -> None:
        for name in ("refresh_s", "moved_c", "moved_fraction", "moved_cores"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"gossip: {name} must be a positive number, got {value!r}")
        if not math.isfinite(self.distress_below_c):
            raise UsageError(
                f"gossip: distress_below_c must be finite, got {self.distress_below_c}"
            )

    def distressed(self, record: HeatRecord) -> bool:
        return record.headroom_c < self.distress_below_c

    def due(self, last: HeatRecord | None, record: HeatRecord) -> bool:
        """Whether `record` goes out as the node's tags, `last` being the last one that did."""
        if last is None or (self.distressed(record) and not self.distressed(last)):
            return True
        since = record.at - last.at
        if since < self.spacing_s:
            return False
        return since >= self.refresh_s or self._moved(last, record)

    def distress_due(self, last_sent_at: float | None, record: HeatRecord) -> bool:
        """Whether `record` also goes out as a distress event, the last one having gone at
        `last_sent_at` (None: none yet, or the node left distress since)."""
        if not self.distressed(record):
            return False
        return last_sent_at is None or record.at - last_sent_at >= self.refresh_s

    def _moved(self, last: HeatRecord, record: HeatRecord) -> bool:
        def relative(a: float, b: float) -> float:
            return abs(a - b) / max(abs(a), abs(b), 1e-12)

        return (
            abs(record.temperature_c - last.temperature_c) > self.moved_c
            or abs(record.headroom_c - last.headroom_c) > self.moved_c
            or relative(record.price, last.price) > self.moved_fraction
            or relative(record.power_w, last.power_w) > self.moved_fraction
            or abs(record.free_cores - last.free_cores) > self.moved_cores
            or abs(record.load - last.load) > self.moved_cores
            or abs(record.capacity_cores - last.capacity_cores) > self.moved_cores
        )


def spacing_s(members: int) -> float:
    """The least time between two records of a node in a cluster of `members` (see the module)."""
    relays = 4 * math.ceil(math.log10(max(members, 1) + 1))
    return max(1.0, members * relays / RECORD_BUDGET_PER_S)


def next_seq(last: int | None, at: float) -> int:
    """The sequence number of a record made at `at` (see the module)."""
    now_ms = math.floor(at * 1000)
    return now_ms if last is None else max(last + 1, now_ms)


def heat_record(node: str, seq: int, at: float, status: NodeStatus) -> HeatRecord:
    """The node's record from its last tick's snapshot (see the module for each figure)."""
    price = status.price
    live = [agent for agent in status.agents if agent.state in _LIVE]
    capacity = max(status.capacity_cores, 0.0)
    asked = sum(agent.demand for agent in live)
    return HeatRecord(
        node=node,
        seq=seq,
        at=at,
        temperature_c=price.temperature_c,
        measured=price.measured,
        headroom_c=price.headroom_c,
        power_w=max(price.power_w, 0.0),
        price=price.spot,
        capacity_cores=capacity,
        free_cores=min(max(capacity - asked, 0.0), capacity),
        load=sum(agent.share for agent in live),
    )
