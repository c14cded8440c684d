"""Scenarios for the twin in TOML files (issue 14, 2): the loader, its validation, and a runner
that spreads a cluster's agents over independent nodes until the cluster twin replaces it.

A scenario file (Python 3.11's `tomllib`; every key but the agents' optional)::

    name = "mixed-node"           # default: the file's name without .toml
    description = "..."           # one line, printed above the figures
    seed = 0                      # the default seed; `maxwell sim --seed N` overrides it
    nodes = 1                     # identical nodes, each as [node] says (see below)

    [node]                        # each node; defaults are `maxwell.sim.engine.Scenario`'s
    cores = 2.0                   # > 0
    tick_s = 1.0                  # > 0, the daemon's tick in virtual seconds
    duration_s = 120.0            # >= tick_s, virtual seconds
    idle_w = 10.0                 # >= 0, the node's power at rest
    w_per_core = 10.0             # >= 0, active power per busy core
    spot_price = 1.0              # > 0, $J per J
    landauer_multiplier = 4e11    # >= 0
    grace_s = 3.0                 # >= 0, insolvent this long before apoptosis
    audit_probability = 0.001     # in [0, 1], per tick, of each agent billed by its reports

    [node.thermal]                # the die's RC model (`maxwell.physics.ThermalRC`)
    ambient_c = 25.0
    resistance_k_per_w = 0.5      # > 0
    capacitance_j_per_k = 40.0    # > 0
    critical_c = 95.0             # > ambient_c

    [[agents]]                    # a group of agents, as many groups as wanted
    name = "looper"               # the agents' names: the name if count = 1, else name-000, ...
    count = 1                     # >= 0 (0 leaves the group out)
    behaviour = "looper"          # a kind (useful, looper, bloat, hoarder, bursty, cheater,
    # malicious), or a table:
    # behaviour = { kind = "useful", job_units = 600, value_per_unit = 2 } overrides fields of
    # the kind's defaults (`maxwell.sim.behaviours.DEFAULTS`): demand, value_per_unit,
    # units_per_core_s, job_units, churn_bytes_per_core_s, use_fraction, duty, period_s, and a
    # cheater's claim_fraction and lie_share (in [0, 1]) and strategy ("persistent" or
    # "intermittent")
    fund = [10, 30]               # $J: a number, or [low, high] drawn uniformly per agent
    bid = 1.0                     # $J per J: a number, or [low, high]

Draws: each group has its own generator, seeded by the seed and the group's name, and draws fund
then bid per agent in order; so the same file and seed give the same scenario, and adding,
removing or reordering a group changes no other group's draws. The audits' draws on node i are
seeded by the seed + i (`Scenario.seed`).

Nodes: with `nodes = N > 1` the agents (all groups, in file order) are placed round-robin, agent
i on node i mod N (`LoadedScenario.placement`). For now `run_nodes` runs each node on its own
(`maxwell.sim.engine.run`): no gossip, no migration, no shared price. The cluster twin
(`maxwell.sim.cluster`) can replace that runner with the same `LoadedScenario`: its `node` is
the cluster's node, and each agent a job arriving at 0 from its placed node
(`Job(0.0, agents[i], submitter=placement[i])`), which the cluster places by price.

Validation: an unknown key, a wrong type, a negative or out-of-range value, an unknown kind, a
duplicate name: a `ScenarioError` (a `UsageError`), one line naming the file, the table and the
key. Pure but for `load`, which reads the file.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from maxwell.errors import UsageError
from maxwell.physics import ThermalRC
from maxwell.sim.behaviours import DEFAULTS, KINDS, STRATEGIES, Behaviour
from maxwell.sim.engine import AgentSpec, Outcome, Policy, Scenario, SimAgent, run

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP: Final = frozenset({"name", "description", "seed", "nodes", "node", "agents"})
_GROUP: Final = frozenset({"name", "count", "behaviour", "fund", "bid"})

# key -> the lowest value allowed, and whether the bound itself is allowed
Bound = tuple[float, bool]
_AT_LEAST_0: Final[Bound] = (0.0, True)
_ABOVE_0: Final[Bound] = (0.0, False)
_ANY: Final[Bound] = (-math.inf, False)
_NODE: Final[Mapping[str, Bound]] = {
    "cores": _ABOVE_0, "tick_s": _ABOVE_0, "duration_s": _ABOVE_0, "idle_w": _AT_LEAST_0,
    "w_per_core": _AT_LEAST_0, "spot_price": _ABOVE_0, "landauer_multiplier": _AT_LEAST_0,
    "grace_s": _AT_LEAST_0, "audit_probability": _AT_LEAST_0,
}  # fmt: skip
_THERMAL: Final[Mapping[str, Bound]] = {
    "ambient_c": _ANY, "resistance_k_per_w": _ABOVE_0, "capacitance_j_per_k": _ABOVE_0,
    "critical_c": _ANY,
}  # fmt: skip
_BEHAVIOUR: Final[Mapping[str, Bound]] = {
    "demand": _ABOVE_0, "value_per_unit": _AT_LEAST_0, "units_per_core_s": _AT_LEAST_0,
    "job_units": _ABOVE_0, "churn_bytes_per_core_s": _AT_LEAST_0, "use_fraction": _ABOVE_0,
    "duty": _ABOVE_0, "period_s": _ABOVE_0, "claim_fraction": _AT_LEAST_0,
    "lie_share": _AT_LEAST_0,
}  # fmt: skip
_FRACTIONS: Final = frozenset({"use_fraction", "duty", "claim_fraction", "lie_share"})  # <= 1
_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {"strategy": STRATEGIES}  # a behaviour's words


class ScenarioError(UsageError):
    """A scenario file Maxwell cannot use: unreadable, not TOML, or a bad table or key."""


@dataclass(frozen=True)
class LoadedScenario:
    """What a scenario file describes, its draws made: `nodes` nodes set as `node` (whose own
    `agents` is empty), the agents, and the node each is placed on (`placement[i]` for
    `agents[i]`)."""

    name: str
    description: str
    seed: int
    nodes: int
    node: Scenario
    agents: tuple[AgentSpec, ...]
    placement: tuple[int, ...]

    def node_scenarios(self) -> tuple[Scenario, ...]:
        """One engine `Scenario` per node, with the agents placed on it."""
        placed: list[list[AgentSpec]] = [[] for _ in range(self.nodes)]
        for agent, node in zip(self.agents, self.placement, strict=True):
            placed[node].append(agent)
        return tuple(
            replace(self.node, agents=tuple(agents), seed=self.seed + index)
            for index, agents in enumerate(placed)
        )


def load(path: Path | str, seed: int | None = None) -> LoadedScenario:
    """The scenario in the file at `path`, its draws made under `seed` (default: the file's)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    return parse(text, str(path), seed)


def parse(text: str, source: str, seed: int | None = None) -> LoadedScenario:
    """The scenario in `text` (read from `source`, which errors name); see the module."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from exc
    where = _Where(source)
    _no_unknown(document, _TOP, where.at("top level"))
    default_name = Path(source).name.removesuffix(".toml")
    name = _string(document, "name", default_name, where.at("top level"))
    if "name" in document and not _NAME.match(name):
        raise where.at("top level").error("name", f"letters, digits, '_', '.' and '-' only, "
                                          f"got {name!r}")  # fmt: skip
    description = _string(document, "description", "", where.at("top level"))
    file_seed = _integer(document, "seed", 0, where.at("top level"), minimum=None)
    nodes = _integer(document, "nodes", 1, where.at("top level"), minimum=1)
    node = _node(_table(document, "node", where.at("top level")), where)
    drawn_seed = file_seed if seed is None else seed
    agents = _agents(document.get("agents"), drawn_seed, where)
    placement = tuple(i % nodes for i in range(len(agents)))
    return LoadedScenario(name, description, drawn_seed, nodes, node, agents, placement)


@dataclass(frozen=True)
class _Where:
    """Where in the file a value is, for the one-line error that names it."""

    source: str
    table: str = ""

    def at(self, table: str) -> _Where:
        return _Where(self.source, table)

    def error(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.table}: {key}: {problem}")


def _no_unknown(table: Mapping[str, Any], known: frozenset[str], where: _Where) -> None:
    for key in table:
        if key not in known:
            raise where.error(key, f"unknown key (known: {', '.join(sorted(known))})")


def _table(parent: Mapping[str, Any], key: str, where: _Where) -> Mapping[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise where.error(key, f"must be a table, got {_type(value)}")
    return value


def _type(value: object) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "a table"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _string(table: Mapping[str, Any], key: str, default: str, where: _Where) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise where.error(key, f"must be a string, got {_type(value)}")
    return value


def _integer(
    table: Mapping[str, Any], key: str, default: int, where: _Where, *, minimum: int | None
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(key, f"must be an integer, got {_type(value)}")
    if minimum is not None and value < minimum:
        raise where.error(key, f"must be {minimum} or more, got {value}")
    return value


def _number(value: object, key: str, bound: Bound, where: _Where) -> float:
    """`value` as a float, finite and within `bound`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.error(key, f"must be a number, got {_type(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise where.error(key, f"must be finite, got {value}")
    lowest, inclusive = bound
    if number < lowest or (number == lowest and not inclusive):
        relation = "0 or more" if inclusive else f"more than {lowest:g}"
        raise where.error(key, f"must be {relation}, got {value}")
    return number


def _numbers(
    table: Mapping[str, Any], bounds: Mapping[str, Bound], where: _Where
) -> dict[str, Any]:
    _no_unknown(table, frozenset(bounds), where)
    return {key: _number(value, key, bounds[key], where) for key, value in table.items()}


def _node(table: Mapping[str, Any], where: _Where) -> Scenario:
    inside = where.at("[node]")
    thermal_table = _table(table, "thermal", inside)
    settings = _numbers({k: v for k, v in table.items() if k != "thermal"}, _NODE, inside)
    if settings.get("audit_probability", 0.0) > 1:
        raise inside.error(
            "audit_probability", f"must be at most 1, got {settings['audit_probability']:g}"
        )
    thermal_at = where.at("[node.thermal]")
    thermal = replace(ThermalRC(), **_numbers(thermal_table, _THERMAL, thermal_at))
    if thermal.critical_c <= thermal.ambient_c:
        raise thermal_at.error("critical_c", f"must be above ambient_c ({thermal.ambient_c:g})")
    node = replace(Scenario(agents=()), thermal=thermal, **settings)
    if node.duration_s < node.tick_s:
        raise inside.error("duration_s", f"must be at least tick_s ({node.tick_s:g})")
    return node


def _agents(groups: object, seed: int, where: _Where) -> tuple[AgentSpec, ...]:
    if not isinstance(groups, list) or not groups:
        raise where.at("top level").error("agents", "needs at least one [[agents]] table")
    named: dict[str, int] = {}
    agents: list[AgentSpec] = []
    for number, group in enumerate(groups, start=1):
        at = where.at(f"[[agents]] #{number}")
        if not isinstance(group, dict):
            raise at.error("agents", f"must be a table, got {_type(group)}")
        made = _group(group, seed, at)
        for agent in made:
            if agent.name in named:
                problem = f"{agent.name!r} is already in group #{named[agent.name]}"
                raise at.at(f"{at.table} ({group['name']})").error("name", problem)
            named[agent.name] = number
        agents.extend(made)
    return tuple(agents)


def _group(group: Mapping[str, Any], seed: int, where: _Where) -> list[AgentSpec]:
    """One `[[agents]]` table's agents, their funds and bids drawn under `seed`."""
    if isinstance(group.get("name"), str):
        where = where.at(f"{where.table} ({group['name']})")
    _no_unknown(group, _GROUP, where)
    for key in ("name", "behaviour", "fund", "bid"):
        if key not in group:
            raise where.error(key, "missing")
    prefix = _string(group, "name", "", where)
    if not _NAME.match(prefix):
        raise where.error("name", f"letters, digits, '_', '.' and '-' only, got {prefix!r}")
    count = _integer(group, "count", 1, where, minimum=0)
    behaviour = _behaviour(group["behaviour"], where)
    fund = _drawable(group["fund"], "fund", where)
    bid = _drawable(group["bid"], "bid", where)
    rng = random.Random(f"{seed}/{prefix}")
    width = len(str(max(count - 1, 0)))
    names = [prefix] if count == 1 else [f"{prefix}-{i:0{width}d}" for i in range(count)]
    return [AgentSpec(name, behaviour, fund(rng), bid(rng)) for name in names]


def _behaviour(value: object, where: _Where) -> Behaviour:
    """A kind's name, or a table of its `kind` and overrides of the kind's defaults."""
    overrides: dict[str, Any] = {}
    key, kind = "behaviour", value
    if isinstance(value, dict):
        where = where.at(f"{where.table} behaviour")
        overrides = dict(value)
        key, kind = "kind", overrides.pop("kind", None)
    if not isinstance(kind, str) or kind not in KINDS:
        shown = repr(kind) if isinstance(kind, str) else _type(kind)
        raise where.error(key, f"unknown kind {shown} (one of {', '.join(KINDS)})")
    _no_unknown(overrides, frozenset(_BEHAVIOUR) | frozenset(_CHOICES), where)
    words = {name: overrides.pop(name) for name in _CHOICES.keys() & overrides.keys()}
    for name, word in words.items():
        if not isinstance(word, str) or word not in _CHOICES[name]:
            shown = repr(word) if isinstance(word, str) else _type(word)
            raise where.error(name, f"unknown {name} {shown} (one of {', '.join(_CHOICES[name])})")
    numbers = _numbers(overrides, _BEHAVIOUR, where)
    for name in _FRACTIONS & numbers.keys():
        if numbers[name] > 1:
            raise where.error(name, f"must be at most 1, got {numbers[name]:g}")
    return replace(DEFAULTS[kind], **numbers, **words)


Draw = Callable[[random.Random], float]


def _drawable(value: object, key: str, where: _Where) -> Draw:
    """A number (always that), or `[low, high]` (uniform draws from the group's generator)."""
    if not isinstance(value, list):
        fixed = _number(value, key, _AT_LEAST_0, where)
        return lambda rng: fixed
    if len(value) != 2:
        raise where.error(key, f"a range is [low, high], got {len(value)} values")
    low, high = (_number(v, key, _AT_LEAST_0, where) for v in value)
    if low > high:
        raise where.error(key, f"a range is [low, high] with low <= high, got [{low:g}, {high:g}]")
    return lambda rng: rng.uniform(low, high)


def dumps(scenario: LoadedScenario) -> str:
    """`scenario` as a scenario file with every draw written out (one group per agent): what a
    run actually used. `parse(dumps(s), ...)` gives `s` back, and the same agents under any
    other seed (nothing is left to draw)."""
    lines = [f"name = {_toml(scenario.name)}", f"description = {_toml(scenario.description)}",
             f"seed = {scenario.seed}", f"nodes = {scenario.nodes}", "", "[node]"]  # fmt: skip
    lines += [f"{key} = {_toml(getattr(scenario.node, key))}" for key in _NODE]
    lines += ["", "[node.thermal]"]
    lines += [f"{key} = {_toml(getattr(scenario.node.thermal, key))}" for key in _THERMAL]
    for agent in scenario.agents:
        lines += ["", "[[agents]]", f"name = {_toml(agent.name)}",
                  f"behaviour = {_behaviour_toml(agent.behaviour)}",
                  f"fund = {_toml(agent.fund_j)}", f"bid = {_toml(agent.bid)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _behaviour_toml(behaviour: Behaviour) -> str:
    default = DEFAULTS[behaviour.kind]
    changed = [
        f"{field.name} = {_toml(getattr(behaviour, field.name))}"
        for field in fields(Behaviour)
        if field.name != "kind" and getattr(behaviour, field.name) != getattr(default, field.name)
    ]
    if not changed:
        return _toml(behaviour.kind)
    return "{ " + ", ".join([f"kind = {_toml(behaviour.kind)}", *changed]) + " }"


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


Progress = Callable[[str, int, int], None]  # (policy, nodes done, nodes in all)


def run_nodes(
    scenario: LoadedScenario, policy: Policy, progress: Progress | None = None
) -> Outcome:
    """`scenario` under `policy`, each node run on its own (see the module), as one `Outcome`
    over all the agents: idle wanted core-seconds summed, peak the hottest node's, no trace."""
    agents: list[SimAgent] = []
    idle_wanted, peak = 0.0, -math.inf
    nodes = scenario.node_scenarios()
    for done, node in enumerate(nodes, start=1):
        outcome = run(node, policy, trace=False)  # the summary needs no tick-by-tick trace
        agents.extend(outcome.agents)
        idle_wanted += outcome.idle_wanted_core_s
        peak = max(peak, outcome.peak_c)
        if progress is not None:
            progress(policy, done, len(nodes))
    ordered = sorted(agents, key=lambda agent: agent.spec.name)
    return Outcome(policy, tuple(ordered), idle_wanted, peak, scenario.node.duration_s)


FIGURES: Final = ("energy_j", "value", "value_per_j", "low_value_energy_j",
                  "idle_wanted_core_s", "killed", "jobs_done", "peak_c")  # peak_c last  # fmt: skip


def ratios(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, float | None]:
    """Each figure of `mine` over `theirs` (lists by their lengths); None where theirs is 0 and
    for the peak temperature (a ratio of Celsius readings means nothing)."""
    out: dict[str, float | None] = {"peak_c": None}
    for key in FIGURES[:-1]:
        a, b = (len(v) if isinstance(v, Sequence) else v for v in (mine[key], theirs[key]))
        out[key] = round(a / b, 4) if b else None
    return out
