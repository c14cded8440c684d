"""The parent's side of `maxwell.gossip.lossy_node`: node processes started (`running_nodes`),
commanded and watched (`NodeProcess`), and what each reported (`NodeReports`, pure), for the
lossy-network test and `maxwell bench gossip`.

A node process is asked to die with the thread that started it (`PR_SET_PDEATHSIG`), so that a
parent killed outright leaves no node (nor, through the node's own, any serf agent) running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from maxwell.errors import MaxwellError
from maxwell.gossip.agent import die_with_parent
from maxwell.gossip.keys import ClusterKeyFiles
from maxwell.gossip.lossy import NodePlace

log = logging.getLogger(__name__)

STARTING_AT_ONCE: Final = 3  # node processes started but not yet ready, at most


@dataclass
class NodeReports:
    """What one node process reported so far (see the module); `apply` one line at a time."""

    ready: bool = False
    pid: int | None = None
    serf_pid: int | None = None
    state: dict[str, Any] = field(default_factory=dict)
    distress: list[dict[str, Any]] = field(default_factory=list)  # as events
    believed: list[dict[str, Any]] = field(default_factory=list)  # by tags or event
    queues: dict[str, int] = field(default_factory=dict)  # the agent's, when last asked
    pings: dict[str, float] = field(default_factory=dict)  # id -> when it arrived
    sent: dict[str, float] = field(default_factory=dict)  # ping id -> when it was sent
    error: str | None = None
    stopped: bool = False

    def apply(self, line: str) -> None:
        try:
            report = json.loads(line)
            event = report["event"]
        except (ValueError, LookupError, TypeError):
            log.warning("a node process said something else: %r", line[:200])
            return
        if event == "ready":
            self.ready, self.pid, self.serf_pid = True, report["pid"], report["serf_pid"]
        elif event == "state":
            self.state = {k: v for k, v in report.items() if k != "event"}
        elif event == "distress":
            self.distress.append(report)
        elif event == "believed":
            self.believed.append(report)
        elif event == "queues":
            self.queues = {k: v for k, v in report.items() if k != "event"}
        elif event == "ping":
            self.pings.setdefault(report["id"], report["at"])
        elif event == "ping-sent":
            self.sent[report["id"]] = report["at"]
        elif event == "error":
            self.error = report["message"]
        elif event == "stopped":
            self.stopped = True

    def verified(self) -> int:
        return int(self.state.get("verified", 0))

    def rejected(self) -> int:
        return sum(self.state.get("rejected", {}).values())


class NodeProcess:
    """The parent's handle on one node process: start it, command it, read its reports (a
    thread reads its stdout), stop it. Start it from a thread that lives as long as it should:
    it is asked to die with that thread (`PR_SET_PDEATHSIG`)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._lock = threading.Lock()
        self._reports = NodeReports()
        with open(log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                text=True, bufsize=1, process_group=0,
                preexec_fn=die_with_parent(os.getpid()),
            )  # fmt: skip
        self._reading = threading.Thread(target=self._read, name=f"read {name}", daemon=True)
        self._reading.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._lock:
                self._reports.apply(line)

    @contextlib.contextmanager
    def reports(self) -> Iterator[NodeReports]:
        """The reports so far, under the lock (read them inside the `with`)."""
        with self._lock:
            yield self._reports

    def snapshot(self) -> NodeReports:
        with self._lock:
            return replace(
                self._reports, state=dict(self._reports.state),
                distress=list(self._reports.distress), believed=list(self._reports.believed),
                queues=dict(self._reports.queues), pings=dict(self._reports.pings),
                sent=dict(self._reports.sent),
            )  # fmt: skip

    def exited(self) -> int | None:
        return self._process.poll()

    def send(self, command: str, **fields: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"cmd": command, **fields}) + "\n")
        self._process.stdin.flush()

    def problem(self) -> str:
        """Why the process is not ready: its error, or its exit and last line of log."""
        with self._lock:
            if self._reports.error is not None:
                return f"{self.name}: {self._reports.error}"
        status = self._process.poll()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return f"{self.name} exited with status {status}: {tail[0]}"

    def ask_to_stop(self) -> None:
        try:
            self.send("stop")
            assert self._process.stdin is not None
            self._process.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it already ended

    def wait(self, timeout_s: float) -> int:
        """Its exit status, killed (and reaped) if it does not end within `timeout_s`."""
        try:
            status = self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("node %s (pid %d) did not stop: SIGKILL", self.name, self.pid)
            self._process.kill()
            status = self._process.wait()
        self._reading.join(5.0)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None and not self._reading.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        return status


class KeyFiles(ClusterKeyFiles):
    """A cluster's key files (`ClusterKeyFiles`), and the node processes' command lines."""

    def argv(self, node: str, bind: str, join: Sequence[str], refresh_s: float) -> list[str]:
        """The command line of `node`'s process (see the module)."""
        argv = [
            sys.executable, "-m", "maxwell.gossip.lossy_node", "--name", node, "--bind", bind,
            "--cluster-key", str(self.cluster_key), "--node-key", str(self.node_key(node)),
            "--authority", str(self.authority_public), "--refresh-s", f"{refresh_s:g}",
        ]  # fmt: skip
        return argv + [arg for address in join for arg in ("--join", address)]


def until(check: Callable[[], bool], within_s: float, poll_s: float = 0.05) -> bool:
    """Whether `check` came true within `within_s` (polled)."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def _wait_ready(nodes: Sequence[NodeProcess], within_s: float, *, starting: int = 0) -> None:
    """Wait until at most `starting` of `nodes` are not ready yet; a `MaxwellError` naming a
    node that failed, or those still not ready after `within_s`."""

    def unready(node: NodeProcess) -> bool:
        with node.reports() as reports:
            if reports.ready:
                return False
            failed = reports.error is not None
        if failed or node.exited() is not None:
            raise MaxwellError(f"node process {node.problem()}")
        return True

    if not until(lambda: sum(map(unready, nodes)) <= starting, within_s):
        late = [node.name for node in nodes if not node.snapshot().ready]
        raise MaxwellError(f"node processes not ready within {within_s:g} s: {', '.join(late)}")


@contextlib.contextmanager
def running_nodes(
    place: NodePlace,
    keys: KeyFiles,
    names: Sequence[str],
    *,
    refresh_s: float = 5.0,
    ready_within_s: float = 60.0,
) -> Iterator[list[NodeProcess]]:
    """A node process per name at `place` (the first is the seed the others join), each ready;
    all stopped (leaving together), or killed, whatever happens."""
    nodes: list[NodeProcess] = []
    seed = place.binds[0]
    try:
        for i, name in enumerate(names):
            join = [seed] if i else []
            argv = place.argv(i, keys.argv(name, place.binds[i], join, refresh_s))
            nodes.append(NodeProcess(name, argv, keys.root / f"{name}.log"))
            # The seed first (the others join through it), then a few at a time: a crowd of
            # nodes starting at once on a small machine has Serf time out its first broadcasts.
            _wait_ready(nodes, ready_within_s, starting=STARTING_AT_ONCE - 1 if i else 0)
        _wait_ready(nodes, ready_within_s)
        yield nodes
    finally:
        for node in nodes:
            node.ask_to_stop()
        for node in nodes:
            node.wait(20.0)
