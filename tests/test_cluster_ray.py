"""Jobs placed by price on a real Ray cluster (`maxwell.cluster.jobs`, issue 13, 2 and 5): three
Ray nodes on this machine (`ray.cluster_utils.Cluster`, one CPU each; Ray binds the machine's
own address: its test cluster on 127.0.0.1 announces the other and its driver never connects),
each with its own gossiping Maxwell daemon (state directory, Serf agent on loopback). One of
them is made hot (its modelled die sits 1 °C under its critical temperature). Jobs go to the
cool nodes and run there as agents (on money sent from the home node, or at home); a job that
runs out of money dies by apoptosis on its node and the submitter sees it; a node whose daemon
is killed is passed over; every node's ledger is sound and the money between them reconciles
(`maxwell cluster ledger verify`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossip_support import ClusterKeys, Daemon, needs_serf, node_prefix, serfs_named
from helpers import copy_for_anyone, maxwell, public_python, wait_until

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'maxwell[cluster]')")

from maxwell.client import Client  # noqa: E402  # after the skip: the module needs ray
from maxwell.cluster import JobError, JobSpec, submit  # noqa: E402  # the package's API
from maxwell.cluster.jobs import LABEL, PYTHON_ENV, RAY_ENV, STATE_ENV  # noqa: E402
from maxwell.node.paths import ADMIN_TOKEN_FILE, SOCKET_NAME  # noqa: E402

pytestmark = needs_serf
HOT_CONFIG = "[model]\nambient_c = 94.0\nfull_load_c = 99.0\ncritical_c = 95.0\ntime_constant_s = 1.0\n"  # noqa: E501


class RayCluster:
    """Three Maxwell nodes, each a gossiping daemon and a Ray node labelled with its id."""

    def __init__(self, root: Path) -> None:
        prefix = node_prefix()
        self.root = root
        self.names = [f"{prefix}-{i}" for i in range(3)]
        self.hot = self.names[2]
        self.daemons: list[Daemon] = []
        self.ray: Any = None

    def start(self) -> None:
        root = self.root
        keys = ClusterKeys.make(root / "keys", self.names)
        (root / "hot.toml").write_text(HOT_CONFIG)
        for name in self.names:
            extra = ("--config", str(root / "hot.toml")) if name == self.hot else ()
            join = self.daemons[0].bind if self.daemons else None
            self.daemons.append(Daemon(keys, name, root / name, join, *extra))
        os.environ.update(RAY_ENV)
        from ray.cluster_utils import Cluster

        # The agents' Python for priced calls: one their own uids may run, with a copy of
        # Maxwell and cloudpickle that they may read.
        (root / "py").mkdir()
        missing = copy_for_anyone(root / "py")
        assert missing is None, f"{missing} is not installed"
        python = f"/usr/bin/env PYTHONPATH={root / 'py'} {public_python()}"
        self.ray = Cluster()
        for daemon in self.daemons:
            self.ray.add_node(
                num_cpus=1, labels={LABEL: daemon.name}, include_dashboard=False,
                env_vars={STATE_ENV: str(daemon.state), PYTHON_ENV: python, **RAY_ENV},
            )  # fmt: skip
        ray.init(address=self.ray.address, log_to_driver=False)

    def home(self, index: int = 0) -> Client:
        state = self.daemons[index].state
        token = (state / ADMIN_TOKEN_FILE).read_text().strip()
        return Client(socket=str(state / SOCKET_NAME), token=token)

    def close(self) -> None:
        ray.shutdown()
        if self.ray is not None:
            self.ray.shutdown()
        for daemon in self.daemons:  # stopped, so that each leaves nothing behind
            try:
                daemon.stop()
            finally:
                if daemon.process.poll() is None:
                    daemon.process.kill()
                    daemon.process.communicate()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    # Under /tmp, passable by others: the agents run as uids of their own (a root daemon's).
    with tempfile.TemporaryDirectory(prefix="mx-ray-", dir="/tmp") as base:
        os.chmod(base, 0o711)
        made = RayCluster(Path(base))
        try:
            made.start()
            with made.home() as home:
                wait_until(lambda: _settled(made, home), timeout_s=60,
                           what="every node verified and the hot one dearest")  # fmt: skip
            yield made
        finally:
            made.close()
    assert serfs_named(made.names[0].rsplit("-", 1)[0]) == ""
    wait_until(lambda: _running("ray/raylet/raylet") == 0, timeout_s=30, what="no raylet left")


def _running(pattern: str) -> int:
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return len(found.stdout.split())


def _settled(made: RayCluster, home: Client) -> bool:
    """Every node verified, the hot one in distress and dearer than the rest."""
    rows = {m.node: m for m in home.cluster_members().members}
    verified = all(rows.get(n) is not None and rows[n].verified for n in made.names)
    prices = home.cluster_prices()
    return verified and bool(prices.nodes) and prices.nodes[-1].node == made.hot


def _verify(cluster: RayCluster) -> dict[str, object]:
    states = [arg for d in cluster.daemons for arg in ("--state", str(d.state))]
    said = maxwell("cluster", "ledger", "verify", *states, "--json")
    verdict = json.loads(said.stdout)
    assert said.returncode == 0 and verdict["ok"], said.stdout + said.stderr
    assert isinstance(verdict, dict)
    return verdict


def test_jobs_go_to_cool_nodes_run_as_agents_and_their_money_comes_back(
    cluster: RayCluster,
) -> None:
    spec = JobSpec(argv=("sleep", "0.3"), fund=2.0, bid=2.0, demand=1.0)
    with cluster.home() as home:
        handles = [submit(spec, home=home) for _ in range(3)]
        assert all(handle.node != cluster.hot for handle in handles)
        assert all(0 < handle.placement_s < 60 for handle in handles)
        for handle in handles:
            outcome = handle.result(timeout_s=60)
            assert (outcome.state, outcome.exit_code) == ("exited", 0), outcome
            assert 0 < outcome.returned_j <= 2.0 and outcome.node == handle.node
    verdict = _verify(cluster)
    assert all(pair["pending"] == [] for pair in verdict["pairs"])  # type: ignore[index]


def test_a_job_that_runs_out_of_money_dies_on_its_node_and_the_submitter_sees_it(
    cluster: RayCluster,
) -> None:
    with cluster.home() as home:
        loop = JobSpec(argv=(public_python(), "-c", "while True: pass"), fund=0.05, bid=2.0)
        outcome = submit(loop, home=home).result(timeout_s=90)
    assert outcome.state == "dead" and outcome.node != cluster.hot, outcome
    assert outcome.returned_j < 0.05 and outcome.paid_j > 0
    _verify(cluster)


def square(x: int) -> int:
    return x * x


def divide(x: int) -> float:
    return 1 / x


def spin() -> None:
    while True:
        pass


def test_a_priced_python_function_runs_as_an_agent_and_gives_its_value_back(
    cluster: RayCluster,
) -> None:
    """At home and on another node; its exception comes back; out of money, it dies there."""
    import maxwell.ray

    home_node, other = cluster.daemons[0].name, cluster.daemons[1].name
    with cluster.home() as home:
        priced = maxwell.ray.remote(fund=2.0, bid=2.0, home=home)
        at_home = priced(square).options(exclude=[other]).remote(7)
        away = priced(square).options(exclude=[home_node]).remote(8)
        raised = priced(divide).remote(0)
        starved = priced(spin).options(fund=0.05).remote()
        assert maxwell.ray.get([at_home, away], timeout_s=90) == [49, 64]
        assert (at_home.node, away.node) == (home_node, other)
        with pytest.raises(maxwell.ray.CallRaised, match="ZeroDivisionError") as error:
            raised.get(timeout_s=90)
        assert isinstance(error.value.__cause__, ZeroDivisionError)
        with pytest.raises(maxwell.ray.CallDied, match="apoptosis"):
            starved.get(timeout_s=90)
    for call in (at_home, away, raised, starved):
        assert call.outcome is not None and call.node != cluster.hot
    assert away.outcome is not None and 0 < away.outcome.returned_j < 2.0
    _verify(cluster)


def test_a_job_that_cannot_start_is_declined_and_its_money_all_comes_back(
    cluster: RayCluster,
) -> None:
    unstartable = JobSpec(argv=("/nonexistent/command",), fund=1.5, bid=2.0)
    with cluster.home(1) as home:  # not at home: the job crosses
        handle = submit(unstartable, home=home, exclude=[cluster.daemons[1].name])
        outcome = handle.result(timeout_s=60)
    assert handle.node == cluster.daemons[0].name
    assert (outcome.state, outcome.agent, outcome.returned_j) == ("declined", None, 1.5)
    _verify(cluster)


def test_the_commands_submit_wait_and_list_jobs_that_outlive_them(cluster: RayCluster) -> None:
    home = str(cluster.daemons[1].state)  # and never there: the job crosses
    ray_at = ("--ray-address", cluster.ray.address, "--exclude", cluster.daemons[1].name)
    said = maxwell("submit", "--state", home, *ray_at, "--fund", "2J", "--bid", "2", "--wait",
                   "--json", "--", "true", timeout=120)  # fmt: skip
    assert said.returncode == 0, said.stdout + said.stderr
    waited = json.loads(said.stdout)
    assert waited["state"] == "exited" and waited["exit_code"] == 0
    assert waited["node"] != cluster.hot and 0 < waited["returned_j"] <= 2.0
    said = maxwell("submit", "--state", home, *ray_at, "--fund", "2J", "--bid", "2", "--json",
                   "--", "sleep", "1", timeout=120)  # fmt: skip
    assert said.returncode == 0, said.stdout + said.stderr
    left = json.loads(said.stdout)  # the command has ended; a keeper on the home node has not

    def closed() -> bool:
        listed = maxwell("jobs", "--ray-address", cluster.ray.address, "--json", timeout=120)
        rows = {row["job"]: row for row in json.loads(listed.stdout)["jobs"]}
        row = rows.get(left["job"])
        return row is not None and row["state"] == "closed" and row["node"] == left["node"]

    assert left["node"] == cluster.daemons[0].name
    wait_until(closed, timeout_s=60, what="the kept job's money back home")
    _verify(cluster)
    refused = maxwell("submit", "--state", home, *ray_at, "--fund", "1J", "--bid", "0.001",
                      "--", "true", timeout=120)  # fmt: skip
    assert refused.returncode == 1 and "cannot be placed" in refused.stderr


def test_a_node_whose_daemon_is_killed_is_passed_over_and_the_money_still_reconciles(
    cluster: RayCluster,
) -> None:
    victim = next(d for d in cluster.daemons[1:] if d.name != cluster.hot)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.communicate()
    with cluster.home() as home:
        for _ in range(2):
            handle = submit(JobSpec(argv=("true",), fund=1.0, bid=2.0), home=home)
            assert handle.node not in (victim.name, cluster.hot)
            assert handle.result(timeout_s=60).exit_code == 0
        with pytest.raises(JobError, match="cannot be placed"):
            submit(JobSpec(argv=("true",), fund=1.0, bid=0.01), home=home)  # no node so cheap
    _verify(cluster)
