"""`maxwell experiment audit`: trust, then verify a sample (Axiom III), measured on the daemon's
own audit cores (`maxwell.audit.policy`, `maxwell.node.policy`) over simulated agents' claims.

Three measurements, each beside the case where nobody checks anything (fair share):

- detection: persistent cheaters audited with probability p per tick (`detection_curve`); the
  fraction caught by each tick N beside the closed form 1 - (1 - p)^N, at p = 0.01, 0.05 and
  0.2 (the daemon's default, the vision's 0.1 %, takes thousands of ticks to show the same);
- cheaters' profit (`audit_agents.profit_paths`, at p = 0.05): a persistent under-reporter, an
  intermittent one, a small liar and one whose lie stays inside the verdict's tolerance, each
  audited with the daemon's Becker bond, audited without it (the claw-back alone), and not
  audited at all;
- honest agents falsely slashed (`audit_agents.honest_audits`): claims with measurement noise
  within the documented tolerance, and at its very edge, judged by the policy's verdict.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from maxwell.audit.experiment import DetectionPoint, detection_curve
from maxwell.audit.policy import CPU_TOLERANCE, DEFAULT_AUDIT_PROBABILITY
from maxwell.experiments import Claim, Result
from maxwell.experiments.audit_agents import (
    HonestAudits,
    Node,
    ProfitPaths,
    Strategy,
    honest_audits,
    profit_paths,
)

NAME = "audit"
MEASURED_ON: Final = (
    "twin (the daemon's audit cores, maxwell.audit.policy and maxwell.node.policy, judging "
    "simulated agents' claims; not this machine's processes)"
)
DETECTION_PS: Final = (0.01, 0.05, 0.2)
PROFIT_P: Final = 0.05
CAUGHT_UP_TO: Final = 0.999  # each detection curve runs until the closed form reaches this
STANDARD_ERRORS: Final = 4.0
STRATEGIES: Final = (
    Strategy("persistent", lie=0.5, note="claims half its CPU every tick"),
    Strategy("intermittent", lie=1.0, share=0.1, note="claims nothing on 10 % of its ticks"),
    Strategy("small lie", lie=0.05, note="claims 95 % of its CPU, beyond the 2 % tolerance"),
    Strategy("within tolerance", lie=0.01, note="claims 99 % of its CPU, inside the tolerance"),
)


@dataclass(frozen=True)
class Size:
    """How many trials, ticks and agents a run uses (`quick`: a reduced form for CI)."""

    detection_trials: int
    cheater_trials: int
    cheater_ticks: int
    honest_agents: int
    honest_ticks: int

    @staticmethod
    def of(quick: bool) -> Size:
        return Size(1_000, 300, 200, 300, 300) if quick else Size(10_000, 2_000, 400, 2_000, 1_000)


@dataclass(frozen=True)
class Findings:
    """What the three measurements found."""

    detection: dict[float, list[DetectionPoint]]
    detection_trials: int
    cheaters: list[ProfitPaths]
    honest: HonestAudits
    honest_ticks: int
    node: Node


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed`; every draw comes from generators seeded by it."""
    size, node = Size.of(quick), Node()
    seeds = random.Random(seed)
    detection = {
        p: detection_curve(p, list(range(1, ticks_to(p, CAUGHT_UP_TO) + 1)),
                           size.detection_trials, seeds.getrandbits(32))
        for p in DETECTION_PS
    }  # fmt: skip
    cheaters = [
        profit_paths(strategy, node, PROFIT_P, size.cheater_ticks, size.cheater_trials,
                     random.Random(seeds.getrandbits(32)))
        for strategy in STRATEGIES
    ]  # fmt: skip
    honest = honest_audits(size.honest_agents, size.honest_ticks, PROFIT_P, node,
                           random.Random(seeds.getrandbits(32)))  # fmt: skip
    found = Findings(detection, size.detection_trials, cheaters, honest, size.honest_ticks, node)
    return Result(NAME, seed, MEASURED_ON, maxwell(found), baseline(found), claims(found),
                  lambda path: plot(found, path))  # fmt: skip


def ticks_to(p: float, caught: float) -> int:
    """The first N at which 1 - (1 - p)^N reaches `caught`."""
    return math.ceil(math.log(1.0 - caught) / math.log(1.0 - p))


def tolerance(trials: int) -> float:
    """The largest deviation from the closed form the detection claim allows: four binomial
    standard errors at their widest (p (1 - p) <= 1/4). Over a whole curve this is also about
    the 0.1 % point of the Kolmogorov-Smirnov statistic (sqrt(n) D > 2)."""
    return STANDARD_ERRORS * 0.5 / math.sqrt(trials)


