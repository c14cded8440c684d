"""`maxwell daemon [--state DIR] [--socket PATH] [--listen HOST:PORT] [--tick S] [--mechanism M]
[--cgroup {auto,v1,v2}] [--billing {metered,optimistic}] [--audit-probability P] [--config FILE]`:
the node daemon in the foreground.

This module reads the flags and the config, builds the node (`_make_node`, the one place that
knows `NodeDaemon`'s constructor), serves the API (`maxwell.node.api`) in a thread, and runs the
tick loop in the main thread until SIGTERM/SIGINT/SIGHUP; then it stops the API (requests in
flight finish) and closes the node. The daemon itself lives in `maxwell.node.daemon`.

`--cgroup auto` leaves cgroup detection to `NodeDaemon` (process trees when no cgroup is usable);
`v1` and `v2` are explicit: the manager is built here, with the daemon's stable private name, and
handed to the daemon, which closes it as it closes its own; a kind that cannot be honoured is an
error, and `v2` accepts whatever controllers were delegated, reporting what it cannot enforce.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, StopRequest, fail, load_config
from maxwell.errors import MaxwellError, UsageError

if TYPE_CHECKING:
    from maxwell.node.facade import Node

PROG = "maxwell daemon"
DEFAULT_STATE_DIR = "/var/lib/maxwell"
SOCKET_NAME = "maxwell.sock"  # the API's default socket, in the state directory
DEFAULT_TICK_S = 1.0
DEFAULT_MECHANISM = "uniform"
DEFAULT_CGROUP = "auto"
CGROUP_KINDS = ("auto", "v1", "v2")  # as `CgroupManager.detect(kind=...)` takes them
BILLING_MODES = ("metered", "optimistic")  # as `NodeDaemon(billing=...)` takes them
DEFAULT_BILLING = "metered"
DEFAULT_AUDIT_PROBABILITY = 0.001
# sun_path is 108 bytes on Linux, NUL included.
MAX_SOCKET_PATH = 107

DESCRIPTION = """\
Run the node daemon in the foreground: agents as real processes in their own cgroups, metered,
billed through the ledger every tick, the market cleared and the allocation enforced.

The API (HTTP + JSON, OpenAPI at /openapi.json, Prometheus text at /metrics) listens on a Unix
socket, mode 0660 (default <state>/maxwell.sock), and with --listen also on loopback TCP (never on
another address: tokens travel in the clear). The admin token is <state>/admin.token (mode 0600,
made on first start); the `maxwell` client commands read it with --state DIR.
"""

EPILOG = """\
cgroups: --cgroup auto (the default) uses the v1 controllers where cpu and memory are mounted
there, else cgroup v2 with cpu and memory delegated, else process trees without limits. v1 insists
on the v1 controllers. v2 uses the unified hierarchy alone, even on a hybrid host, with whatever
controllers the parent delegated: without cpu no CPU quota is enforced (CPU time is still
metered), without memory no memory limit nor memory metering; the daemon says so on start.

billing: metered (the default) bills every agent by the meter. optimistic bills an agent that
reports its own consumption (SDK `report`, `maxwell report`) by its reports once it has posted a
bond sized by Becker's condition for the audit probability; each tick each such agent is audited
with that probability (default 0.001): its claims against the kernel's counters. A liar loses its
bond and pays back what its reports under-billed. `maxwell audit AGENT` forces an audit.

config (TOML): a [daemon] table may set state, socket, listen, tick_s, mechanism, cgroup, billing,
audit_probability (flags win), grace_s (frozen-while-insolvent grace before apoptosis),
landauer_multiplier, capacity_cores, derate_below_c and min_capacity_fraction (a node with less
headroom than derate_below_c sells linearly fewer cores, down to min_capacity_fraction of them at
the thermal limit; 10 and 0.25);
a [model] table sets the power model's parameters (as for `maxwell run`).

