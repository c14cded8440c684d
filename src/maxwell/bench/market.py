"""`maxwell bench market`: what clearing the market costs, per mechanism and book size.

What is measured (CPU time of this process, `time.process_time_ns`, so that other load on the
machine does not count; the wall time of each clearing is reported beside it):

- For each mechanism and n = 10^3 .. 10^6 bids (`--quick`: up to 10^5), the median time of one
  clearing. Bids: limit prices uniform in [0, 1) $J/J, demands uniform in [0.01, 2] cores,
  arrival order = index, from a fixed seed. Two capacities:
  - `machine` (the headline `results`): 2 cores, this machine; few winners, the auctioneer's
    everyday case.
  - `fraction`: half the total demand; half the book wins, the worst case for a mechanism that
    must order the winners. The lottery's quantum there is capacity / 10^4, and it is skipped
    at 10^6 (it makes one O(log n) draw per winner: about n/2 draws, ~10 s).
- The median cost of one bid update in an `OrderBook` of n bids (a price change: remove and
  re-insert), of one lottery draw and of one weight update in a `SumTree` of n weights, each
  timed over batches of 1,000 and divided.
- The growth exponent of each mechanism: the least-squares slope of log(clear time) against
  log(n) on the `machine` results; n log n over the same sizes has slope `nlogn_exponent`.
- `auctioneer_fraction`: the real per-tick auctioneer's CPU over the CPU it allocates, at
  1,000 agents, a 100 ms tick and 2 cores (0.2 CPU-seconds a tick). Bids stand in an
  `OrderBook` between ticks, so a tick costs the updates of the bids that changed plus one
  `Uniform.clear_book` (a walk from the top of the book to the margin). Measured as whole
  ticks: `AUCTION_REBID_SHARE` (10%) of the agents, chosen at random, re-price their bids, then
  the book is cleared. `auctioneer_fraction_all_rebid`: every agent re-prices every tick (the
  worst case); `auctioneer_fraction_no_rebid`: the clearing alone; `auctioneer_rebids_in_budget`:
  how many updates a tick can afford beside the clearing within the 0.1% target.
- `auctioneer_fraction_vectorised_by_mechanism` (the figure this benchmark used to report):
  exporting the standing book to arrays plus one vectorised `clear`, per mechanism;
  `..._all_rebid_by_mechanism` adds 1,000 updates.
- `charged_vs_free`: not a timing. Welfare and revenue of the live payment rule (winners pay
  their mechanism's price, between spot and their bid) against the old free bids (everyone paid
  spot, so everyone's best bid was the highest) on the same seeded bid sets, per mechanism:
  `maxwell.bench.payments`.

The pure part (turning timings into the report, fitting the slope) is at the top; the timing
loops below `# --- the machine ---` read the clock.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from maxwell.bench import payments
from maxwell.bench._harness import report
from maxwell.economy.mechanisms import (
    MECHANISM_NAMES,
    Mechanism,
    SumTree,
    Uniform,
    make_mechanism,
)
from maxwell.economy.orderbook import BidSet, OrderBook

SIZES_FULL = (1_000, 10_000, 100_000, 1_000_000)
SIZES_QUICK = (1_000, 10_000, 100_000)
MACHINE_CORES = 2.0
TICK_S = 0.1
AUCTION_AGENTS = 1_000
AUCTION_REBID_SHARE = 0.1  # assumed churn: a tenth of the agents re-price their bid each tick
LOTTERY_FRACTION_QUANTA = 10_000
LOTTERY_FRACTION_MAX_N = 100_000
OPS_PER_SAMPLE = 1_000
SEED = 20_240_601
TARGETS: dict[str, float] = {
    "uniform_clear_ms_at_1e4": 1.0,
    "uniform_clear_ms_at_1e6": 200.0,
    "update_us": 10.0,
    "draw_us": 10.0,
    "auctioneer_fraction": 0.001,
}


# --- the pure part ----------------------------------------------------------------------------


def growth_exponent(sizes: Sequence[int], times: Sequence[float]) -> float | None:
    """Least-squares slope of log(time) against log(n); None with fewer than two points."""
    points = [(math.log(n), math.log(t)) for n, t in zip(sizes, times, strict=True) if t > 0]
    if len(points) < 2:
        return None
    xs = np.array([x for x, _ in points])
    ys = np.array([y for _, y in points])
    slope = np.polyfit(xs, ys, 1)[0]
    return round(float(slope), 3)


def nlogn_exponent(sizes: Sequence[int]) -> float | None:
    """The slope `growth_exponent` would report for a cost exactly proportional to n log n."""
    return growth_exponent(sizes, [n * math.log(n) for n in sizes])


def auctioneer_fraction(
    clear_ms: float, export_ms: float, update_us: float = 0.0, rebids: int = 0
) -> float:
    """CPU per tick (export + one clearing + `rebids` bid updates) / CPU allocated per tick."""
    spent_s = (clear_ms + export_ms) / 1e3 + rebids * update_us / 1e6
    return spent_s / (MACHINE_CORES * TICK_S)


def build_report(
    machine: Sequence[Mapping[str, object]],
    fraction: Sequence[Mapping[str, object]],
    *,
    quick: bool,
    export_ms: float,
    tick_ms: Mapping[str, float],
) -> dict[str, object]:
    """The JSON report from the per-(mechanism, n) rows of both scenarios, with the payment
    rule's welfare and revenue against free bids beside them (`maxwell.bench.payments`).

    `tick_ms`: CPU ms of one auctioneer tick at `AUCTION_AGENTS` agents, by scenario:
    "rebid_share" (updates of `AUCTION_REBID_SHARE` of them + `clear_book`), "all_rebid" and
    "no_rebid" (`clear_book` alone).
    """
    compared = payments.compare()
    charged_vs_free = {**compared, "summary": payments.summary(compared)}
    exponents = _growth_exponents(machine)
    sizes = sorted({int(str(r["n"])) for r in machine})
    reference = nlogn_exponent(sizes)
    fractions, all_rebid = _vectorised_fractions(machine, export_ms)
    budget_ms = MACHINE_CORES * TICK_S * 1e3
    headline = tick_ms["rebid_share"] / budget_ms
    measured = _measured(machine, largest=max(sizes) if sizes else 0, headline=headline)
    met: dict[str, bool | None] = {
        key: None if value is None else value <= TARGETS[key] for key, value in measured.items()
    }
    met["growth_no_worse_than_nlogn"] = (
        None
        if reference is None
        else all(x is None or x <= reference + 0.05 for x in exponents.values())
    )
    return {
        "results": list(machine),
        "growth_exponent": exponents,
        "nlogn_exponent": reference,
        "auctioneer_fraction": headline,
        "auctioneer_fraction_all_rebid": tick_ms["all_rebid"] / budget_ms,
        "auctioneer_fraction_no_rebid": tick_ms["no_rebid"] / budget_ms,
        "auctioneer_rebid_share": AUCTION_REBID_SHARE,
        "auctioneer_rebids_in_budget": _rebids_in_budget(
            _field(_row(machine, "uniform", AUCTION_AGENTS), "update_us"),
            no_rebid_ms=tick_ms["no_rebid"],
            budget_ms=budget_ms,
        ),
        "auctioneer_tick_ms": {key: round(value, 6) for key, value in tick_ms.items()},
        "auctioneer_fraction_vectorised_by_mechanism": fractions,
        "auctioneer_fraction_vectorised_all_rebid_by_mechanism": all_rebid,
        "export_ms_at_1000": round(export_ms, 4),
        "results_fraction": list(fraction),
        "growth_exponent_fraction": _growth_exponents(fraction),
        "targets": TARGETS,
        "measured": measured,
        "met": met,
        "setup": _setup(quick),
        "charged_vs_free": charged_vs_free,
    }


def _growth_exponents(rows: Sequence[Mapping[str, object]]) -> dict[str, float | None]:
    """Each mechanism's growth exponent over its rows' (n, clear_ms)."""
    exponents: dict[str, float | None] = {}
    for mechanism in MECHANISM_NAMES:
        own = [r for r in rows if r["mechanism"] == mechanism]
        exponents[mechanism] = growth_exponent(
            [int(str(r["n"])) for r in own], [float(str(r["clear_ms"])) for r in own]
        )
    return exponents


def _row(
    rows: Sequence[Mapping[str, object]], mechanism: str, n: int
) -> Mapping[str, object] | None:
    return next((r for r in rows if r["mechanism"] == mechanism and r["n"] == n), None)


def _vectorised_fractions(
    machine: Sequence[Mapping[str, object]], export_ms: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Per mechanism, the auctioneer's fraction at `AUCTION_AGENTS` when it exports the book and
    clears it vectorised: with no re-bids, and with every agent re-bidding."""
    fractions: dict[str, float] = {}
    all_rebid: dict[str, float] = {}
    for mechanism in MECHANISM_NAMES:
        at = _row(machine, mechanism, AUCTION_AGENTS)
        if at is not None:
            clear_ms = float(str(at["clear_ms"]))
            fractions[mechanism] = auctioneer_fraction(clear_ms, export_ms)
            all_rebid[mechanism] = auctioneer_fraction(
                clear_ms, export_ms, float(str(at["update_us"])), AUCTION_AGENTS
            )
    return fractions, all_rebid


