"""What a node believes about its cluster (issue 12, 3 and 5): members, verified records, prices.

The gossip thread feeds it what Serf says (`members_seen`: members with their tags, from member
events and periodic listings; `distress`: the payload of a `maxwell-distress` event; `learned`:
a member's certificate, asked for by a query; `introduced`: the certificate a query carried,
its asker's) and the node's own records (`own`); the tick reads
the neighbours' headroom (`neighbours_headroom`) to couple its price, and the API reads the
members and the prices. One lock guards it, held only for dictionary work and one signature
check: no I/O.

Rules:

- Everything passes `trust.Verifier`: a record in a member's tags must be that member's own; a
  distress event's record is bound by its signature alone (Serf does not say who sent an event);
  a certificate is learnt for the node it names. A tag is looked at when it changes, so a member
  that keeps showing the same refused bytes is counted once, not at every listing.
- A record of a member whose certificate this node has not learnt yet is parked (the latest
  one per member, members only), and the certificate asked for (`wanted`): once learnt, the
  parked record is checked; a member that does not answer (`unanswered`) is asked again every
  `ASK_AGAIN_S`, and after `ASKS` unanswered questions its parked record is refused as
  "not-admitted" (one lost answer on a busy network is no evidence).
- A member is *verified* while its key is admitted and its last verified record is fresh (made
  within `max_age_s`, 30 s: a node publishes at least every few seconds). Only verified, alive
  members take part in coupling and in the price table: a failed or silent node is forgotten by
  the market, though still listed.
- The node itself is listed and priced like any member (its own records, which it signed).

The time is injected (`wall`, Unix seconds: records carry Unix time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from maxwell.gossip.record import HeatRecord, RecordError, decode
from maxwell.gossip.rpc import Member
from maxwell.gossip.tags import HEAT_TAG, record_in
from maxwell.gossip.trust import NodeCertificate, Verifier
from maxwell.node.facade import ClusterMember, ClusterMembers, ClusterPrices, NodePrice

ASK_AGAIN_S = 5.0  # a member that did not answer for its certificate is asked again after this
ASKS = 3  # unanswered questions after which its record is refused


@dataclass(frozen=True)
class DistressSeen:
    """A distress record this node verified: whose, which, and when it arrived (Unix time)."""

    node: str
    seq: int
    made_at: float
    seen_at: float


class ClusterView:
    """The node's beliefs about its cluster (see the module); thread-safe."""

    def __init__(
        self, verifier: Verifier, *, node: str, wall: Callable[[], float], max_age_s: float = 30.0
    ) -> None:
        self.node = node
        self._verifier = verifier
        self._wall = wall
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        self._tags_seen: dict[str, str] = {}  # member -> its record tag as last looked at
        self._parked: dict[tuple[str, bool], bytes] = {}  # (node, by event) -> its record
        self._asked: dict[str, float] = {}  # node -> when its certificate was last asked for
        self._silences: dict[str, int] = {}  # node -> questions it left unanswered in a row
        self._distress: list[DistressSeen] = []
        self._noted: set[tuple[str, int]] = set()  # distress records noted (node, seq)
        self.distress_events = 0  # `maxwell-distress` events received, believed or not

    # --- what the gossip thread feeds in ----------------------------------------------------------

    def members_seen(self, members: Iterable[Member]) -> None:
        """Serf's word on these members (status, address, tags): learn and check what changed."""
        now = self._wall()
        with self._lock:
            for member in members:
                self._members[member.name] = member
                self._look_at(member, now)

    def members_gone(self, names: Iterable[str]) -> None:
        """Members Serf reaped: no longer listed (what was verified of them ages out)."""
        with self._lock:
            for name in names:
                self._members.pop(name, None)

    def distress(self, payload: bytes) -> HeatRecord | None:
        """A `maxwell-distress` event's payload: the record, if verified and new."""
        now = self._wall()
        with self._lock:
            self.distress_events += 1
            return self._consider(None, payload, now)

    def own(self, certificate: bytes, record: bytes) -> None:
        """This node's own certificate and latest record, as it publishes them."""
        now = self._wall()
        with self._lock:
            self._verifier.learn(self.node, certificate)
            self._verifier.accept(self.node, record, now)

    def wanted(self) -> list[str]:
        """The members whose certificate to ask for now (each is then not asked again for
        `ASK_AGAIN_S` unless `unanswered` says so sooner)."""
        now = self._wall()
        with self._lock:
            waiting = {node for node, _ in self._parked}
            due = [n for n in waiting if now - self._asked.get(n, -ASK_AGAIN_S) >= ASK_AGAIN_S]
            for node in due:
                self._asked[node] = now
            return due

    def learned(self, node: str, certificate: bytes) -> None:
        """`node`'s answer to the certificate query: learnt if admitted, then its parked record
        is checked."""
        now = self._wall()
        with self._lock:
            self._admit(node, certificate, now)

    def introduced(self, certificate: bytes) -> None:
        """A certificate a query carried (its asker's own, though Serf does not say who asked):
        learnt for the node it names if no key of that node is known yet, then its parked
        record is checked. A known key is never replaced this way."""
        now = self._wall()
        try:
            node = NodeCertificate.decode(certificate).node
        except RecordError as exc:
            with self._lock:
                self._verifier.rejected[exc.reason] += 1
            return
        with self._lock:
            if not self._verifier.knows(node):
                self._admit(node, certificate, now)

    def unanswered(self, node: str) -> None:
        """No answer came from `node`: after `ASKS` of these, its parked record is refused."""
        now = self._wall()
        with self._lock:
            self._silences[node] = self._silences.get(node, 0) + 1
            if self._silences[node] < ASKS:
                return
            del self._silences[node]
            for by_event in (False, True):
                wire = self._parked.pop((node, by_event), None)
                if wire is not None:  # counted: not admitted
                    self._verifier.accept(None if by_event else node, wire, now)

    # --- what the tick and the API read -----------------------------------------------------------

    def neighbours_headroom(self) -> list[float]:
        """The headroom of every verified, alive member but this node."""
        now = self._wall()
        with self._lock:
            return [
                record.headroom_c
                for record in self._believed(now).values()
                if record.node != self.node
            ]

    def members(self) -> ClusterMembers:
        now = self._wall()
        with self._lock:
            rows = [self._row(member, now) for member in self._members.values()]
        return ClusterMembers(tuple(sorted(rows, key=lambda row: row.node)), node=self.node)

    def prices(self) -> ClusterPrices:
        now = self._wall()
        with self._lock:
            believed = list(self._believed(now).values())
        believed.sort(key=lambda record: (record.price, record.node))
        nodes = tuple(NodePrice(r.node, r.price, r.free_cores) for r in believed)
        with_room = [r.node for r in believed if r.free_cores > 0]
        return ClusterPrices(nodes=nodes, cheapest=with_room[0] if with_room else None)

    def size(self) -> int:
        """How many members Serf says are alive, this node included (at least 1)."""
        with self._lock:
            alive = {name for name, m in self._members.items() if m.status == "alive"}
        return len(alive | {self.node})

    def rejected(self) -> dict[str, int]:
        with self._lock:
            return dict(self._verifier.rejected)

    def distress_seen(self) -> list[DistressSeen]:
        with self._lock:
            return list(self._distress)

    # --- under the lock ---------------------------------------------------------------------------

    def _admit(self, node: str, certificate: bytes, now: float) -> None:
        admitted = self._verifier.learn(node, certificate)
        self._silences.pop(node, None)
        for by_event in (False, True):  # the tags first: an event is then a known record
            wire = self._parked.pop((node, by_event), None)
            if admitted and wire is not None:
                self._consider(None if by_event else node, wire, now)

    def _look_at(self, member: Member, now: float) -> None:
        text = member.tags.get(HEAT_TAG)
        if text is None or self._tags_seen.get(member.name) == text:
            return
        self._tags_seen[member.name] = text
        try:
            wire = record_in(member.tags)
        except RecordError as exc:
            self._verifier.rejected[exc.reason] += 1
            return
        if wire is not None:
            self._consider(member.name, wire, now)

    def _consider(self, carrier: str | None, wire: bytes, now: float) -> HeatRecord | None:
        """Check a record, or park it while its node's certificate is asked for (see the
        module). A distress event's record (`carrier` None) is noted once believed, also when
        the same record came first as tags."""
        try:
            record = decode(wire).record
        except RecordError:
            return self._verifier.accept(carrier, wire, now)  # counted
        node = record.node
        known = self._verifier.knows(node)
        if not known and node in self._members and carrier in (None, node):
            self._parked[(node, carrier is None)] = wire
            return None
        believed = self._verifier.accept(carrier, wire, now)
        verified = believed is not None or self._verifier.latest_wire(node) == wire
        if carrier is None and verified and (node, record.seq) not in self._noted:
            self._noted.add((node, record.seq))
            self._distress.append(DistressSeen(node, record.seq, record.at, now))
        return believed

    def _fresh(self, record: HeatRecord, now: float) -> bool:
        return now - record.at <= self._max_age_s

    def _believed(self, now: float) -> dict[str, HeatRecord]:
        """Verified, fresh records of members Serf calls alive (this node always counts)."""
        believed: dict[str, HeatRecord] = {}
        for node, record in self._verifier.latest.items():
            member = self._members.get(node)
            alive = node == self.node or (member is not None and member.status == "alive")
            if alive and self._fresh(record, now):
                believed[node] = record
        return believed

    def _row(self, member: Member, now: float) -> ClusterMember:
        record = self._verifier.latest.get(member.name)
        address = f"{member.addr}:{member.port}"
        if record is None or not self._fresh(record, now):
            return ClusterMember(member.name, address, member.status, verified=False)
        return ClusterMember(
            node=member.name, address=address, status=member.status, verified=True,
            temperature_c=record.temperature_c, measured=record.measured,
            headroom_c=record.headroom_c, price=record.price, free_cores=record.free_cores,
            age_s=max(now - record.at, 0.0),
        )  # fmt: skip
