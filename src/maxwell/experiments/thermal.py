"""`maxwell experiment thermal`: a cluster of the twin under heat spikes, with gossip price
coupling and without, and how long a distress record takes to reach N nodes up to 10,000.

Ten 8-core nodes (20 W idle, 12.5 W a core, a die of 0.45 K/W and 40 J/K at 25 °C ambient:
79 °C at full load, under the price controller's 80 °C setpoint) take one-core useful jobs
(60 to 300 s, bids 1 to 3) arriving at random to keep 70 % of the cluster busy, placed by the
placement rule on what their submitter's node believes of the others through gossip
(`maxwell.sim.cluster`). A node's cooling fails for five minutes at a time (its ambient goes to
50 °C; full: four spikes on four nodes in an hour; quick: one in ten minutes). Both arms run
the same jobs and spikes: each node prices its own heat (PI controller) and publishes its
record by gossip in both; with coupling, the others also lower their prices as they hear it
(`maxwell.economy.coupling`). Measured on the spiked node during its spike and the minute
after: peak temperature, time over the setpoint (where the node's price starts to climb), time
derated (within 10 °C of its critical temperature it sells fewer cores), jobs placed on it. The
rebalancing claim is judged on the time over the setpoint (the heat the node sustains); the
peak, set by what the node already ran when its fan failed, is reported beside it.

Dissemination: the calibrated gossip model (`maxwell.sim.gossip.CALIBRATED`) at 10, 30, 100,
1,000 and 10,000 nodes (quick: up to 1,000), beside the figures `maxwell bench gossip` measured
on real Serf agents.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from maxwell.experiments import TWIN, Claim, Result
from maxwell.physics import ThermalRC
from maxwell.sim.cluster import (
    ClusterOutcome,
    ClusterScenario,
    HeatSpike,
    poisson_jobs,
    simulate,
)
from maxwell.sim.engine import Scenario
from maxwell.sim.gossip import CALIBRATED, MEASURED, dissemination

NAME = "thermal"
NODES: Final = 10
NODE: Final = Scenario(
    agents=(), cores=8.0, tick_s=1.0, idle_w=20.0, w_per_core=12.5,
    thermal=ThermalRC(ambient_c=25.0, resistance_k_per_w=0.45, capacitance_j_per_k=40.0),
)  # fmt: skip
SPIKE_AMBIENT_C: Final = 50.0
SPIKE_S: Final = 300.0
AFTER_S: Final = 60.0  # a spike's window for its figures runs this long past its end
SIZES: Final = (10, 30, 100, 1_000, 10_000)
SETPOINT_MARGIN_C: Final = 15.0  # ThermalPriceController.for_die's default
DERATE_BELOW_C: Final = 10.0  # maxwell.node.tick.DERATE_BELOW_HEADROOM_C


def scenario(seed: int, quick: bool, coupled: bool) -> ClusterScenario:
    duration = 600.0 if quick else 3600.0
    starts = (150.0,) if quick else (300.0, 1200.0, 2100.0, 3000.0)
    nodes = (0,) if quick else (0, 3, 6, 9)
    spikes = tuple(HeatSpike(node, start, start + SPIKE_S, SPIKE_AMBIENT_C)
                   for node, start in zip(nodes, starts, strict=True))  # fmt: skip
    jobs = poisson_jobs(np.random.default_rng(seed), nodes=NODES, node=NODE,
                        duration_s=duration, utilisation=0.7, head_start=40)  # fmt: skip
    return ClusterScenario(NODES, NODE, jobs, duration, coupled=coupled, spikes=spikes, seed=seed)


def run(seed: int, quick: bool = False) -> Result:
    """The experiment under `seed`; `quick`: ten minutes, one spike, N up to 1,000."""
    coupled = simulate(scenario(seed, quick, coupled=True))
    alone = simulate(scenario(seed, quick, coupled=False))
    spread = _dissemination(seed, SIZES[:-1] if quick else SIZES)
    mine, theirs = summary(coupled), summary(alone)
    mine["dissemination"] = spread
    return Result(NAME, seed, TWIN, mine, theirs, claims(mine, theirs, spread),
                  lambda path: plot(coupled, alone, spread, path))  # fmt: skip


def _spike_figures(outcome: ClusterOutcome) -> list[dict[str, Any]]:
    """Each spike's node, from its start to `AFTER_S` past its end."""
    die, dt = NODE.thermal, NODE.tick_s
    figures = []
    for spike in outcome.scenario.spikes:
        window = (outcome.times_s > spike.start_s) & (outcome.times_s <= spike.end_s + AFTER_S)
        temps = outcome.temperature_c[window, spike.node]
        figures.append({
            "node": spike.node, "start_s": spike.start_s, "end_s": spike.end_s,
            "peak_c": round(float(temps.max()), 2),
            "over_setpoint_s": float((temps > die.critical_c - SETPOINT_MARGIN_C).sum() * dt),
            "derated_s": float((temps > die.critical_c - DERATE_BELOW_C).sum() * dt),
            "placed_during": int(outcome.placed_in_spike[spike.node]),
        })  # fmt: skip
    return figures


