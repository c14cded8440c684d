"""`maxwell cluster keygen|sign-node`: the keys a cluster's trust rests on (`maxwell.gossip.keys`).

`keygen --out PATH` writes an ed25519 private key at PATH (0600) and its public key at PATH.pub:
a node's key, or the cluster authority's. `sign-node --authority PATH --node PATH [--name NODE]`
writes the authority's certificate for the node key at PATH.cert, where the daemon finds it; a
daemon started with `--authority FILE.pub` believes the heat records of nodes so certified.

exit status: 0 written; 2 a key file that cannot be written or used (the message says why).
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from maxwell.cli.common import EXIT_USAGE, fail
from maxwell.gossip.keys import KeyFileError, certificate_path, generate, public_path, sign_node
from maxwell.gossip.trust import raw_public

EPILOG = """\
exit status: 0 written; 2 a key file that cannot be written or used (the message says why).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "The keys a cluster's trust rests on: node keys and their certificates."
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


def run(args: argparse.Namespace) -> int:
    action = args.cluster_action
    try:
        said = _keygen(args) if action == "keygen" else _sign_node(args)
    except KeyFileError as exc:
        return fail(f"maxwell cluster {action}", str(exc), EXIT_USAGE)
    if args.json:
        print(json.dumps(said))
    else:
        print("\n".join(f"{name}: {value}" for name, value in said.items()))
    return 0
