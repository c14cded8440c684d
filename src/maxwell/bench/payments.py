"""Charged bids against free bids: welfare and revenue of the live market's payment rule, on the
same bid sets (`maxwell bench market`, key `charged_vs_free`). Pure and seeded: no clock.

Before issue 11 every agent paid the spot price per joule whatever it bid, so a bid cost nothing
and the best bid was the highest one. Now a winner pays what its mechanism charges, never below
spot and never above its bid (`maxwell.economy.billing.charged_price`). Each trial draws one bid
set (`AGENTS` agents with true values per joule uniform in `VALUES` x spot, demands uniform in
`DEMANDS` cores, a random arrival order) and clears it against `CAPACITY` cores at reserve =
spot, by each mechanism, three ways:

- `charged`: agents bid their values and pay the live rule.
- `free_truthful`: the same bids and allocation, everyone paying spot (the old bills), so the
  difference in revenue is the payment rule alone.
- `free_strategic`: what free bids invite: everyone bids `FREE_BID` x spot, so ties go by
  arrival and the cores go to whoever came first, whatever they value them at; paying spot.

Per mechanism, the mean over `TRIALS` sets of: welfare (sum of true value x cores served),
revenue (sum of price x cores), the buyers' surplus (welfare - revenue), the capacity sold
to agents whose value is below spot (who would not pay spot for it), and the mean price paid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from maxwell.economy.billing import charged_price
from maxwell.economy.mechanisms import MECHANISM_NAMES, Clearing, make_mechanism
from maxwell.economy.orderbook import BidSet

AGENTS = 16
CAPACITY = 2.0  # cores: this machine, scarce against 16 agents wanting up to 2 each
SPOT = 1.0
VALUES = (0.5, 3.0)  # x spot: some agents value a joule below spot
DEMANDS = (0.25, 2.0)
FREE_BID = 1000.0  # x spot: "as high as you like" when bidding costs nothing
TRIALS = 200
SEED = 20_261_206
WAYS = ("charged", "free_truthful", "free_strategic")


@dataclass(frozen=True)
class Outcome:
    """One clearing judged by true values: welfare, revenue, cores sold below spot value."""

    welfare: float
    revenue: float
    cores_below_spot: float
    cores: float

    @classmethod
    def of(cls, clearing: Clearing, values: np.ndarray, prices: np.ndarray) -> Outcome:
        served = clearing.cores_by_bid()
        return cls(
            welfare=float(served @ values),
            revenue=float(served @ prices),
            cores_below_spot=float(served[values < SPOT].sum()),
            cores=float(served.sum()),
        )


def _bid_set(rng: np.random.Generator, prices: np.ndarray, demands: np.ndarray) -> BidSet:
    order = rng.permutation(len(prices))
    return BidSet(
        agents=[f"a{i:02d}" for i in range(len(prices))],
        prices=prices,
        demands=demands,
        seqs=order.astype(np.int64),
    )


def _charged_prices(clearing: Clearing, bids: BidSet) -> np.ndarray:
    """Per bid, what the live rule charges a winner per joule (0 where nothing was won)."""
    prices = np.zeros(len(bids))
    for j, index in enumerate(clearing.winners):
        unit = float(clearing.unit_prices[j])
        prices[index] = charged_price(unit, float(bids.prices[index]), SPOT)
    return prices


def trial(mechanism: str, rng: np.random.Generator) -> dict[str, Outcome]:
    """One bid set, cleared the three ways of the module docstring."""
    values = rng.uniform(*VALUES, size=AGENTS) * SPOT
    demands = rng.uniform(*DEMANDS, size=AGENTS)
    market = make_mechanism(mechanism)
    truthful = _bid_set(rng, values, demands)
    strategic = BidSet(truthful.agents, np.full(AGENTS, FREE_BID * SPOT), demands, truthful.seqs)
    honest = market.clear(truthful, CAPACITY, SPOT, rng)
    greedy = market.clear(strategic, CAPACITY, SPOT, rng)
    spot = np.full(AGENTS, SPOT)
    return {
        "charged": Outcome.of(honest, values, _charged_prices(honest, truthful)),
        "free_truthful": Outcome.of(honest, values, spot),
        "free_strategic": Outcome.of(greedy, values, spot),
    }


def compare(trials: int = TRIALS, seed: int = SEED) -> dict[str, object]:
    """The report: per mechanism and way, the means over `trials` bid sets."""
    by_mechanism: dict[str, dict[str, dict[str, float]]] = {}
    for mechanism in MECHANISM_NAMES:
        rng = np.random.default_rng([seed, MECHANISM_NAMES.index(mechanism)])
        outcomes = [trial(mechanism, rng) for _ in range(trials)]
        by_mechanism[mechanism] = {way: _means([o[way] for o in outcomes]) for way in WAYS}
    setup: dict[str, object] = {"agents": AGENTS, "capacity_cores": CAPACITY, "spot": SPOT}
    setup["trials"] = trials
    setup |= {"values_x_spot": list(VALUES), "demands_cores": list(DEMANDS)}
    setup |= {"free_bid_x_spot": FREE_BID, "seed": seed}
    return {"setup": setup, "by_mechanism": by_mechanism}


def _means(outcomes: list[Outcome]) -> dict[str, float]:
    welfare = float(np.mean([o.welfare for o in outcomes]))
    revenue = float(np.mean([o.revenue for o in outcomes]))
    cores = float(np.mean([o.cores for o in outcomes]))
    return {
        "welfare": round(welfare, 4),
        "revenue": round(revenue, 4),
        "surplus": round(welfare - revenue, 4),
        "cores_sold": round(cores, 4),
        "cores_to_values_below_spot": round(
            float(np.mean([o.cores_below_spot for o in outcomes])), 4
        ),
        "mean_price": round(revenue / cores, 4) if cores > 0 else 0.0,
    }


def summary(report: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """Per mechanism: charged over free (strategic) welfare, and charged over free revenue."""
    by_mechanism = report["by_mechanism"]
    assert isinstance(by_mechanism, dict)
    result: dict[str, dict[str, float]] = {}
    for mechanism, ways in by_mechanism.items():
        charged, strategic, truthful = (
            ways["charged"], ways["free_strategic"], ways["free_truthful"]
        )  # fmt: skip
        result[mechanism] = {
            "welfare_charged_over_free": round(charged["welfare"] / strategic["welfare"], 3),
            "revenue_charged_over_free": round(charged["revenue"] / truthful["revenue"], 3),
        }
    return result