def _cool_price(outcome: ClusterOutcome) -> float:
    """The mean price of the nodes not spiked, while a spike is on ($J per J; grid 1)."""
    prices = []
    for spike in outcome.scenario.spikes:
        window = (outcome.times_s > spike.start_s) & (outcome.times_s <= spike.end_s)
        others = np.arange(outcome.scenario.nodes) != spike.node
        prices.append(outcome.price[window][:, others].mean())
    return round(float(np.mean(prices)), 4)


def summary(outcome: ClusterOutcome) -> dict[str, Any]:
    spikes = _spike_figures(outcome)
    return {
        "coupled": outcome.scenario.coupled,
        "nodes": outcome.scenario.nodes,
        "duration_s": outcome.scenario.duration_s,
        "hot_peak_c": round(float(np.mean([s["peak_c"] for s in spikes])), 2),
        "hot_over_setpoint_s": sum(s["over_setpoint_s"] for s in spikes),
        "hot_derated_s": sum(s["derated_s"] for s in spikes),
        "placed_on_hot_nodes": sum(s["placed_during"] for s in spikes),
        "cool_nodes_price": _cool_price(outcome),
        "cluster_peak_c": round(float(outcome.peak_c.max()), 2),
        "spikes": spikes,
        "jobs": outcome.agents, "jobs_done": outcome.jobs_done,
        "dropped": outcome.dropped, "refused": outcome.refused,
        "energy_j": round(outcome.energy_j, 1), "value": round(outcome.value, 1),
    }  # fmt: skip