exit status: 0 stopped by SIGTERM, SIGINT or SIGHUP; 2 usage error; 125 the daemon failed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--state", metavar="DIR", help=f"state directory ({DEFAULT_STATE_DIR})")
    parser.add_argument("--socket", metavar="PATH", help=f"Unix socket (<state>/{SOCKET_NAME})")
    parser.add_argument("--listen", metavar="HOST:PORT", help="also listen on loopback TCP")
    parser.add_argument("--tick", type=float, metavar="S", help=f"tick ({DEFAULT_TICK_S} s)")
    parser.add_argument("--mechanism", metavar="M", help=f"market mechanism ({DEFAULT_MECHANISM})")
    parser.add_argument(
        "--cgroup", choices=CGROUP_KINDS, help=f"cgroup hierarchies to use ({DEFAULT_CGROUP})"
    )
    parser.add_argument(
        "--billing", choices=BILLING_MODES, help=f"by the meter or by reports ({DEFAULT_BILLING})"
    )
    parser.add_argument(
        "--audit-probability", type=float, metavar="P",
        help=f"chance per agent per tick of an audit ({DEFAULT_AUDIT_PROBABILITY})",
    )  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="TOML configuration")


@dataclass(frozen=True)
class DaemonOptions:
    state_dir: Path
    socket_path: str
    listen: str | None
    tick_s: float
    mechanism: str
    config: Mapping[str, object]
    cgroup: str = DEFAULT_CGROUP
    billing: str = DEFAULT_BILLING
    audit_probability: float = DEFAULT_AUDIT_PROBABILITY


def _section(config: Mapping[str, object]) -> Mapping[str, object]:
    section = config.get("daemon", {})
    if not isinstance(section, dict):
        raise UsageError("config: [daemon] must be a table")
    known = {
        "state",
        "socket",
        "listen",
        "tick_s",
        "mechanism",
        "cgroup",
        "billing",
        "audit_probability",
        "grace_s",
        "landauer_multiplier",
        "capacity_cores",
        "derate_below_c",
        "min_capacity_fraction",
    }
    unknown = sorted(set(section) - known)
    if unknown:
        raise UsageError(f"config: unknown key [daemon] {unknown[0]}")
    return section


def _text(flag: str | None, section: Mapping[str, object], key: str) -> str | None:
    if flag is not None:
        return flag
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"config: [daemon] {key} must be a string")
    return value


def options_from(args: argparse.Namespace) -> DaemonOptions:
    """The flags and the config file, checked; a `UsageError` names the first bad one."""
    from maxwell.economy.mechanisms import MECHANISM_NAMES
    from maxwell.node.api import parse_listen

    config = load_config(args.config)
    section = _section(config)
    state_dir = Path(_text(args.state, section, "state") or DEFAULT_STATE_DIR)
    socket_path = _text(args.socket, section, "socket") or str(state_dir / SOCKET_NAME)
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise UsageError(f"--socket {socket_path}: longer than {MAX_SOCKET_PATH} bytes")
    listen = _text(args.listen, section, "listen")
    if listen is not None:
        parse_listen(listen)
    tick: object = args.tick if args.tick is not None else section.get("tick_s", DEFAULT_TICK_S)
    if isinstance(tick, bool) or not isinstance(tick, int | float):
        raise UsageError("config: [daemon] tick_s must be a number")
    if not math.isfinite(tick) or tick <= 0:
        raise UsageError(f"--tick must be a positive number of seconds, got {tick}")
    mechanism = _text(args.mechanism, section, "mechanism") or DEFAULT_MECHANISM
    if mechanism not in MECHANISM_NAMES:
        known = ", ".join(MECHANISM_NAMES)
        raise UsageError(f"--mechanism {mechanism!r}: unknown, use one of {known}")
    cgroup = _text(args.cgroup, section, "cgroup") or DEFAULT_CGROUP
    if cgroup not in CGROUP_KINDS:
        raise UsageError(f"--cgroup {cgroup!r}: unknown, use one of {', '.join(CGROUP_KINDS)}")
    billing = _text(args.billing, section, "billing") or DEFAULT_BILLING
    if billing not in BILLING_MODES:
        raise UsageError(f"--billing {billing!r}: unknown, use one of {', '.join(BILLING_MODES)}")
    probability: object = (
        args.audit_probability
        if args.audit_probability is not None
        else section.get("audit_probability", DEFAULT_AUDIT_PROBABILITY)
    )
    if isinstance(probability, bool) or not isinstance(probability, int | float):
        raise UsageError("config: [daemon] audit_probability must be a number")
    if not (math.isfinite(probability) and 0 <= probability <= 1):
        raise UsageError(f"--audit-probability must be between 0 and 1, got {probability}")
    return DaemonOptions(
        state_dir, socket_path, listen, float(tick), mechanism, config, cgroup, billing,
        float(probability),
    )  # fmt: skip


