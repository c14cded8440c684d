"""What the heat-gossip tests share: key files for a cluster, free loopback ports, node snapshots
a test controls, and running gossiping nodes that are always closed."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from helpers import maxwell, wait_until
from maxwell.gossip.agent import free_gossip_port
from maxwell.gossip.config import GossipConfig
from maxwell.gossip.keys import ClusterKeyFiles, public_path
from maxwell.gossip.node import GossipNode, prepare
from maxwell.gossip.view import ClusterView
from maxwell.node.facade import NodeStatus, PriceInfo

SERF = shutil.which("serf")
needs_serf = pytest.mark.skipif(SERF is None, reason="serf is not installed (apt-get install serf)")


def free_port() -> int:
    return free_gossip_port()


def node_prefix() -> str:
    return f"mxg-{uuid.uuid4().hex[:8]}"


def serfs_named(prefix: str) -> str:
    """The serf processes whose node name starts with `prefix` (none, once all is closed)."""
    found = subprocess.run(
        ["pgrep", "-af", "--", f"-node={prefix}"], capture_output=True, text=True, check=False
    )
    assert found.returncode in (0, 1), found.stderr  # 1: none; anything else: pgrep failed
    return found.stdout.strip()


class ClusterKeys(ClusterKeyFiles):
    """A cluster's key files (`ClusterKeyFiles`), and each node's gossip settings."""

    @classmethod
    def make(cls, root: Path, nodes: list[str]) -> ClusterKeys:
        return cls.write(root, nodes)

    def config(self, node: str, bind: str, join: tuple[str, ...] = ()) -> GossipConfig:
        return GossipConfig(
            bind=bind, join=join, cluster_key=self.cluster_key, node_key=self.node_key(node),
            authority=self.authority_public, refresh_s=0.5,
        )  # fmt: skip


def status(headroom_c: float = 40.0, *, spot: float = 1.0, capacity: float = 2.0) -> NodeStatus:
    """A node's snapshot as its last tick would publish it (no agents: every core free)."""
    price = PriceInfo(
        spot=spot, grid=1.0, thermal_factor=spot, temperature_c=90.0 - headroom_c,
        headroom_c=headroom_c, measured=False, energy_source="model",
        temperature_source="model", power_w=20.0,
    )  # fmt: skip
    return NodeStatus(
        price=price, agents=(), tick_s=1.0, last_tick_duration_s=0.0, ticks=1,
        mechanism="uniform", cgroup="none", capacity_cores=capacity,
    )  # fmt: skip


@dataclass
class Dial:
    """A node's snapshot that a test turns (hotter, dearer) while the node gossips it."""

    now: NodeStatus = field(default_factory=status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> NodeStatus:
        with self.lock:
            return self.now

    def set(self, headroom_c: float, spot: float = 1.0) -> None:
        with self.lock:
            self.now = replace(status(headroom_c, spot=spot))


@dataclass
class Gossiper:
    node: str
    view: ClusterView
    dial: Dial
    gossip: GossipNode
    bind: str


@contextlib.contextmanager
def gossipers(keys: ClusterKeys, names: list[str]) -> Iterator[list[Gossiper]]:
    """A `GossipNode` per name on loopback, all joined through the first; all closed after."""
    started: list[Gossiper] = []
    try:
        seed = ""
        for name in names:
            bind = f"127.0.0.1:{free_port()}"
            config = keys.config(name, bind, join=(seed,) if seed else ())
            started.append(start_gossiper(config, name))
            seed = seed or bind
        yield started
    finally:
        for one in started:
            one.gossip.close()


def start_gossiper(config: GossipConfig, name: str) -> Gossiper:
    """A `GossipNode` for `name` under `config` (its keys and authority), with a `Dial`."""
    identity, view = prepare(config)
    assert identity.node == name
    dial = Dial()
    gossip = GossipNode.start(config, identity=identity, view=view, source=dial)
    return Gossiper(name, view, dial, gossip, config.bind or "")


def wait_for(check: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:g} s: {what}")
        time.sleep(0.05)


TESTS = Path(__file__).resolve().parent


class Daemon:
    """One `maxwell daemon --gossip` in a process of its own, on a private state directory
    (`extra`: more of the daemon's flags)."""

    def __init__(
        self, keys: ClusterKeys, name: str, state: Path, join: str | None, *extra: str
    ) -> None:
        self.name, self.state = name, state
        self.bind = f"127.0.0.1:{free_port()}"
        self.argv = [
            sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
            "--cgroup", "none", "--tick", "0.3", "--gossip", self.bind,
            "--cluster-key", str(keys.cluster_key), "--node-key", str(keys.node_key(name)),
            "--authority", str(public_path(keys.authority)),
            *(["--join", join] if join else []), *extra,
        ]  # fmt: skip
        self.process = self.start()

    def start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(self.argv, cwd=TESTS, stderr=subprocess.PIPE, text=True)
        socket_path = self.state / "maxwell.sock"

        def serving() -> bool:
            assert process.poll() is None, process.communicate()[1]
            with socket.socket(socket.AF_UNIX) as probe:  # a killed daemon's socket file stays
                return probe.connect_ex(str(socket_path)) == 0

        wait_until(serving, timeout_s=30, what=f"{self.name} to serve")
        return process

    def ask(self, *args: str) -> dict[str, object]:
        said = maxwell(*args, "--state", str(self.state), "--json")
        assert said.returncode == 0, said.stderr
        answer = json.loads(said.stdout)
        assert isinstance(answer, dict)
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            _, stderr = self.process.communicate(timeout=30)
            assert self.process.returncode == 0, stderr
