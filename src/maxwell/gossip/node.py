"""`GossipNode`: heat gossip beside a node daemon, in a thread and an event loop of its own.

It starts the node's own Serf agent (`--gossip`) or attaches to one (`--serf-rpc`), then

- publishes the node's signed heat record as its tags when the publication rule says so
  (`publish.Publication`), reading the daemon's last published snapshot (`source`, which never
  takes the daemon's lock), and a distress record also as a `maxwell-distress` event;
- listens to member events and distress events, and lists the members every `refresh_s` (a
  missed event is caught there), feeding all of it to the `ClusterView`, which checks it;
- introduces itself once per session (a `maxwell-cert` Serf query to everyone, carrying its
  certificate: each member learns it and answers with its own), then asks the members whose
  certificate the view still wants (one query filtered to them, one at a time), and answers
  such queries with its own certificate.

Failures: a start that fails raises out of `start` (no serf found, the agent exits, a join that
reaches nobody, an attached agent of another name). Once started, a lost connection or a dead
agent is logged and the node tries again every `_RETRY_S`, starting a new agent of its own where
it had one: the daemon goes on without gossip meanwhile (its neighbours' records age out of the
view, so its price uncouples). `close` leaves the cluster and stops the agent; a SIGKILLed
daemon's agent dies with it (`agent.SerfAgent`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

from maxwell.errors import MaxwellError
from maxwell.gossip.agent import SerfAgent, find_serf
from maxwell.gossip.config import GossipConfig, GossipConfigError, host_port
from maxwell.gossip.keys import NodeIdentity, load_cluster_key, load_identity, load_public
from maxwell.gossip.publish import (
    DISTRESS_EVENT,
    Publication,
    heat_record,
    next_seq,
    spacing_s,
)
from maxwell.gossip.record import HeatRecord, RecordError, encode
from maxwell.gossip.rpc import (
    EventStream,
    MemberEvent,
    QueryEvent,
    SerfCommandError,
    SerfRpc,
    SerfRpcError,
    UserEvent,
)
from maxwell.gossip.tags import CERT_QUERY, node_tags
from maxwell.gossip.trust import Admission, Verifier
from maxwell.gossip.view import ClusterView
from maxwell.node.facade import NodeStatus

log = logging.getLogger(__name__)

EVENTS: Final = (
    "member-join,member-update,member-leave,member-failed,member-reap,"
    f"user:{DISTRESS_EVENT},query:{CERT_QUERY}"
)
_ASK_TIMEOUT_S: Final = 2.0  # how long a certificate query waits for its answer
_POLL_S: Final = 0.1  # how often the daemon's snapshot is looked at
_RETRY_S: Final = 2.0
_TAGS_TIMEOUT_S: Final = 8.0  # above Serf's own 5 s broadcast timeout, so that Serf says why


def prepare(
    config: GossipConfig, wall: Callable[[], float] = time.time
) -> tuple[NodeIdentity, ClusterView]:
    """The node's identity and an empty view of its cluster, checked before anything starts:
    the key files (`KeyFileError`, `EncryptKeyError`) and, for an agent of its own, that serf is
    installed (`SerfMissingError`)."""
    assert config.authority is not None and config.node_key is not None
    authority = load_public(config.authority)
    identity = load_identity(config.node_key, authority)
    if config.bind is not None:
        assert config.cluster_key is not None
        load_cluster_key(config.cluster_key)
        find_serf(config.serf)
    view = ClusterView(Verifier(Admission(authority=authority)), node=identity.node, wall=wall)
    return identity, view


class GossipNode:
    """The node's side of heat gossip (see the module); `start` it, `close` it."""

    def __init__(
        self,
        config: GossipConfig,
        identity: NodeIdentity,
        view: ClusterView,
        source: Callable[[], NodeStatus],
        wall: Callable[[], float],
    ) -> None:
        self._config = config
        self._identity = identity
        self._certificate = identity.certificate.encode()
        self._view = view
        self._source = source
        self._wall = wall
        self._policy = Publication(
            refresh_s=config.refresh_s, distress_below_c=config.distress_below_c
        )
        self._agent: SerfAgent | None = None
        self._last: HeatRecord | None = None  # the last record published
        self._distress_at: float | None = None  # when the last distress event went out
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="maxwell-gossip", daemon=True)
        self._problem = ""  # why the last record could not be made
        self.published = 0  # records published as tags
        self.distress_sent = 0

    @classmethod
    def start(
        cls,
        config: GossipConfig,
        *,
        identity: NodeIdentity,
        view: ClusterView,
        source: Callable[[], NodeStatus],
        wall: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
    ) -> GossipNode:
        """Start gossiping; raises what kept it from starting (nothing is left running)."""
        node = cls(config, identity, view, source, wall)
        node._thread.start()
        try:
            node._ready.result(timeout_s)
        except concurrent.futures.TimeoutError:
            node.close()
            raise MaxwellError(f"gossip did not start within {timeout_s:g} s") from None
        return node

    @property
    def running(self) -> bool:
        """Whether its thread still runs (it ends only when closed)."""
        return self._thread.is_alive()

    @property
    def serf_pid(self) -> int | None:
        """The pid of this node's own Serf agent (None when attached, or between agents)."""
        agent = self._agent
        return agent.pid if agent is not None and agent.returncode is None else None

    def close(self, timeout_s: float = 15.0) -> None:
        """Leave the cluster and stop the agent (an attached agent is left running)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("gossip did not stop within %g s", timeout_s)

    # --- the gossip thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to `start`, or logged
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("gossip stopped")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        rpc: SerfRpc | None
        try:
            rpc = await self._open()
        except BaseException as exc:
            await self._stop_agent()
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while rpc is not None:
                await self._session(rpc)
                await self._wait(_RETRY_S)
                rpc = await self._reopen()
        finally:
            await self._stop_agent()

    async def _open(self) -> SerfRpc:
        """A connection to the node's agent, which is started first when it is the node's own
        and not running."""
        config = self._config
        if config.serf_rpc is not None:
            return await self._attach(config.serf_rpc)
        agent = self._agent
        if agent is not None and agent.returncode is not None:
            log.error("serf agent %s exited (status %d): starting another", agent.node,
                      agent.returncode)  # fmt: skip
            agent = self._agent = None
        if agent is None:
            assert config.bind is not None and config.cluster_key is not None
            agent = self._agent = await SerfAgent.start(
                self._identity.node, config.bind, join=config.join,
                encrypt_key=load_cluster_key(config.cluster_key), serf=config.serf,
            )  # fmt: skip
        return await agent.connect()

    async def _attach(self, address: str) -> SerfRpc:
        """A connection to someone else's agent, which must bear the node's name."""
        host, port = host_port(address, "--serf-rpc")
        rpc = await SerfRpc.connect(host, port, auth_key=os.environ.get("SERF_RPC_AUTH"))
        try:
            name = await rpc.agent_name()
        except BaseException:
            await rpc.close()
            raise
        if name != self._identity.node:
            await rpc.close()
            raise GossipConfigError(
                f"--serf-rpc: the agent is named {name!r}, the node's certificate "
                f"{self._identity.node!r}: peers would take its records for an impostor's"
            )
        return rpc

    async def _reopen(self) -> SerfRpc | None:
        """After a lost session: try again every `_RETRY_S` until it opens or the node stops."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                return await self._open()
            except (MaxwellError, OSError) as exc:
                log.error("gossip: %s; trying again in %g s", exc, _RETRY_S)
            await self._wait(_RETRY_S)
        return None

    async def _session(self, rpc: SerfRpc) -> None:
        """Publish, listen and list until the connection fails or the node stops."""
        assert self._stopping is not None
        tasks: list[asyncio.Task[None]] = []
        try:
            # Listening before the first record goes out: whoever sees it and asks for this
            # node's certificate finds it answering.
            events = await rpc.stream(EVENTS)
            tasks = [
                asyncio.create_task(self._publishing(rpc), name="gossip-publish"),
                asyncio.create_task(self._listening(rpc, events), name="gossip-listen"),
                asyncio.create_task(self._listing(rpc), name="gossip-list"),
                asyncio.create_task(self._asking(rpc), name="gossip-ask"),
                asyncio.create_task(self._until_stopped(), name="gossip-stop"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("gossip: %s", task.exception())
        except SerfRpcError as exc:
            log.error("gossip: %s", exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await rpc.close()

    async def _until_stopped(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()

    async def _publishing(self, rpc: SerfRpc) -> None:
        while True:
            await self._publish(rpc)
            await asyncio.sleep(_POLL_S)

    async def _publish(self, rpc: SerfRpc) -> None:
        """Publish the node's record if the rule says it is due (see the module): a distress
        record as an event first (Serf may take seconds to broadcast tags), then as tags."""
        at = self._wall()
        last_seq = self._last.seq if self._last is not None else None
        try:
            record = heat_record(self._identity.node, next_seq(last_seq, at), at, self._source())
        except RecordError as exc:  # e.g. a sensor's NaN: nothing honest to say this time
            if str(exc) != self._problem:  # once, not every poll
                log.warning("no heat record while the node reports this: %s", exc)
            self._problem = str(exc)
            return
        self._problem = ""
        spacing = spacing_s(self._view.size()) * (1.0 + 0.1 * random.random())  # out of step
        policy = replace(self._policy, spacing_s=spacing)
        if not policy.due(self._last, record):
            return
        wire = encode(record, self._identity.key)
        if policy.distress_due(self._distress_at, record):
            if self._distress_at is None:
                log.warning("distress: headroom %.1f °C; telling the cluster", record.headroom_c)
            await rpc.event(DISTRESS_EVENT, wire, coalesce=False)
            self._distress_at = record.at
            self.distress_sent += 1
        elif not policy.distressed(record):
            self._distress_at = None
        self._last = record  # before the tags: a slow broadcast must not make it go out twice
        self._view.own(self._certificate, wire)
        try:
            await rpc.set_tags(node_tags(wire), timeout_s=_TAGS_TIMEOUT_S)
        except SerfCommandError as exc:  # e.g. a crowded gossip: the next record tries again
            log.warning("tags not broadcast: %s", exc)
            return
        self.published += 1

    async def _listening(self, rpc: SerfRpc, events: EventStream) -> None:
        async with events:
            async for event in events:
                if isinstance(event, MemberEvent) and event.kind == "member-reap":
                    self._view.members_gone(member.name for member in event.members)
                elif isinstance(event, MemberEvent):
                    self._view.members_seen(event.members)
                elif isinstance(event, UserEvent) and event.name == DISTRESS_EVENT:
                    self._view.distress(event.payload)
                elif isinstance(event, QueryEvent) and event.name == CERT_QUERY:
                    if event.payload:  # the asker's own certificate
                        self._view.introduced(event.payload)
                    await self._answer(rpc, event)
        raise SerfRpcError(f"the serf agent at {rpc.address} ended the event stream")

    async def _answer(self, rpc: SerfRpc, query: QueryEvent) -> None:
        """Answer a question for this node's certificate; one answered too late is logged."""
        try:
            await rpc.respond(query.query_id, self._certificate)
        except SerfCommandError as exc:  # past its deadline: the asker asks again
            log.info("certificate not sent: %s", exc)

    async def _asking(self, rpc: SerfRpc) -> None:
        """Introduce this node to the cluster once (an unfiltered question carrying its own
        certificate, which every member answers with theirs), then ask the members whose
        certificate the view still wants, all in one question at a time: a cold start of N
        nodes asks N questions, not N x (N - 1)."""
        await self._ask(rpc, ())
        while True:
            wanted = self._view.wanted()
            if wanted:
                await self._ask(rpc, wanted)
            await asyncio.sleep(_POLL_S)

    async def _ask(self, rpc: SerfRpc, nodes: Sequence[str]) -> None:
        """One certificate question, to `nodes` (none: everyone), and what came back."""
        try:
            result = await rpc.query(
                CERT_QUERY, self._certificate, _ASK_TIMEOUT_S, filter_nodes=nodes
            )
        except SerfRpcError as exc:
            log.warning("cannot ask %s for certificates: %s", ", ".join(nodes) or "all", exc)
            return  # asked again later
        answered = {r.from_node: r.payload for r in result.responses}
        for node, certificate in answered.items():
            if node != self._identity.node:
                self._view.learned(node, certificate)
        for node in nodes:
            if node not in answered:
                self._view.unanswered(node)

    async def _listing(self, rpc: SerfRpc) -> None:
        while True:
            self._view.members_seen(await rpc.members())
            await asyncio.sleep(self._config.refresh_s)

    async def _wait(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _stop_agent(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None:
            await agent.stop(leave=True, leave_timeout_s=2.0, term_timeout_s=2.0)
