"""Serf's RPC protocol over asyncio: how Maxwell talks to its node's own Serf agent.

The rules of the wire (Serf's `cmd/serf/command/agent/ipc.go`), kept by the pure
`ResponseFramer` and the pure parsers below it:

- Each direction is a stream of msgpack objects: maps with string keys. A request is a header
  `{"Command", "Seq"}` and, for most commands, a body; a response is a header `{"Seq", "Error"}`
  and, for the commands that answer with one (`members`), a body. Payloads are msgpack bin: bytes.
- Whether a body follows a header is not on the wire: it follows from the command its Seq belongs
  to (`Answer`). Serf sends no body after the errors it gives before it looks at the command
  (`BODILESS_ERRORS`: handshake required, authentication required, unsupported command).
- `handshake` comes first, then `auth` when the agent has an RPC token. "Handshake required"
  ends the connection.
- `stream` and `query` answer with a header alone, then an unbounded series of records: a header
  carrying the same Seq, then a body. A query's records end with one of type "done"; an event
  stream's end when the client sends `stop`, and records already in flight may still arrive after
  that: they are framed and dropped.
- A header whose Seq no request is waiting for cannot be framed (body or not?): the connection is
  over (`SerfProtocolError`, the agent's fault).
- The agent is not trusted: no single msgpack object may exceed `max_object_bytes`, and an event
  stream holds at most `MAX_QUEUED_RECORDS` unread records (more are dropped, and logged).

`SerfRpc` is the one place that touches the socket, and the one place `OSError` becomes
`SerfUnreachableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from maxwell.errors import MaxwellError

log = logging.getLogger(__name__)

IPC_VERSION: Final = 1
MAX_OBJECT_BYTES: Final = 1 << 20
MAX_QUEUED_RECORDS: Final = 4096
_READ_CHUNK: Final = 64 * 1024
_NS_PER_S: Final = 1_000_000_000

# Serf's own error strings (ipc.go), matched exactly.
HANDSHAKE_REQUIRED: Final = "Handshake required"
AUTH_REQUIRED: Final = "Authentication required"
INVALID_AUTH_TOKEN: Final = "Invalid authentication token"
UNSUPPORTED_COMMAND: Final = "Unsupported command"
BODILESS_ERRORS: Final = frozenset({HANDSHAKE_REQUIRED, AUTH_REQUIRED, UNSUPPORTED_COMMAND})


class SerfRpcError(MaxwellError):
    """Talking to a Serf agent over its RPC port failed."""


class SerfUnreachableError(SerfRpcError):
    """The agent could not be reached, closed the connection, or did not answer in time."""


class SerfProtocolError(SerfRpcError):
    """The agent sent something that is not Serf's RPC protocol (or too much of it)."""


class SerfCommandError(SerfRpcError):
    """The agent answered a command with an error; `serf_error` is its text, unchanged."""

    def __init__(self, message: str, *, command: str, serf_error: str) -> None:
        super().__init__(message)
        self.command = command
        self.serf_error = serf_error


class SerfAuthError(SerfCommandError):
    """The agent refused our RPC token, or wants one we did not give."""


class Answer(enum.Enum):
    """What a command's response is made of, after its header."""

    HEADER = "header"  # nothing more
    BODY = "body"  # one body
    STREAM = "stream"  # records, until the client stops the stream
    QUERY = "query"  # records, until one of type "done"


@dataclass(frozen=True)
class Reply:
    """The response to one request: Serf's error text ("" for none) and its body, if any."""

    seq: int
    error: str
    body: dict[str, Any] | None


@dataclass(frozen=True)
class Record:
    """One record of a stream or a query, by the Seq of the request that opened it."""

    seq: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Member:
    """A member of the Serf cluster, as one agent sees it."""

    name: str
    addr: str
    port: int
    tags: dict[str, str]
    status: str  # "alive", "leaving", "left", "failed"


@dataclass(frozen=True)
class UserEvent:
    """A user event gossiped through the cluster (Maxwell's heat records, to come)."""

    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@dataclass(frozen=True)
class MemberEvent:
    """Members that joined, left, failed, were updated or reaped (`kind`, e.g. "member-join")."""

    kind: str
    members: tuple[Member, ...]


@dataclass(frozen=True)
class QueryEvent:
    """A query another node asked; answer it with `SerfRpc.respond(query_id, ...)`."""

    query_id: int
    ltime: int
    name: str
    payload: bytes


StreamEvent = UserEvent | MemberEvent | QueryEvent


