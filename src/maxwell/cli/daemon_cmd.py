"""`maxwell daemon [--state DIR] [--socket PATH] [--listen HOST:PORT] [--tick S] [--mechanism M]
[--cgroup {auto,v1,v2}] [--billing {metered,optimistic}] [--erasure {none,soft-dirty}]
[--audit-probability P] [--kill-agents] [--config FILE]`:
the node daemon in the foreground.

This module reads the flags and the config, builds the node (`_make_node`, the one place that
knows `NodeDaemon`'s constructor), serves the API (`maxwell.node.api`) in a thread, and runs the
tick loop in the main thread until SIGTERM/SIGINT/SIGHUP; then it stops the API (requests in
flight finish) and closes the node. The daemon itself lives in `maxwell.node.daemon`.

It says what it does on stderr, whatever the log level: once serving, where it listens and its
state directory (`_say_started`); once stopped, how many agents it left running and how to
re-adopt them, or with `--kill-agents` how many it ended (`_say_stopped`).

`--cgroup auto` leaves cgroup detection to `NodeDaemon` (process trees when no cgroup is usable);
`v1` and `v2` are explicit: the manager is built here, with the daemon's stable private name, and
handed to the daemon, which closes it as it closes its own; a kind that cannot be honoured is an
error, and `v2` accepts whatever controllers were delegated, reporting what it cannot enforce.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, StopRequest, fail, load_config
from maxwell.errors import MaxwellError, UsageError
from maxwell.log import FORMATS as LOG_FORMATS
from maxwell.log import LEVELS as LOG_LEVELS
from maxwell.node.config import (
    BILLING_MODES,
    CGROUP_KINDS,
    DEFAULT_AUDIT_PROBABILITY,
    ERASURE_METERS,
    NodeConfig,
)
from maxwell.node.paths import DEFAULT_STATE_DIR, SOCKET_ENV, SOCKET_NAME, STATE_ENV

if TYPE_CHECKING:
    from maxwell.gossip.node import GossipNode
    from maxwell.gossip.view import ClusterView
    from maxwell.node.api import ApiServer
    from maxwell.node.facade import Node
    from maxwell.node.transfers import NodeTransfers

PROG = "maxwell daemon"
_DEFAULTS = NodeConfig()

DESCRIPTION = """\
Run the node daemon in the foreground: agents as real processes in their own cgroups, metered,
billed through the ledger every tick, the market cleared and the allocation enforced.

The API (HTTP + JSON, OpenAPI at /openapi.json, Prometheus text at /metrics) listens on a Unix
socket, mode 0666 (default <state>/maxwell.sock), and with --listen also on loopback TCP (never on
another address: tokens travel in the clear). On the socket the kernel says who connected: root,
the daemon's user and members of the `maxwell` group are the admin without a token; anyone else
needs one. The admin token is <state>/admin.token (mode 0600, made on first start); the `maxwell`
client commands read it with --state DIR where they may.
"""

EPILOG = """\
cgroups: --cgroup auto (the default) uses the v1 controllers where cpu and memory are mounted
there, else cgroup v2 with cpu and memory delegated, else process trees without limits. v1 insists
on the v1 controllers. v2 uses the unified hierarchy alone, even on a hybrid host, with whatever
controllers the parent delegated: without cpu no CPU quota is enforced (CPU time is still
metered), without memory no memory limit nor memory metering; the daemon says so on start.
none runs process trees without limits (no root needed).

billing: metered (the default) bills every agent by the meter. optimistic bills an agent that
reports its own consumption (SDK `report`, `maxwell report`) by its reports once it has posted a
bond sized by Becker's condition for the audit probability; each tick each such agent is audited
with that probability (default 0.001): its claims against the kernel's counters. A liar loses its
bond and pays back what its reports under-billed. `maxwell audit AGENT` forces an audit.

erasure: none (the default) taxes the bits of the memory an agent's cgroup frees. soft-dirty also
taxes the pages its processes re-write, each counted as page size x 8 bits erased, read every tick
from the kernel's soft-dirty bits (/proc/PID/clear_refs and /proc/PID/pagemap) for each agent
that ran; the daemon refuses to start (exit status 2) on a kernel without them.

