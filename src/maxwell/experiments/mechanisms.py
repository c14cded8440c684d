"""`maxwell experiment mechanisms`: welfare, revenue, efficiency against the optimum and the
truthfulness gap of each of the market's mechanisms (uniform, vcg, kelly, lottery, posted), for
truthful and for strategic bidders, beside fair share.

A seeded population (`maxwell.experiments.bidding`): `cure`, the agent its user values (8-12 $J
per J, 1-2 cores), and others valuing a joule at 1-4 $J (0.25-2 cores each), on a node of C
cores (quick: 8 bidders on 4 cores; full: 16 on 8), spot 1 $J per J. Each mechanism's own class
clears the bids at reserve = spot and winners pay what the daemon bills. Per mechanism:

- truthful: everyone bids its value: welfare (true value x cores), revenue, efficiency =
  welfare / the optimum (cores to the highest values, up to demand);
- the truthfulness gap: the most one bidder gains by bidding another multiple of its value
  (from the grid) while the others bid truthfully, absolute and relative to its utility; on
  this population and on more drawn from the seed (quick: 3 in all, full: 6), since whether
  anyone can gain depends on the draw (uniform's marginal bidder gains only when the next value
  down leaves room to shade);
- strategic: best-response dynamics from truthful bids, bidders in a seeded order, for at most
  `rounds` rounds or until nobody moves: the same figures where it stopped.

Fair share (the twin's own max-min equal split, `maxwell.sim.engine`, capped by demand, no
payments) is the baseline.
Posted price: the daemon's `Posted` runs its whole tatonnement inside each clearing and keeps
nothing between them; that is measured, not assumed (`posted_over_ticks`: one instance clears the
same bids tick after tick, other bids in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from maxwell.economy.mechanisms import MECHANISM_NAMES, Posted, Uniform, make_mechanism
from maxwell.economy.orderbook import BidSet
from maxwell.experiments import Claim, Result
from maxwell.experiments.bidding import (
    GAIN_TOLERANCE,
    BidVector,
    Gap,
    Market,
    Population,
    best_response,
    draw_population,
    truthfulness_gap,
)
from maxwell.sim.engine import water_fill

NAME = "mechanisms"
MEASURED_ON: Final = (
    "twin (the market's own mechanisms, maxwell.economy.mechanisms, cleared for simulated "
    "bidders: not this machine's processes)"
)


@dataclass(frozen=True)
class Setup:
    """How big a run is: bidders, cores, the bid grid (x value), rounds, lottery draws."""

    bidders: int
    capacity: float
    grid: tuple[float, ...]
    rounds: int
    draws: int  # lottery clearings averaged per bid vector
    ticks: int  # posted: consecutive clearings by one instance
    populations: int  # drawn for the truthfulness gap (the first is the one played out)


QUICK_GRID: Final = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
QUICK: Final = Setup(8, 4.0, QUICK_GRID, 6, 3, 3, 3)
FULL: Final = Setup(16, 8.0, tuple(round(0.2 + 0.05 * i, 2) for i in range(37)), 10, 3, 5, 6)


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed`; `quick`: 8 bidders, a coarser grid, fewer rounds."""
    setup = QUICK if quick else FULL
    population = draw_population(seed, setup.bidders, setup.capacity)
    order = tuple(int(i) for i in np.random.default_rng([seed, 1]).permutation(setup.bidders))
    others = [
        draw_population(seed, setup.bidders, setup.capacity, trial=trial)
        for trial in range(1, setup.populations)
    ]
    by_mechanism = {
        name: measure(name, population, setup, seed, order, others) for name in MECHANISM_NAMES
    }
    mine = {
        "setup": _setup(setup, population, order),
        "optimal_welfare": round(population.optimal_welfare(), 6),
        "population": {
            agent: {"value": float(value), "demand": float(demand)}
            for agent, value, demand in zip(
                population.agents, population.values, population.demands, strict=True
            )
        },
        "mechanisms": by_mechanism,
        "posted_over_ticks": posted_over_ticks(population, setup.ticks),
    }
    fair = [fair_share(p)["efficiency"] for p in (population, *others)]
    theirs = {
        "fair_share": fair_share(population),
        "efficiency_mean_over_populations": round(float(np.mean(fair)), 6),
    }
    return Result(NAME, seed, MEASURED_ON, mine, theirs, claims(mine, theirs),
                  lambda path: plot(mine, theirs, path))  # fmt: skip


