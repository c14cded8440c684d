"""`maxwell experiment apoptosis`: a useful job, a looper and a bloat on one 2-core node of the
twin, under the market and under fair share, for two minutes of virtual time.

The useful agent is funded for its job (300 units of work at 10 per core-second, worth 1
each) and bids 2 $J per J; the looper and the bloat are funded with 10 to 30 $J each (drawn
from the seed) and bid 1. Measured: when each dies, the energy each burned, the energy spent on
low-value work, the value delivered per joule, and when the useful job finished.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from maxwell.experiments import TWIN, Claim, Result
from maxwell.sim.behaviours import DEFAULTS
from maxwell.sim.engine import AgentSpec, Outcome, Scenario
from maxwell.sim.engine import run as simulate

NAME = "apoptosis"


def scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    return Scenario(
        agents=(
            AgentSpec("useful", DEFAULTS["useful"], fund_j=600.0, bid=2.0),
            AgentSpec("looper", DEFAULTS["looper"], fund_j=round(rng.uniform(10, 30), 2), bid=1.0),
            AgentSpec("bloat", DEFAULTS["bloat"], fund_j=round(rng.uniform(10, 30), 2), bid=1.0),
        ),
        cores=2.0,
        duration_s=120.0,
    )


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed` (`quick` changes nothing: it takes about a second)."""
    market, fair = simulate(scenario(seed), "maxwell"), simulate(scenario(seed), "fairshare")
    mine, theirs = market.summary(), fair.summary()
    return Result(
        NAME, seed, TWIN, mine, theirs, claims(market, fair), lambda path: plot(market, fair, path)
    )


def claims(market: Outcome, fair: Outcome) -> tuple[Claim, ...]:
    mine, theirs = market.summary(), fair.summary()
    agents, baseline = mine["agents"], theirs["agents"]
    assert isinstance(agents, dict) and isinstance(baseline, dict)
    return (
        _death("A hallucinating agent runs out of money and undergoes apoptosis.", "looper",
               agents, baseline, market.duration_s),
        _death("Bloatware becomes insolvent.", "bloat", agents, baseline, market.duration_s),
        _fewer_joules(mine, theirs),
        _value_per_joule(mine, theirs),
    )  # fmt: skip


def _death(
    sentence: str, name: str, agents: dict[str, Any], baseline: dict[str, Any], duration: float
) -> Claim:
    mine, theirs = agents[name], baseline[name]
    died = mine["state"] == "dead"
    figure = (
        f"{name}: {'died' if died else 'still ' + mine['state']} at {mine['ended_at_s']} s after "
        f"{mine['energy_j']} J ({mine['paid_j']} $J paid); under fair share it ran all "
        f"{duration:g} s and burned {theirs['energy_j']} J"
    )
    return Claim(sentence, died, figure)


def _fewer_joules(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    low, base = mine["low_value_energy_j"], theirs["low_value_energy_j"]
    return Claim(
        "Priced, a CPU cycle is no longer free: energy on low-value tasks (loops) falls.",
        low < base,
        f"{low} J on the looper and the bloat vs {base} J under fair share "
        f"({_ratio(low, base)} of it)",
    )


def _value_per_joule(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    done, base = mine["agents"]["useful"]["ended_at_s"], theirs["agents"]["useful"]["ended_at_s"]
    return Claim(
        "The useful agent, funded by its user, outbids the rest: value per joule rises.",
        mine["value_per_j"] > theirs["value_per_j"] and "useful" in mine["jobs_done"],
        f"{mine['value_per_j']} units of value per J vs {theirs['value_per_j']} under fair share "
        f"(x{_ratio(mine['value_per_j'], theirs['value_per_j'])}); the useful job done at "
        f"{done} s vs {base} s",
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def plot(market: Outcome, fair: Outcome, path: Path) -> None:
    """Cumulative energy per agent over virtual time, the market beside fair share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, outcome, title in ((axes[0], market, "Maxwell (market)"),
                                 (axes[1], fair, "fair share (CFS-like)")):  # fmt: skip
        times = [sample.at_s for sample in outcome.trace]
        for agent in outcome.agents:
            name = agent.spec.name
            axis.plot(times, [s.energy_j[name] for s in outcome.trace], label=name)
            if agent.state.value == "dead" and agent.ended_at_s is not None:
                axis.plot([agent.ended_at_s], [agent.energy_j], "kx")
        axis.set_title(f"{title}: twin, simulated")
        axis.set_xlabel("virtual time (s)")
    axes[0].set_ylabel("energy burned (J)")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
