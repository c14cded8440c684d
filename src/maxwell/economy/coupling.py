"""Price coupling (issue 12, 4): a node's price answers its neighbours' heat, so load that
chooses by price moves off hot nodes, with no central controller.

Each node already prices its own heat: its spot price rises as its headroom to the throttle
point falls (`maxwell.economy.price`). Coupling adds what it hears from the others. The rule:

- a node's *heat* is `h = clamp(1 - headroom_c / hot_below_c, 0, 1)`: 0 with `hot_below_c` or
  more of headroom, 1 at the throttle point;
- the neighbours' pressure is the *mean* of their heats (verified records only), each heat
  capped to [0, 1]: one node in distress among n neighbours moves it by 1/n, so a lone dying
  node is heard, and one that lies about its heat moves any other's price by at most
  `gain / n`, however it lies. With fewer than `min_neighbours`, nothing couples;
- a node cooler than that pressure sells cheaper: the target multiplier is
  `1 - gain x max(pressure - h_own, 0)`, never below `1 - max_discount`; a node as hot as its
  neighbours or hotter keeps its own price (its spot already says it is hot);
- the multiplier moves towards its target by at most `max_step` per update, so a price never
  jumps, and it depends on heats alone, never on prices: no price feeds back into itself within
  an update, and the loop through load and temperature is slowed by the die's thermal time
  constant (the closed-loop test shows it settle without oscillating).

Bounds a liar cannot pass: the coupled price stays within `[spot x (1 - max_discount), spot]`,
whatever any neighbour says. Pure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from maxwell.economy.price import SpotQuote
from maxwell.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Coupling:
    """The rule's constants (see the module)."""

    hot_below_c: float = 20.0  # headroom under which a node counts as heating
    gain: float = 0.5  # discount per unit of heat the neighbours have above this node
    max_discount: float = 0.3  # the coupled price is never below (1 - this) x spot
    max_step: float = 0.05  # the multiplier moves at most this much per update
    min_neighbours: int = 1  # fewer verified neighbours: no coupling

    def __post_init__(self) -> None:
        if not (math.isfinite(self.hot_below_c) and self.hot_below_c > 0):
            raise UsageError(f"coupling: hot_below_c must be positive, got {self.hot_below_c}")
        for name in ("gain", "max_discount", "max_step"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise UsageError(f"coupling: {name} must be between 0 and 1, got {value}")
        if self.min_neighbours < 1:
            raise UsageError("coupling: min_neighbours must be 1 or more")

    def heat(self, headroom_c: float) -> float:
        """0 for a cool node, 1 at the throttle point (a non-finite headroom counts as cool)."""
        if not math.isfinite(headroom_c):
            return 0.0
        return min(max(1.0 - headroom_c / self.hot_below_c, 0.0), 1.0)

    def target(self, own_headroom_c: float, neighbours_headroom_c: Sequence[float]) -> float:
        """The multiplier this node's price tends to, from its heat and its neighbours'."""
        if len(neighbours_headroom_c) < self.min_neighbours:
            return 1.0
        heats = [self.heat(h) for h in neighbours_headroom_c]
        pressure = sum(heats) / len(heats)
        cooler_by = max(pressure - self.heat(own_headroom_c), 0.0)
        return max(1.0 - self.gain * cooler_by, 1.0 - self.max_discount)

    def step(
        self, multiplier: float, own_headroom_c: float, neighbours_headroom_c: Sequence[float]
    ) -> float:
        """The next multiplier: towards the target by at most `max_step`."""
        goal = self.target(own_headroom_c, neighbours_headroom_c)
        moved = multiplier + min(max(goal - multiplier, -self.max_step), self.max_step)
        return min(max(moved, 1.0 - self.max_discount), 1.0)


class CoupledPrice:
    """A node's coupling multiplier, stepped once per quote: `apply` takes the node's own
    quote and headroom, asks `neighbours` for their headrooms (from verified records), and
    returns the quote times the multiplier (`SpotQuote.coupling`). A failure to hear the
    neighbours is logged and counts as having none: the multiplier then returns towards 1."""

    def __init__(
        self, neighbours: Callable[[], Sequence[float]], rule: Coupling | None = None
    ) -> None:
        self._neighbours = neighbours
        self.rule = rule or Coupling()
        self.multiplier = 1.0

    def apply(self, quote: SpotQuote, own_headroom_c: float) -> SpotQuote:
        try:
            heard = list(self._neighbours())
        except Exception:  # the gossip side's fault: the tick goes on uncoupled
            log.exception("cannot read the neighbours' heat: no coupling this tick")
            heard = []
        self.multiplier = self.rule.step(self.multiplier, own_headroom_c, heard)
        return replace(quote, coupling=self.multiplier, spot=quote.spot * self.multiplier)
