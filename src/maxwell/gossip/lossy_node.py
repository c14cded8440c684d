"""A gossiping node in a process of its own, driven over JSON lines: what the lossy-network test
and `maxwell bench gossip` run in each namespace (`maxwell.gossip.lossy`).

    ip netns exec NS python -m maxwell.gossip.lossy_node --name NAME --bind HOST:PORT \\
        [--join HOST:PORT] --cluster-key FILE --node-key FILE --authority FILE

It starts its own `serf agent` on `--bind` (joining `--join`), and a `GossipNode` attached to that
agent whose node snapshot is synthetic (40 °C of headroom, until told to turn hot). It keeps a
second RPC connection of its own to the agent for a plain Serf user event, `bench-ping`, the
yardstick of Serf's own latency. Commands on stdin, one JSON object a line:

- `{"cmd": "hot", "headroom_c": 2.0}` / `{"cmd": "cool"}`: the snapshot's headroom (cool: 40);
  with `"ping": ID`, a `bench-ping` carrying ID goes out as soon as the distress event has
  gone to the agent (a millisecond or so later: in the same gossip round, a yardstick beside it);
- `{"cmd": "ping", "id": "..."}`: send a `bench-ping` carrying the id (with `"pad": N`, either
  ping is padded with N spaces after the id: a yardstick of the distress record's size);
- `{"cmd": "forge", "node": "..."}`: send a distress record naming that node but signed with
  this node's key (every node must refuse it as `forged`);
- `{"cmd": "queues"}`: report the agent's broadcast queues (Serf's `stats`);
- `{"cmd": "stop"}` (or the end of stdin): leave and stop.

A command that fails is logged (stderr) and the node goes on. Reports on stdout, one JSON object
a line, times in Unix seconds (namespaces share the kernel's clock, so times from different
processes compare): `ready` (`pid`, `serf_pid`), `state` whenever it changes (`members`,
`verified`, `rejected` by reason, the node's own published `headroom_c`, `distress_sent`),
`distress` for each distress record the view verified as an event (`node`, `seq`, `made_at`,
`seen_at`), `believed` for each distressed record of another node the view first believed, by
tags or event (`TimedView`; same fields), `ping` for each `bench-ping` received (`id`, `at`),
`ping-sent`, `forged-sent`, `queues` (`at`, `intents`, `events`, `queries`), `error` (then exit
1), `stopped`.

The serf agent dies with this process (`SerfAgent`'s `PR_SET_PDEATHSIG`, tied to a thread that
lives as long as the process); a parent starting this process asks the same for it
(`NodeProcess`), and SIGTERM (or the end of stdin) here leaves and stops cleanly, a further
SIGTERM ignored meanwhile (a parent that dies with several threads sends one per thread).
The parent's side (starting such processes, commanding them, reading their reports) is
`maxwell.gossip.node_processes`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from maxwell.errors import MaxwellError
from maxwell.gossip.agent import SerfAgent
from maxwell.gossip.config import GossipConfig
from maxwell.gossip.keys import (
    NodeIdentity,
    load_cluster_key,
    load_public,
)
from maxwell.gossip.node import GossipNode, prepare
from maxwell.gossip.publish import DISTRESS_EVENT, heat_record
from maxwell.gossip.record import HeatRecord, encode
from maxwell.gossip.rpc import EventStream, Member, SerfRpc, SerfRpcError, UserEvent
from maxwell.gossip.trust import Admission, Verifier
from maxwell.gossip.view import ClusterView, DistressSeen
from maxwell.node.facade import NodeStatus, PriceInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

PING_EVENT: Final = "bench-ping"
COOL_HEADROOM_C: Final = 40.0
HOT_HEADROOM_C: Final = 2.0
FORGED_SEQ: Final = 2**62  # a forged record's sequence number, above any honest one
_NOT_YET: Final = "127.0.0.1:1"  # the agent's RPC address until it is started
_PAIRED_WITHIN_S: Final = 10.0  # how long a paired ping waits for its distress event
_WATCH_S: Final = 0.1  # how often the view is looked at for reports (not when it saw them)


def synthetic_status(headroom_c: float) -> NodeStatus:
    """A node's snapshot as its last tick would publish it, at `headroom_c`."""
    price = PriceInfo(
        spot=1.0, grid=1.0, thermal_factor=1.0, temperature_c=90.0 - headroom_c,
        headroom_c=headroom_c, measured=False, energy_source="model",
        temperature_source="model", power_w=20.0,
    )  # fmt: skip
    return NodeStatus(
        price=price, agents=(), tick_s=1.0, last_tick_duration_s=0.0, ticks=1,
        mechanism="uniform", cgroup="none", capacity_cores=2.0,
    )  # fmt: skip


