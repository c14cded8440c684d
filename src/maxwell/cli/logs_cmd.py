"""`maxwell logs [-f] [-n N] AGENT`: an agent's output (its standard output and error, as the
daemon keeps them in `<state>/agents/<id>.log`), read through the API (`GET
/agents/{id}/log`), so a local user reads its own agents' and an agent its own. AGENT is an
id, a name, or a prefix of an id that only one agent has.

`-f` follows the output as it grows, and ends when the agent has ended and everything it wrote
has been printed (or on Ctrl-C); `-n N` starts with its last N lines.

`--json`: JSON objects, one per line: {"agent", "output", "offset", "version"}, `output` the text
read (UTF-8, an undecodable byte shown as U+FFFD), `offset` the bytes of output read so far. One
object without `-f`; with it, one per batch of new output, and a last one with `ended` (why the
agent ended: "apoptosis", "killed", "exited N", "slashed") once it has.

Exit status: 0 done; 1 the node refused (no such agent, no output kept, not yours); 2 usage;
125 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import codecs
import os
import select
import sys
from typing import BinaryIO

from maxwell.cli.agents_cmd import _count, _positive, add_client_arguments, run_with_client
from maxwell.cli.common import StopRequest, print_json
from maxwell.cli.naming import resolve_agent
from maxwell.client import Client
from maxwell.node.agents import LIVE

PROG = "maxwell logs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_client_arguments(parser)
    parser.description = __doc__
    parser.add_argument("agent", metavar="AGENT", help="an id, a name or a unique id prefix")
    parser.add_argument("-f", "--follow", action="store_true", help="print output as it comes")
    parser.add_argument("-n", "--tail", type=_count, metavar="N", help="only its last N lines")
    parser.add_argument(
        "--poll", type=_positive, default=0.5, metavar="S", help="--follow: seconds between reads"
    )


def run(args: argparse.Namespace) -> int:
    try:
        return run_with_client(PROG, args, lambda client: _show(client, args))
    except BrokenPipeError:  # `maxwell logs x | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 0


class _Raw:
    """The output as the agent wrote it, byte for byte."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def flush(self, offset: int, ended: str | None = None, *, always: bool = False) -> None:
        self._out.flush()


class _JsonLines:
    """The output as JSON objects, one per batch (see the module), decoded across batches."""

    def __init__(self, agent: str) -> None:
        self._agent = agent
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text: list[str] = []

    def write(self, data: bytes) -> None:
        self._text.append(self._decoder.decode(data))

    def flush(self, offset: int, ended: str | None = None, *, always: bool = False) -> None:
        if ended is not None:
            self._text.append(self._decoder.decode(b"", final=True))
        text, self._text = "".join(self._text), []
        if text or always or ended is not None:
            document: dict[str, object] = {"agent": self._agent, "output": text, "offset": offset}
            print_json(document if ended is None else {**document, "ended": ended})


_Output = _Raw | _JsonLines


def _show(client: Client, args: argparse.Namespace) -> None:
    agent = resolve_agent(args.agent, client.agents())
    out: _Output = _JsonLines(agent) if args.json else _Raw(sys.stdout.buffer)
    offset = 0
    if args.tail is not None:
        whole = _read_to_end(client, agent, 0)
        offset = len(whole)
        out.write(b"".join(whole.splitlines(keepends=True)[-args.tail :] if args.tail else []))
    else:
        offset = _copy_to_end(client, agent, 0, out)
    out.flush(offset, always=True)
    if args.follow:
        _follow(client, agent, offset, args.poll, out)


def _read_to_end(client: Client, agent: str, offset: int) -> bytes:
    chunks = []
    while chunk := client.log(agent, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _copy_to_end(client: Client, agent: str, offset: int, out: _Output) -> int:
    """Write what the agent wrote from `offset` on; the offset reached."""
    while chunk := client.log(agent, offset):
        out.write(chunk)
        offset += len(chunk)
    return offset


def _follow(client: Client, agent: str, offset: int, poll_s: float, out: _Output) -> None:
    """Print new output until the agent has ended and all it wrote is out, or a signal."""
    with StopRequest() as stop:
        while stop.signum is None:
            info = client.agent(agent)  # asked first: then nothing is lost
            offset = _copy_to_end(client, agent, offset, out)
            if info.state not in LIVE:
                out.flush(offset, info.ended or str(info.state.value))
                return
            out.flush(offset)
            select.select([stop.fileno()], [], [], poll_s)