@dataclass(frozen=True)
class QueryResponse:
    from_node: str
    payload: bytes


@dataclass(frozen=True)
class QueryResult:
    """What came back before the query's deadline: who acknowledged it, and who answered."""

    acks: tuple[str, ...]
    responses: tuple[QueryResponse, ...]


class ResponseFramer:
    """Splits the agent's stream of decoded objects into replies and records (see the module).

    `expect` each request's Seq before sending it; feed every decoded object to `receive`, which
    returns a `Reply`, a `Record`, or None (a header whose body comes next, or a dropped record).
    """

    def __init__(self) -> None:
        self._expected: dict[int, Answer] = {}
        self._open: dict[int, Answer] = {}
        self._retired: set[int] = set()
        self._awaiting_body: tuple[int, str, bool] | None = None  # seq, error, is a record

    def expect(self, seq: int, answer: Answer) -> None:
        self._expected[seq] = answer

    def retire(self, seq: int) -> None:
        """Drop the records of stream `seq` from now on (the client stopped it)."""
        self._open.pop(seq, None)
        self._retired.add(seq)

    def receive(self, obj: object) -> Reply | Record | None:
        if self._awaiting_body is None:
            return self._receive_header(obj)
        return self._receive_body(obj)

    def _receive_header(self, obj: object) -> Reply | None:
        seq, error = parse_header(obj)
        answer = self._expected.pop(seq, None)
        if answer is None:
            if seq not in self._open and seq not in self._retired:
                raise SerfProtocolError(f"answered Seq {seq}, which no request is waiting for")
            self._awaiting_body = (seq, error, True)
            return None
        if answer is Answer.BODY and error not in BODILESS_ERRORS:
            self._awaiting_body = (seq, error, False)
            return None
        if answer in (Answer.STREAM, Answer.QUERY) and not error:
            self._open[seq] = answer
        return Reply(seq, error, None)

    def _receive_body(self, obj: object) -> Reply | Record | None:
        assert self._awaiting_body is not None
        seq, error, is_record = self._awaiting_body
        self._awaiting_body = None
        body = _as_map(obj, "a body")
        if not is_record:
            return Reply(seq, error, body)
        if seq in self._retired:
            return None
        if self._open[seq] is Answer.QUERY and body.get("Type") == "done":
            del self._open[seq]
        return Record(seq, body)


def encode_request(command: str, seq: int, body: Mapping[str, object] | None = None) -> bytes:
    """A request's bytes: its header, then its body when the command takes one."""
    header: bytes = msgpack.packb({"Command": command, "Seq": seq}, use_bin_type=True)
    if body is None:
        return header
    encoded: bytes = msgpack.packb(dict(body), use_bin_type=True)
    return header + encoded


def error_for(address: str, command: str, serf_error: str) -> SerfCommandError | None:
    """The error to raise for Serf's answer `serf_error` to `command` (None for no error)."""
    if not serf_error:
        return None
    kind = SerfAuthError if serf_error in (AUTH_REQUIRED, INVALID_AUTH_TOKEN) else SerfCommandError
    message = f"serf agent at {address} refused `{command}`: {_one_line(serf_error)}"
    return kind(message, command=command, serf_error=serf_error)


def parse_header(obj: object) -> tuple[int, str]:
    header = _as_map(obj, "a response header")
    return _int(header, "Seq"), _str(header, "Error", default="")


def parse_member(obj: object) -> Member:
    member = _as_map(obj, "a member")
    tags = _as_map(member.get("Tags") or {}, "member tags")
    if not all(isinstance(value, str) for value in tags.values()):
        raise SerfProtocolError("sent member tags that are not strings")
    return Member(
        name=_str(member, "Name"),
        addr=_ip_text(member.get("Addr")),
        port=_int(member, "Port"),
        tags=tags,
        status=_str(member, "Status"),
    )


def parse_members(body: Mapping[str, Any] | None) -> list[Member]:
    members = _as_map(body, "a members body").get("Members") or []
    if not isinstance(members, list):
        raise SerfProtocolError("sent Members that is not a list")
    return [parse_member(member) for member in members]


