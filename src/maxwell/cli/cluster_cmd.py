"""`maxwell cluster keygen|sign-node|members|price|demo|ledger|up|down`: a gossip cluster's keys,
what the local node believes of its cluster, the money between its nodes (`cluster_ledger_cmd`)
and this node in Ray (`cluster_ray_cmd`).

`keygen --out PATH` writes an ed25519 private key at PATH (0600) and its public key at PATH.pub:
a node's key, or the cluster authority's. `sign-node --authority PATH --node PATH [--name NODE]`
writes the authority's certificate for the node key at PATH.cert, where the daemon finds it; a
daemon started with `--authority FILE.pub` believes the heat records of nodes so certified.
`members` and `price` ask the local daemon (`/cluster/members`, `/cluster/price`), as the other
client commands do.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from maxwell.cli import cluster_ledger_cmd, cluster_ray_cmd
from maxwell.cli.agents_cmd import add_client_arguments
from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, StopRequest, fail, print_json
from maxwell.client import Client
from maxwell.errors import MaxwellError, UsageError
from maxwell.gossip.agent import SerfMissingError
from maxwell.gossip.keys import KeyFileError, certificate_path, generate, public_path, sign_node
from maxwell.gossip.trust import raw_public
from maxwell.node.wire import to_json

EPILOG = """\
demo: exit status 0 when the distress reached every node and the prices moved as the rule says,
1 when not; 2 serf is missing.
keygen, sign-node: exit status 0 written; 2 a key file that cannot be written or used (the
message says why). members, price: as the other client commands (maxwell price --help); a node
without gossip refuses them (exit status 1).
ledger verify: exit status 0 every ledger sound and the money between the nodes conserved; 1 not;
2 a state directory without a ledger.
up, down: exit status 0 done; 1 Ray refused; 2 usage (no --state, no gossip, no Ray); 125 the
daemon cannot be reached.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "A gossip cluster's keys (node keys and their certificates), and what the local node "
        "believes of its cluster (members, prices)."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    actions = parser.add_subparsers(dest="cluster_action", metavar="ACTION", required=True)
    keygen = actions.add_parser("keygen", help="write a new ed25519 key and its .pub")
    keygen.add_argument("--out", required=True, metavar="PATH", help="the private key (0600)")
    sign = actions.add_parser("sign-node", help="certify a node's key with the authority's")
    sign.add_argument("--authority", required=True, metavar="PATH", help="the authority's key")
    sign.add_argument("--node", required=True, metavar="PATH", help="the node's key")
    sign.add_argument(
        "--name", metavar="NODE", help="the node's id, its Serf name (default: the host name)"
    )
    for sub in (keygen, sign):
        sub.add_argument("--json", action="store_true", help="print JSON")
    members = actions.add_parser("members", help="the members the node knows, verified or not")
    price = actions.add_parser("price", help="every verified node's price, and the cheapest")
    for sub in (members, price):
        add_client_arguments(sub)
    demo = actions.add_parser(
        "demo", help="N daemons gossiping over real serf on loopback, one driven hot"
    )
    demo.add_argument("--nodes", type=int, default=5, metavar="N", help="2 to 20 (5)")
    demo.add_argument("--json", action="store_true", help="one JSON object at the end")
    cluster_ledger_cmd.add_arguments(actions)
    cluster_ray_cmd.add_arguments(actions)


def _keygen(args: argparse.Namespace) -> dict[str, object]:
    path = Path(args.out)
    key = generate(path)
    return {"key": str(path), "public": str(public_path(path)),
            "public_hex": raw_public(key.public_key()).hex()}  # fmt: skip


def _sign_node(args: argparse.Namespace) -> dict[str, object]:
    node_key = Path(args.node)
    name = args.name or socket.gethostname()
    certificate = sign_node(Path(args.authority), node_key, name)
    return {"node": certificate.node, "certificate": str(certificate_path(node_key)),
            "public_hex": certificate.public_key.hex()}  # fmt: skip