def _setup(setup: Setup, population: Population, order: tuple[int, ...]) -> dict[str, Any]:
    return {
        "bidders": setup.bidders, "capacity_cores": setup.capacity,
        "spot": population.spot, "reserve": "spot", "grid_x_value": list(setup.grid),
        "max_rounds": setup.rounds, "lottery_draws": setup.draws,
        "populations": setup.populations,
        "order": [population.agents[i] for i in order],
        "payments": "as the daemon bills: the mechanism's unit price, capped at the bid, "
        "floored at spot (maxwell.economy.billing.charged_price)",
    }  # fmt: skip


def measure(
    name: str,
    population: Population,
    setup: Setup,
    seed: int,
    order: tuple[int, ...],
    others: Sequence[Population] = (),
) -> dict[str, Any]:
    """One mechanism: truthful figures, the truthfulness gap, and where best response stops
    (on `population`), and the gap and truthful efficiency over `others` too."""
    draws = setup.draws if name == "lottery" else 1
    market = Market(make_mechanism(name), population, setup.grid, seed, draws)
    gap = truthfulness_gap(market)
    dynamics = best_response(market, order, setup.rounds)
    figures: dict[str, Any] = {
        "truthful": _figures(market, market.truthful),
        "truthfulness_gap": gap.summary(),
        "strategic": {
            **_figures(market, dynamics.bids),
            "rounds": dynamics.rounds, "converged": dynamics.converged,
            "moves": dynamics.moves,
            "bids_x_value": {
                agent: setup.grid[g] for agent, g in zip(population.agents, dynamics.bids,
                                                         strict=True)
            },
        },
    }  # fmt: skip
    if name in ("kelly", "lottery"):  # their market price can exceed a bid: the rule matters
        own = Market(make_mechanism(name), population, setup.grid, seed, draws, "mechanism")
        figures["truthfulness_gap_own_payments"] = truthfulness_gap(own).summary()
    figures["over_populations"] = _over_populations(name, setup, seed, market, gap, others)
    figures["clearings_run"] = market.cleared
    return figures


def _over_populations(
    name: str, setup: Setup, seed: int, market: Market, gap: Gap, others: Sequence[Population]
) -> dict[str, Any]:
    """The truthfulness gap and truthful efficiency on every population drawn, this one first."""
    draws = setup.draws if name == "lottery" else 1
    markets = [market]
    markets += [Market(make_mechanism(name), p, setup.grid, seed, draws) for p in others]
    gaps = [gap, *(truthfulness_gap(m) for m in markets[1:])]
    shares = [g.share_of_value for g in gaps]
    return {
        "populations": len(gaps),
        "where_someone_gains": sum(g.gain > GAIN_TOLERANCE for g in gaps),
        "max_gain": round(max(g.gain for g in gaps), 9),
        "max_share_of_value": round(max(shares), 6),
        "mean_share_of_value": round(float(np.mean(shares)), 6),
        "truthful_efficiency_mean": round(
            float(np.mean([_figures(m, m.truthful)["efficiency"] for m in markets])), 6
        ),
    }


def _figures(market: Market, bids: BidVector) -> dict[str, float]:
    population = market.population
    outcome = market.outcome(bids)
    welfare = outcome.welfare(population)
    return {
        "welfare": round(welfare, 6),
        "revenue": round(outcome.revenue, 6),
        "efficiency": round(welfare / population.optimal_welfare(), 6),
        "cure_cores": round(float(outcome.cores[0]), 6),
    }


