"""`maxwell cluster demo`: N real daemons gossiping their heat over real Serf agents on loopback,
one driven hot (issue 12, 6).

Everything is the production path except the heat: each daemon (`NodeDaemon`, in this process,
on a temporary state directory, no cgroups, no agents) meters this machine through its sensors
(the labelled model here), ticks, and prices its heat; each has its own `GossipNode` and `serf
agent`, keys signed by a demo authority, and couples its price to its neighbours' verified
records. The heat is **modelled** per node (`ModelledThermals`): its die follows a first-order RC
model into an ambient temperature the demo sets, since the nodes share one machine and so one
real temperature. Driving a node hot raises its ambient to its critical temperature (a cooling
failure): its headroom falls under the distress threshold, it says so as a distress event, and
the others, hearing it, lower their prices.

The run: start the nodes, wait until every node verifies every other; note the prices; drive
the hot node; wait until its distress reached every node and the coupled prices settled; note
the prices again; stop everything. `ok` when the distress reached every node, every cool node
got cheaper by coupling, and the cheapest node with room is not the hot one.
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from maxwell.gossip.agent import free_gossip_port
from maxwell.gossip.config import GossipConfig
from maxwell.gossip.keys import ClusterKeyFiles
from maxwell.gossip.node import GossipNode, prepare
from maxwell.gossip.view import ClusterView
from maxwell.meter.live import NodeSampler
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.physics import ThermalRC
from maxwell.sensors import NodeSample, Sensors

COOL_AMBIENT_C = 35.0
CRITICAL_C = 95.0
TICK_S = 0.5
REFRESH_S = 2.0
_SETTLE_TICKS = 12  # the coupling moves 0.05 a tick: enough to reach any target from 1


class ModelledThermals:
    """A node's sensors with a modelled die of its own (see the module): energy and CPU times
    as this machine's sensors give them, the temperature from an RC model driven by the node's
    power into an ambient the demo sets. Labelled a model in every sample."""

    def __init__(self, machine: NodeSampler, ambient_c: float = COOL_AMBIENT_C) -> None:
        self._machine = machine
        self._die = ThermalRC(
            ambient_c=ambient_c, resistance_k_per_w=0.2, capacitance_j_per_k=10.0,
            critical_c=CRITICAL_C,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._temperature_c: float | None = None
        self._at: float | None = None

    def drive(self, ambient_c: float) -> None:
        with self._lock:
            self._die = replace(self._die, ambient_c=ambient_c)

    def sample(self) -> NodeSample:
        sample = self._machine.sample()
        with self._lock:
            if self._temperature_c is None or self._at is None:
                self._temperature_c = self._die.steady_state_c(sample.power_w)
            else:
                elapsed = max(sample.at_s - self._at, 0.0)
                self._temperature_c = self._die.step(self._temperature_c, sample.power_w, elapsed)
            self._at = sample.at_s
            return replace(
                sample, temperature_c=self._temperature_c, critical_c=CRITICAL_C,
                temperature_measured=False,
            )  # fmt: skip


@dataclass
class DemoNode:
    name: str
    daemon: NodeDaemon
    thermals: ModelledThermals
    view: ClusterView
    gossip: GossipNode | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    ticking: threading.Thread | None = None


def run_demo(
    nodes: int = 5,
    *,
    say: Callable[[str], None] = print,
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Run the demo (see the module) and return its summary; `stopped` cuts its waits short
    (a signal), and everything is stopped all the same."""
    if not 2 <= nodes <= 20:
        raise ValueError("the demo runs 2 to 20 nodes")
    prefix = f"demo-{os.getpid()}"
    names = [f"{prefix}-{i}" for i in range(nodes)]
    with tempfile.TemporaryDirectory(prefix="maxwell-cluster-demo-") as scratch:
        root = Path(scratch)
        keys = _make_keys(root, names)
        with _running(root, names, keys, say) as cluster:
            return _Scenario(cluster, say, stopped).run()


def _make_keys(root: Path, names: list[str]) -> dict[str, GossipConfig]:
    """An authority, a cluster key, and for each node a key it certified; each node's
    settings (the first node is the seed the others join)."""
    files = ClusterKeyFiles.write(root, names)
    configs: dict[str, GossipConfig] = {}
    seed: tuple[str, ...] = ()
    for name in names:
        bind = f"127.0.0.1:{free_gossip_port()}"
        configs[name] = GossipConfig(
            bind=bind, join=seed, cluster_key=files.cluster_key, node_key=files.node_key(name),
            authority=files.authority_public, refresh_s=REFRESH_S,
        )  # fmt: skip
        seed = seed or (bind,)
    return configs


