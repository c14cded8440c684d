"""Each agent's memory and pids limits: the spawn's, else the node's (`NodeConfig.memory_max`,
`pids_max`), refused when malformed before anything is made; through the API, the SDK and the
CLI's `--memory` / `--pids`. (Enforcement on real cgroups: tests/adversarial/test_limits.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, TestClient
from maxwell.cli.agents_cmd import _bytes
from maxwell.node.api import create_app
from maxwell.node.config import DEFAULT_MEMORY_MAX, NodeConfig, NodeConfigError
from maxwell.node.facade import NodeError
from maxwell.units import Money
from test_node_settlement import J, Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path / "state")
    try:
        yield made
    finally:
        made.daemon.shutdown(kill_agents=True)


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


def test_the_api_passes_the_limits_and_refuses_bad_ones() -> None:
    fake = FakeNode()
    with TestClient(create_app(fake)) as client:
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
