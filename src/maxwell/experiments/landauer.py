"""`maxwell experiment landauer`: how the Landauer multiplier changes the fate of a program that
churns memory beside one that appends, with the physical value beside the taxed one.

Two agents do the same useful job (300 units at 10 per core-second: 300 J) on one 2-core node of
the twin, each funded with the same 400 $J (the seed draws it within 10 %) and bidding 2: `append`
frees nothing, `churn` frees 2 GB per core-second (the bits a real meter would count as erased).
The market runs at multipliers 0 (no tax), 1 (the physical value: kT ln 2 per bit), 1e9, 4e11
(the demo's) and 1e12; fair share has no tax at all. Measured for each: who finishes, who dies,
the tax each paid ($J) and the physical Landauer energy of what it erased (J).
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from maxwell.experiments import TWIN, Claim, Result
from maxwell.physics import landauer_joules
from maxwell.sim.behaviours import Behaviour
from maxwell.sim.engine import AgentSpec, Outcome, Scenario
from maxwell.sim.engine import run as simulate

NAME = "landauer"
MULTIPLIERS: Final = (0.0, 1.0, 1e9, 4e11, 1e12)
DEFAULT_MULTIPLIER: Final = 4e11
JOB: Final = Behaviour("useful", value_per_unit=1.0, units_per_core_s=10.0, job_units=300.0)


def scenario(seed: int) -> Scenario:
    fund = round(400.0 * random.Random(seed).uniform(0.9, 1.1), 2)
    churn = replace(JOB, churn_bytes_per_core_s=2e9)
    return Scenario(
        agents=(AgentSpec("append", JOB, fund, 2.0), AgentSpec("churn", churn, fund, 2.0)),
        cores=2.0,
        duration_s=120.0,
    )


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed` (`quick` changes nothing: it takes about a second)."""
    base = scenario(seed)
    markets = {m: simulate(replace(base, landauer_multiplier=m), "maxwell") for m in MULTIPLIERS}
    fair = simulate(base, "fairshare")
    mine = {f"{m:g}": _fates(outcome) for m, outcome in markets.items()}
    theirs = _fates(fair)
    return Result(NAME, seed, TWIN, {"by_multiplier": mine}, theirs, claims(mine, theirs),
                  lambda path: plot(markets, path))  # fmt: skip


def _fates(outcome: Outcome) -> dict[str, Any]:
    """Each agent's end, tax paid and the physical energy of what it erased."""
    return {
        a.spec.name: {
            "state": "finished" if a.done else a.state.value, "ended_at_s": a.ended_at_s,
            "tax_j": round(a.tax_j, 12), "paid_j": round(a.paid_j, 3),
            "physical_j": landauer_joules(a.freed_total, outcome.peak_c),
            "freed_bytes": a.freed_total,
        }
        for a in outcome.agents
    }  # fmt: skip


def claims(mine: dict[str, Any], theirs: dict[str, Any]) -> tuple[Claim, ...]:
    default, physical = mine[f"{DEFAULT_MULTIPLIER:g}"], mine["1"]
    churn, append = default["churn"], default["append"]
    return (
        Claim(
            "Bloatware becomes insolvent.",
            churn["state"] == "dead" and append["state"] == "finished",
            f"at multiplier {DEFAULT_MULTIPLIER:g}: churn {churn['state']} at "
            f"{churn['ended_at_s']} s after {churn['tax_j']:.3g} $J of tax; append "
            f"{append['state']} at {append['ended_at_s']} s, {append['tax_j']:.3g} $J of tax; "
            f"under fair share both {theirs['churn']['state']}",
        ),
        Claim(
            "At the physical value alone (multiplier 1) the tax changes nothing: the multiplier, "
            "not physics, makes churning costly.",
            physical["churn"]["state"] == physical["append"]["state"] == "finished",
            f"multiplier 1: churn paid {physical['churn']['tax_j']:.3g} $J of tax (the ledger "
            f"counts µ$J) for "
            f"{physical['churn']['physical_j']:.3g} J of erasure "
            f"({physical['churn']['freed_bytes']:.3g} bytes freed), and "
            f"{physical['churn']['state']}",
        ),
    )


def plot(markets: dict[float, Outcome], path: Path) -> None:
    """The churning agent's tax (its erasures' physical energy x the multiplier, $J) against the
    multiplier, where it died, and the physical energy itself; the appending agent owes none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    taxed = [m for m in MULTIPLIERS if m > 0]
    churners = [next(a for a in markets[m].agents if a.spec.name == "churn") for m in taxed]
    due = [landauer_joules(a.freed_total, markets[m].peak_c) * m
           for m, a in zip(taxed, churners, strict=True)]  # fmt: skip
    axis.plot(taxed, due, marker="o", label="churn: tax owed ($J)")
    for i, (m, agent, owed) in enumerate(zip(taxed, churners, due, strict=True)):
        if agent.state.value == "dead":
            axis.annotate(f"dies at {agent.ended_at_s:g} s", (m, owed), xytext=(-70, -14 * i),
                          textcoords="offset points")  # fmt: skip
    physical = landauer_joules(churners[0].freed_total, markets[taxed[0]].peak_c)
    axis.axhline(physical, linestyle="--", color="grey", label="churn: physical energy (J)")
    axis.axhline(1e-6, linestyle=":", color="black", label="the ledger's unit (1 µ$J)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("Landauer multiplier")
    axis.set_title("twin, simulated: append-only owes nothing; churning, this much")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