@contextlib.contextmanager
def _running(
    root: Path, names: list[str], keys: dict[str, GossipConfig], say: Callable[[str], None]
) -> Iterator[list[DemoNode]]:
    """The nodes, started one by one; every one stopped and its serf gone, whatever happens."""
    machine = Sensors.detect()
    cluster: list[DemoNode] = []
    try:
        for name in names:
            cluster.append(_start_node(root, name, keys[name], machine))
            say(f"started {name} on {keys[name].bind}")
        yield cluster
    finally:
        leaving = [threading.Thread(target=n.gossip.close) for n in cluster if n.gossip is not None]
        for thread in leaving:  # together: a node leaving alone waits on the others' acks
            thread.start()
        for thread in leaving:
            thread.join()
        for node in cluster:
            _stop_node(node)
        machine.close()


def _start_node(root: Path, name: str, config: GossipConfig, machine: Sensors) -> DemoNode:
    identity, view = prepare(config)
    thermals = ModelledThermals(machine)
    state = root / name
    state.mkdir(mode=0o700)
    daemon = NodeDaemon(
        NodeConfig(state_dir=state, cgroup="none", tick_s=TICK_S),
        sensors=thermals, neighbours=view.neighbours_headroom,
    )  # fmt: skip
    node = DemoNode(name, daemon, thermals, view)
    node.ticking = threading.Thread(target=daemon.run_forever, args=(node.stop,), daemon=True)
    node.ticking.start()
    try:
        node.gossip = GossipNode.start(config, identity=identity, view=view, source=daemon.status)
    except BaseException:
        _stop_node(node)
        raise
    return node


def _stop_node(node: DemoNode) -> None:
    if node.gossip is not None:
        node.gossip.close()
    node.stop.set()
    if node.ticking is not None:
        node.ticking.join()
    node.daemon.shutdown(kill_agents=True)


class _Scenario:
    def __init__(
        self, cluster: list[DemoNode], say: Callable[[str], None], stopped: Callable[[], bool]
    ) -> None:
        self.cluster, self.say, self.stopped = cluster, say, stopped

    def run(self) -> dict[str, Any]:
        cluster, say = self.cluster, self.say
        names = [node.name for node in cluster]
        self.wait(lambda: all(_verified(node) == len(cluster) for node in cluster), 60)
        say(f"every node verifies all {len(cluster)}")
        self.wait_ticks(_SETTLE_TICKS)  # the thermal prices settle on the cool temperature
        before = {node.name: round(node.daemon.price().spot, 6) for node in cluster}
        hot = cluster[-1]
        say(f"driving {hot.name} hot: its cooling fails (ambient {CRITICAL_C:g} °C)")
        hot.thermals.drive(CRITICAL_C)
        listeners = cluster[:-1]
        reached = self.wait(lambda: all(_heard(node, hot.name) for node in listeners), 60)
        delays = [_first_distress(node, hot.name) for node in listeners if _heard(node, hot.name)]
        say(f"distress from {hot.name} reached {len(delays)} of {len(listeners)} nodes")
        self.wait_ticks(_SETTLE_TICKS)
        after = {node.name: round(node.daemon.price().spot, 6) for node in cluster}
        couplings = {node.name: round(node.daemon.price().coupling, 4) for node in cluster}
        cheapest = cluster[0].view.prices().cheapest
        cheaper = all(after[n] < before[n] and couplings[n] < 1.0 for n in names[:-1])
        refused: collections.Counter[str] = collections.Counter()
        for node in cluster:
            refused.update(node.view.rejected())
        return {
            "nodes": len(cluster),
            "hot_node": hot.name,
            "distress_reached": reached,
            "distress_seconds": {
                "median": round(statistics.median(delays), 3) if delays else None,
                "max": round(max(delays), 3) if delays else None,
            },
            "prices": {"before": before, "after": after},
            "couplings": couplings,
            "cheapest_after": cheapest,
            "rejected": sum(refused.values()),
            "rejected_by_reason": dict(refused),
            "ok": reached and cheaper and cheapest is not None and cheapest != hot.name,
        }

    def wait(self, check: Callable[[], bool], within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while not check():
            if time.monotonic() > deadline or self.stopped():
                return False
            time.sleep(0.05)
        return True

    def wait_ticks(self, ticks: int) -> None:
        goal = {node.name: node.daemon.ticks + ticks for node in self.cluster}
        self.wait(
            lambda: all(node.daemon.ticks >= goal[node.name] for node in self.cluster),
            ticks * TICK_S * 4,
        )


def _verified(node: DemoNode) -> int:
    return sum(member.verified for member in node.view.members().members)


def _heard(node: DemoNode, hot: str) -> bool:
    return any(seen.node == hot for seen in node.view.distress_seen())


def _first_distress(node: DemoNode, hot: str) -> float:
    seen = next(seen for seen in node.view.distress_seen() if seen.node == hot)
    return max(seen.seen_at - seen.made_at, 0.0)