class Dial:
    """The node's synthetic snapshot, turned by commands while the gossip thread reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = synthetic_status(COOL_HEADROOM_C)

    def __call__(self) -> NodeStatus:
        with self._lock:
            return self._now

    def set(self, headroom_c: float) -> None:
        with self._lock:
            self._now = synthetic_status(headroom_c)


class Reporter:
    """JSON lines on stdout, whole lines whichever thread writes them."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError):  # the parent stopped reading: it is ending
                pass


class TimedView(ClusterView):
    """A `ClusterView` that also notes when it first believed each distressed record of another
    node, whichever way it came: in the node's tags or as a `maxwell-distress` event
    (`distress_seen` notes the events alone, and not an event whose record a newer one in the
    tags has already superseded)."""

    def __init__(self, authority: Ed25519PublicKey, node: str, distress_below_c: float) -> None:
        super().__init__(Verifier(Admission(authority=authority)), node=node, wall=time.time)
        self._below_c = distress_below_c
        self._believed_distress: list[DistressSeen] = []
        self._noted_believed: set[tuple[str, int]] = set()

    def members_seen(self, members: Iterable[Member]) -> None:
        super().members_seen(members)
        self._note_believed()

    def distress(self, payload: bytes) -> HeatRecord | None:
        record = super().distress(payload)
        self._note_believed()
        return record

    def learned(self, node: str, certificate: bytes) -> None:
        super().learned(node, certificate)
        self._note_believed()

    def believed_distress(self) -> list[DistressSeen]:
        with self._lock:
            return list(self._believed_distress)

    def _note_believed(self) -> None:
        now = self._wall()
        with self._lock:
            for node, record in self._verifier.latest.items():
                key = (node, record.seq)
                distressed = node != self.node and record.headroom_c < self._below_c
                if distressed and key not in self._noted_believed:
                    self._noted_believed.add(key)
                    self._believed_distress.append(DistressSeen(node, record.seq, record.at, now))


# --- the node process -------------------------------------------------------------------------


class SerfSide:
    """The node's own serf agent and a connection of its own to it, on an event loop thread
    that lives as long as the process (the agent's death signal is tied to that thread)."""

    def __init__(self, report: Reporter) -> None:
        self._report = report
        self._loop = asyncio.new_event_loop()
        # A daemon thread: should the clean-up fail, the process still ends, and its serf with it.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lossy-serf", daemon=True
        )
        self._thread.start()
        self.agent: SerfAgent | None = None
        self._rpc: SerfRpc | None = None
        self._stream: EventStream | None = None
        self._listening: asyncio.Task[None] | None = None

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `coroutine` on the loop thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def start(self, node: str, bind: str, join: Sequence[str], encrypt_key: str) -> None:
        self.agent = await SerfAgent.start(
            node, bind, join=join, encrypt_key=encrypt_key, timeout_s=30.0
        )
        self._rpc = await self.agent.connect()
        self._stream = await self._rpc.stream(f"user:{PING_EVENT}")
        self._listening = asyncio.create_task(self._listen(self._stream))

    async def _listen(self, stream: EventStream) -> None:
        try:
            async for event in stream:
                at = time.time()
                if isinstance(event, UserEvent) and event.name == PING_EVENT:
                    ping_id = event.payload.split(b" ", 1)[0]  # then its padding, if any
                    self._report("ping", id=ping_id.decode(errors="replace"), at=at)
        except SerfRpcError as exc:  # pings go unheard from now on: they count as missed
            log.error("the bench-ping stream ended: %s", exc)

    async def event(self, name: str, payload: bytes) -> float:
        """Send a user event; the Unix time just before it went to the agent."""
        assert self._rpc is not None
        at = time.time()
        await self._rpc.event(name, payload, coalesce=False)
        return at

    async def queues(self) -> dict[str, int]:
        """The agent's broadcast queues: messages waiting to be gossiped, by kind."""
        assert self._rpc is not None
        serf = (await self._rpc.stats()).get("serf", {})
        serf = serf if isinstance(serf, dict) else {}
        queues = {"intents": "intent_queue", "events": "event_queue", "queries": "query_queue"}
        return {name: int(serf.get(key, -1)) for name, key in queues.items()}

    async def _stop(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, MaxwellError):
                await self._listening
        if self._rpc is not None:
            await self._rpc.close()
        if self.agent is not None:
            await self.agent.stop(leave=True, leave_timeout_s=2.0, term_timeout_s=2.0)

    def close(self) -> None:
        """Stop the agent (leaving the cluster) and the loop thread."""
        try:
            self.call(self._stop(), 15.0)
        except (MaxwellError, TimeoutError) as exc:
            log.error("stopping serf: %s", exc)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15.0)
            self._loop.close()


