"""Where gossip nodes run for a test or a benchmark: network namespaces on a lossy bridge, or
plain loopback.

`LossyNetwork(nodes, loss_percent)` (root only) makes, for one run:

- a hub namespace `mxg<pid>x<serial>h` holding a bridge `br0`, and a namespace per node
  `mxg<pid>x<serial>n<i>`, names unique per run (the pid and a counter of the process);
- a veth pair per node from the hub's bridge (`v<i>`) to the node's `eth0`, with the address
  `10.77.93.<i + 1>/24` (a private /24 inside the namespaces alone: the root namespace's
  networking is never touched), `lo` up (the node's Serf RPC is on 127.0.0.1) and no IPv6
  address on the veth (`addrgenmode none`: its neighbour discovery would count in the bytes);
- in each node namespace, when `loss_percent` > 0, an nftables table `maxwell_loss` dropping that
  percentage of the packets coming in on `eth0` (`numgen random mod 100 < LOSS drop`; never on
  `lo`), so a packet between two nodes is lost at its receiver only.

Leaving the `with` removes everything, also after a failure half-way: the processes still in its
namespaces (the node processes a run started there, and their serf agents) are killed by pid,
then every namespace is deleted, its veth ends and nftables table with it. A run that was
SIGKILLed cannot clean up (its node processes and their serf agents die with it, asked to by
`PR_SET_PDEATHSIG`, but its namespaces stay): the next `LossyNetwork` deletes the namespaces of a
harness whose process is dead (`stale_namespaces`), killing nothing.

`Loopback(nodes)` is the same interface on 127.0.0.1 (no root, no loss, no byte counters).
Planning (`plan`, `setup_commands`, `loss_ruleset`, `stale_namespaces`, `link_bytes`) is pure;
commands run through an injected runner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol

from maxwell.errors import MaxwellError, UsageError
from maxwell.gossip.agent import LOOPBACK, free_gossip_port

log = logging.getLogger(__name__)

SUBNET: Final = "10.77.93"  # the nodes' /24, inside the namespaces only
GOSSIP_PORT: Final = 7946  # Serf's own default: every node has an address of its own
NODE_LINK: Final = "eth0"
BRIDGE: Final = "br0"
LOSS_TABLE: Final = "maxwell_loss"
MAX_NODES: Final = 250
NEEDS_ROOT: Final = "the lossy network needs root (network namespaces and nftables)"
_NAME = re.compile(r"^mxg(?P<pid>\d+)x\d+(?:h|n\d+)$")
_serials = iter(range(1 << 62))
_serial_lock = threading.Lock()

Runner = Callable[[Sequence[str], str | None], str]  # argv, stdin -> stdout; raises on failure


class LossyNetworkError(MaxwellError):
    """The namespaces could not be made (or removed): not root, a tool missing, a command failed."""


class NodePlace(Protocol):
    """Where a run's nodes live: each node's gossip address, how to run a command there, and
    the bytes through its link (None where nothing counts them alone)."""

    binds: list[str]
    counts_bytes: bool

    def argv(self, index: int, command: Sequence[str]) -> list[str]: ...

    def link_bytes(self, index: int) -> tuple[int, int] | None: ...


@dataclass(frozen=True)
class Plan:
    """The names and addresses of one run's namespaces."""

    hub: str
    namespaces: tuple[str, ...]
    addresses: tuple[str, ...]
    loss_percent: int


def plan(nodes: int, loss_percent: int, *, pid: int, serial: int) -> Plan:
    """The namespaces of run `serial` of process `pid`, for `nodes` nodes."""
    if not 1 <= nodes <= MAX_NODES:
        raise UsageError(f"a lossy network has 1 to {MAX_NODES} nodes, not {nodes}")
    if not 0 <= loss_percent <= 100:
        raise UsageError(f"loss must be 0 to 100 percent, not {loss_percent}")
    prefix = f"mxg{pid}x{serial}"
    return Plan(
        hub=f"{prefix}h",
        namespaces=tuple(f"{prefix}n{i}" for i in range(nodes)),
        addresses=tuple(f"{SUBNET}.{i + 1}" for i in range(nodes)),
        loss_percent=loss_percent,
    )


def loss_ruleset(loss_percent: int) -> str:
    """The nftables table a node namespace loads: drop `loss_percent` % of what comes in on
    its veth end."""
    return (
        f"table inet {LOSS_TABLE} {{\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f'    iifname "{NODE_LINK}" numgen random mod 100 < {loss_percent} drop\n'
        "  }\n"
        "}\n"
    )


def setup_commands(layout: Plan) -> list[tuple[list[str], str | None]]:
    """The commands (argv, stdin) that wire the namespaces once they exist (see the module)."""
    hub = layout.hub
    commands: list[tuple[list[str], str | None]] = [
        (["ip", "-n", hub, "link", "add", BRIDGE, "type", "bridge"], None),
        (["ip", "-n", hub, "link", "set", BRIDGE, "up"], None),
    ]
    for i, (node, address) in enumerate(zip(layout.namespaces, layout.addresses, strict=True)):
        hub_end = f"v{i}"
        commands += [
            (["ip", "-n", hub, "link", "add", hub_end, "type", "veth",
              "peer", "name", NODE_LINK, "netns", node], None),
            (["ip", "-n", hub, "link", "set", hub_end, "master", BRIDGE], None),
            (["ip", "-n", hub, "link", "set", hub_end, "up"], None),
            (["ip", "-n", node, "link", "set", NODE_LINK, "addrgenmode", "none"], None),
            (["ip", "-n", node, "addr", "add", f"{address}/24", "dev", NODE_LINK], None),
            (["ip", "-n", node, "link", "set", NODE_LINK, "up"], None),
            (["ip", "-n", node, "link", "set", "lo", "up"], None),
        ]  # fmt: skip
        if layout.loss_percent > 0:
            ruleset = loss_ruleset(layout.loss_percent)
            commands.append((["ip", "netns", "exec", node, "nft", "-f", "-"], ruleset))
    return commands