def parse_stream_event(body: Mapping[str, Any]) -> StreamEvent:
    """A stream record's body as an event: user, query, or a member-* change."""
    kind = _str(body, "Event")
    if kind == "user":
        return UserEvent(
            ltime=_int(body, "LTime"),
            name=_str(body, "Name"),
            payload=_bytes(body, "Payload"),
            coalesce=bool(body.get("Coalesce", False)),
        )
    if kind == "query":
        return QueryEvent(
            query_id=_int(body, "ID"),
            ltime=_int(body, "LTime"),
            name=_str(body, "Name"),
            payload=_bytes(body, "Payload"),
        )
    if kind.startswith("member-"):
        members = body.get("Members") or []
        if not isinstance(members, list):
            raise SerfProtocolError(f"sent a {kind} event whose Members is not a list")
        return MemberEvent(kind=kind, members=tuple(parse_member(m) for m in members))
    raise SerfProtocolError(f"sent a stream record of unknown kind {kind[:40]!r}")


def tally_query_record(
    body: Mapping[str, Any], acks: list[str], responses: list[QueryResponse]
) -> bool:
    """Add one query record to `acks` or `responses`; True when it is the last ("done").

    A record from nobody (an empty `From`, and no payload) is dropped: Serf's agent sends such
    records when the query ends just before its RPC stream does (it reads the query's closed
    channels as empty answers); no member has an empty name."""
    kind = _str(body, "Type")
    if kind in ("ack", "response") and not _str(body, "From"):
        return False
    if kind == "ack":
        acks.append(_str(body, "From"))
    elif kind == "response":
        responses.append(QueryResponse(_str(body, "From"), _bytes(body, "Payload")))
    elif kind != "done":
        raise SerfProtocolError(f"sent a query record of unknown type {kind[:40]!r}")
    return kind == "done"


