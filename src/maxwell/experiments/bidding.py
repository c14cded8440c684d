"""Strategic bidders for `maxwell experiment mechanisms`: a seeded population, what each bidder
gets from a mechanism, the truthfulness gap and best-response dynamics. Pure: no clock, no file;
randomness only from the seed.

Rules:

- A bidder has a private value per joule of a core ($J per J, the unit of a limit price) and a
  demand (cores); it values each core it is served at its value, up to its demand. It bids a
  price only (its demand is reported truthfully): `multiplier x value`, the multiplier taken
  from a grid that holds 1.0 (truthful).
- The market is the daemon's: the mechanism's own class (`make_mechanism`, default settings)
  clears the bids against the node's cores at reserve = spot, and every winner pays what the
  daemon bills (`maxwell.economy.billing.charged_price`: the mechanism's unit price, never above
  its bid, never below spot) per core. `payments="mechanism"` charges the mechanism's own
  payments instead (`Clearing.payments`; they differ only for kelly and lottery, whose market
  price can exceed an uncapped bid).
- Utility = value x cores - payment; welfare = sum of value x cores (true values, not bids);
  revenue = sum of payments. The lottery's figures are means over `draws` clearings with fixed
  generators (`default_rng([seed, 2, k])`), the same for every bid vector (common random numbers),
  so that a best response is a deterministic function of the others' bids.
- Truthfulness gap: for each bidder, the most it gains over bidding its value by any bid on the
  grid while the others bid theirs. Best response: bidders in a fixed (seeded) order each move to
  the grid bid that maximises their utility given the others' current bids; a bidder moves only
  for a strict gain (ties keep the current bid, so a truthful mechanism stays put); stop after a
  round in which nobody moved, or after `rounds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from maxwell.economy.billing import charged_price
from maxwell.economy.mechanisms import Clearing, Mechanism
from maxwell.economy.orderbook import BidSet, FloatArray

Payments = Literal["charged", "mechanism"]
BidVector = tuple[int, ...]  # one grid index per bidder
LOTTERY_STREAM = 2  # the seed's stream for the lottery's draws (0: the population, 1: the order)
GAIN_TOLERANCE = 1e-9  # $J per J x cores: below this a gain is rounding, not a reason to move
RELATIVE_FLOOR = 1e-6  # of value x demand: a truthful utility below it is "nothing" to divide by


@dataclass(frozen=True)
class Population:
    """Bidders on one node: `values[i]` ($J per J) and `demands[i]` (cores) of `agents[i]`."""

    agents: tuple[str, ...]
    values: FloatArray
    demands: FloatArray
    capacity: float  # cores
    spot: float  # $J per J: the reserve every clearing uses

    def optimal_welfare(self) -> float:
        """The optimum: cores to the highest values first, each up to its demand."""
        left, welfare = self.capacity, 0.0
        for i in np.argsort(-self.values, kind="stable"):
            take = min(float(self.demands[i]), left)
            welfare += take * float(self.values[i])
            left -= take
        return welfare


def draw_population(
    seed: int, bidders: int, capacity: float, *, trial: int = 0, spot: float = 1.0
) -> Population:
    """`cure` (value 8-12 x spot, demand 1-2 cores: the agent its user values) and
    `bidders - 1` others (values 1-4 x spot, demands 0.25-2 cores), drawn from `seed` (`trial`:
    another population under the same seed)."""
    rng = np.random.default_rng([seed, 0, trial])
    values = np.concatenate(([rng.uniform(8.0, 12.0)], rng.uniform(1.0, 4.0, bidders - 1)))
    demands = np.concatenate(([rng.uniform(1.0, 2.0)], rng.uniform(0.25, 2.0, bidders - 1)))
    agents = ("cure", *(f"b{i:02d}" for i in range(1, bidders)))
    rounded = np.round(values * spot, 4).astype(np.float64), np.round(demands, 3).astype(np.float64)
    return Population(agents, *rounded, float(capacity), spot)


@dataclass(frozen=True)
class Outcome:
    """What every bidder got from one bid vector (means over the draws): cores and payments."""

    bids: FloatArray
    cores: FloatArray
    payments: FloatArray

    def utility(self, population: Population) -> FloatArray:
        result: FloatArray = population.values * self.cores - self.payments
        return result

    def welfare(self, population: Population) -> float:
        return float(population.values @ self.cores)

    @property
    def revenue(self) -> float:
        return float(self.payments.sum())


@dataclass
class Market:
    """One mechanism clearing one population's bids; outcomes memoised by bid vector."""

    mechanism: Mechanism
    population: Population
    grid: tuple[float, ...]
    seed: int
    draws: int = 1
    payments: Payments = "charged"
    cleared: int = 0  # clearings run (not memoised ones)
    _seen: dict[BidVector, Outcome] = field(default_factory=dict)

    @property
    def truthful(self) -> BidVector:
        return (self.grid.index(1.0),) * len(self.population.agents)

    def outcome(self, bids: BidVector) -> Outcome:
        known = self._seen.get(bids)
        if known is None:
            known = self._seen[bids] = self._clear(bids)
        return known

    def _clear(self, bids: BidVector) -> Outcome:
        population = self.population
        prices = np.array([self.grid[g] for g in bids]) * population.values
        bid_set = BidSet(
            population.agents, prices, population.demands, np.arange(len(bids), dtype=np.int64)
        )
        cores = np.zeros(len(bids))
        paid = np.zeros(len(bids))
        for k in range(self.draws):
            rng = np.random.default_rng([self.seed, LOTTERY_STREAM, k])
            clearing = self.mechanism.clear(bid_set, population.capacity, population.spot, rng)
            cores += clearing.cores_by_bid()
            paid += self._paid(clearing, prices)
            self.cleared += 1
        return Outcome(prices, cores / self.draws, paid / self.draws)

    def _paid(self, clearing: Clearing, prices: FloatArray) -> FloatArray:
        if self.payments == "mechanism":
            return clearing.payments_by_bid()
        paid = np.zeros(len(prices))
        for j, index in enumerate(clearing.winners):
            unit = charged_price(
                float(clearing.unit_prices[j]), float(prices[index]), self.population.spot
            )
            paid[index] = unit * float(clearing.cores[j])
        return paid

    def utility_of(self, bidder: int, bids: BidVector, choice: int) -> float:
        """`bidder`'s utility when it bids grid entry `choice` and the others as in `bids`."""
        moved = (*bids[:bidder], choice, *bids[bidder + 1 :])
        return float(self.outcome(moved).utility(self.population)[bidder])