def _rebids_in_budget(
    update_us: float | None, *, no_rebid_ms: float, budget_ms: float
) -> int | None:
    """How many bid updates a tick affords beside the clearing within the auctioneer target."""
    if update_us is None:
        return None
    return max(0, int((TARGETS["auctioneer_fraction"] * budget_ms - no_rebid_ms) * 1e3 / update_us))


def _measured(
    machine: Sequence[Mapping[str, object]], *, largest: int, headline: float
) -> dict[str, float | None]:
    """The figures `TARGETS` names, as measured (None where the run did not reach that size)."""
    return {
        "uniform_clear_ms_at_1e4": _field(_row(machine, "uniform", 10_000), "clear_ms"),
        "uniform_clear_ms_at_1e6": _field(_row(machine, "uniform", 1_000_000), "clear_ms"),
        "update_us": _field(_row(machine, "uniform", largest), "update_us"),
        "draw_us": _field(_row(machine, "lottery", largest), "draw_us"),
        "auctioneer_fraction": headline,
    }


def _setup(quick: bool) -> dict[str, object]:
    """How the run was set up, so a reader of the report knows what its figures mean."""
    return {
        "quick": quick,
        "timer": "process CPU time (process_time_ns); clear_wall_ms beside it",
        "machine_capacity_cores": MACHINE_CORES,
        "fraction_capacity": "half the total demand",
        "prices": "uniform [0, 1) $J/J",
        "demands": "uniform [0.01, 2] cores",
        "lottery_quantum": "0.01 core (machine); capacity / 1e4 (fraction)",
        "lottery_fraction_max_n": LOTTERY_FRACTION_MAX_N,
        "tick_s": TICK_S,
        "auctioneer_agents": AUCTION_AGENTS,
        "auctioneer_tick": (
            f"{AUCTION_REBID_SHARE:.0%} of the agents re-price (OrderBook.update), then "
            "Uniform.clear_book on the standing book; CPU time of whole ticks, median"
        ),
        "update_us": "OrderBook price change (remove + insert) in a book of n bids",
        "draw_us": "SumTree draw over n weights",
    }


