"""Each agent's memory and pids limits: the spawn's, else the node's (`NodeConfig.memory_max`,
`pids_max`), refused when malformed before anything is made; through the API, the SDK and the
CLI's `--memory` / `--pids` (enforced on real cgroups: tests/adversarial/test_limits.py); and
the OOM killer's order: agents first, the daemon last."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, TestClient
from helpers import LOCAL, public_python, wait_until
from maxwell.cli.agents_cmd import _bytes
from maxwell.node.api import create_app
from maxwell.node.config import DEFAULT_MEMORY_MAX, NodeConfig, NodeConfigError
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError
from maxwell.node.supervisor import AGENT_OOM_SCORE_ADJ, DAEMON_OOM_SCORE_ADJ
from maxwell.units import Money
from test_node_settlement import J, Node, running


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with running(tmp_path / "state") as made:
        yield made


def test_a_spawn_s_limits_and_the_node_s_defaults(node: Node) -> None:
    own = node.daemon.spawn(["work"], fund=Money(J), bid=1.0, memory=64 << 20, pids=8).agent
    default = node.daemon.spawn(["work"], fund=Money(J), bid=1.0).agent
    groups = node.supervisor.groups
    assert (groups[own].memory_max, groups[own].pids_max) == (64 << 20, 8)
    assert (groups[default].memory_max, groups[default].pids_max) == (DEFAULT_MEMORY_MAX, 256)


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"memory": 4096}, "memory limit must be an integer of 1048576 bytes or more"),
        ({"memory": True}, "memory limit"),
        ({"pids": 0}, "pids limit must be an integer of 1 processes or more"),
        ({"pids": 2.5}, "pids limit"),
    ],
)
def test_a_malformed_limit_is_refused_and_nothing_is_made(
    node: Node, limits: dict[str, object], says: str
) -> None:
    with pytest.raises(NodeError, match=says):
        node.daemon.spawn(["work"], fund=Money(J), bid=1.0, **limits)  # type: ignore[arg-type]
    assert node.supervisor.groups == {} and node.daemon.agents() == []


def test_the_node_s_defaults_are_checked(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="memory_max must be 1048576 bytes or more"):
        NodeConfig(state_dir=tmp_path, memory_max=1000)
    assert NodeConfig(state_dir=tmp_path, memory_max=None).memory_max is None
    with pytest.raises(NodeConfigError, match="report_lease_s must be a finite number above 0"):
        NodeConfig(state_dir=tmp_path, report_lease_s=0.0)
    with pytest.raises(NodeConfigError, match="retention_s must be a finite number 0 or more"):
        NodeConfig(state_dir=tmp_path, retention_s=float("nan"))


def test_the_api_passes_the_limits_and_refuses_bad_ones() -> None:
    fake = FakeNode()
    with TestClient(create_app(fake), base_url=LOCAL) as client:
        _spawn_with_limits(client, fake)


def _spawn_with_limits(client: TestClient, fake: FakeNode) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"argv": ["work"], "fund": 1, "bid": 1.0, "memory": 64 << 20, "pids": 8}
    created = client.post("/agents", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert fake.limits[created.json()["agent"]] == (64 << 20, 8)
    for bad in ({"memory": 100}, {"pids": 0}, {"memory": "lots"}):
        refused = client.post("/agents", json={**body, **bad}, headers=headers)
        assert refused.status_code == 422, (bad, refused.text)


def test_the_cli_reads_byte_counts() -> None:
    assert _bytes("1048576") == 1 << 20
    assert _bytes("512M") == _bytes("512MiB") == 512 << 20
    assert _bytes("2g") == 2 << 30
    for bad in ("", "0", "-5M", "1.5G", "lots"):
        with pytest.raises(ValueError):
            _bytes(bad)


SCORES = """
import os, subprocess, sys
child = subprocess.run([sys.executable, "-c", "print(open('/proc/self/oom_score_adj').read())"],
                       capture_output=True, text=True).stdout.strip()
own = open("/proc/self/oom_score_adj").read().strip()
with open(os.path.join(os.environ["MAXWELL_AGENT_DIR"], "scores"), "w") as out:
    out.write(f"{own} {child}")
"""


def test_agents_are_the_oom_killer_s_first_choice(tmp_path: Path) -> None:
    """An agent starts with its oom_score_adj raised (and whatever it forks inherits it); the
    process that spawned it keeps its own."""
    daemon = NodeDaemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"))
    try:
        spawned = daemon.spawn([public_python(), "-c", SCORES], fund=Money(J), bid=1.0)
        said = tmp_path / "state" / "work" / spawned.agent / "scores"
        wait_until(lambda: said.exists() and said.read_text(), timeout_s=30, what="the scores")
        assert said.read_text().split() == [str(AGENT_OOM_SCORE_ADJ)] * 2
        assert Path("/proc/self/oom_score_adj").read_text().strip() != str(AGENT_OOM_SCORE_ADJ)
    finally:
        daemon.shutdown(kill_agents=True)


def test_the_daemon_lowers_its_own_score_where_it_may() -> None:
    """In a process of its own (lowering cannot be undone without privilege): done, or a warning
    and the score left as it was."""
    code = (
        "from maxwell.node.supervisor import protect_daemon\n"
        "done = protect_daemon()\n"
        "print(done, open('/proc/self/oom_score_adj').read().strip())\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    done, score = ran.stdout.split()
    if done == "True":
        assert score == str(DAEMON_OOM_SCORE_ADJ)
    else:
        assert score != str(DAEMON_OOM_SCORE_ADJ) and "cannot lower" in ran.stderr
