"""`maxwell experiment fairshare`: the same mix of real agents run twice on this machine for
the same wall time, once under plain Linux fair share (a cgroup each, equal weights, no prices)
and once under the Maxwell daemon; then the twin (`maxwell.sim`), calibrated on what was
measured, runs the same mix both ways, and its figures are checked against the machine's.

The mix (`maxwell.experiments._realmix`): `useful`, a finite inference job worth 1 per batch,
well funded, the highest bid; `bursty`, inference in bursts (30% of every 4 s), worth 1 per
batch; `hoarder`, which bids high for a core and uses 5% of it; `cheater`, a busy loop that
reports a fifth of its CPU time; `bloat`, churning 64 MiB per round; `looper`, a `while True`.
The looper's and the bloat's funds are drawn from the seed; every fund scales with the run.

Measured, per run (`maxwell.experiments._realruns`): each agent's CPU seconds (its cgroup),
energy (the meter: this VM has no RAPL, so the power model's figures, labelled), units of work
(its work file), value, what it paid ($J, Maxwell only) and its outcome; per run: useful work
and value per joule, joules on low-value work, value delivered, CPU left idle while an agent
was throttled (core-seconds) and the agents killed. These are wall-clock measurements on a
shared machine: the same seed gives the same mix, not the same figures to the digit; the
claims compare one run with the other.

No agent runs as root: in both runs each is a dynamic uid of its own from the daemon's default
range, running a copy of Maxwell and numpy with an interpreter any uid may run
(`maxwell.runtime_copy`; the copy is removed on the way out, a signal's way too); which uids ran
is observed, agent by agent (`maxwell.setup.agents_ran_as`).

Needs root, cgroups, setpriv and a Python of this one's version that any uid may run
(`MachineUnfitError` otherwise). `duration_s` is each run's wall time (the two together take
twice that, plus a few seconds to start and stop).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from maxwell.experiments import Claim, Result
from maxwell.experiments._realmix import (
    SHARE_TOLERANCE,
    MixAgent,
    RunMeasure,
    agreement,
    mix,
    run_figures,
    twin_scenario,
)
from maxwell.experiments._realruns import (
    MachineUnfitError,
    MaxwellContext,
    Stop,
    check_machine,
    fair_share_run,
    maxwell_run,
)
from maxwell.runtime_copy import AgentRuntime, AgentRuntimeError, agent_runtime
from maxwell.sim.engine import Outcome
from maxwell.sim.engine import run as simulate
from maxwell.users import DEFAULT_DYNAMIC_UIDS

NAME = "fairshare"
DEFAULT_DURATION_S: Final = 50.0  # each run: both together under two minutes
QUICK_DURATION_S: Final = 12.0  # CI's


def run(
    seed: int, quick: bool = False, duration_s: float | None = None, stop: Stop | None = None
) -> Result:
    """The experiment under `seed`: each run `duration_s` of wall time (default 50 s, 12 s
    `quick`). `stop`: polled between ticks (a signal ends the run, `RunStopped`)."""
    duration = duration_s if duration_s is not None else (
        QUICK_DURATION_S if quick else DEFAULT_DURATION_S)  # fmt: skip
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    check_machine()
    agents = mix(seed, duration)
    fair, market, context, ran_as = measure(agents, duration, stop)
    twin_fair, twin_market = twins(agents, fair, market, context, duration)
    mine = {**run_figures(market, agents), "twin": agreement(market, twin_market)}
    theirs = {**run_figures(fair, agents), "twin": agreement(fair, twin_fair)}
    mine["setup"] = _setup(agents, duration, context, ran_as)
    mine["setup"]["twin_fair_share_cores"] = effective_cores(fair, context)
    source = "measured" if context.measured else "modelled: the power model's fallback"
    measured_on = (
        f"real processes of this machine ({context.capacity_cores:g} CPUs, wall-clock "
        f"measurements; energy {source}, {context.energy_source}); the twin, calibrated on "
        "them, only for the agreement figures"
    )
    claims = _claims(mine, theirs)
    return Result(NAME, seed, measured_on, mine, theirs, claims,
                  lambda path: plot(mine, theirs, twin_fair, twin_market, path))  # fmt: skip


def effective_cores(fair: RunMeasure, context: MaxwellContext) -> float:
    """The cores the mix had under fair share: its CPU time over the wall time (the machine's
    cores less what other work on it took, and the agents' start-up), at most the machine's."""
    cpu_s = sum(agent.cpu_s for agent in fair.agents)
    return round(min(max(cpu_s / fair.wall_s, 0.05), context.capacity_cores), 3)


def twins(
    agents: tuple[MixAgent, ...], fair: RunMeasure, market: RunMeasure, context: MaxwellContext,
    duration_s: float,
) -> tuple[Outcome, Outcome]:  # fmt: skip
    """The twin's fair share on the cores the mix had under fair share, and its market on the
    cores the daemon sold, both calibrated on the two runs."""
    common = {"duration_s": duration_s, "w_per_core": context.w_per_core,
              "spot_price": market.mean_spot or 1.0}  # fmt: skip
    fair_scenario = twin_scenario(agents, (fair, market), policy="fairshare",
                                  cores=effective_cores(fair, context), **common)  # fmt: skip
    market_scenario = twin_scenario(agents, (fair, market), policy="maxwell",
                                    cores=context.capacity_cores, **common)  # fmt: skip
    return simulate(fair_scenario, "fairshare"), simulate(market_scenario, "maxwell")


def measure(
    agents: tuple[MixAgent, ...], duration_s: float, stop: Stop | None
) -> tuple[RunMeasure, RunMeasure, MaxwellContext, dict[str, Any]]:
    """Both real runs, fair share first, in a private temporary directory, with the agents'
    runtime, both removed after; who the agents ran as."""
    with _agents_runtime() as runtime:
        workdir = Path(tempfile.mkdtemp(prefix="maxwell-fairshare-"))
        try:
            workdir.chmod(0o711)  # agents of other uids pass through to their own directories
            (workdir / "fair").mkdir(mode=0o711)
            fair = fair_share_run(agents, duration_s, workdir / "fair", runtime, stop)
            market, context = maxwell_run(agents, duration_s, workdir / "maxwell", runtime, stop)
        finally:
            shutil.rmtree(workdir, ignore_errors=os.geteuid() != 0)
    ran_as = {
        "dynamic_uids": DEFAULT_DYNAMIC_UIDS, "python": runtime.python,
        "fairshare": {name: list(uids) for name, uids in fair.uids.items()},
        "maxwell": {name: list(uids) for name, uids in market.uids.items()},
    }  # fmt: skip
    return fair, market, context, ran_as


@contextlib.contextmanager
def _agents_runtime() -> Iterator[AgentRuntime]:
    """The agents' Python and their copy of Maxwell (`agent_runtime`), removed on the way out;
    a machine where none can be made is unfit for the experiment."""
    stack = contextlib.ExitStack()
    try:
        runtime = stack.enter_context(agent_runtime())
    except AgentRuntimeError as exc:
        raise MachineUnfitError(f"cannot run the agents as uids of their own: {exc}") from exc
    with stack:
        yield runtime


def _setup(
    agents: tuple[MixAgent, ...], duration_s: float, context: MaxwellContext,
    ran_as: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    return {
        "duration_s": duration_s, "agents_ran_as": ran_as,
        "w_per_core": context.w_per_core, "capacity_cores": context.capacity_cores,
        "share_tolerance": SHARE_TOLERANCE,
        "mix": {a.name: {"program": a.module, "args": list(a.args), "fund_j": a.fund_j,
                         "bid": a.bid, "demand": a.demand, "want": a.want,
                         "value_per_unit": a.value_per_unit}
                for a in agents},
    }  # fmt: skip


def _claims(mine: dict[str, Any], theirs: dict[str, Any]) -> tuple[Claim, ...]:
    return (
        _fate("A hallucinating agent runs out of money and undergoes apoptosis.", "looper",
              mine, theirs),
        _fate("Bloatware becomes insolvent.", "bloat", mine, theirs),
        _slashed(mine),
        _fewer_joules(mine, theirs),
        _value_per_joule(mine, theirs),
        _idle(mine, theirs),
        _agree("The twin's fair-share figures agree with the machine's.", theirs["twin"]),
        _agree("The twin's Maxwell figures agree with the machine's.", mine["twin"]),
    )  # fmt: skip


def _fate(sentence: str, name: str, mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    agent, base = mine["agents"][name], theirs["agents"][name]
    return Claim(
        sentence,
        agent["outcome"] == "apoptosis",
        f"{name}: {agent['outcome']} after {agent['energy_j']} J and {agent['paid_j']} $J paid; "
        f"under fair share {base['outcome']} to the end, {base['energy_j']} J",
    )


def _slashed(mine: dict[str, Any]) -> Claim:
    cheater = mine["agents"]["cheater"]
    return Claim(
        "Cheating the energy market is statistically impossible over long runtimes.",
        cheater["slashed_j"] > 0,
        f"the cheater, reporting a fifth of its CPU time, lost {cheater['slashed_j']} $J to "
        f"slashing ({cheater['outcome']} at the end); fair share never asks",
    )


def _fewer_joules(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    low, base = mine["low_value_energy_j"], theirs["low_value_energy_j"]
    return Claim(
        "Priced, a CPU cycle is no longer free: energy on low-value tasks (loops) falls.",
        low < base,
        f"{low} J on the looper, bloat, cheater and hoarder vs {base} J under fair share "
        f"({_ratio(low, base)} of it)",
    )


def _value_per_joule(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    done, base = mine["agents"]["useful"], theirs["agents"]["useful"]
    return Claim(
        "An agent doing useful work, funded by its user, outbids everyone: value per joule rises.",
        mine["value_per_j"] > theirs["value_per_j"],
        f"{mine['value_per_j']} units of value per J vs {theirs['value_per_j']} under fair share "
        f"(x{_ratio(mine['value_per_j'], theirs['value_per_j'])}); value {mine['value']} vs "
        f"{theirs['value']}; the useful job {done['outcome']} ({done['units']} batches) vs "
        f"{base['outcome']} ({base['units']})",
    )


def _idle(mine: dict[str, Any], theirs: dict[str, Any]) -> Claim:
    """The market is work conserving: no more CPU left idle while wanted than fair share, to
    within 2% of the capacity of a run."""
    idle, base = mine["idle_wanted_core_s"], theirs["idle_wanted_core_s"]
    setup = mine["setup"]
    slack = 0.02 * setup["duration_s"] * setup["capacity_cores"]
    return Claim(
        "Capacity granted to an agent that leaves it idle is not lost: the market leaves no more "
        "CPU idle while an agent wants it than fair share does.",
        idle <= base + slack,
        f"{idle} core-s idle while an agent was throttled vs {base} under fair share (slack "
        f"{slack:.2f} core-s: 2% of the run's capacity); the hoarder paid "
        f"{mine['agents']['hoarder']['paid_j']} $J for the cores it held",
    )


def _agree(sentence: str, twin: dict[str, Any]) -> Claim:
    worst = max(twin["shares"].items(), key=lambda item: item[1]["gap"])
    return Claim(
        sentence,
        bool(twin["shares_agree"] and twin["deaths_agree"]),
        f"CPU shares within {twin['max_share_gap']} of the machine's (tolerance "
        f"{twin['tolerance']}; worst {worst[0]}: {worst[1]['real']} real vs {worst[1]['twin']} "
        f"twin); killed: {twin['killed_real'] or 'none'} real, {twin['killed_twin'] or 'none'} "
        "twin",
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def plot(
    mine: dict[str, Any], theirs: dict[str, Any], twin_fair: Outcome, twin_market: Outcome,
    path: Path,
) -> None:  # fmt: skip
    """Each agent's CPU share, machine beside twin, under fair share and under Maxwell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, figures, title in ((axes[0], theirs, "fair share (cgroups, equal weights)"),
                                 (axes[1], mine, "Maxwell (the daemon)")):  # fmt: skip
        shares = figures["twin"]["shares"]
        names = list(shares)
        places = range(len(names))
        axis.bar([p - 0.2 for p in places], [shares[n]["real"] for n in names], 0.4,
                 label="this machine")  # fmt: skip
        axis.bar([p + 0.2 for p in places], [shares[n]["twin"] for n in names], 0.4,
                 label="twin")  # fmt: skip
        for place, name in zip(places, names, strict=True):
            outcome = figures["agents"][name]["outcome"]
            if outcome in ("apoptosis", "killed", "slashed"):
                axis.annotate(outcome, (place, shares[name]["real"]), ha="center", fontsize=7)
        axis.set_xticks(list(places), names, rotation=30)
        axis.set_title(title)
    axes[0].set_ylabel("share of the agents' CPU time")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
