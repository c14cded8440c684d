"""`maxwell cluster up|down` (issue 13, 1): a gossiping daemon joins a Ray cluster it starts, as a
Ray node labelled with its id whose workers find the daemon; `down` leaves, and no Ray process
is left. Runs alone: `ray stop` stops every Ray process of the machine."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossip_support import ClusterKeys, Daemon, needs_serf, node_prefix, serfs_named
from helpers import maxwell, wait_until
from maxwell import __version__

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'maxwell[cluster]')")

from maxwell.cluster.jobs import LABEL, ray_nodes  # noqa: E402  # after the skip: it needs ray

pytestmark = needs_serf


def _raylets() -> int:
    found = subprocess.run(["pgrep", "-f", "--", "ray/raylet/raylet"], capture_output=True)
    return len(found.stdout.split())


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    if _raylets():
        pytest.skip("another Ray runs on this machine: ray stop would stop it too")
    prefix = node_prefix()
    with tempfile.TemporaryDirectory(prefix="mx-up-", dir="/tmp") as base:
        keys = ClusterKeys.make(Path(base) / "keys", [prefix])
        made = Daemon(keys, prefix, Path(base) / "node", None)
        try:
            yield made
        finally:
            maxwell("cluster", "down", timeout=120)
            made.stop()
    assert serfs_named(prefix) == ""
    wait_until(lambda: _raylets() == 0, timeout_s=30, what="no raylet left")


def test_up_labels_a_ray_node_with_the_node_id_and_down_leaves(daemon: Daemon) -> None:
    python = "/usr/bin/env PYTHONPATH=/opt/maxwell /usr/bin/python3"
    said = maxwell("cluster", "up", "--state", str(daemon.state), "--num-cpus", "1", "--json",
                   "--agent-python", python, timeout=180)  # fmt: skip
    assert said.returncode == 0, said.stdout + said.stderr
    assert json.loads(said.stdout)["node"] == daemon.name
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(address="auto", log_to_driver=False)
    try:
        found = ray_nodes(ray.nodes())
        assert list(found) == [daemon.name]
        from maxwell.cluster.jobs import answers

        probe = ray.remote(num_cpus=0)(answers)
        # A worker finds the daemon (MAXWELL_STATE) and the agents' Python (MAXWELL_AGENT_PYTHON).
        assert ray.get(probe.remote(), timeout=60) == python.split()
        labels = [n["Labels"] for n in ray.nodes() if n["Alive"]]
        assert labels[0][LABEL] == daemon.name
    finally:
        ray.shutdown()
    down = maxwell("cluster", "down", "--json", timeout=120)
    assert down.returncode == 0
    assert json.loads(down.stdout) == {"stopped": True, "version": __version__}
    wait_until(lambda: _raylets() == 0, timeout_s=30, what="ray stopped")


def test_ray_starts_labelled_without_its_own_cgroups_memory_killer_or_statistics() -> None:
    from maxwell.cli.cluster_ray_cmd import ray_start_argv
    from maxwell.cluster.jobs import RAY_ENV

    head = ray_start_argv("n1", Path("/var/lib/maxwell"), None, 2)
    joined = ray_start_argv("n1", Path("/var/lib/maxwell"), "10.0.0.1:6379", None)
    assert head[1:] == ["start", "--disable-usage-stats", "--include-dashboard=false",
                        "--labels", f"{LABEL}=n1", "--head", "--num-cpus", "2"]  # fmt: skip
    assert joined[-2:] == ["--address", "10.0.0.1:6379"]
    assert not any("isolation" in arg or "cgroup" in arg for arg in head + joined)
    assert RAY_ENV == {"RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}


def test_up_without_a_state_directory_or_gossip_is_a_usage_error(tmp_path: Path) -> None:
    said = maxwell("cluster", "up", "--socket", str(tmp_path / "none.sock"))
    assert said.returncode == 2 and "needs --state" in said.stderr
    said = maxwell("cluster", "up", "--state", str(tmp_path), "--agent-python", "'unclosed")
    assert said.returncode == 2 and "--agent-python: not a command" in said.stderr