def fair_share(population: Population) -> dict[str, float]:
    """The twin's fair share: equal split among those that want cores, capped by demand."""
    shares = water_fill(
        population.capacity, dict(zip(population.agents, population.demands.tolist(), strict=True))
    )
    cores = np.array([shares[agent] for agent in population.agents])
    welfare = float(population.values @ cores)
    return {
        "welfare": round(welfare, 6),
        "revenue": 0.0,
        "efficiency": round(welfare / population.optimal_welfare(), 6),
        "cure_cores": round(float(cores[0]), 6),
    }


def posted_over_ticks(population: Population, ticks: int) -> dict[str, Any]:
    """One `Posted` clears the truthful bids on `ticks` consecutive ticks (seeded by the tick,
    as `plan_tick` does), with half-price bids cleared in between: does it carry any state?"""
    posted = Posted()
    seqs = np.arange(len(population.agents), dtype=np.int64)
    truthful = BidSet(population.agents, population.values, population.demands, seqs)
    halved = BidSet(population.agents, population.values / 2, population.demands, seqs)
    prices, steps = [], []
    for tick in range(ticks):
        clearing = posted.clear(
            truthful, population.capacity, population.spot, np.random.default_rng(tick)
        )
        prices.append(round(clearing.clearing_price, 9))
        steps.append(clearing.extra["steps"])
        posted.clear(halved, population.capacity, population.spot, np.random.default_rng(tick))
    exact = Uniform().clear(truthful, population.capacity, population.spot)
    return {
        "ticks": ticks, "prices": prices, "steps": steps,
        "same_every_tick": len(set(prices)) == 1 and len(set(steps)) == 1,
        "uniform_price": round(exact.clearing_price, 9),
        "price_gap": round(prices[-1] / exact.clearing_price - 1, 9),
    }  # fmt: skip


def claims(mine: dict[str, Any], theirs: dict[str, Any]) -> tuple[Claim, ...]:
    return (_cure(mine, theirs), _by_value(mine, theirs), _vcg(mine), _not_truthful(mine))