def max_deviation(points: list[DetectionPoint]) -> float:
    return max(abs(point.measured - point.expected) for point in points)


def _j(micro: float) -> float:
    return round(micro / 1e6, 3)


def maxwell(found: Findings) -> dict[str, Any]:
    daemon_p, tick_s = DEFAULT_AUDIT_PROBABILITY, found.node.tick_s
    return {
        "daemon_audit_probability": daemon_p,
        "daemon_ticks_to_catch": {"half": ticks_to(daemon_p, 0.5), "99%": ticks_to(daemon_p, 0.99),
                                  "tick_s": tick_s},
        "daemon_bond_j": _j(found.node.bond(daemon_p)),
        "detection": {
            "trials": found.detection_trials,
            "tolerance": round(tolerance(found.detection_trials), 4),
            "by_p": {str(p): _detection(points) for p, points in found.detection.items()},
        },
        "cheaters": {
            "p": PROFIT_P, "ticks": len(found.cheaters[0].bonded),
            "trials": found.cheaters[0].trials, "full_bill_j": _j(found.node.full_bill),
            "bond_j": _j(found.node.bond(PROFIT_P)),
            "strategies": {
                paths.strategy.name: _cheater(paths, found.node) for paths in found.cheaters
            },
        },
        "honest": {"p": PROFIT_P, "ticks": found.honest_ticks, **vars(found.honest),
                   "worst_cpu": round(found.honest.worst_cpu, 4),
                   "worst_memory": round(found.honest.worst_memory, 4)},
    }  # fmt: skip


def _detection(points: list[DetectionPoint]) -> dict[str, Any]:
    marks = {}
    for share in (0.5, 0.9, 0.99):  # the first N at which the closed form reaches each share
        point = next(point for point in points if point.expected >= share)
        marks[str(point.ticks)] = {
            "measured": point.measured,
            "closed_form": round(point.expected, 4),
        }
    return {"max_deviation": round(max_deviation(points), 4), "at": marks}  # fmt: skip


def _cheater(paths: ProfitPaths, node: Node) -> dict[str, Any]:
    one_over_p = round(1 / paths.p)
    caught_at = paths.mean_caught_at
    return {
        "note": paths.strategy.note, "lie": paths.strategy.lie, "share": paths.strategy.share,
        "kept_per_lying_tick_j": _j(node.kept(paths.strategy.lie)),
        "caught": paths.caught[-1],
        "mean_caught_at": None if caught_at is None else round(caught_at, 2),
        "profit_j": {"bonded": _j(paths.bonded[-1]), "clawback_only": _j(paths.clawback_only[-1])},
        f"profit_j_at_{one_over_p}": {"bonded": _j(paths.bonded[one_over_p - 1]),
                                      "clawback_only": _j(paths.clawback_only[one_over_p - 1])},
    }  # fmt: skip


def baseline(found: Findings) -> dict[str, Any]:
    """Nobody checks anything: no cheater is caught, each keeps all it lied, nobody is slashed."""
    return {
        "caught": 0.0,
        "cheaters": {paths.strategy.name: {"profit_j": _j(paths.unaudited[-1])}
                     for paths in found.cheaters},
        "honest": {"slashed": 0, "note": "nobody judges a claim"},
    }  # fmt: skip


def beyond_tolerance(paths: ProfitPaths) -> bool:
    """Whether the strategy's lie, in the long run, falls short by more than the CPU tolerance's
    relative part (its absolute 20 ms matter only in the first ticks)."""
    return paths.strategy.lie * paths.strategy.share > CPU_TOLERANCE.relative


def claims(found: Findings) -> tuple[Claim, ...]:
    return (_detected(found), _cheating_loses(found), _tolerated_lie(found), _honest(found))


def _detected(found: Findings) -> Claim:
    allowed = tolerance(found.detection_trials)
    deviations = {p: max_deviation(points) for p, points in found.detection.items()}
    daemon = DEFAULT_AUDIT_PROBABILITY
    shown = ", ".join(f"{d:.3f} at p = {p:g}" for p, d in deviations.items())
    return Claim(
        "Optimistic Execution with Probabilistic Audit: a persistent cheater is caught within N "
        "ticks with probability 1 - (1 - p)^N.",
        all(d <= allowed for d in deviations.values()),
        f"largest gap between measured and closed form over N: {shown} "
        f"({found.detection_trials:,} cheaters each; tolerance {allowed:.3f}, 4 binomial "
        f"standard errors); the daemon's p = {daemon:g} "
        f"(the vision's 0.1 %) catches half by tick {ticks_to(daemon, 0.5):,} and 99 % by "
        f"{ticks_to(daemon, 0.99):,}; with nobody auditing (fair share) none is ever caught",
    )


