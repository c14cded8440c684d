"""`maxwell experiment limits`: the vision's honest limits, reproduced, so that no one mistakes
the mechanism for more than it is.

On one 2-core node of the twin for 120 s: `malicious`, a looper funded with 10,000 $J that
bids 5 (it does nothing of value and can pay for it); `benign`, a useful job that needs 300 J
and is funded with 5 to 20 $J (drawn from the seed), bidding 2; `funded`, the same useful job
funded for it (600 $J, bid 2). Under the market the money decides, not the value: the
malicious agent runs to the end and the poor benign one dies. Fair share, which knows neither,
runs all three.
"""

from __future__ import annotations

import random
from typing import Any

from maxwell.experiments import TWIN, Claim, Result
from maxwell.experiments.apoptosis import plot as plot_energy
from maxwell.sim.behaviours import DEFAULTS
from maxwell.sim.engine import AgentSpec, Scenario
from maxwell.sim.engine import run as simulate

NAME = "limits"


def scenario(seed: int) -> Scenario:
    poor = round(random.Random(seed).uniform(5, 20), 2)
    return Scenario(
        agents=(
            AgentSpec("malicious", DEFAULTS["malicious"], fund_j=10_000.0, bid=5.0),
            AgentSpec("benign", DEFAULTS["useful"], fund_j=poor, bid=2.0),
            AgentSpec("funded", DEFAULTS["useful"], fund_j=600.0, bid=2.0),
        ),
        cores=2.0,
        duration_s=120.0,
    )


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed` (`quick` changes nothing: it takes about a second)."""
    market, fair = simulate(scenario(seed), "maxwell"), simulate(scenario(seed), "fairshare")
    mine, theirs = market.summary(), fair.summary()
    return Result(NAME, seed, TWIN, mine, theirs, claims(mine, theirs, market.duration_s),
                  lambda path: plot_energy(market, fair, path))  # fmt: skip


def claims(mine: dict[str, Any], theirs: dict[str, Any], duration_s: float) -> tuple[Claim, ...]:
    agents, baseline = mine["agents"], theirs["agents"]
    bad, poor = agents["malicious"], agents["benign"]
    return (
        Claim(
            "A well-funded malicious agent still runs.",
            bad["state"] != "dead",
            f"malicious: {bad['state']} after {duration_s:g} s, {bad['energy_j']} J "
            f"burned for nothing, {bad['paid_j']} $J paid of 10,000; under fair share "
            f"{baseline['malicious']['energy_j']} J",
        ),
        Claim(
            "A poorly-funded benign agent still dies.",
            poor["state"] == "dead",
            f"benign: {poor['state']} at {poor['ended_at_s']} s with {poor['units']} of 300 "
            f"units done; under fair share it {baseline['benign']['state']} at "
            f"{baseline['benign']['ended_at_s']} s",
        ),
    )