agents' users: no agent runs as root. A daemon running as root gives each agent spawned without
--user a uid of its own from --dynamic-uids (70000-99999; no name, no groups, as systemd's
DynamicUser=), so two agents never share a uid, cannot read each other's files or environment,
and cannot leave their cgroups; it owns only its work directory and token. The command must be
one that any user may run. Two daemons on one machine need ranges that do not overlap. With
--dynamic-uids none such agents run as the daemon's user (for a root daemon: root, with a
warning). A daemon not running as root runs every agent as itself.

one daemon per state directory: the daemon locks <state>/daemon.lock before it touches anything;
a second daemon on the same directory is refused (exit status 2) and changes nothing.

settlement: each tick accrues every agent's bill in memory and decides apoptosis on the accrued
balance; the ledger takes an agent's bills at most every --settlement seconds (1), at once on an
event (funding, a bid, a kill, apoptosis, an exit, an audit, a bounty, shutdown), and never for an
agent that used nothing. After a crash the unsettled interval is billed once from the counters.

heat gossip: with --gossip HOST:PORT (and --cluster-key, --node-key, --authority; --join to
join members) the daemon runs its own serf agent there and tells the cluster its heat and price in
records signed by its key (the authority's certificate at <node-key>.cert names the node); it
believes only records signed by keys the authority certified, and couples its own price to its
neighbours' heat: hotter neighbours make it cheaper (maxwell price shows the factor). --serf-rpc
HOST:PORT attaches to a serf agent run by someone else ($SERF_RPC_AUTH: its RPC token). maxwell
cluster members | price show what the node believes; a [gossip] table may set the same keys
(bind, join, cluster_key, node_key, authority, serf_rpc, refresh_s, distress_below_c). Without
serf installed, --gossip fails with exit status 2 (docs/gossip.md).

logs: on stderr, as text or (--log-format json) one JSON object per line; failures carry their
traceback.

config (TOML): a [daemon] table may set state, socket, listen, tick_s, mechanism, cgroup, billing,
erasure, dynamic_uids, audit_probability, log_level, log_format (flags win), grace_s
(frozen-while-insolvent grace before apoptosis), landauer_multiplier, capacity_cores,
derate_below_c and min_capacity_fraction (a node with less headroom than derate_below_c sells
linearly fewer cores, down to min_capacity_fraction of them at the thermal limit; 10 and 0.25),
pids_max and
memory_max (each agent's limits unless its spawn sets them: 256 processes, 4294967296 bytes),
memory_interval_s (1), settlement_s (1), report_lease_s (3: under optimistic billing, a bonded
agent that has not reported for this long is billed by the meter, and audited against the counters
of the moment), retention_s (86400: an agent that ended is reclaimed this long after, its
ledger history kept), proof_key_max_age_s (3600: an agent's secret verifier key is replaced at
least this often, and after every rejected proof), proof_rejection_fee ($J a rejected proof
costs its agent; unset: the job's bounty), grid_poll_s and grid_timeout_s (an http grid
feed's polling: 60 and 5);
a [model] table sets the power model's parameters (as for `maxwell run`).

start and stop: once serving, the daemon says on stderr where it listens and its state
directory. Stopped (SIGTERM, SIGINT, SIGHUP), it leaves its agents running in their groups and
says how many; `maxwell daemon` started again with the same --state re-adopts them and bills the
time it was down. With --kill-agents it kills them instead (a `killed` event each, their last
interval billed) and says how many it ended.

exit status: 0 stopped by SIGTERM, SIGINT or SIGHUP; 2 usage error; 125 the daemon failed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--state", metavar="DIR", help=f"state directory (${STATE_ENV}, else {DEFAULT_STATE_DIR})"
    )
    parser.add_argument(
        "--socket", metavar="PATH",
        help=f"Unix socket (<state>/{SOCKET_NAME}; without --state, ${SOCKET_ENV} if set)",
    )  # fmt: skip
    parser.add_argument("--listen", metavar="HOST:PORT", help="also listen on loopback TCP")
    parser.add_argument("--tick", type=float, metavar="S", help=f"tick ({_DEFAULTS.tick_s:g} s)")
    parser.add_argument(
        "--mechanism", metavar="M", help=f"market mechanism ({_DEFAULTS.mechanism})"
    )
    parser.add_argument(
        "--cgroup", choices=CGROUP_KINDS, help=f"cgroup hierarchies to use ({_DEFAULTS.cgroup})"
    )
    parser.add_argument(
        "--billing", choices=BILLING_MODES, help=f"by the meter or by reports ({_DEFAULTS.billing})"
    )
    parser.add_argument(
        "--erasure", choices=ERASURE_METERS,
        help="also tax the pages agents re-write, from the kernel's soft-dirty bits "
        f"({_DEFAULTS.erasure}; soft-dirty needs a kernel built with CONFIG_MEM_SOFT_DIRTY)",
    )  # fmt: skip
    parser.add_argument(
        "--dynamic-uids", metavar="FIRST-LAST",
        help="run as root, the daemon gives each agent that names no --user a uid of its own "
        f"from this range ({_DEFAULTS.dynamic_uids}; none: agents run as the daemon's user)",
    )  # fmt: skip
    parser.add_argument(
        "--audit-probability", type=float, metavar="P",
        help=f"chance per agent per tick of an audit ({DEFAULT_AUDIT_PROBABILITY})",
    )  # fmt: skip
    parser.add_argument(
        "--settlement", type=float, metavar="S",
        help=f"the ledger takes each agent's accrued bills at most every S s "
        f"({_DEFAULTS.settlement_s:g}; 0: every tick)",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS,
        help=f"least severe log record shown ({_DEFAULTS.log_level})",
    )  # fmt: skip
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS,
        help=f"text, or one JSON object per line for journald and Loki ({_DEFAULTS.log_format})",
    )  # fmt: skip
    parser.add_argument(
        "--grid", metavar="SPEC",
        help="the grid price, $J per J: a number, HH:MM=PRICE,... (daily, UTC), a CSV file "
        "of time,price, or an http(s) URL of a JSON feed, #FIELD naming the number (price), "
        "polled every grid_poll_s (60) with a timeout of grid_timeout_s (5), the last good "
        "value kept (1.0)",
    )  # fmt: skip
    parser.add_argument("--kill-agents", action="store_true", help="on stop, kill the agents")
    _add_gossip_arguments(parser)
    parser.add_argument("--config", metavar="FILE", help="TOML configuration")


def _add_gossip_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("heat gossip (over Serf; see docs/gossip.md)")
    group.add_argument(
        "--gossip", metavar="HOST:PORT", help="start the node's own serf agent gossiping there"
    )
    group.add_argument(
        "--join", metavar="HOST:PORT", action="append", help="a member to join through (repeat)"
    )
    group.add_argument(
        "--cluster-key", metavar="FILE", help="Serf's encryption key, as `serf keygen` prints it"
    )
    group.add_argument(
        "--node-key", metavar="FILE", help="the node's ed25519 key (its certificate: FILE.cert)"
    )
    group.add_argument("--authority", metavar="FILE.pub", help="the cluster authority's public key")
    group.add_argument(
        "--serf-rpc", metavar="HOST:PORT",
        help="attach to a serf agent run by someone else (its RPC token in $SERF_RPC_AUTH)",
    )  # fmt: skip


def options_from(args: argparse.Namespace) -> NodeConfig:
    """The flags over the config file, checked; a `UsageError` names the first bad setting."""
    from maxwell.node.config import NodeConfig

    flags = {
        "state": args.state or os.environ.get(STATE_ENV) or None,
        # $MAXWELL_SOCKET only where no --state names the directory (and its socket with it)
        "socket": args.socket or (None if args.state else os.environ.get(SOCKET_ENV) or None),
        "listen": args.listen,
        "tick_s": args.tick,
        "mechanism": args.mechanism,
        "cgroup": args.cgroup,
        "billing": args.billing,
        "erasure": args.erasure,
        "dynamic_uids": args.dynamic_uids,
        "audit_probability": args.audit_probability,
        "settlement_s": args.settlement,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "grid": args.grid,
    }
    gossip = {
        "bind": args.gossip,
        "join": args.join,
        "cluster_key": args.cluster_key,
        "node_key": args.node_key,
        "authority": args.authority,
        "serf_rpc": args.serf_rpc,
    }
    config = NodeConfig.from_sources(flags, load_config(args.config), gossip)
    return dataclasses.replace(config, socket_path=config.socket)


class DaemonNode(Protocol):
    """What the command needs of the daemon beyond the `Node` facade the API serves."""

    def run_forever(self, stop: threading.Event) -> None: ...  # tick until `stop` is set

    def shutdown(self, *, kill_agents: bool = False) -> None: ...  # stop; the agents keep

    # running, to be re-adopted (`kill_agents`: they are killed)


def _make_node(
    config: NodeConfig, neighbours: Callable[[], Sequence[float]] | None = None
) -> tuple[Node, DaemonNode]:
    """Build the daemon: returns the same object twice, typed as the API's `Node` and as the
    loop's `DaemonNode`. What the daemon cannot enforce (`degraded`) is reported on stderr."""
    from maxwell.node.daemon import NodeDaemon

    daemon = NodeDaemon(config, neighbours=neighbours)
    if daemon.degraded:
        print(f"{PROG}: degraded: {daemon.degraded}", file=sys.stderr, flush=True)
    return daemon, daemon


def _metrics(node: Node, view: ClusterView | None) -> bytes:
    from maxwell.node.metrics import render_metrics

    page = render_metrics(node.status())
    if view is not None:
        from maxwell.gossip.metrics import render_cluster_metrics

        page += render_cluster_metrics(view)
    return page


class _Gossip:
    """Heat gossip beside the daemon, when asked for: checked before the daemon starts (`prepare`),
    started once it runs (`start`), closed before it stops."""

    def __init__(self, options: NodeConfig) -> None:
        from maxwell.gossip.node import prepare

        self.config = options.gossip
        self.view: ClusterView | None = None
        self._node: GossipNode | None = None
        if self.config is not None:
            self._identity, self.view = prepare(self.config)

    @property
    def neighbours(self) -> Callable[[], list[float]] | None:
        return self.view.neighbours_headroom if self.view is not None else None

    def transfers(self, node: Node) -> NodeTransfers | None:
        """The node's side of money across nodes: with a cluster identity, on a real daemon."""
        from maxwell.gossip.keys import load_public
        from maxwell.gossip.trust import Admission
        from maxwell.node.daemon import NodeDaemon
        from maxwell.node.transfers import NodeTransfers  # at run time too

        if self.config is None or not isinstance(node, NodeDaemon):
            return None
        assert self.config.authority is not None
        admission = Admission(authority=load_public(self.config.authority))
        return NodeTransfers(self._identity, admission, node.ledger(), node.changing, time.time)

    def start(self, node: Node) -> None:
        if self.config is None or self.view is None:
            return
        from maxwell.gossip.node import GossipNode

        self._node = GossipNode.start(
            self.config, identity=self._identity, view=self.view, source=node.status
        )

    def close(self) -> None:
        if self._node is not None:
            self._node.close()


def run_until_stopped(daemon: DaemonNode, stop: StopRequest) -> None:
    """Tick in a thread of its own until a signal arrives (or the ticking thread dies)."""
    stopping = threading.Event()
    failure: list[BaseException] = []

    def tick() -> None:
        try:
            daemon.run_forever(stopping)
        except BaseException as exc:  # re-raised in the main thread below
            failure.append(exc)

    ticker = threading.Thread(target=tick, name="maxwell-tick", daemon=True)
    ticker.start()
    while stop.signum is None and ticker.is_alive():
        select.select([stop.fileno()], [], [], 1.0)
    stopping.set()
    ticker.join()
    if failure:
        raise failure[0]


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from(args)
    except UsageError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    try:
        options.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return fail(PROG, f"--state {options.state_dir}: {exc.strerror}", EXIT_USAGE)
    from maxwell import log
    from maxwell.gossip.agent import SerfMissingError
    from maxwell.gossip.keys import KeyFileError
    from maxwell.node.paths import StateDirUnsafeError, StateLockError
    from maxwell.node.supervisor import protect_daemon

    log.configure(options.log_level, options.log_format)
    try:
        gossip = _Gossip(options)  # the key files and serf, before anything is touched
    except (UsageError, KeyFileError, SerfMissingError) as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    with StopRequest() as stop:
        try:
            node, daemon = _make_node(options, gossip.neighbours)
        except (UsageError, StateLockError, StateDirUnsafeError) as exc:  # nothing touched
            return fail(PROG, str(exc), EXIT_USAGE)
        except MaxwellError as exc:
            return fail(PROG, str(exc), EXIT_FAILURE)
        protect_daemon()  # started: from now on the OOM killer takes agents first
        return _serve(options, node, daemon, gossip, stop, kill_agents=args.kill_agents)


def _live(node: Node) -> int:
    """How many of the node's agents run (the published answers: no lock)."""
    from maxwell.node.facade import AgentState

    live = (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN)
    return sum(1 for agent in node.agents() if agent.state in live)


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _say_started(options: NodeConfig, server: ApiServer, node: Node) -> None:
    """Where the daemon listens, its state directory, and the agents it re-adopted."""
    where = options.socket
    if server.tcp_address is not None:
        where += f" and http://{server.tcp_address.host}:{server.tcp_address.port}"
    _say(f"listening on {where} (pid {os.getpid()})")
    live = _live(node)
    adopted = f"; {live} agent{'s' * (live != 1)} re-adopted" if live else ""
    _say(f"state {options.state_dir}{adopted}")


def _say_stopped(
    options: NodeConfig, stop: StopRequest, running: int, node: Node, kill_agents: bool
) -> None:
    """Why it stopped, and what became of the agents: killed, or left to re-adopt."""
    why = f" on {signal.Signals(stop.signum).name}" if stop.signum is not None else ""
    if kill_agents:
        _say(f"stopped{why}; killed {running} agent{'s' * (running != 1)} (--kill-agents)")
        return
    left = _live(node)
    if not left:
        _say(f"stopped{why}; no agent left running")
        return
    them = "them" if left != 1 else "it"
    _say(
        f"stopped{why}; {left} agent{'s' * (left != 1)} left running: 'maxwell daemon --state "
        f"{options.state_dir}' re-adopts {them} (--kill-agents ends {them} on stop)"
    )


def _serve(
    options: NodeConfig,
    node: Node,
    daemon: DaemonNode,
    gossip: _Gossip,
    stop: StopRequest,
    *,
    kill_agents: bool = False,
) -> int:
    """Start the gossip and the API, tick until stopped; then stop them all, the node last."""
    from maxwell.node.api import create_app, serve

    try:
        gossip.start(node)
        app = create_app(
            node, metrics=lambda: _metrics(node, gossip.view), cluster=gossip.view,
            transfers=gossip.transfers(node),
        )  # fmt: skip
        server = serve(app, socket_path=options.socket, listen=options.listen)
        _say_started(options, server, node)
    except UsageError as exc:
        gossip.close()
        daemon.shutdown()
        return fail(PROG, str(exc), EXIT_USAGE)
    except MaxwellError as exc:
        gossip.close()
        daemon.shutdown()
        return fail(PROG, f"gossip: {exc}", EXIT_FAILURE)
    except BaseException:
        gossip.close()
        daemon.shutdown()
        raise
    try:
        run_until_stopped(daemon, stop)
    except MaxwellError as exc:
        return fail(PROG, f"the tick failed: {exc}", EXIT_FAILURE)
    finally:
        server.stop()  # requests in flight finish before the node closes
        gossip.close()  # the cluster hears this node leave
        running = _live(node)
        if kill_agents:
            daemon.shutdown(kill_agents=True)
        else:
            daemon.shutdown()
        _say_stopped(options, stop, running, node, kill_agents)
    return 0
