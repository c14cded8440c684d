"""`maxwell experiment overhead`: what the auctioneer costs, against the number of agents n and
against the CPU it allocates, beside what fair share costs on the same agents.

The vision asks for "a market mechanism that runs in O(1) or O(log n) time inside the kernel
scheduler", for "if every CPU cycle requires a bid, the auction mechanism itself consumes more
compute than the workloads". This experiment times the daemon's own pure cores on this
machine, at n = 10, 100, 1,000 and 10,000 agents (`quick`: up to 1,000), on the inputs of
`maxwell.experiments.overhead_workload` (deterministic under the seed):

- `plan_tick` (the daemon's whole tick: bills, apoptosis, clearing, enforcement) in three
  scenarios: `busy` (every agent billed), `idle` (every agent resting, the market standing: the
  daemon's steady state) and `rebid` (one agent re-bids: the book is cleared again and everyone
  planned); `clear_market`, the tick's clearing step alone (the auctioneer), and `billing`,
  the busy tick's n bills alone;
- each mechanism clearing the n bids at the node's 2 cores (`uniform`, `vcg`, `kelly`,
  `lottery`, `posted`), and `uniform_book`, the uniform auction walking the standing book;
- one bid update in the order book (a price change: re-queued, O(log n));
- the baseline: fair share's water fill of the same agents' demands (the twin's CFS-like share;
  CFS itself does O(log n) per scheduling decision, on a red-black tree).

Each figure is the median CPU time of repeated calls (`time.process_time_ns`, so other load on
the machine counts little; wall time beside it). They are measurements on this machine: they vary
from run to run and the JSON says so (`timing.wall_clock`); only the inputs and what the tick
decided (`outcome`) are identical under a seed. The claims test growth exponents (the log-log
slope of cost against n) and fractions with margins wide enough for that noise: a claim that
does not hold is reported as such.

The pure part (figures, slopes, fractions, claims) comes first; the timing loop is at the end,
below `# --- the machine ---`.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from maxwell.bench.market import growth_exponent, nlogn_exponent
from maxwell.economy.mechanisms import MECHANISM_NAMES
from maxwell.experiments import Claim, Result
from maxwell.experiments import overhead_workload as workload
from maxwell.experiments.overhead_workload import (
    AUCTIONEER,
    BILLS,
    BOOK_CLEARING,
    CAPACITY_CORES,
    FAIR_SHARE,
    TICK_S,
    TICKS,
    UPDATE,
    UPDATES_PER_CALL,
)

NAME = "overhead"
MEASURED_ON: Final = (
    "this machine: the daemon's pure cores (plan_tick, the mechanisms, the order book) timed "
    "in-process, CPU time; not the twin"
)
SIZES_FULL = (10, 100, 1_000, 10_000)
SIZES_QUICK = (10, 100, 1_000)
FAST_TICK_S = 0.1  # the benches' tick, a tenth of the default: the fraction there too
FRACTION_AT = 1_000  # agents at which the fractions are claimed
FRACTION_MAX = 0.01  # of the CPU allocated per tick
# A cost in O(log n) has a log-log slope of 0.2 over n = 10..10^4 (0.24 over 10..10^3), a
# constant 0, a linear one 1: this bound tells O(log n) from anything linear with room for noise.
LOG_SLOPE_MAX = 0.35
NLOGN_MARGIN = 0.05  # above n log n's own slope over the sizes run
PER_AGENT = (*TICKS, AUCTIONEER)  # the cases whose cost is per tick over n agents
CASES = (*PER_AGENT, BILLS, BOOK_CLEARING, *MECHANISM_NAMES, UPDATE, FAIR_SHARE)  # all timed
CFS = (
    "CFS keeps runnable tasks in a red-black tree keyed by virtual runtime: O(log n) per "
    "scheduling decision (pick, enqueue, dequeue); not timed here"
)


@dataclass(frozen=True)
class Timing:
    """The median CPU and wall seconds of one call of a case."""

    cpu_s: float
    wall_s: float


Timings = Mapping[str, Mapping[int, Timing]]  # case -> n -> its timing


# --- the pure part ----------------------------------------------------------------------------


def fraction(cost_s: float, tick_s: float = TICK_S, cores: float = CAPACITY_CORES) -> float:
    """A tick's cost in core-seconds over the CPU that tick allocates (cores x tick length)."""
    return cost_s / (cores * tick_s)


def _us(seconds: float) -> float:
    return float(f"{seconds * 1e6:.4g}")