def _as_map(obj: object, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SerfProtocolError(f"sent {what} that is not a map ({type(obj).__name__})")
    return obj


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SerfProtocolError(f"sent {key} that is not an integer")
    return value


def _str(body: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise SerfProtocolError(f"sent {key} that is not a string")
    return value


def _bytes(body: Mapping[str, Any], key: str) -> bytes:
    value = body.get(key) or b""
    if not isinstance(value, bytes):
        raise SerfProtocolError(f"sent {key} that is not bytes")
    return value


def _ip_text(addr: object) -> str:
    """Go's `net.IP` as text: 4 or 16 bytes, an IPv4-mapped IPv6 address shown as IPv4."""
    if not isinstance(addr, bytes) or len(addr) not in (4, 16):
        raise SerfProtocolError("sent a member Addr that is not 4 or 16 bytes")
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _End:
    """Put in a record queue when its stream is stopped: readers see the end of the stream."""


class _RecordQueue:
    """The unread records of one stream or query, bounded; a failure ends it for every reader."""

    def __init__(self, label: str, limit: int = MAX_QUEUED_RECORDS) -> None:
        self._items: asyncio.Queue[dict[str, Any] | SerfRpcError | _End] = asyncio.Queue()
        self._label = label
        self._limit = limit
        self.dropped = 0

    def put(self, body: dict[str, Any]) -> None:
        if self._items.qsize() < self._limit:
            self._items.put_nowait(body)
            return
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("%s: reader too slow, %d records dropped so far", self._label, self.dropped)

    def end(self, reason: SerfRpcError | _End) -> None:
        self._items.put_nowait(reason)

    async def get(self) -> dict[str, Any] | None:
        """The next record, or None when the stream was stopped; raises the connection's failure."""
        item = await self._items.get()
        if isinstance(item, dict):
            return item
        self._items.put_nowait(item)  # every later reader sees the same end
        if isinstance(item, SerfRpcError):
            raise item
        return None


class EventStream:
    """The events of one `stream` request, in Serf's order, until `stop` (or `async with`)."""

    def __init__(self, rpc: SerfRpc, seq: int, kind: str, records: _RecordQueue) -> None:
        self.seq = seq
        self.kind = kind
        self._rpc = rpc
        self._records = records
        self._stopped = False

    @property
    def dropped(self) -> int:
        """Records Serf sent that were dropped because no one read them in time."""
        return self._records.dropped

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StreamEvent:
        body = await self._records.get()
        if body is None:
            raise StopAsyncIteration
        with self._rpc._blamed():
            return parse_stream_event(body)

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            await self._rpc._stop_stream(self.seq, self._records)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class SerfRpc:
    """One RPC connection to a Serf agent; `connect` it, use it from one event loop, `close` it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        address: str,
        timeout_s: float,
        max_object_bytes: int,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._reader = reader
        self._writer = writer
        self._max_object_bytes = max_object_bytes
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_object_bytes)
        self._framer = ResponseFramer()
        self._seqs = itertools.count()
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._records: dict[int, _RecordQueue] = {}
        self._failure: SerfRpcError | None = None
        self._reading = asyncio.create_task(self._read_loop(), name=f"serf-rpc {address}")

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        auth_key: str | None,
        timeout_s: float = 5.0,
        max_object_bytes: int = MAX_OBJECT_BYTES,
    ) -> SerfRpc:
        """A connection that has done the handshake and, given `auth_key`, authenticated."""
        address = _address(host, port)
        try:
            opening = asyncio.open_connection(host, port)
            reader, writer = await asyncio.wait_for(opening, timeout_s)
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            raise SerfUnreachableError(
                f"cannot connect to serf agent at {address}: {reason}"
            ) from exc
        rpc = cls(
            reader, writer, address=address, timeout_s=timeout_s, max_object_bytes=max_object_bytes
        )
        try:
            await rpc._call("handshake", {"Version": IPC_VERSION})
            if auth_key is not None:
                await rpc._call("auth", {"AuthKey": auth_key})
        except BaseException:
            await rpc.close()
            raise
        return rpc

    async def members(self) -> list[Member]:
        _, reply = await self._call("members", None, Answer.BODY)
        with self._blamed():
            return parse_members(reply.body)

    async def stats(self) -> dict[str, Any]:
        """The agent's `stats`: sections ("agent", "serf", "runtime", ...) of strings."""
        _, reply = await self._call("stats", None, Answer.BODY)
        with self._blamed():
            return _as_map(reply.body, "a stats body")

    async def agent_name(self) -> str:
        """The agent's member name (from `stats`)."""
        stats = await self.stats()
        with self._blamed():
            return _str(_as_map(stats.get("agent"), "stats' agent"), "name")

    async def event(self, name: str, payload: bytes, coalesce: bool = False) -> None:
        """Gossip a user event (Serf caps name and payload together, 512 bytes by default)."""
        await self._call("event", {"Name": name, "Payload": payload, "Coalesce": coalesce})

    async def set_tags(
        self, tags: Mapping[str, str], delete: Sequence[str] = (), timeout_s: float | None = None
    ) -> None:
        """Serf answers once the update is broadcast, or with its own error after its broadcast
        timeout (5 s by default): give `timeout_s` above that to hear which."""
        body = {"Tags": dict(tags), "DeleteTags": list(delete)}
        await self._call("tags", body, timeout_s=timeout_s)

    async def stream(self, kind: str) -> EventStream:
        """Subscribe to events: "user", "query", "member-join,member-leave", "*", "user:NAME"."""
        seq, records = await self._open("stream", {"Type": kind}, Answer.STREAM)
        return EventStream(self, seq, kind, records)

    async def respond(self, query_id: int, payload: bytes) -> None:
        """Answer a `QueryEvent` this connection's stream received."""
        await self._call("respond", {"ID": query_id, "Payload": payload})

    async def query(
        self,
        name: str,
        payload: bytes,
        timeout_s: float,
        *,
        filter_nodes: Sequence[str] = (),
        filter_tags: Mapping[str, str] | None = None,
        request_ack: bool = False,
    ) -> QueryResult:
        """Ask the cluster; what came back within `timeout_s` (Serf ends the query then)."""
        body = {
            "FilterNodes": list(filter_nodes),
            "FilterTags": dict(filter_tags or {}),
            "RequestAck": request_ack,
            "Timeout": round(timeout_s * _NS_PER_S),
            "Name": name,
            "Payload": payload,
        }
        seq, records = await self._open("query", body, Answer.QUERY)
        try:
            return await asyncio.wait_for(self._collect_query(records), timeout_s + self.timeout_s)
        except TimeoutError as exc:
            raise SerfUnreachableError(
                f"serf agent at {self.address} did not end query {name!r} in time"
            ) from exc
        finally:
            self._records.pop(seq, None)
            self._framer.retire(seq)

    async def leave(self, timeout_s: float | None = None) -> None:
        """Leave the cluster gracefully; the agent then shuts down, and this connection with it."""
        await self._call("leave", None, timeout_s=timeout_s)

    async def close(self) -> None:
        if self._failure is None:
            closed = SerfUnreachableError(f"connection to serf agent at {self.address} was closed")
            self._fail(closed, quietly=True)
        self._reading.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError as exc:
            log.debug("closing the connection to serf agent at %s: %s", self.address, exc)
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading

    async def __aenter__(self) -> SerfRpc:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @contextlib.contextmanager
    def _blamed(self) -> Iterator[None]:
        """Name this agent in a `SerfProtocolError` raised by a parser."""
        try:
            yield
        except SerfProtocolError as exc:
            raise SerfProtocolError(f"serf agent at {self.address} {exc}") from exc

    async def _open(
        self, command: str, body: Mapping[str, object], answer: Answer
    ) -> tuple[int, _RecordQueue]:
        records = _RecordQueue(f"serf agent at {self.address}, {command} {body.get('Type', '')}")
        seq, _ = await self._call(command, body, answer, records=records)
        return seq, records

    async def _call(
        self,
        command: str,
        body: Mapping[str, object] | None,
        answer: Answer = Answer.HEADER,
        *,
        records: _RecordQueue | None = None,
        timeout_s: float | None = None,
    ) -> tuple[int, Reply]:
        """Send one request and wait for its reply; raises for Serf's error or a lost connection."""
        if self._failure is not None:
            raise self._failure
        seq = next(self._seqs)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        if records is not None:
            self._records[seq] = records
        self._framer.expect(seq, answer)
        try:
            reply = await self._exchange(command, seq, body, future, timeout_s)
            error = error_for(self.address, command, reply.error)
            if error is not None:
                raise error
        except BaseException:
            self._records.pop(seq, None)
            raise
        finally:
            self._waiting.pop(seq, None)
        return seq, reply

    async def _exchange(
        self,
        command: str,
        seq: int,
        body: Mapping[str, object] | None,
        future: asyncio.Future[Reply],
        timeout_s: float | None,
    ) -> Reply:
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            self._writer.write(encode_request(command, seq, body))
            await self._writer.drain()
            return await asyncio.wait_for(future, limit)
        except TimeoutError as exc:
            raise SerfUnreachableError(
                f"serf agent at {self.address} did not answer `{command}` within {limit:g} s"
            ) from exc
        except OSError as exc:
            raise SerfUnreachableError(
                f"cannot send `{command}` to serf agent at {self.address}: {exc.strerror or exc}"
            ) from exc

    async def _stop_stream(self, seq: int, records: _RecordQueue) -> None:
        self._framer.retire(seq)
        self._records.pop(seq, None)
        records.end(_End())
        if self._failure is None:
            await self._call("stop", {"Stop": seq})

    async def _read_loop(self) -> None:
        try:
            while True:
                chunk = await self._reader.read(_READ_CHUNK)
                if not chunk:
                    raise SerfUnreachableError(
                        f"serf agent at {self.address} closed the connection"
                    )
                for obj in self._decode(chunk):
                    self._deliver(self._framer.receive(obj))
        except SerfProtocolError as exc:
            self._fail(SerfProtocolError(f"serf agent at {self.address} {exc}"))
        except SerfUnreachableError as exc:
            expected = self._records or any(not f.done() for f in self._waiting.values())
            self._fail(exc, quietly=not expected)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self._fail(SerfUnreachableError(f"lost serf agent at {self.address}: {reason}"))

    def _decode(self, chunk: bytes) -> list[object]:
        try:
            self._unpacker.feed(chunk)
            return list(self._unpacker)
        except msgpack.BufferFull as exc:
            raise SerfProtocolError(
                f"sent a msgpack object over {self._max_object_bytes} bytes"
            ) from exc
        except (ValueError, msgpack.UnpackException) as exc:
            raise SerfProtocolError(f"sent malformed msgpack: {_one_line(str(exc))}") from exc

    def _deliver(self, item: Reply | Record | None) -> None:
        if isinstance(item, Reply):
            future = self._waiting.get(item.seq)
            if future is not None and not future.done():
                future.set_result(item)
            else:
                log.debug("serf agent at %s: no one waits for Seq %d", self.address, item.seq)
        elif isinstance(item, Record):
            records = self._records.get(item.seq)
            if records is not None:
                records.put(item.body)

    async def _collect_query(self, records: _RecordQueue) -> QueryResult:
        acks: list[str] = []
        responses: list[QueryResponse] = []
        while (body := await records.get()) is not None:
            with self._blamed():
                if tally_query_record(body, acks, responses):
                    break
        return QueryResult(tuple(acks), tuple(responses))

    def _fail(self, failure: SerfRpcError, *, quietly: bool = False) -> None:
        """End every waiting request and open stream with `failure`; the connection is over."""
        if not quietly:
            log.warning("%s", failure)
        self._failure = failure
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(failure)
        for records in self._records.values():
            records.end(failure)