@dataclass
class _Seen:
    """What the watcher already reported."""

    state: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)  # records reported, by kind


def _state(view: ClusterView, gossip: GossipNode) -> dict[str, Any]:
    rows = view.members().members
    own = next((row for row in rows if row.node == view.node), None)
    return {
        "members": len(rows),
        "verified": sum(row.verified for row in rows),
        "rejected": view.rejected(),
        "headroom_c": own.headroom_c if own is not None else None,
        "distress_sent": gossip.distress_sent,
    }


def _watch(
    view: TimedView, gossip: GossipNode, report: Reporter, stopping: threading.Event
) -> None:
    """Report the view's state when it changes, and each distress record it verified: as an
    event (`distress`), and by whichever way came first (`believed`)."""
    seen = _Seen()
    while not stopping.wait(_WATCH_S):
        state = _state(view, gossip)
        if state != seen.state:
            seen.state = state
            report("state", **state)
        for kind, records in (("distress", view.distress_seen()),
                              ("believed", view.believed_distress())):  # fmt: skip
            for record in records[seen.reported.get(kind, 0) :]:
                report(kind, node=record.node, seq=record.seq, made_at=record.made_at,
                       seen_at=record.seen_at)  # fmt: skip
            seen.reported[kind] = len(records)


@dataclass
class LossyNode:
    """The running parts of one node process."""

    serf: SerfSide
    identity: NodeIdentity
    dial: Dial
    report: Reporter
    gossip: GossipNode | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    watcher: threading.Thread | None = None

    def obey(self, line: str) -> bool:
        """Carry out one command line (a failure is logged, and the node goes on); False when
        told to stop."""
        try:
            return self.command(line)
        except (MaxwellError, TimeoutError, ValueError, LookupError, TypeError) as exc:
            log.error("command %r failed: %s", line.strip()[:200], exc)
            return True

    def command(self, line: str) -> bool:
        """Carry out one command line; False when told to stop."""
        try:
            command = json.loads(line)
            name = command["cmd"]
        except (ValueError, LookupError, TypeError):
            log.error("not a command: %r", line[:200])
            return True
        if name == "hot":
            assert self.gossip is not None
            before = self.gossip.distress_sent
            self.dial.set(float(command.get("headroom_c", HOT_HEADROOM_C)))
            if "ping" in command:
                pad = int(command.get("pad", 0))
                self.ping_after_distress(str(command["ping"]), before, pad)
        elif name == "cool":
            self.dial.set(COOL_HEADROOM_C)
        elif name == "ping":
            self.ping(str(command["id"]), int(command.get("pad", 0)))
        elif name == "forge":
            self.forge(str(command["node"]))
        elif name == "queues":
            self.report("queues", at=time.time(), **self.serf.call(self.serf.queues(), 10.0))
        elif name == "stop":
            return False
        else:
            log.error("unknown command %r", name)
        return True

    def ping(self, ping_id: str, pad: int = 0) -> None:
        """Send a `bench-ping` carrying `ping_id`, padded with `pad` spaces."""
        payload = ping_id.encode() + b" " * pad
        at = self.serf.call(self.serf.event(PING_EVENT, payload), 10.0)
        self.report("ping-sent", id=ping_id, at=at)

    def ping_after_distress(self, ping_id: str, sent_before: int, pad: int = 0) -> None:
        """Send ping `ping_id` as soon as the next distress event has gone to the agent (within
        a millisecond or so: in the same gossip round, as a yardstick beside it)."""
        assert self.gossip is not None
        deadline = time.monotonic() + _PAIRED_WITHIN_S
        while self.gossip.distress_sent <= sent_before:
            if time.monotonic() > deadline:
                log.error("no distress event went out within %g s", _PAIRED_WITHIN_S)
                return
            time.sleep(0.001)
        self.ping(ping_id, pad)

    def forge(self, victim: str) -> None:
        """A distress record naming `victim`, signed with this node's key, as an event."""
        at = time.time()
        record = heat_record(victim, FORGED_SEQ, at, synthetic_status(HOT_HEADROOM_C))
        wire = encode(record, self.identity.key)
        self.serf.call(self.serf.event(DISTRESS_EVENT, wire), 10.0)
        self.report("forged-sent", node=victim, seq=FORGED_SEQ, at=at)

    def close(self) -> None:
        self.stopping.set()
        if self.watcher is not None:
            self.watcher.join()
        if self.gossip is not None:
            self.gossip.close()
        self.serf.close()