def _by_n(rows: Mapping[int, float], scale: Callable[[int, float], float]) -> dict[str, float]:
    return {str(n): scale(n, value) for n, value in sorted(rows.items())}


def _cpu(timings: Timings, case: str) -> dict[int, float]:
    return {n: timing.cpu_s for n, timing in timings[case].items()}


def _costs(timings: Timings, cases: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per case: CPU and wall µs per call, the slope against n, and per tick cases the µs per
    agent and the fractions of the CPU allocated (at the default tick and at `FAST_TICK_S`)."""
    figures: dict[str, dict[str, Any]] = {}
    for case in cases:
        cpu = _cpu(timings, case)
        sizes = sorted(cpu)
        row: dict[str, Any] = {
            "cpu_us": _by_n(cpu, lambda n, s: _us(s)),
            "wall_us": _by_n({n: t.wall_s for n, t in timings[case].items()}, lambda n, s: _us(s)),
            "exponent": growth_exponent(sizes, [cpu[n] for n in sizes]),
        }
        if case in (*PER_AGENT, BILLS, FAIR_SHARE):
            row["per_agent_us"] = _by_n(cpu, lambda n, s: _us(s / n))
            row["fraction"] = _by_n(cpu, lambda n, s: float(f"{fraction(s):.3g}"))
            row["fraction_fast_tick"] = _by_n(
                cpu, lambda n, s: float(f"{fraction(s, FAST_TICK_S):.3g}")
            )
        figures[case] = row
    return figures


def figures(
    timings: Timings, outcomes: Mapping[int, Mapping[str, float | int]], quick: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON's `maxwell` and `baseline` from the timings and what the busy ticks decided."""
    sizes = sorted(timings[TICKS[0]])
    costs = _costs(timings, [*PER_AGENT, BILLS, BOOK_CLEARING, *MECHANISM_NAMES, UPDATE])
    fair = _costs(timings, [FAIR_SHARE])[FAIR_SHARE]
    fair_cpu = _cpu(timings, FAIR_SHARE)
    maxwell = {
        "sizes": sizes,
        "node": {"capacity_cores": CAPACITY_CORES, "tick_s": TICK_S, "fast_tick_s": FAST_TICK_S,
                 "spot_price": workload.SPOT_PRICE, "bids": "uniform [0.5, 3) $J per J",
                 "demands": "uniform [0.05, 1) cores", "update": "per price change"},
        "timing": _timing(quick),
        "costs": costs,
        "reference_exponents": {"log_n": growth_exponent(sizes, [math.log(n) for n in sizes]),
                                "n": 1.0, "n_log_n": nlogn_exponent(sizes)},
        "outcome": {str(n): dict(outcomes[n]) for n in sizes},
    }  # fmt: skip
    ratios = {
        case: _by_n(_cpu(timings, case), lambda n, s: round(s / fair_cpu[n], 2))
        for case in (TICKS[0], AUCTIONEER)
    }
    baseline = {"fair_share": fair, "market_over_fair_share": ratios, "cfs": CFS}
    return maxwell, baseline


def _timing(quick: bool) -> dict[str, object]:
    """How the figures were taken: a reader of the JSON must know they are not reproducible."""
    return {
        "wall_clock": True,  # measured on this machine's clocks: figures vary from run to run
        "deterministic": "inputs and outcome only",
        "clock": "time.process_time_ns (this process's CPU); wall_us: time.perf_counter_ns",
        "statistic": "median over repeated samples of one or more calls",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "quick": quick,
    }


def claims(maxwell: Mapping[str, Any], baseline: Mapping[str, Any]) -> tuple[Claim, ...]:
    """The vision's sentences against the figures (see the module)."""
    costs, sizes = maxwell["costs"], maxwell["sizes"]
    low, high = str(sizes[0]), str(sizes[-1])
    reference = maxwell["reference_exponents"]
    update, book = costs[UPDATE], costs[BOOK_CLEARING]
    vectorised = ", ".join(f"{name} {costs[name]['exponent']}" for name in MECHANISM_NAMES)
    return (
        Claim(
            "A market mechanism runs in O(log n) time: one bid update in the order book.",
            _slope_at_most(update, LOG_SLOPE_MAX),
            f"{update['cpu_us'][low]} µs per price change at n = {low}, {update['cpu_us'][high]}"
            f" µs at {high}: slope {update['exponent']} (at most {LOG_SLOPE_MAX}; log n: "
            f"{reference['log_n']}, linear: 1); fair share's CFS: {CFS.split(': ')[1]}",
        ),
        Claim(
            "A market mechanism runs in O(1) time: clearing the standing order book at the "
            "node's cores.",
            _slope_at_most(book, LOG_SLOPE_MAX),
            f"Uniform.clear_book at {CAPACITY_CORES:g} cores: {book['cpu_us'][low]} µs at n = "
            f"{low}, {book['cpu_us'][high]} µs at {high}: slope {book['exponent']} (it walks the "
            f"winners only); clearing all n bids as arrays: {vectorised}; the tick's clearing "
            f"step (it checks that the book holds every bidder): {costs[AUCTIONEER]['exponent']}",
        ),
        _per_agent(costs, baseline, reference, low, high),
        _fraction(
            "The auction mechanism does not consume more compute than the workloads: at 1,000 "
            "agents the auctioneer costs under 1 % of the CPU it allocates.",
            AUCTIONEER, costs, baseline, also={TICKS[2]: "a tick that re-clears after a re-bid"},
        ),
        _fraction(
            "The market's whole tick, billing every agent, costs under 1 % of the CPU it "
            "allocates at 1,000 busy agents.",
            TICKS[0], costs, baseline,
            also={BILLS: "of which the bills (exact arithmetic)", AUCTIONEER: "the clearing",
                  TICKS[1]: "an idle node (resting, market standing)"},
        ),
    )  # fmt: skip


def _slope_at_most(row: Mapping[str, Any], bound: float) -> bool:
    return row["exponent"] is not None and row["exponent"] <= bound


def _per_agent(
    costs: Mapping[str, Any],
    baseline: Mapping[str, Any],
    reference: Mapping[str, Any],
    low: str,
    high: str,
) -> Claim:
    bound = reference["n_log_n"] + NLOGN_MARGIN
    slopes = ", ".join(f"{case} {costs[case]['exponent']}" for case in PER_AGENT)
    busy = costs[TICKS[0]]["per_agent_us"]
    fair = baseline["fair_share"]
    return Claim(
        "Per agent, the tick runs in O(1) or O(log n) time: its whole cost grows no faster "
        "than n log n.",
        all(_slope_at_most(costs[case], bound) for case in PER_AGENT),
        f"slopes {slopes} (at most {bound:.2f}: n log n's {reference['n_log_n']} + "
        f"{NLOGN_MARGIN}); the busy tick: {busy[low]} µs per agent at n = {low}, {busy[high]} "
        f"at {high}; fair share's water fill: slope {fair['exponent']}, "
        f"{fair['per_agent_us'][high]} µs per agent at {high}",
    )


def _fraction(
    sentence: str,
    case: str,
    costs: Mapping[str, Any],
    baseline: Mapping[str, Any],
    also: Mapping[str, str],
) -> Claim:
    at = str(FRACTION_AT)
    row, fair = costs[case], baseline["fair_share"]
    share = row["fraction"][at]
    others = "; ".join(
        f"{label}: {_percent(costs[other]['fraction'][at])}" for other, label in also.items()
    )
    return Claim(
        sentence,
        share < FRACTION_MAX,
        f"{case}: {_percent(share)} of {CAPACITY_CORES:g} cores x {TICK_S:g} s (the daemon's "
        f"default tick; {_percent(row['fraction_fast_tick'][at])} at {FAST_TICK_S:g} s), "
        f"{row['cpu_us'][at]} µs; {others}; fair share's "
        f"water fill: {_percent(fair['fraction'][at])} (the market / fair share: "
        f"x{baseline_ratio(row, fair, at)})",
    )


def baseline_ratio(row: Mapping[str, Any], fair: Mapping[str, Any], at: str) -> str:
    """The market's cost over fair share's at `at` agents, for a figure."""
    theirs = fair["cpu_us"][at]
    return f"{row['cpu_us'][at] / theirs:.3g}" if theirs else "n/a"


def _percent(share: float) -> str:
    return f"{share * 100:.3g} %"


def plot(maxwell: Mapping[str, Any], baseline: Mapping[str, Any], path: Path) -> None:
    """Cost against n (log-log) for every case, and the tick's share of the CPU it allocates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs, sizes = maxwell["costs"], maxwell["sizes"]
    styles = {**dict.fromkeys(TICKS, "-o"), AUCTIONEER: "-s", BOOK_CLEARING: "-^",
              **dict.fromkeys(MECHANISM_NAMES, ":."), UPDATE: "-D"}  # fmt: skip
    palette = plt.get_cmap("tab20")  # its even then odd entries: twelve colours that differ
    hues = (*range(0, 20, 2), 1, 3)[: len(styles)]
    colours = {case: palette((i + 0.5) / 20) for case, i in zip(styles, hues, strict=True)}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for case, style in styles.items():
        label = f"{case} (per update)" if case == UPDATE else case
        left.loglog(sizes, [costs[case]["cpu_us"][str(n)] for n in sizes], style,
                    color=colours[case], label=label)  # fmt: skip
    fair = baseline["fair_share"]
    left.loglog(sizes, [fair["cpu_us"][str(n)] for n in sizes], "k--", lw=2, label="fair share")
    left.set(xlabel="agents n", ylabel="CPU µs per call (median)",
             title="cost against n (this machine, CPU time)")  # fmt: skip
    left.legend(fontsize=7, ncol=2)
    for case in (*PER_AGENT, FAIR_SHARE):
        row = fair if case == FAIR_SHARE else costs[case]
        shares = [max(row["fraction"][str(n)], 1e-9) * 100 for n in sizes]
        colour, line = ("k", "--") if case == FAIR_SHARE else (colours[case], "-")
        right.loglog(sizes, shares, marker="o", ls=line, color=colour, label=case)
    right.axhline(FRACTION_MAX * 100, color="red", lw=1, label=f"{FRACTION_MAX:.0%}")
    right.set(xlabel="agents n", ylabel="% of the CPU the tick allocates",
              title=f"share of {CAPACITY_CORES:g} cores x {TICK_S:g} s tick")  # fmt: skip
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- the machine ------------------------------------------------------------------------------

SAMPLE_S = 0.002  # a sample runs a call this long at least (several calls when they are short)


def time_call(call: Callable[[], object], *, budget_s: float, min_samples: int) -> Timing:
    """The median CPU and wall seconds of one `call`: samples of as many calls as fill
    `SAMPLE_S`, taken for about `budget_s` and at least `min_samples` times (after a warm-up)."""
    call()  # warm: caches, lazily built state (the clearing's cached views)
    started = time.process_time_ns()
    call()
    once_s = max((time.process_time_ns() - started) / 1e9, 1e-7)
    calls = max(1, math.ceil(SAMPLE_S / once_s))
    cpu: list[int] = []
    wall: list[int] = []
    deadline = time.perf_counter() + budget_s
    while len(cpu) < min_samples or (time.perf_counter() < deadline and len(cpu) < 200):
        wall_0, cpu_0 = time.perf_counter_ns(), time.process_time_ns()
        for _ in range(calls):
            call()
        cpu.append(time.process_time_ns() - cpu_0)
        wall.append(time.perf_counter_ns() - wall_0)
    return Timing(float(np.median(cpu)) / calls / 1e9, float(np.median(wall)) / calls / 1e9)


def measure(
    seed: int, sizes: Sequence[int], *, budget_s: float, min_samples: int
) -> tuple[dict[str, dict[int, Timing]], dict[int, dict[str, float | int]]]:
    """Every case timed at every n, and what each busy tick decided."""
    timings: dict[str, dict[int, Timing]] = {}
    outcomes: dict[int, dict[str, float | int]] = {}
    for n in sizes:
        drawn = workload.agents(seed, n)
        scenario = workload.ticks(drawn)
        outcomes[n] = workload.outcome(scenario.busy_plan)
        cases = (
            *workload.tick_cases(scenario),
            workload.bills_case(scenario),
            *workload.clearing_cases(drawn, seed),
            workload.update_case(drawn, seed),
            workload.fair_share_case(drawn),
        )
        for case in cases:
            timing = time_call(case.call, budget_s=budget_s, min_samples=min_samples)
            if case.name == UPDATE:  # one call is a batch of updates: the cost is per update
                timing = Timing(timing.cpu_s / UPDATES_PER_CALL, timing.wall_s / UPDATES_PER_CALL)
            timings.setdefault(case.name, {})[n] = timing
    return timings, outcomes


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed`; `quick`: up to 1,000 agents, fewer samples (CI)."""
    sizes = SIZES_QUICK if quick else SIZES_FULL
    budget_s, min_samples = (0.1, 5) if quick else (0.5, 9)
    timings, outcomes = measure(seed, sizes, budget_s=budget_s, min_samples=min_samples)
    maxwell, baseline = figures(timings, outcomes, quick)
    return Result(NAME, seed, MEASURED_ON, maxwell, baseline, claims(maxwell, baseline),
                  lambda path: plot(maxwell, baseline, path))  # fmt: skip
