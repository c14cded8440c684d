"""The placement rule (issue 13, 4): which node a job goes to, from the verified gossip records.

A job asks for `cores` at a `bid` (the most it pays per joule: a bid below a node's spot price
wins nothing in that node's auction, `economy.mechanisms`). Each node of the cluster offers what
its last heat record says, as this node's `gossip.view.ClusterView` believes it (`Offer`). A node
is a candidate only when

- Serf calls it alive ("not-alive" otherwise: failed, left, leaving),
- its record is verified (an admitted key, a good signature: "unverified"),
- that record is fresh, made at most `max_age_s` ago ("stale"),
- it has room: at least `cores` free ("no-room"),
- its price is within the bid ("too-dear"),
- and the caller has not ruled it out ("excluded": a node that already refused this job).

Candidates are ranked cheapest first; among equal prices, the one with more free cores first,
then by node id: the same table always gives the same order, whatever order it came in. The
submitter tries them in that order, a bounded number of times. Pure: no clock (ages come in the
offers), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from maxwell.errors import MaxwellError
from maxwell.node.facade import ClusterMembers

REASONS: Final = ("not-alive", "unverified", "stale", "no-room", "too-dear", "excluded")
MAX_AGE_S: Final = 30.0  # as `ClusterView`'s freshness: a node publishes every few seconds


class PlacementError(MaxwellError):
    """A job that cannot be placed: a demand that is not a demand."""


@dataclass(frozen=True)
class Demand:
    """What a job asks for: `cores` (> 0) at a `bid` (> 0, $J per J)."""

    cores: float
    bid: float

    def __post_init__(self) -> None:
        for name, value in (("cores", self.cores), ("bid", self.bid)):
            if not (math.isfinite(value) and value > 0):
                raise PlacementError(f"a job's {name} must be a positive number, not {value!r}")


@dataclass(frozen=True)
class Offer:
    """A node as the gossip view believes it; `price`, `free_cores` and `age_s` are None while
    it has no verified record."""

    node: str
    alive: bool
    verified: bool
    price: float | None = None
    free_cores: float | None = None
    age_s: float | None = None


@dataclass(frozen=True)
class Placement:
    """The candidates, best first, and why each other node was passed over."""

    ranked: tuple[Offer, ...]
    passed_over: Mapping[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> Offer | None:
        return self.ranked[0] if self.ranked else None

    def why_none(self) -> str:
        """One line on why no node was chosen (or which was)."""
        if self.ranked:
            return f"{self.ranked[0].node} is the cheapest with room"
        if not self.passed_over:
            return "no node is known"
        reasons = ", ".join(f"{node}: {why}" for node, why in sorted(self.passed_over.items()))
        return f"no node can take the job ({reasons})"


def offers(members: ClusterMembers) -> list[Offer]:
    """The offers in a `maxwell cluster members` table."""
    return [
        Offer(m.node, m.status == "alive", m.verified, m.price, m.free_cores, m.age_s)
        for m in members.members
    ]


def rank(
    table: Iterable[Offer],
    demand: Demand,
    *,
    max_age_s: float = MAX_AGE_S,
    exclude: Iterable[str] = (),
) -> Placement:
    """The candidates of `table` for `demand`, ranked (see the module). A node listed twice
    counts once: its first entry."""
    ruled_out = frozenset(exclude)
    candidates: list[Offer] = []
    passed_over: dict[str, str] = {}
    seen: set[str] = set()
    for offer in table:
        if offer.node in seen:
            continue
        seen.add(offer.node)
        why = _passed_over(offer, demand, max_age_s, ruled_out)
        if why is None:
            candidates.append(offer)
        else:
            passed_over[offer.node] = why
    candidates.sort(key=lambda o: (o.price, -(o.free_cores or 0.0), o.node))
    return Placement(tuple(candidates), passed_over)


def _passed_over(
    offer: Offer, demand: Demand, max_age_s: float, ruled_out: frozenset[str]
) -> str | None:
    """Why `offer` is no candidate (one of `REASONS`), or None."""
    if offer.node in ruled_out:
        return "excluded"
    if not offer.alive:
        return "not-alive"
    price, free, age = offer.price, offer.free_cores, offer.age_s
    if not offer.verified or price is None or free is None or age is None:
        return "unverified"
    if not (math.isfinite(price) and math.isfinite(free) and math.isfinite(age)):
        return "unverified"  # the codec admits no such number: something is wrong upstream
    if age > max_age_s:
        return "stale"
    if free < demand.cores:
        return "no-room"
    if price > demand.bid:
        return "too-dear"
    return None