def _cure(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    demand = mine["population"]["cure"]["demand"]
    got = {
        name: (figures["truthful"]["cure_cores"], figures["strategic"]["cure_cores"])
        for name, figures in mine["mechanisms"].items()
    }
    full = [name for name, cores in got.items() if min(cores) >= demand * (1 - 1e-6)]
    fair = theirs["fair_share"]["cure_cores"]
    listed = ", ".join(f"{name} {t:.2f}/{s:.2f}" for name, (t, s) in got.items())
    why = " (posted rations every taker alike when demand at its price exceeds supply)"
    return Claim(
        "An agent solving a cure for cancer gets funded by the user and outbids everyone.",
        len(full) == len(got) and fair < demand * (1 - 1e-6),
        f"cure (value {mine['population']['cure']['value']:.2f} $J per J, demand {demand:.2f} "
        f"cores) gets, truthful/strategic: {listed}; its full demand under "
        f"{', '.join(full) or 'none'}{why if 'posted' not in full else ''}; fair share gives "
        f"it {fair:.2f}",
    )


def _by_value(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    fair, fair_mean = theirs["fair_share"]["efficiency"], theirs["efficiency_mean_over_populations"]
    mechanisms = mine["mechanisms"]
    strategic = {n: f["strategic"]["efficiency"] for n, f in mechanisms.items()}
    truthful = {n: f["truthful"]["efficiency"] for n, f in mechanisms.items()}
    means = {n: f["over_populations"]["truthful_efficiency_mean"] for n, f in mechanisms.items()}
    listed = ", ".join(f"{n} {truthful[n]:.3f}/{strategic[n]:.3f}" for n in strategic)
    populations = mechanisms["vcg"]["over_populations"]["populations"]
    return Claim(
        "Kubernetes schedules by fairness; Maxwell schedules by value.",
        min(*strategic.values(), *truthful.values()) > fair and min(means.values()) > fair_mean,
        f"efficiency (welfare / optimum), truthful/strategic: {listed}; fair share {fair:.3f}. "
        f"Truthful, mean over {populations} populations: lowest {min(means.values()):.3f} "
        f"({min(means, key=means.__getitem__)}) vs fair share {fair_mean:.3f}",
    )


def _vcg(mine: dict[str, Any]) -> Claim:
    vcg = mine["mechanisms"]["vcg"]
    over, strategic = vcg["over_populations"], vcg["strategic"]
    still = strategic["moves"] == 0
    moved = "leaves every bid truthful" if still else f"moves {strategic['moves']} times"
    return Claim(
        "Mechanism design: Vickrey auctions, incentive compatibility (VCG: bidding one's value "
        "is a best response).",
        over["where_someone_gains"] == 0 and still,
        f"under vcg, the most any bidder gains by misreporting: {over['max_gain']:.2g} $J per J "
        f"x cores, over {over['populations']} populations x every bidder x "
        f"{len(mine['setup']['grid_x_value'])} bids; best response {moved}",
    )


def _not_truthful(mine: dict[str, Any]) -> Claim:
    over = {n: f["over_populations"] for n, f in mine["mechanisms"].items()}
    listed = ", ".join(
        f"{n} in {o['where_someone_gains']} of {o['populations']} (up to "
        f"{o['max_share_of_value']:.1%})"
        for n, o in over.items()
    )
    return Claim(
        "Uniform (with multi-unit demand) and Kelly are not truthful: a bidder gains by "
        "shading (the mechanisms' documented limits).",
        over["uniform"]["where_someone_gains"] > 0 and over["kelly"]["where_someone_gains"] > 0,
        f"populations where some bidder gains by misreporting (its best gain, as a share of "
        f"its value x demand): {listed}",
    )


def plot(mine: dict[str, Any], theirs: dict[str, Any], path: Path) -> None:
    """Efficiency and revenue per mechanism (truthful, strategic) beside fair share, and the
    truthfulness gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(mine["mechanisms"])
    at = np.arange(len(names) + 1)
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, key, label in ((axes[0], "efficiency", "efficiency (welfare / optimum)"),
                             (axes[1], "revenue", "revenue ($J per J x cores)")):  # fmt: skip
        for offset, way in ((-0.2, "truthful"), (0.2, "strategic")):
            heights = [mine["mechanisms"][n][way][key] for n in names]
            axis.bar(at[:-1] + offset, heights, width=0.4, label=way)
        axis.bar(at[-1], theirs["fair_share"][key], width=0.4, color="grey", label="fair share")
        axis.set_xticks(at, [*names, "fair\nshare"])
        axis.set_title(label)
    axes[0].axhline(1.0, linestyle=":", color="black")
    axes[0].set_ylim(0, 1.2)
    axes[0].legend(loc="upper center", ncol=3, fontsize="small")
    mechanisms = mine["mechanisms"]
    here = [mechanisms[n]["truthfulness_gap"]["share_of_value"] for n in names]
    most = [mechanisms[n]["over_populations"]["max_share_of_value"] for n in names]
    populations = mechanisms[names[0]]["over_populations"]["populations"]
    axes[2].bar(at[:-1] - 0.2, here, width=0.4, color="tab:red", label="this population")
    axes[2].bar(at[:-1] + 0.2, most, width=0.4, color="tab:purple",
                label=f"most over {populations} populations")  # fmt: skip
    axes[2].set_xticks(at[:-1], names)
    axes[2].legend(fontsize="small")
    axes[2].set_title("truthfulness gap (best gain / value x demand)")
    figure.suptitle("twin, simulated bidders: the market's mechanisms, truthful and strategic")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