def _field(row: Mapping[str, object] | None, key: str) -> float | None:
    if row is None or row.get(key) is None:
        return None
    return float(str(row[key]))


def render_table(report: Mapping[str, object]) -> object:
    from rich.table import Table

    table = Table(title="maxwell bench market (machine: 2 cores; CPU time, median)")
    for column in ("mechanism", "n", "clear ms", "fraction-capacity ms", "update µs", "draw µs"):
        table.add_column(column, justify="left" if column == "mechanism" else "right")
    fraction_rows = report["results_fraction"]
    assert isinstance(fraction_rows, list)
    results = report["results"]
    assert isinstance(results, list)
    for row in results:
        other = next(
            (r for r in fraction_rows if r["mechanism"] == row["mechanism"] and r["n"] == row["n"]),
            None,
        )
        table.add_row(
            str(row["mechanism"]),
            f"{row['n']:,}",
            f"{row['clear_ms']:.3f}",
            "-" if other is None else f"{other['clear_ms']:.3f}",
            f"{row['update_us']:.2f}",
            "-" if row["draw_us"] is None else f"{row['draw_us']:.2f}",
        )
    table.caption = (
        f"growth exponent {report['growth_exponent']} (n log n: {report['nlogn_exponent']}); "
        f"auctioneer fraction {report['auctioneer_fraction']:.2e} "
        f"({report['auctioneer_rebid_share']:.0%} of agents rebid a tick; all rebid "
        f"{report['auctioneer_fraction_all_rebid']:.2e}); met {report['met']}; charged over "
        f"free bids (welfare, revenue): {_charged_summary(report)}"
    )
    return table