class DaemonNode(Protocol):
    """What the command needs of the daemon beyond the `Node` facade the API serves."""

    def run_forever(self, stop: threading.Event) -> None: ...  # tick until `stop` is set

    def shutdown(self) -> None: ...  # stop; the agents keep running, to be re-adopted


def _number(section: Mapping[str, object], key: str) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"config: [daemon] {key} must be a finite number")
    if value < 0:
        raise UsageError(f"config: [daemon] {key} must be 0 or more, got {value}")
    return float(value)


def _make_node(options: DaemonOptions) -> tuple[Node, DaemonNode]:
    """Build the daemon: the one place that knows `NodeDaemon`'s constructor.

    Returns the same object twice, typed as the API's `Node` and as the loop's `DaemonNode`.
    What the daemon cannot enforce (`degraded`) is reported on stderr.
    """
    from maxwell.cgroups import CgroupManager
    from maxwell.node.daemon import PRIVATE_PREFIX, NodeDaemon, private_name
    from maxwell.sensors import ModelConfig

    section = _section(options.config)
    model_section = options.config.get("model", {})
    if not isinstance(model_section, dict):
        raise UsageError("config: [model] must be a table")
    extra: dict[str, Any] = {}
    for key in (
        "grace_s",
        "landauer_multiplier",
        "capacity_cores",
        "derate_below_c",
        "min_capacity_fraction",
    ):
        value = _number(section, key)
        if value is not None:
            extra[key] = value
    cgroups: CgroupManager | None = None
    if options.cgroup != "auto":
        # As NodeDaemon detects its own (same prefix, same stable name, so a restarted daemon
        # finds its agents), but with the kind asked for; a v2 parent's partial delegation is
        # accepted and reported. The daemon closes it as it closes its own (`shutdown`).
        cgroups = CgroupManager.detect(
            prefix=PRIVATE_PREFIX,
            private_name=private_name(options.state_dir),
            kind=options.cgroup,
            require_controllers=False,
        )
    try:
        daemon = NodeDaemon(
            options.state_dir,
            tick_s=options.tick_s,
            mechanism=options.mechanism,
            socket_path=options.socket_path,  # what agents get as MAXWELL_SOCKET
            model_config=ModelConfig.from_mapping(model_section) if model_section else None,
            cgroups=cgroups,
            billing=options.billing,
            audit_probability=options.audit_probability,
            **extra,
        )
    except BaseException as exc:
        if cgroups is not None:
            # Removes what it made; a tree holding re-adoptable agents is left (rmdir refuses).
            cgroups.close(failure=exc)
        raise
    if daemon.degraded:
        print(f"{PROG}: degraded: {daemon.degraded}", file=sys.stderr, flush=True)
    return daemon, daemon


def _metrics(node: Node) -> bytes:
    from maxwell.node.metrics import render_metrics

    return render_metrics(node.status())


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
    from maxwell.node.api import create_app, serve

    with StopRequest() as stop:
        try:
            node, daemon = _make_node(options)
        except UsageError as exc:
            return fail(PROG, str(exc), EXIT_USAGE)
        except MaxwellError as exc:
            return fail(PROG, str(exc), EXIT_FAILURE)
        try:
            app = create_app(node, metrics=lambda: _metrics(node))
            server = serve(app, socket_path=options.socket_path, listen=options.listen)
        except UsageError as exc:
            daemon.shutdown()
            return fail(PROG, str(exc), EXIT_USAGE)
        except BaseException:
            daemon.shutdown()
            raise
        try:
            run_until_stopped(daemon, stop)
        except MaxwellError as exc:
            return fail(PROG, f"the tick failed: {exc}", EXIT_FAILURE)
        finally:
            server.stop()  # requests in flight finish before the node closes
            daemon.shutdown()
    return 0
