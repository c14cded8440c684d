"""The twin's cluster (`maxwell.sim.cluster`): many engine nodes hearing each other's heat by
gossip. What must hold whatever the figures: determinism under the seed, no node used beyond its
cores, every job placed or counted as dropped, a failing fan heats its node, coupling only ever
lowers a price (within the rule's floor) and only while a neighbour is hot, and records believed
in sequence order."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from maxwell.physics import ThermalRC
from maxwell.sim.behaviours import USEFUL
from maxwell.sim.cluster import (
    Cluster,
    ClusterOutcome,
    ClusterScenario,
    HeatSpike,
    Job,
    _Views,
    poisson_jobs,
    simulate,
)
from maxwell.sim.engine import AgentSpec, NodeRun, Scenario, run

# full power 70 W: 25 + 70 x 0.8 = 81 °C, just over the price setpoint (80 °C)
NODE = Scenario(agents=(), cores=4.0, tick_s=1.0, idle_w=20.0, w_per_core=12.5,
                thermal=ThermalRC(resistance_k_per_w=0.8))  # fmt: skip


def _scenario(coupled: bool, seed: int = 0, duration: float = 240.0) -> ClusterScenario:
    jobs = poisson_jobs(np.random.default_rng(seed), nodes=4, node=NODE, duration_s=duration,
                        utilisation=0.6, head_start=8, job_s=(30.0, 90.0))  # fmt: skip
    spike = HeatSpike(node=1, start_s=60.0, end_s=180.0, ambient_c=55.0)
    return ClusterScenario(4, NODE, jobs, duration, coupled=coupled, spikes=(spike,), seed=seed)


@pytest.fixture(scope="module")
def both() -> tuple[ClusterOutcome, ClusterOutcome]:
    return simulate(_scenario(True)), simulate(_scenario(False))


def test_the_same_seed_gives_the_same_run() -> None:
    one, two = simulate(_scenario(True, duration=90.0)), simulate(_scenario(True, duration=90.0))
    assert np.array_equal(one.temperature_c, two.temperature_c)
    assert np.array_equal(one.price, two.price) and np.array_equal(one.placed, two.placed)
    assert (one.energy_j, one.refused, one.dropped) == (two.energy_j, two.refused, two.dropped)


def test_every_job_is_placed_or_dropped_and_no_node_burns_more_than_its_cores(
    both: tuple[ClusterOutcome, ClusterOutcome],
) -> None:
    for outcome in both:
        scenario = outcome.scenario
        assert outcome.agents == int(outcome.placed.sum())
        assert outcome.agents + outcome.dropped == len(scenario.jobs)
        most = scenario.nodes * NODE.cores * NODE.w_per_core * scenario.duration_s
        assert 0 < outcome.energy_j <= most + 1e-6
        # a die never passes the steady state of full power under the hottest ambient
        assert outcome.temperature_c.max() <= 55.0 + (20.0 + 4 * 12.5) * 0.8 + 1e-9


def test_a_failing_fan_heats_its_node_above_the_others(
    both: tuple[ClusterOutcome, ClusterOutcome],
) -> None:
    for outcome in both:
        spiked = (outcome.times_s > 60) & (outcome.times_s <= 180)
        hot = outcome.temperature_c[spiked, 1].mean()
        assert all(hot > outcome.temperature_c[spiked, n].mean() + 5 for n in (0, 2, 3))
        assert outcome.peak_c[1] == outcome.peak_c.max()
        assert outcome.over_setpoint_s[1] > 0


def test_coupling_only_lowers_prices_and_only_while_a_neighbour_is_hot(
    both: tuple[ClusterOutcome, ClusterOutcome],
) -> None:
    coupled, alone = both
    floor = 1.0 - coupled.scenario.coupling.max_discount
    assert alone.price.min() >= 1.0 - 1e-12  # the controller's floor is the grid price
    assert coupled.price.min() >= floor - 1e-9
    cool = [0, 2, 3]
    during = (coupled.times_s > 90) & (coupled.times_s <= 180)
    assert coupled.price[during][:, cool].mean() < 1.0
    before = coupled.times_s <= 30  # nobody hot yet: nobody discounts
    assert coupled.price[before].min() == pytest.approx(1.0)


def test_placement_prefers_the_cheaper_node_and_a_full_cluster_drops_jobs() -> None:
    job = replace(USEFUL, job_units=1e9)
    jobs = tuple(Job(0.0, AgentSpec(f"j{i:02d}", job, 1e6, 2.0)) for i in range(10))
    outcome = simulate(ClusterScenario(2, NODE, jobs, 70.0, coupled=False, max_wait_s=60.0))
    assert list(outcome.placed) == [4, 4]  # room for 4 each, the rest wait and are dropped
    assert outcome.dropped == 2
    assert outcome.wait_s == 8.0  # arrived at 0, placed at the first tick


def test_records_are_believed_in_sequence_order_and_only_by_whom_they_reach() -> None:
    views = _Views(3)
    views.send(5, 0, np.array([0, 1, 3]), (5.0, 5.0, 12.0, 1.2, 2.0))
    assert views.headroom_c[0, 0] == 12.0 and views.seq[1, 0] == -1
    views.deliver(6)
    assert views.headroom_c[1, 0] == 12.0 and views.seq[2, 0] == -1
    views.believe(7, 0, np.array([2]), (7.0, 7.0, 3.0, 2.0, 0.0))  # a newer one overtakes
    views.deliver(8)  # the older record arrives late: not believed
    assert views.headroom_c[2, 0] == 3.0 and views.seq[2, 0] == 7
    assert views.neighbours_headroom(1, 6.0) == [12.0]  # never its own
    views.send(8, 1, np.array([0, 0, 0]), (8.0, 8.0, 20.0, 1.0, 1.0))
    assert views.neighbours_headroom(2, 10.0) == [3.0, 20.0]
    assert views.neighbours_headroom(2, 37.5) == [20.0]  # node 0's record is stale after 30 s
    assert views.neighbours_headroom(2, 40.0) == []


def test_a_steppable_node_is_the_engines_run() -> None:
    agents = (AgentSpec("a", USEFUL, 600.0, 2.0), AgentSpec("b", USEFUL, 5.0, 1.0))
    scenario = Scenario(agents=agents, duration_s=40.0)
    node = NodeRun(scenario, "maxwell")
    for _ in range(40):
        node.meter()
        node.settle(scenario.spot_price, scenario.cores)
    assert node.outcome().summary() == run(scenario, "maxwell").summary()
    late = node.admit(AgentSpec("c", USEFUL, 600.0, 2.0))
    node.meter()
    node.settle(1.0, scenario.cores)
    assert late.energy_j > 0 and late in node.live


def test_a_cluster_steps_on_virtual_time() -> None:
    cluster = Cluster(replace(_scenario(True), trace=False))
    for _ in range(5):
        cluster.step()
    assert cluster.now_s == 5.0
    assert cluster.outcome().temperature_c.shape == (0, 4)
    with pytest.raises(ValueError):
        Cluster(replace(_scenario(True), nodes=0))
