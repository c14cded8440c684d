"""A Maxwell cluster on one machine, for `maxwell bench cluster`: N nodes, each a
`maxwell daemon --gossip` process (a state directory of its own, its Serf agent on loopback,
process trees for agents) and a Ray node labelled with its id (`ray.cluster_utils.Cluster`, one
CPU each). With `hot`, the last node's modelled die sits 1 °C under its critical temperature,
so it is in distress from its first tick and dearer than the rest.

Everything it starts stops with it (`close`), after a failure half-way too; the daemons also
die with the process that started them (`PR_SET_PDEATHSIG`), their Serf agents with them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from maxwell.client import Client
from maxwell.cluster.jobs import LABEL, RAY_ENV, STATE_ENV
from maxwell.errors import MaxwellError
from maxwell.gossip.agent import die_with_parent, free_gossip_port
from maxwell.gossip.keys import ClusterKeyFiles
from maxwell.node.paths import ADMIN_TOKEN_FILE, SOCKET_NAME

HOT_MODEL: Final = "[model]\nambient_c = 94.0\nfull_load_c = 99.0\ncritical_c = 95.0\n"
_READY_S: Final = 60.0


class LocalCluster:
    """See the module; use it as a context manager."""

    def __init__(self, root: Path, nodes: int = 3, *, hot: bool = True) -> None:
        self.root = root
        self.names = [f"mxc{os.getpid()}-{i}" for i in range(nodes)]
        self.hot = self.names[-1] if hot else None
        self._daemons: list[subprocess.Popen[bytes]] = []
        self._ray: Any = None

    def state(self, node: str) -> Path:
        return self.root / node

    def client(self, node: str) -> Client:
        state = self.state(node)
        token = (state / ADMIN_TOKEN_FILE).read_text().strip()
        return Client(socket=str(state / SOCKET_NAME), token=token)

    @property
    def ray_address(self) -> str:
        return str(self._ray.address)

    def __enter__(self) -> LocalCluster:
        try:
            self._start_daemons()
            self._start_ray()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start_daemons(self) -> None:
        keys = ClusterKeyFiles.write(self.root / "keys", self.names)
        (self.root / "hot.toml").write_text(HOT_MODEL)
        seed: str | None = None
        for name in self.names:
            bind = f"127.0.0.1:{free_gossip_port()}"
            argv = [
                sys.executable, "-m", "maxwell.cli.main", "daemon", "--state",
                str(self.state(name)), "--cgroup", "none", "--tick", "0.3", "--gossip", bind,
                "--cluster-key", str(keys.cluster_key), "--node-key", str(keys.node_key(name)),
                "--authority", str(keys.authority_public),
            ]  # fmt: skip
            argv += ["--join", seed] if seed else []
            argv += ["--config", str(self.root / "hot.toml")] if name == self.hot else []
            dies_with_us = die_with_parent(os.getpid())
            self._daemons.append(
                subprocess.Popen(argv, stderr=subprocess.DEVNULL, preexec_fn=dies_with_us)
            )
            self._wait_serving(name)
            seed = seed or bind

    def _wait_serving(self, name: str) -> None:
        path = str(self.state(name) / SOCKET_NAME)
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            if self._daemons[-1].poll() is not None:
                raise MaxwellError(f"the daemon of {name} exited ({self._daemons[-1].returncode})")
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(path) == 0:
                    return
            time.sleep(0.1)
        raise MaxwellError(f"the daemon of {name} did not serve within {_READY_S:g} s")

    def _start_ray(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        os.environ.update(RAY_ENV)
        self._ray = Cluster()
        for name in self.names:
            self._ray.add_node(
                num_cpus=1, labels={LABEL: name}, include_dashboard=False,
                env_vars={STATE_ENV: str(self.state(name)), **RAY_ENV},
            )  # fmt: skip
        ray.init(address=self._ray.address, log_to_driver=False)

    def close(self) -> None:
        import ray

        ray.shutdown()
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None
        for daemon in self._daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon in self._daemons:
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        self._daemons.clear()