def _dissemination(seed: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    model = []
    for nodes in sizes:
        records = max(10, min(100, 3000 // nodes))
        spread = dissemination(CALIBRATED, nodes, records, seed)
        model.append({"nodes": nodes, "records": records, "p50_ms": round(spread.p50_s * 1e3),
                      "p99_ms": round(spread.p99_s * 1e3), "max_ms": round(spread.max_s * 1e3),
                      "missed": spread.missed})  # fmt: skip
    measured = [{"nodes": m.nodes, "loss": m.loss, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                 "what": m.what} for m in MEASURED]  # fmt: skip
    return {"model": model, "measured": measured,
            "constants": {"interval_s": CALIBRATED.interval_s, "fanout": CALIBRATED.fanout,
                          "hop_s": CALIBRATED.hop_s, "defer": CALIBRATED.defer}}  # fmt: skip


def claims(
    mine: dict[str, Any], theirs: dict[str, Any], spread: dict[str, Any]
) -> tuple[Claim, ...]:
    largest = spread["model"][-1]
    tau = NODE.thermal.time_constant_s
    cooler = mine["hot_over_setpoint_s"] < theirs["hot_over_setpoint_s"]
    return (
        Claim(
            'Node A tells Node B "I am dying" (a gossip protocol for heat).',
            largest["p99_ms"] / 1e3 < tau and largest["missed"] == 0,
            f"a distress record reaches every one of {largest['nodes']:,} nodes by gossip: p50 "
            f"{largest['p50_ms']} ms, p99 {largest['p99_ms']} ms (Serf's 200 ms rounds, fanout "
            f"3, calibrated on real Serf at 10 and 30 nodes), within the die's {tau:g} s time "
            "constant",
        ),
        Claim(
            "Hearing it, Node B lowers its prices for compute.",
            mine["cool_nodes_price"] < theirs["cool_nodes_price"],
            f"the other nodes' mean price while a node overheats: {mine['cool_nodes_price']} "
            f"$J/J with coupling vs {theirs['cool_nodes_price']} without",
        ),
        Claim(
            "The cluster autonomously rebalances the thermodynamics of the data center.",
            cooler,
            f"the overheating node: {mine['hot_over_setpoint_s']:g} s over its setpoint vs "
            f"{theirs['hot_over_setpoint_s']:g} s without coupling; its peak {mine['hot_peak_c']}"
            f" vs {theirs['hot_peak_c']} °C (set by the jobs it ran when its fan failed: "
            f"coupling moves new jobs, not running ones), {mine['hot_derated_s']:g} vs "
            f"{theirs['hot_derated_s']:g} s derated, {mine['placed_on_hot_nodes']} vs "
            f"{theirs['placed_on_hot_nodes']} jobs placed on it during its spikes",
        ),
    )


def plot(coupled: ClusterOutcome, alone: ClusterOutcome, spread: dict[str, Any],
         path: Path) -> None:  # fmt: skip
    """Left: the spiked nodes' temperatures with and without coupling; right: dissemination
    p50/p99 against N, the model beside the real Serf measurements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (heat, spread_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    for outcome, style, label in ((coupled, "-", "coupled"), (alone, "--", "no coupling")):
        for spike in outcome.scenario.spikes:
            window = (outcome.times_s > spike.start_s - 120) & (
                outcome.times_s <= spike.end_s + AFTER_S)  # fmt: skip
            heat.plot(outcome.times_s[window], outcome.temperature_c[window, spike.node], style,
                      color="C0" if outcome is coupled else "C3", linewidth=0.9,
                      label=label if spike is outcome.scenario.spikes[0] else None)  # fmt: skip
    for spike in coupled.scenario.spikes:
        heat.axvspan(spike.start_s, spike.end_s, color="orange", alpha=0.15)
    heat.axhline(NODE.thermal.critical_c - SETPOINT_MARGIN_C, color="k", linewidth=0.6,
                 linestyle=":", label="price setpoint")  # fmt: skip
    heat.set_title("spiked node's die (twin, simulated; shaded: cooling failed)")
    heat.set_xlabel("virtual time (s)")
    heat.set_ylabel("°C")
    heat.legend()
    _plot_spread(spread_axis, spread)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_spread(axis: Any, spread: dict[str, Any]) -> None:
    sizes = [row["nodes"] for row in spread["model"]]
    axis.plot(sizes, [row["p50_ms"] for row in spread["model"]], "o-", label="model p50")
    axis.plot(sizes, [row["p99_ms"] for row in spread["model"]], "s-", label="model p99")
    for row in spread["measured"]:
        marker = "x" if row["what"].startswith("Maxwell") else "+"
        colour = "k" if row["loss"] == 0 else "r"
        axis.plot([row["nodes"]] * 2, [row["p50_ms"], row["p99_ms"]], marker, color=colour)
    axis.plot([], [], "kx", label="measured distress (p50, p99)")
    axis.plot([], [], "k+", label="measured Serf event, 180 B")
    axis.plot([], [], "rx", label="measured, 10 % loss")
    axis.set_xscale("log")
    axis.set_xlabel("nodes")
    axis.set_ylabel("time to reach a node (ms)")
    axis.set_title("dissemination: gossip model vs real Serf")
    axis.legend(fontsize=8)


def scale(nodes: int = 100, agents: int = 10_000, duration_s: float = 3600.0,
          tick_s: float = 15.0, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The twin at scale: `agents` long jobs on `nodes` 128-core nodes, placed at the start by
    gossip and coupled prices, run for `duration_s`. The wall time is this machine's (not
    deterministic; everything else is)."""
    die = ThermalRC(resistance_k_per_w=0.15, capacitance_j_per_k=150.0)
    node = Scenario(agents=(), cores=128.0, tick_s=tick_s, idle_w=100.0, w_per_core=2.0,
                    thermal=die)  # fmt: skip
    jobs = poisson_jobs(np.random.default_rng(seed), nodes=nodes, node=node,
                        duration_s=duration_s, utilisation=0.0, head_start=agents,
                        job_s=(1800.0, 5400.0))  # fmt: skip
    started = time.perf_counter()
    outcome = simulate(ClusterScenario(nodes, node, jobs, duration_s, seed=seed, trace=False,
                                       publish_s=tick_s))  # fmt: skip
    wall_s = time.perf_counter() - started
    return {"nodes": nodes, "agents": outcome.agents, "virtual_s": duration_s,
            "tick_s": tick_s, "wall_s": round(wall_s, 1), "jobs_done": outcome.jobs_done,
            "dropped": outcome.dropped,
            "peak_c": round(float(outcome.peak_c.max()), 2)}  # fmt: skip