def _charged_summary(report: Mapping[str, object]) -> str:
    compared = report["charged_vs_free"]
    assert isinstance(compared, dict)
    return ", ".join(
        f"{name} {row['welfare_charged_over_free']}x, {row['revenue_charged_over_free']}x"
        for name, row in compared["summary"].items()
    )


# --- the machine ------------------------------------------------------------------------------


def make_bids(n: int, rng: np.random.Generator) -> BidSet:
    return BidSet(
        agents=[f"agent-{i}" for i in range(n)],
        prices=rng.random(n),
        demands=rng.uniform(0.01, 2.0, n),
        seqs=np.arange(n, dtype=np.int64),
    )


def _median_ns(
    action: Callable[[], object], *, budget_s: float, at_least: int = 3
) -> tuple[float, float]:
    """Median CPU and wall nanoseconds of `action`, repeated within about `budget_s`."""
    cpu: list[int] = []
    wall: list[int] = []
    started = time.perf_counter()
    while len(cpu) < at_least or (time.perf_counter() - started < budget_s and len(cpu) < 200):
        wall_0, cpu_0 = time.perf_counter_ns(), time.process_time_ns()
        action()
        cpu.append(time.process_time_ns() - cpu_0)
        wall.append(time.perf_counter_ns() - wall_0)
    return float(np.median(cpu)), float(np.median(wall))


def time_clear(
    mechanism: Mechanism, bids: BidSet, capacity: float, *, budget_s: float
) -> tuple[float, float]:
    def action() -> object:
        return mechanism.clear(bids, capacity, 0.0, np.random.default_rng(SEED))

    action()  # warm: first-touch of the arrays, imports
    return _median_ns(action, budget_s=budget_s)


def time_book_update(bids: BidSet, rng: np.random.Generator, *, samples: int) -> float:
    """Median µs of one price change in a book of len(bids) bids."""
    book = OrderBook.from_rows(
        zip(
            bids.agents,
            bids.prices.tolist(),
            bids.demands.tolist(),
            [None] * len(bids),
            strict=True,
        )
    )
    n = len(bids)
    per_op: list[float] = []
    for _ in range(samples):
        agents = [bids.agents[int(i)] for i in rng.integers(0, n, OPS_PER_SAMPLE)]
        prices = rng.random(OPS_PER_SAMPLE).tolist()
        update = book.update
        cpu_0 = time.process_time_ns()
        for agent, price in zip(agents, prices, strict=True):
            update(agent, price=price)
        per_op.append((time.process_time_ns() - cpu_0) / OPS_PER_SAMPLE / 1e3)
    return float(np.median(per_op))


def time_export(n: int, rng: np.random.Generator, *, budget_s: float) -> float:
    """Median CPU ms to export a standing book of n bids to the arrays a mechanism clears."""
    bids = make_bids(n, rng)
    book = OrderBook.from_rows(
        zip(bids.agents, bids.prices.tolist(), bids.demands.tolist(), [None] * n, strict=True)
    )
    cpu_ns, _ = _median_ns(lambda: book.to_bidset(ordered=False), budget_s=budget_s, at_least=20)
    return cpu_ns / 1e6


def time_auctioneer_tick(
    n: int, rebids: int, rng: np.random.Generator, *, budget_s: float
) -> float:
    """Median CPU ms of one tick of the real auctioneer over a standing book of n bids.

    A tick: `rebids` agents (drawn at random, prices uniform) update their standing bids, then
    `Uniform.clear_book` clears the book against the machine's cores. The draws are made before
    the clock starts; everything the auctioneer does with them is timed.
    """
    bids = make_bids(n, rng)
    book = OrderBook.from_rows(
        zip(bids.agents, bids.prices.tolist(), bids.demands.tolist(), [None] * n, strict=True)
    )
    uniform = Uniform()
    ticks = [
        (
            [bids.agents[int(i)] for i in rng.choice(n, rebids, replace=False)],
            rng.random(rebids).tolist(),
        )
        for _ in range(64)
    ]
    count = 0

    def tick() -> object:
        nonlocal count
        agents, prices = ticks[count % len(ticks)]
        count += 1
        update = book.update
        for agent, price in zip(agents, prices, strict=True):
            update(agent, price=price)
        return uniform.clear_book(book, MACHINE_CORES, 0.0)

    tick()  # warm
    cpu_ns, _ = _median_ns(tick, budget_s=budget_s, at_least=20)
    return cpu_ns / 1e6