def stale_namespaces(listing: str, alive: Callable[[int], bool]) -> list[str]:
    """The namespaces in `ip netns list`'s output that a harness made in a process now dead."""
    stale = []
    for line in listing.splitlines():
        name = line.split(" ", 1)[0].strip()
        match = _NAME.match(name)
        if match is not None and not alive(int(match["pid"])):
            stale.append(name)
    return stale


def link_bytes(ip_json: str) -> tuple[int, int]:
    """(received, sent) bytes of the link in `ip -s -j link show dev LINK`'s output."""
    try:
        stats = json.loads(ip_json)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])
    except (ValueError, LookupError, TypeError) as exc:
        raise LossyNetworkError(f"cannot read the link's byte counters: {exc!r}") from exc


def run_command(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run one command; its stdout, or a `LossyNetworkError` with its first line of stderr."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise LossyNetworkError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        raise LossyNetworkError(f"{' '.join(argv)}: {reason}")
    return done.stdout


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def lossy_obstacle() -> str | None:
    """Why a `LossyNetwork` cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return NEEDS_ROOT
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        tools = ", ".join(missing)
        return f"{NEEDS_ROOT}: {tools} missing (apt-get install iproute2 nftables)"
    return None


class LossyNetwork:
    """Network namespaces on a lossy bridge for `nodes` nodes (see the module); a `with` block."""

    counts_bytes = True

    def __init__(
        self,
        nodes: int,
        loss_percent: int = 0,
        *,
        run: Runner = run_command,
        obstacle: Callable[[], str | None] = lossy_obstacle,
    ) -> None:
        with _serial_lock:
            serial = next(_serials)
        self.plan = plan(nodes, loss_percent, pid=os.getpid(), serial=serial)
        self.binds = [f"{address}:{GOSSIP_PORT}" for address in self.plan.addresses]
        self._run = run
        self._obstacle = obstacle
        self._made: list[str] = []  # namespaces that exist, in the order they were made

    def __enter__(self) -> LossyNetwork:
        reason = self._obstacle()
        if reason is not None:
            raise LossyNetworkError(reason)
        self._remove_stale()
        try:
            for namespace in (self.plan.hub, *self.plan.namespaces):
                self._run(["ip", "netns", "add", namespace], None)
                self._made.append(namespace)
            for argv, stdin in setup_commands(self.plan):
                self._run(argv, stdin)
        except BaseException:
            self.remove()
            raise
        log.info("lossy network %s: %d nodes, %d %% loss", self.plan.hub,
                 len(self.plan.namespaces), self.plan.loss_percent)  # fmt: skip
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def argv(self, index: int, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.plan.namespaces[index], *command]

    def link_bytes(self, index: int) -> tuple[int, int] | None:
        """(received, sent) bytes on node `index`'s `eth0` so far."""
        namespace = self.plan.namespaces[index]
        return link_bytes(self._run(["ip", "-n", namespace, "-s", "-j", "link", "show", "dev",
                                     NODE_LINK], None))  # fmt: skip

    def remove(self) -> None:
        """Kill what still runs in the namespaces, then delete them (each failure logged)."""
        while self._made:
            self._delete(self._made.pop())

    def _delete(self, namespace: str, *, kill: bool = True) -> None:
        if kill:
            self._kill_inside(namespace)
        try:
            self._run(["ip", "netns", "del", namespace], None)
        except LossyNetworkError as exc:
            log.error("cannot remove network namespace %s: %s", namespace, exc)

    def _kill_inside(self, namespace: str) -> None:
        try:
            pids = [int(p) for p in self._run(["ip", "netns", "pids", namespace], None).split()]
        except (LossyNetworkError, ValueError) as exc:
            log.error("cannot list the processes in namespace %s: %s", namespace, exc)
            return
        for pid in pids:  # only ours: the namespace was made by this run
            log.warning("process %d still runs in namespace %s: SIGKILL", pid, namespace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _remove_stale(self) -> None:
        try:
            listing = self._run(["ip", "netns", "list"], None)
        except LossyNetworkError as exc:
            log.warning("cannot list network namespaces: %s", exc)
            return
        for namespace in stale_namespaces(listing, _alive):
            log.warning("removing network namespace %s of a dead run", namespace)
            self._delete(namespace, kill=False)  # what still runs there is not this run's


class Loopback:
    """`nodes` nodes on 127.0.0.1, each on a free port: no root, no loss, no byte counts."""

    counts_bytes = False

    def __init__(self, nodes: int) -> None:
        self.binds = [f"{LOOPBACK}:{free_gossip_port()}" for _ in range(nodes)]

    def __enter__(self) -> Loopback:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def argv(self, index: int, command: Sequence[str]) -> list[str]:
        return list(command)

    def link_bytes(self, index: int) -> tuple[int, int] | None:
        return None
