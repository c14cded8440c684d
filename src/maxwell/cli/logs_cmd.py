"""`maxwell logs [-f] [-n N] AGENT`: an agent's output (its standard output and error, as the
daemon keeps them in `<state>/agents/<id>.log`), read through the API (`GET
/agents/{id}/log`), so a local user reads its own agents' and an agent its own. AGENT is an
id, a name, or a prefix of an id that only one agent has.

`-f` follows the output as it grows, and ends when the agent has ended and everything it wrote
has been printed (or on Ctrl-C); `-n N` starts with its last N lines.

Exit status: 0 done; 1 the node refused (no such agent, no output kept, not yours); 2 usage;
125 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from typing import BinaryIO

from maxwell.cli.agents_cmd import _count, _positive, add_client_arguments, run_with_client
from maxwell.cli.common import StopRequest
from maxwell.cli.naming import resolve_agent
from maxwell.client import Client
from maxwell.node.agents import LIVE

PROG = "maxwell logs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_client_arguments(parser, json_flag=False)
    parser.description = __doc__
    parser.add_argument("agent", metavar="AGENT", help="an id, a name or a unique id prefix")
    parser.add_argument("-f", "--follow", action="store_true", help="print output as it comes")
    parser.add_argument("-n", "--tail", type=_count, metavar="N", help="only its last N lines")
    parser.add_argument(
        "--poll", type=_positive, default=0.5, metavar="S", help="--follow: seconds between reads"
    )


def run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    try:
        return run_with_client(PROG, args, lambda client: _show(client, args, out))
    except BrokenPipeError:  # `maxwell logs x | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 0


def _show(client: Client, args: argparse.Namespace, out: BinaryIO) -> None:
    agent = resolve_agent(args.agent, client.agents())
    offset = 0
    if args.tail is not None:
        whole = _read_to_end(client, agent, 0)
        offset = len(whole)
        out.write(b"".join(whole.splitlines(keepends=True)[-args.tail :] if args.tail else []))
    else:
        offset = _copy_to_end(client, agent, 0, out)
    out.flush()
    if args.follow:
        _follow(client, agent, offset, args.poll, out)


def _read_to_end(client: Client, agent: str, offset: int) -> bytes:
    chunks = []
    while chunk := client.log(agent, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _copy_to_end(client: Client, agent: str, offset: int, out: BinaryIO) -> int:
    """Write what the agent wrote from `offset` on; the offset reached."""
    while chunk := client.log(agent, offset):
        out.write(chunk)
        offset += len(chunk)
    return offset


def _follow(client: Client, agent: str, offset: int, poll_s: float, out: BinaryIO) -> None:
    """Print new output until the agent has ended and all it wrote is out, or a signal."""
    with StopRequest() as stop:
        while stop.signum is None:
            ended = client.agent(agent).state not in LIVE  # asked first: then nothing is lost
            offset = _copy_to_end(client, agent, offset, out)
            out.flush()
            if ended:
                return
            select.select([stop.fileno()], [], [], poll_s)