def time_tree(n: int, rng: np.random.Generator, *, samples: int) -> tuple[float, float]:
    """Median µs of one draw and of one weight update in a `SumTree` of n weights."""
    tree = SumTree(rng.random(n) * rng.uniform(0.01, 2.0, n))
    draws: list[float] = []
    updates: list[float] = []
    for _ in range(samples):
        uniforms = rng.random(OPS_PER_SAMPLE).tolist()
        draw = tree.draw
        cpu_0 = time.process_time_ns()
        for uniform in uniforms:
            draw(uniform)
        draws.append((time.process_time_ns() - cpu_0) / OPS_PER_SAMPLE / 1e3)
        indices = rng.integers(0, n, OPS_PER_SAMPLE).tolist()
        weights = rng.random(OPS_PER_SAMPLE).tolist()
        update = tree.update
        cpu_0 = time.process_time_ns()
        for index, weight in zip(indices, weights, strict=True):
            update(index, weight)
        updates.append((time.process_time_ns() - cpu_0) / OPS_PER_SAMPLE / 1e3)
    return float(np.median(draws)), float(np.median(updates))


def run_market_bench(
    *, quick: bool = False, sizes: Sequence[int] | None = None
) -> dict[str, object]:
    """Run the benchmark (see the module docstring) and return the report."""
    chosen = tuple(sizes) if sizes is not None else (SIZES_QUICK if quick else SIZES_FULL)
    rng = np.random.default_rng(SEED)
    budget_s = 0.3 if quick else 1.0
    samples = 15 if quick else 31
    machine: list[dict[str, object]] = []
    fraction: list[dict[str, object]] = []
    for n in chosen:
        bids = make_bids(n, rng)
        update_us = time_book_update(bids, rng, samples=samples)
        draw_us, tree_update_us = time_tree(n, rng, samples=samples)
        half = float(bids.demands.sum()) / 2
        for name in MECHANISM_NAMES:
            cpu_ns, wall_ns = time_clear(
                make_mechanism(name), bids, MACHINE_CORES, budget_s=budget_s
            )
            machine.append(
                {
                    "mechanism": name,
                    "n": n,
                    "clear_ms": round(cpu_ns / 1e6, 4),
                    "clear_wall_ms": round(wall_ns / 1e6, 4),
                    "update_us": round(update_us, 3),
                    "draw_us": round(draw_us, 3) if name == "lottery" else None,
                    "tree_update_us": round(tree_update_us, 3) if name == "lottery" else None,
                }
            )
            if name == "lottery" and n > LOTTERY_FRACTION_MAX_N:
                continue
            mechanism = make_mechanism(name, quantum=half / LOTTERY_FRACTION_QUANTA)
            cpu_ns, wall_ns = time_clear(mechanism, bids, half, budget_s=budget_s)
            fraction.append(
                {
                    "mechanism": name,
                    "n": n,
                    "capacity": round(half, 3),
                    "clear_ms": round(cpu_ns / 1e6, 4),
                    "clear_wall_ms": round(wall_ns / 1e6, 4),
                }
            )
    export_ms = time_export(AUCTION_AGENTS, rng, budget_s=budget_s)
    tick_ms = {
        scenario: time_auctioneer_tick(AUCTION_AGENTS, rebids, rng, budget_s=budget_s)
        for scenario, rebids in (
            ("rebid_share", round(AUCTION_REBID_SHARE * AUCTION_AGENTS)),
            ("all_rebid", AUCTION_AGENTS),
            ("no_rebid", 0),
        )
    }
    return build_report(machine, fraction, quick=quick, export_ms=export_ms, tick_ms=tick_ms)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="up to 10^5 bids: under a minute")


def run(args: argparse.Namespace) -> int:
    return report(
        "market", lambda: run_market_bench(quick=args.quick), as_json=args.json, table=render_table
    )