def _members(client: Client, as_json: bool) -> None:
    found = client.cluster_members()
    if as_json:
        print_json(to_json(found))
        return
    table = Table(box=None, header_style="bold")
    for heading in ("NODE", "ADDRESS", "STATUS", "VERIFIED", "TEMP °C", "SOURCE", "HEADROOM °C",
                    "PRICE $J/J", "FREE CORES", "AGE S"):  # fmt: skip
        table.add_column(heading, no_wrap=heading in ("NODE", "ADDRESS"))
    for m in found.members:
        source = "-" if m.measured is None else "sensor" if m.measured else "model"
        table.add_row(
            m.node, m.address, m.status, "yes" if m.verified else "no",
            _figure(m.temperature_c, ".1f"), source, _figure(m.headroom_c, ".1f"),
            _figure(m.price, ".6g"), _figure(m.free_cores, ".2f"), _figure(m.age_s, ".1f"),
        )  # fmt: skip
    _console().print(table)


def _prices(client: Client, as_json: bool) -> None:
    found = client.cluster_prices()
    if as_json:
        print_json(to_json(found))
        return
    table = Table(box=None, header_style="bold")
    for heading in ("NODE", "PRICE $J/J", "FREE CORES"):
        table.add_column(heading, no_wrap=heading == "NODE")
    for node in found.nodes:
        table.add_row(node.node, f"{node.price:.6g}", f"{node.free_cores:.2f}")
    _console().print(table)
    print(f"cheapest with room: {found.cheapest or 'none'}")


def _console() -> Console:
    """A terminal's width; piped, wide enough that no row wraps (scripts use --json)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _demo(args: argparse.Namespace) -> int:
    from maxwell.gossip.demo import run_demo

    prog = "maxwell cluster demo"
    if not 2 <= args.nodes <= 20:
        return fail(prog, f"--nodes must be 2 to 20, got {args.nodes}", EXIT_USAGE)
    with StopRequest() as stop:
        try:
            summary = run_demo(
                args.nodes, say=lambda line: print(line, file=sys.stderr, flush=True),
                stopped=lambda: stop.signum is not None,
            )  # fmt: skip
        except (UsageError, KeyFileError, SerfMissingError) as exc:
            return fail(prog, str(exc), EXIT_USAGE)
        except MaxwellError as exc:
            return fail(prog, str(exc), EXIT_FAILURE)
    if args.json:
        print_json(summary)
    else:
        _print_demo(summary)
    if stop.signum is not None:
        return 128 + stop.signum
    return 0 if summary["ok"] else 1


def _print_demo(summary: dict[str, Any]) -> None:
    table = Table(box=None, header_style="bold")
    for heading in ("NODE", "PRICE BEFORE", "PRICE AFTER", "COUPLING"):
        table.add_column(heading, no_wrap=heading == "NODE")
    before, after = summary["prices"]["before"], summary["prices"]["after"]
    for node in before:
        hot = " (hot)" if node == summary["hot_node"] else ""
        table.add_row(node + hot, f"{before[node]:.4g}", f"{after[node]:.4g}",
                      f"{summary['couplings'][node]:.3f}")  # fmt: skip
    _console().print(table)
    delays = summary["distress_seconds"]
    print(f"distress reached every node: {'yes' if summary['distress_reached'] else 'no'}"
          f" (median {delays['median']}, max {delays['max']} s)")  # fmt: skip
    print(f"cheapest with room afterwards: {summary['cheapest_after']}; "
          f"records refused: {summary['rejected']}; ok: {summary['ok']}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    action = args.cluster_action
    if action == "demo":
        return _demo(args)
    if action == "ledger":
        return cluster_ledger_cmd.run(args)
    if action in ("up", "down"):
        return cluster_ray_cmd.run(args)
    if action in ("members", "price"):
        from maxwell.cli.agents_cmd import run_with_client

        show = _members if action == "members" else _prices
        return run_with_client(
            f"maxwell cluster {action}", args, lambda client: show(client, args.json)
        )
    try:
        said = _keygen(args) if action == "keygen" else _sign_node(args)
    except KeyFileError as exc:
        return fail(f"maxwell cluster {action}", str(exc), EXIT_USAGE)
    if args.json:
        print_json(said)
    else:
        print("\n".join(f"{name}: {value}" for name, value in said.items()))
    return 0