@dataclass(frozen=True)
class Gap:
    """The most one bidder gains by leaving truthful bidding while the others bid truthfully."""

    gain: float  # $J per J x cores
    agent: str | None  # None: nobody gains
    multiplier: float  # its best bid / its value
    truthful_utility: float | None
    relative: float | None  # gain / truthful utility (None when that is ~0: a gain from nothing)
    share_of_value: float  # gain / (value x demand): what it could ever be worth
    bidders_who_gain: int

    def summary(self) -> dict[str, object]:
        return {
            "gain": round(self.gain, 6), "agent": self.agent, "multiplier": self.multiplier,
            "truthful_utility": None if self.truthful_utility is None
            else round(self.truthful_utility, 6),
            "relative": None if self.relative is None else round(self.relative, 6),
            "share_of_value": round(self.share_of_value, 6),
            "bidders_who_gain": self.bidders_who_gain,
        }  # fmt: skip


def truthfulness_gap(market: Market) -> Gap:
    """Every bidder tries every grid bid against the others' truthful bids."""
    population, truthful = market.population, market.truthful
    honest = market.outcome(truthful).utility(population)
    best: tuple[float, int, int] = (0.0, 0, truthful[0])  # (gain, bidder, grid index)
    gainers = 0
    for bidder in range(len(truthful)):
        gains = [
            market.utility_of(bidder, truthful, choice) - float(honest[bidder])
            for choice in range(len(market.grid))
        ]
        choice = int(np.argmax(gains))
        gainers += gains[choice] > GAIN_TOLERANCE
        if gains[choice] > best[0]:
            best = (gains[choice], bidder, choice)
    gain, bidder, choice = best
    if gain <= GAIN_TOLERANCE:  # rounding: nobody gains
        return Gap(0.0, None, 1.0, None, None, 0.0, 0)
    base = float(honest[bidder])
    worth = float(population.values[bidder] * population.demands[bidder])
    meaningful = base > RELATIVE_FLOOR * worth  # else the ratio is a gain over next to nothing
    return Gap(
        gain, population.agents[bidder], market.grid[choice], base,
        gain / base if meaningful else None, gain / worth, gainers,
    )  # fmt: skip


@dataclass(frozen=True)
class Dynamics:
    """Where best-response dynamics stopped: the bids, the rounds run, and whether it settled."""

    bids: BidVector
    rounds: int
    converged: bool
    moves: int


def best_response(market: Market, order: Sequence[int], rounds: int) -> Dynamics:
    """Bidders in `order` each take their best grid bid given the others', round after round."""
    bids = list(market.truthful)
    moves = 0
    for played in range(1, rounds + 1):
        moved = False
        for bidder in order:
            now = tuple(bids)
            stay = market.utility_of(bidder, now, bids[bidder])
            utilities = [market.utility_of(bidder, now, c) for c in range(len(market.grid))]
            choice = int(np.argmax(utilities))
            if utilities[choice] > stay + GAIN_TOLERANCE:
                bids[bidder] = choice
                moves += 1
                moved = True
        if not moved:
            return Dynamics(tuple(bids), played, True, moves)
    return Dynamics(tuple(bids), rounds, False, moves)