def _cheating_loses(found: Findings) -> Claim:
    liars = [paths for paths in found.cheaters if beyond_tolerance(paths)]
    ticks = len(found.cheaters[0].bonded)
    figures = "; ".join(
        f"{paths.strategy.name} {_j(paths.bonded[-1]):+,.1f} $J (caught {paths.caught[-1]:.0%}; "
        f"{_j(paths.clawback_only[-1]):+,.1f} without the bond, {_j(paths.unaudited[-1]):+,.1f} "
        f"unaudited)"
        for paths in liars
    )
    return Claim(
        "Cheating the energy market is statistically impossible over long runtimes (a lie "
        "beyond the verdict's tolerance).",
        all(paths.bonded[-1] < 0 < paths.unaudited[-1] for paths in liars),
        f"mean profit after {ticks} ticks at p = {PROFIT_P:g} with the daemon's bond "
        f"({_j(found.node.bond(PROFIT_P)):,.0f} $J): {figures}",
    )


def _tolerated_lie(found: Findings) -> Claim:
    inside = [paths for paths in found.cheaters if not beyond_tolerance(paths)]
    ticks = len(found.cheaters[0].bonded)
    figures = "; ".join(
        f"{paths.strategy.name} ({paths.strategy.note}): caught {paths.caught[-1]:.0%}, keeps "
        f"{_j(paths.bonded[-1]):+,.1f} $J after {ticks} ticks with the bond "
        f"({_j(paths.unaudited[-1]):+,.1f} unaudited), {paths.strategy.lie:.0%} of its bill"
        for paths in inside
    )
    return Claim(
        "Cheating the energy market is statistically impossible over long runtimes (a lie "
        "within the verdict's tolerance, 2 % + 20 ms of CPU).",
        all(paths.bonded[-1] < 0 for paths in inside),
        f"{figures}: the tolerance bounds what such a lie keeps, no audit catches it",
    )


def _honest(found: Findings) -> Claim:
    honest = found.honest
    return Claim(
        "Trust but Verify: an honest agent, whose claims are off only by measurement noise "
        "within the documented tolerance, is never slashed.",
        honest.slashed == 0 and honest.slashed_money == 0,
        f"{honest.slashed:,} of {honest.audits:,} audits of {honest.agents:,} honest agents "
        f"slashed ({honest.edge_audits:,} of them falling short by 99.9 % of the tolerance), "
        f"{_j(honest.slashed_money):,.1f} $J taken; with no tolerance {honest.strict_slashed:,} "
        f"would have been; nobody is judged under fair share",
    )


def plot(found: Findings, path: Path) -> None:
    """Left: the fraction caught against N, measured beside 1 - (1 - p)^N. Right: cheaters' mean
    cumulative profit audited with the bond, audited without it, and unaudited."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (detection, profit) = plt.subplots(1, 2, figsize=(11, 4.2))
    for p, points in found.detection.items():
        (line,) = detection.plot([pt.ticks for pt in points], [pt.expected for pt in points],
                                 label=f"1-(1-p)^N, p={p:g}")  # fmt: skip
        marked = [points[i] for i in log_spaced(len(points), 30)]
        detection.plot([pt.ticks for pt in marked], [pt.measured for pt in marked], "o", ms=3,
                       color=line.get_color(), label=f"measured, p={p:g}")  # fmt: skip
    detection.set_xscale("log")
    detection.set(xlabel="ticks N", ylabel="fraction of cheaters caught",
                  title=f"detection ({found.detection_trials:,} cheaters per p)")  # fmt: skip
    detection.legend(fontsize=7)
    for paths in found.cheaters:
        ticks = list(range(1, len(paths.bonded) + 1))
        (line,) = profit.plot(ticks, [_j(v) for v in paths.bonded], label=paths.strategy.name)
        colour = line.get_color()
        profit.plot(ticks, [_j(v) for v in paths.clawback_only], ":", color=colour, lw=1)
        profit.plot(ticks, [_j(v) for v in paths.unaudited], "--", color=colour)
    profit.axhline(0, color="grey", lw=0.5)
    profit.set_yscale("symlog", linthresh=1)
    profit.set(xlabel="ticks", ylabel="mean cumulative profit ($J)")
    profit.set_title(f"cheaters, p={PROFIT_P:g}: bond (solid), no bond (dotted), no audit (dashed)",
                     fontsize=10)  # fmt: skip
    profit.legend(fontsize=7, loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def log_spaced(length: int, count: int) -> list[int]:
    """About `count` indices into a sequence of `length`, evenly spaced on a log scale."""
    return sorted({min(round(math.exp(k * math.log(length) / count)) - 1, length - 1)
                   for k in range(count + 1)})  # fmt: skip
