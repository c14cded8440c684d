"""`maxwell sim FILE.toml [--seed N] [--policy maxwell|fairshare|both] [--json] [--out DIR]`: a
scenario file run on the twin (issue 14, 2; `maxwell.sim`: simulated nodes on virtual time, not
this machine's processes), under the market and under fair share, side by side with the ratio.

Figures: energy (J), value delivered, value per joule, energy on low-value work (loopers, bloats,
hoarders, cheaters, malicious agents), core-seconds left idle while someone wanted them, agents
killed, jobs done, the hottest die. The same file and seed give the same figures. Examples are
in `scenarios/`; the format in full is in `maxwell.sim.scenario`. In short (all but the agents'
keys optional):

    seed = 0                  # the default seed (--seed overrides it)
    nodes = 1                 # N > 1: N such nodes, run independently for now (agents placed
                              # round-robin; no gossip, no migration)
    [node]                    # cores, tick_s, duration_s, idle_w, w_per_core, spot_price,
                              # landauer_multiplier, grace_s
    [node.thermal]            # ambient_c, resistance_k_per_w, capacitance_j_per_k, critical_c
    [[agents]]                # a group of agents; as many groups as wanted
    name = "looper"           # its agents: looper, or looper-0, looper-1... if count > 1
    count = 2
    behaviour = "looper"      # useful, looper, bloat, hoarder, bursty, cheater,
                              # malicious, or a table of a kind
                              # and overrides: { kind = "useful", job_units = 600 }
    fund = [10, 30]           # $J: a number, or [low, high] drawn per agent from the seed
    bid = 1.0                 # $J per J: the same

`--json` prints the figures as one JSON object; `--out DIR` also writes `NAME.json` (with every
agent's figures) and `NAME.scenario.toml` (the scenario with its draws written out).

Exit status: 0 it ran; 2 usage (an unreadable or invalid scenario file, a bad flag, an --out
that cannot be made).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maxwell.cli.common import EXIT_USAGE, fail, print_json

if TYPE_CHECKING:  # imported when run: `maxwell --help` loads no simulator
    from maxwell.sim.engine import Policy
    from maxwell.sim.scenario import LoadedScenario

_CHOICES = ("maxwell", "fairshare", "both")
_LABELS = (
    ("energy_j", "energy (J)"), ("value", "value"), ("value_per_j", "value per J"),
    ("low_value_energy_j", "low-value energy (J)"), ("idle_wanted_core_s", "idle wanted (core-s)"),
    ("killed", "killed"), ("jobs_done", "jobs done"), ("peak_c", "peak die (C)"),
)  # fmt: skip
_NAMES_SHOWN = 8  # at most this many names of the killed are printed (all are in --out's JSON)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("file", metavar="FILE.toml", type=Path, help="the scenario file")
    parser.add_argument("--seed", type=int, metavar="N", help="the seed (the file's, else 0)")
    parser.add_argument("--policy", choices=_CHOICES, default="both",
                        help="the market, fair share, or both side by side (both)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write NAME.json and NAME.scenario.toml here")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from maxwell.sim.scenario import ScenarioError, dumps, load

    try:
        scenario = load(args.file, args.seed)
    except ScenarioError as exc:
        return fail("maxwell sim", str(exc), EXIT_USAGE)
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return fail("maxwell sim", f"--out {args.out}: cannot make it: {exc.strerror}",
                        EXIT_USAGE)  # fmt: skip
    policies: tuple[Policy, ...] = (
        ("maxwell", "fairshare") if args.policy == "both" else (args.policy,)
    )
    started = time.monotonic()
    summaries = _simulate(scenario, policies)
    elapsed = time.monotonic() - started
    result = _result(scenario, str(args.file), summaries)
    if args.out is not None:
        full = {**result, **summaries}  # every agent's figures too
        (args.out / f"{scenario.name}.json").write_text(json.dumps(full, indent=2) + "\n")
        (args.out / f"{scenario.name}.scenario.toml").write_text(dumps(scenario))
    if args.json:
        print_json(result)
    else:
        _print(result)
    print(f"maxwell sim: {elapsed:.1f} s of this machine's time", file=sys.stderr)
    return 0


def _simulate(scenario: LoadedScenario, policies: tuple[Policy, ...]) -> dict[str, dict[str, Any]]:
    from maxwell.sim.scenario import run_nodes

    show = sys.stderr.isatty() and scenario.nodes > 1

    def progress(policy: str, done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{policy}: node {done}/{total}", end=end, file=sys.stderr, flush=True)

    return {
        policy: run_nodes(scenario, policy, progress if show else None).summary()
        for policy in policies
    }


def _measured_on(nodes: int) -> str:
    what = "a simulated node" if nodes == 1 else f"{nodes} simulated nodes"
    return f"twin (maxwell.sim: {what}, not this machine's processes)"


def _result(
    scenario: LoadedScenario, path: str, summaries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The JSON printed: the scenario, where the figures come from, each policy's, the ratio."""
    from maxwell.sim.scenario import FIGURES, ratios

    result: dict[str, Any] = {
        "scenario": scenario.name, "file": path, "seed": scenario.seed,
        "description": scenario.description, "nodes": scenario.nodes,
        "cores_per_node": scenario.node.cores, "duration_s": scenario.node.duration_s,
        "agents": len(scenario.agents), "measured_on": _measured_on(scenario.nodes),
        "nodes_run": "independently, agents round-robin (no gossip, no migration)"
        if scenario.nodes > 1 else "alone",
    }  # fmt: skip
    for policy, summary in summaries.items():
        result[policy] = {key: summary[key] for key in FIGURES}
    if len(summaries) == 2:
        result["ratio"] = ratios(summaries["maxwell"], summaries["fairshare"])
    return result


def _print(result: dict[str, Any]) -> None:
    policies = [p for p in ("maxwell", "fairshare") if p in result]
    nodes = "1 node" if result["nodes"] == 1 else f"{result['nodes']} nodes"
    print(f"{result['scenario']}: {result['agents']} agents on {nodes} x "
          f"{result['cores_per_node']:g} cores, {result['duration_s']:g} s of virtual time, "
          f"seed {result['seed']}")  # fmt: skip
    if result["description"]:
        print(f"  {result['description']}")
    print(f"measured on the {result['measured_on']}")
    if result["nodes"] > 1:
        print(f"the {result['nodes']} nodes ran {result['nodes_run']}")
    print()
    heads = {"maxwell": "Maxwell", "fairshare": "fair share"}
    header = f"{'':<22}" + "".join(f"{heads[p]:>14}" for p in policies)
    print(header + (f"{'ratio':>10}" if "ratio" in result else ""))
    for key, label in _LABELS:
        row = f"{label:<22}" + "".join(f"{_cell(result[p][key]):>14}" for p in policies)
        if "ratio" in result:
            ratio = result["ratio"][key]
            row += f"{'-' if ratio is None else f'{ratio:g}':>10}"
        print(row)
    for policy in policies:
        killed = result[policy]["killed"]
        if killed:
            more = ", ..." if len(killed) > _NAMES_SHOWN else ""
            names = ", ".join(killed[:_NAMES_SHOWN]) + more
            print(f"killed under {heads[policy]}: {names}")


def _cell(value: object) -> str:
    if isinstance(value, list):
        return str(len(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