def _start(args: argparse.Namespace, report: Reporter) -> LossyNode:
    """The key files checked, the node's serf agent, gossip attached to it, the watcher."""
    config = GossipConfig(
        serf_rpc=_NOT_YET, node_key=args.node_key, authority=args.authority,
        refresh_s=args.refresh_s,
    )  # fmt: skip
    identity, _ = prepare(config)
    view = TimedView(load_public(args.authority), identity.node, config.distress_below_c)
    cluster_key = load_cluster_key(args.cluster_key)
    serf = SerfSide(report)
    try:
        serf.call(serf.start(args.name, args.bind, args.join, cluster_key), 60.0)
        assert serf.agent is not None
        host, port = serf.agent.rpc_address
        os.environ["SERF_RPC_AUTH"] = serf.agent.auth_token  # how `--serf-rpc` takes the token
        node = LossyNode(serf, identity, Dial(), report)
        node.gossip = GossipNode.start(
            replace(config, serf_rpc=f"{host}:{port}"), identity=identity, view=view,
            source=node.dial,
        )  # fmt: skip
    except BaseException:
        serf.close()
        raise
    node.watcher = threading.Thread(
        target=_watch, args=(view, node.gossip, report, node.stopping), name="lossy-watch"
    )
    node.watcher.start()
    report("ready", node=args.name, pid=os.getpid(), serf_pid=serf.agent.pid)
    return node


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, once: a parent that dies with several threads signals its
    child once per thread (`PR_SET_PDEATHSIG`), and the clean-up must not be cut short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m maxwell.gossip.lossy_node")
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True, help="HOST:PORT serf gossips on")
    parser.add_argument("--join", action="append", default=[], help="HOST:PORT to join through")
    parser.add_argument("--cluster-key", type=Path, required=True)
    parser.add_argument("--node-key", type=Path, required=True)
    parser.add_argument("--authority", type=Path, required=True)
    parser.add_argument("--refresh-s", type=float, default=5.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"{args.name} %(levelname)s %(name)s: %(message)s")  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)
    report = Reporter(sys.stdout)
    try:
        node = _start(args, report)
    except (MaxwellError, OSError, TimeoutError) as exc:
        report("error", message=str(exc) or type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        for line in sys.stdin:
            if line.strip() and not node.obey(line):
                break
    except KeyboardInterrupt:
        log.warning("interrupted: leaving")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up has deadlines of its own
        node.close()
        report("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
