"""Scenario files for the twin (`maxwell.sim.scenario`): what a file says is what runs (defaults,
overrides, groups, ranges drawn from the seed, round-robin placement), the same file and seed
give the same scenario and figures, a file written back reads back the same, every example in
`scenarios/` loads, and each kind of mistake is a one-line `ScenarioError` naming the file, the
table and the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from maxwell.errors import UsageError
from maxwell.physics import ThermalRC
from maxwell.sim.behaviours import DEFAULTS
from maxwell.sim.engine import Scenario
from maxwell.sim.engine import run as simulate
from maxwell.sim.scenario import (
    LoadedScenario,
    ScenarioError,
    dumps,
    load,
    parse,
    ratios,
    run_nodes,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "scenarios"
SMALL = """
name = "small"
[node]
cores = 2
duration_s = 20.0
[[agents]]
name = "useful"
behaviour = "useful"
fund = 600
bid = 2.0
[[agents]]
name = "looper"
count = 3
behaviour = "looper"
fund = [10, 30]
bid = [0.5, 1.5]
"""


def test_a_file_says_what_runs_defaults_overrides_and_names() -> None:
    scenario = parse(
        """
        nodes = 1
        [node]
        cores = 4
        spot_price = 2.5
        [node.thermal]
        resistance_k_per_w = 0.25
        [[agents]]
        name = "job"
        count = 12
        behaviour = { kind = "useful", job_units = 50, value_per_unit = 3 }
        fund = 100
        bid = 1.5
        """,
        "dir/mine.toml",
    )
    assert scenario.name == "mine" and scenario.seed == 0 and scenario.nodes == 1
    assert scenario.node == Scenario(
        agents=(), cores=4.0, spot_price=2.5, thermal=ThermalRC(resistance_k_per_w=0.25)
    )
    assert [a.name for a in scenario.agents] == [f"job-{i:02d}" for i in range(12)]
    expected = replace(DEFAULTS["useful"], job_units=50.0, value_per_unit=3.0)
    assert all(a.behaviour == expected and (a.fund_j, a.bid) == (100.0, 1.5)
               for a in scenario.agents)  # fmt: skip
    assert scenario.placement == (0,) * 12


def test_ranges_are_drawn_within_bounds_and_the_same_seed_gives_the_same_scenario() -> None:
    first, again = parse(SMALL, "small.toml", 4), parse(SMALL, "small.toml", 4)
    assert first == again
    loopers = [a for a in first.agents if a.behaviour.kind == "looper"]
    assert [a.name for a in loopers] == ["looper-0", "looper-1", "looper-2"]
    assert all(10 <= a.fund_j <= 30 and 0.5 <= a.bid <= 1.5 for a in loopers)
    assert len({a.fund_j for a in loopers}) == 3  # drawn per agent, not once per group
    other = parse(SMALL, "small.toml", 5)
    assert [a.fund_j for a in other.agents] != [a.fund_j for a in first.agents]
    assert other.agents[0] == first.agents[0]  # fixed numbers do not depend on the seed


def test_the_files_seed_is_the_default_and_a_given_seed_overrides_it() -> None:
    with_seed = "seed = 9\n" + SMALL
    assert parse(with_seed, "s.toml").seed == 9
    assert parse(with_seed, "s.toml").agents == parse(SMALL, "s.toml", 9).agents
    assert parse(with_seed, "s.toml", 3).agents == parse(SMALL, "s.toml", 3).agents


def test_a_groups_draws_do_not_depend_on_the_other_groups() -> None:
    extra = SMALL + '[[agents]]\nname = "bloat"\ncount = 5\nbehaviour = "bloat"\nfund = [1, 2]\n'
    extra += "bid = [1, 2]\n"
    head, useful, looper = SMALL.split("[[agents]]")
    reordered = head + "[[agents]]" + looper + "[[agents]]" + useful
    base = {a.name: a for a in parse(SMALL, "a.toml", 1).agents}
    more = {a.name: a for a in parse(extra, "a.toml", 1).agents}
    assert all(more[name] == agent for name, agent in base.items())
    swapped = {a.name: a for a in parse(reordered, "a.toml", 1).agents}
    assert swapped == base


def test_a_scenario_written_back_reads_back_the_same() -> None:
    for seed in (0, 1):
        scenario = parse(SMALL, "small.toml", seed)
        text = dumps(scenario)
        assert parse(text, "small.toml") == scenario
        assert parse(text, "small.toml", 77).agents == scenario.agents  # nothing left to draw


def test_every_example_loads_writes_back_and_its_nodes_hold_every_agent_once() -> None:
    examples = sorted(EXAMPLES.glob("*.toml"))
    assert {p.stem for p in examples} >= {"apoptosis", "mixed-node", "datacentre"}
    for path in examples:
        scenario = load(path)
        assert scenario.name == path.stem and scenario.agents
        assert parse(dumps(scenario), str(path)) == scenario
        placed = [a for node in scenario.node_scenarios() for a in node.agents]
        assert sorted(placed, key=lambda a: a.name) == sorted(scenario.agents, key=lambda a: a.name)


def test_the_datacentre_is_ten_thousand_agents_spread_evenly_over_a_hundred_nodes() -> None:
    scenario = load(EXAMPLES / "datacentre.toml")
    assert (scenario.nodes, len(scenario.agents)) == (100, 10_000)
    nodes = scenario.node_scenarios()
    assert [len(node.agents) for node in nodes] == [100] * 100
    kinds = [a.behaviour.kind for a in nodes[37].agents]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "useful": 40, "bursty": 20, "looper": 15, "bloat": 10, "hoarder": 15
    }  # fmt: skip
    assert nodes[0].duration_s == 3600.0


def test_round_robin_placement_runs_each_node_on_its_own() -> None:
    two = parse(SMALL.replace('name = "small"', 'name = "small"\nnodes = 2'), "s.toml", 0)
    assert two.placement == (0, 1, 0, 1)
    outcome = run_nodes(two, "maxwell")
    alone = [simulate(node, "maxwell") for node in two.node_scenarios()]
    assert outcome.idle_wanted_core_s == pytest.approx(sum(o.idle_wanted_core_s for o in alone))
    assert outcome.peak_c == max(o.peak_c for o in alone)
    assert outcome.trace == ()
    energies = {a.spec.name: a.energy_j for o in alone for a in o.agents}
    assert {a.spec.name: a.energy_j for a in outcome.agents} == energies


def test_one_node_runs_exactly_as_the_engine_and_the_same_seed_gives_the_same_figures() -> None:
    scenario = load(EXAMPLES / "apoptosis.toml", 3)
    (node,) = scenario.node_scenarios()
    for policy in ("maxwell", "fairshare"):
        mine = run_nodes(scenario, policy).summary()
        assert mine == replace(simulate(node, policy), trace=()).summary()
        assert mine == run_nodes(load(EXAMPLES / "apoptosis.toml", 3), policy).summary()


def test_ratios_are_maxwell_over_fair_share_and_none_where_undefined() -> None:
    mine = {
        "energy_j": 10.0,
        "value": 3.0,
        "value_per_j": 0.3,
        "low_value_energy_j": 0.0,
        "idle_wanted_core_s": 4.0,
        "killed": ["a", "b"],
        "jobs_done": ["j"],
        "peak_c": 40.0,
    }
    theirs = {**mine, "energy_j": 40.0, "idle_wanted_core_s": 0.0, "killed": [],
              "low_value_energy_j": 8.0}  # fmt: skip
    assert ratios(mine, theirs) == {
        "energy_j": 0.25, "value": 1.0, "value_per_j": 1.0, "low_value_energy_j": 0.0,
        "idle_wanted_core_s": None, "killed": None, "jobs_done": 1.0, "peak_c": None,
    }  # fmt: skip


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse(text, "bad.toml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("bad.toml: ")
    return message


GROUP = '[[agents]]\nname = "a"\nbehaviour = "looper"\nfund = 1\nbid = 1\n'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("colour = 1\n" + GROUP, "top level: colour: unknown key"),
        ("[node]\ncorez = 2\n" + GROUP, "[node]: corez: unknown key"),
        ("[node.thermal]\nohm = 1\n" + GROUP, "[node.thermal]: ohm: unknown key"),
        (GROUP + "colour = 1\n", "[[agents]] #1 (a): colour: unknown key"),
        (
            GROUP.replace('"looper"', '{ kind = "useful", speed = 2 }'),
            "[[agents]] #1 (a) behaviour: speed: unknown key",
        ),
        ('[node]\ncores = "two"\n' + GROUP, "[node]: cores: must be a number, got a string"),
        ("[node]\ncores = true\n" + GROUP, "[node]: cores: must be a number, got a boolean"),
        ("node = 3\n" + GROUP, "top level: node: must be a table"),
        ("nodes = 2.5\n" + GROUP, "top level: nodes: must be an integer"),
        ("nodes = 0\n" + GROUP, "top level: nodes: must be 1 or more, got 0"),
        ("name = 3\n" + GROUP, "top level: name: must be a string"),
        ('name = "../x"\n' + GROUP, "top level: name: letters, digits"),
        ("[node]\ncores = -2\n" + GROUP, "[node]: cores: must be more than 0, got -2"),
        ("[node]\nidle_w = -1.5\n" + GROUP, "[node]: idle_w: must be 0 or more, got -1.5"),
        ("[node]\ngrace_s = inf\n" + GROUP, "[node]: grace_s: must be finite"),
        ("[node]\nduration_s = 0.5\n" + GROUP, "[node]: duration_s: must be at least tick_s"),
        (
            "[node.thermal]\ncritical_c = 20\n" + GROUP,
            "[node.thermal]: critical_c: must be above ambient_c",
        ),
        (GROUP.replace("fund = 1", "fund = -1"), "[[agents]] #1 (a): fund: must be 0 or more"),
        (GROUP.replace("bid = 1", "bid = [2, 1]"), "[[agents]] #1 (a): bid: a range is"),
        (GROUP.replace("bid = 1", "bid = [1, 2, 3]"), "[[agents]] #1 (a): bid: a range is"),
        (GROUP.replace("bid = 1", 'bid = ["1", 2]'), "[[agents]] #1 (a): bid: must be a number"),
        (GROUP + "count = -3\n", "[[agents]] #1 (a): count: must be 0 or more, got -3"),
        (GROUP + "count = 1.0\n", "[[agents]] #1 (a): count: must be an integer"),
        (GROUP.replace("fund = 1\n", ""), "[[agents]] #1 (a): fund: missing"),
        (GROUP.replace('name = "a"', 'name = "a b"'), "[[agents]] #1 (a b): name: letters"),
        (
            GROUP.replace('"looper"', '"miner"'),
            "[[agents]] #1 (a): behaviour: unknown kind 'miner' (one of useful, looper",
        ),
        (
            GROUP.replace('"looper"', "{ demand = 2 }"),
            "[[agents]] #1 (a) behaviour: kind: unknown kind",
        ),
        (
            GROUP.replace('"looper"', '{ kind = "hoarder", use_fraction = 1.5 }'),
            "[[agents]] #1 (a) behaviour: use_fraction: must be at most 1",
        ),
        (
            GROUP.replace('"looper"', '{ kind = "bursty", duty = 0 }'),
            "[[agents]] #1 (a) behaviour: duty: must be more than 0",
        ),
        (GROUP + GROUP, "[[agents]] #2 (a): name: 'a' is already in group #1"),
        (
            GROUP + "count = 2\n" + GROUP.replace('"a"', '"a-1"'),
            "[[agents]] #2 (a-1): name: 'a-1' is already in group #1",
        ),
        ('name = "x"\n', "top level: agents: needs at least one [[agents]] table"),
        ("agents = 3\n", "top level: agents: needs at least one [[agents]] table"),
        ("agents = [1]\n", "[[agents]] #1: agents: must be a table"),
    ],
)
def test_each_mistake_is_one_line_naming_the_file_the_table_and_the_key(
    text: str, where: str
) -> None:
    assert where in _error(text)


def test_not_toml_and_an_unreadable_file_are_scenario_errors_which_are_usage_errors(
    tmp_path: Path,
) -> None:
    assert "not valid TOML" in _error("[node\n")
    assert issubclass(ScenarioError, UsageError)
    with pytest.raises(ScenarioError, match=r"missing\.toml: cannot read it"):
        load(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load(binary)


def test_a_group_of_none_is_left_out() -> None:
    scenario = parse(SMALL.replace("count = 3", "count = 0"), "s.toml")
    assert isinstance(scenario, LoadedScenario)
    assert [a.name for a in scenario.agents] == ["useful"]
