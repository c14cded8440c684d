"""Serf underneath heat gossip: the RPC client against an in-memory fake agent, then real Serf.

The fake (`FakeSerf`) speaks Serf's RPC protocol on 127.0.0.1 as `ipc.go` does: handshake first
(else "Handshake required" and the connection ends), then the token when it has one, and a body
after a request header only for the commands that take one. What it answers is scripted per
command. The real-Serf tests start agents on loopback and skip when serf is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from maxwell.errors import MaxwellError
from maxwell.gossip import (
    EncryptKeyError,
    MemberEvent,
    QueryEvent,
    SerfAgent,
    SerfAgentError,
    SerfAuthError,
    SerfCommandError,
    SerfMissingError,
    SerfProtocolError,
    SerfRpc,
    SerfUnreachableError,
    UserEvent,
    agent_argv,
    decode_encrypt_key,
)
from maxwell.gossip.agent import SERF_MISSING, free_gossip_port
from maxwell.gossip.rpc import (
    AUTH_REQUIRED,
    HANDSHAKE_REQUIRED,
    INVALID_AUTH_TOKEN,
    Answer,
    Record,
    Reply,
    ResponseFramer,
    encode_request,
)

SRC = Path(__file__).resolve().parent.parent / "src"
SERF = shutil.which("serf")
needs_serf = pytest.mark.skipif(SERF is None, reason="serf is not installed (apt-get install serf)")

Body = dict[str, Any] | None
Script = Callable[[int, Body], list[object]]
CLOSE = object()  # in a script's answer: end the connection there
REQUEST_BODIES = {"handshake", "auth", "event", "tags", "stream", "stop", "query", "respond"}


def run(coroutine: Awaitable[None]) -> None:
    async def main() -> None:
        await coroutine

    asyncio.run(main())


def header(seq: int, error: str = "") -> dict[str, object]:
    return {"Seq": seq, "Error": error}


def member(name: str, addr: bytes, port: int = 7946, **tags: str) -> dict[str, object]:
    return {
        "Name": name,
        "Addr": addr,
        "Port": port,
        "Tags": tags,
        "Status": "alive",
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 4,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


def user_record(seq: int, ltime: int, name: str, payload: bytes) -> list[object]:
    body = {"Event": "user", "LTime": ltime, "Name": name, "Payload": payload, "Coalesce": False}
    return [header(seq), body]


class FakeSerf:
    """A Serf agent's RPC port, in memory; `scripts[command]` says what it answers."""

    def __init__(self, *, auth_token: str | None = None) -> None:
        self.auth_token = auth_token
        self.requests: list[tuple[str, Body]] = []
        self.scripts: dict[str, Script] = {"members": lambda seq, _: [header(seq), {"Members": []}]}
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeSerf:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def connect(self, auth_key: str | None = None, **options: Any) -> SerfRpc:
        return await SerfRpc.connect("127.0.0.1", self.port, auth_key=auth_key, **options)

    @property
    def commands(self) -> list[str]:
        return [command for command, _ in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        state = {"handshake": False, "auth": self.auth_token is None}
        pending: tuple[str, int] | None = None
        try:
            while chunk := await reader.read(65536):
                unpacker.feed(chunk)
                for obj in unpacker:
                    if pending is None and obj["Command"] in REQUEST_BODIES:
                        pending = (obj["Command"], obj["Seq"])
                        continue
                    command, seq = pending or (obj["Command"], obj["Seq"])
                    body = obj if pending else None
                    pending = None
                    if not await self._answer(writer, state, command, seq, body):
                        return
        finally:
            writer.close()

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        state: dict[str, bool],
        command: str,
        seq: int,
        body: Body,
    ) -> bool:
        """Answer one request as Serf would; False when the connection must end."""
        self.requests.append((command, body))
        if command != "handshake" and not state["handshake"]:
            answer: list[object] = [header(seq, HANDSHAKE_REQUIRED), CLOSE]
        elif command not in ("handshake", "auth") and not state["auth"]:
            answer = [header(seq, AUTH_REQUIRED)]
        elif command == "handshake":
            state["handshake"] = body == {"Version": 1}
            answer = [header(seq, "" if state["handshake"] else "Unsupported IPC version")]
        elif command == "auth":
            state["auth"] = body == {"AuthKey": self.auth_token}
            answer = [header(seq, "" if state["auth"] else INVALID_AUTH_TOKEN)]
        else:
            answer = self.scripts.get(command, lambda seq, _: [header(seq)])(seq, body)
        for obj in answer:
            if obj is CLOSE:
                await writer.drain()
                return False
            writer.write(msgpack.packb(obj))
        await writer.drain()
        return True


# --- the framing, pure ---------------------------------------------------------------------------


def test_framer_reads_a_body_only_where_the_command_has_one() -> None:
    framer = ResponseFramer()
    framer.expect(0, Answer.HEADER)
    framer.expect(1, Answer.BODY)
    framer.expect(2, Answer.BODY)
    assert framer.receive(header(0)) == Reply(0, "", None)
    assert framer.receive(header(1)) is None
    assert framer.receive({"Members": []}) == Reply(1, "", {"Members": []})
    # Serf sends no body after an error it gives before it looks at the command.
    assert framer.receive(header(2, AUTH_REQUIRED)) == Reply(2, AUTH_REQUIRED, None)


def test_framer_routes_records_until_a_query_is_done_or_a_stream_retired() -> None:
    framer = ResponseFramer()
    framer.expect(0, Answer.QUERY)
    framer.expect(1, Answer.STREAM)
    assert framer.receive(header(0)) == Reply(0, "", None)
    assert framer.receive(header(1)) == Reply(1, "", None)
    done = {"Type": "done", "From": "", "Payload": None}
    for seq, body in [(1, {"Event": "user"}), (0, done)]:
        assert framer.receive(header(seq)) is None
        assert framer.receive(body) == Record(seq, body)
    framer.retire(1)
    assert framer.receive(header(1)) is None
    assert framer.receive({"Event": "user"}) is None  # in flight when stopped: dropped
    with pytest.raises(SerfProtocolError, match="Seq 0, which no request is waiting for"):
        framer.receive(header(0))


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [([0, ""], "not a map"), ({"Seq": "1", "Error": ""}, "Seq"), ({"Seq": 0, "Error": 3}, "Error")],
)
def test_framer_refuses_a_malformed_header(obj: object, complaint: str) -> None:
    framer = ResponseFramer()
    framer.expect(0, Answer.HEADER)
    with pytest.raises(SerfProtocolError, match=complaint):
        framer.receive(obj)


def test_a_request_carries_a_body_only_when_given_one() -> None:
    def decoded(data: bytes) -> list[object]:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        return list(unpacker)

    assert decoded(encode_request("members", 3)) == [{"Command": "members", "Seq": 3}]
    event = decoded(encode_request("event", 4, {"Name": "heat", "Payload": b"\xff"}))
    assert event == [{"Command": "event", "Seq": 4}, {"Name": "heat", "Payload": b"\xff"}]


# --- the client against the fake agent ---------------------------------------------------------


def test_connect_shakes_hands_then_authenticates_before_any_command() -> None:
    async def scenario() -> None:
        async with FakeSerf(auth_token="s3cret") as fake:
            async with await fake.connect("s3cret") as rpc:
                assert await rpc.members() == []
            assert fake.requests[:3] == [
                ("handshake", {"Version": 1}),
                ("auth", {"AuthKey": "s3cret"}),
                ("members", None),
            ]

    run(scenario())


def test_a_wrong_token_is_an_auth_error() -> None:
    async def scenario() -> None:
        async with FakeSerf(auth_token="s3cret") as fake:
            with pytest.raises(SerfAuthError, match=INVALID_AUTH_TOKEN) as refused:
                await fake.connect("guess")
            assert refused.value.command == "auth"
            assert "\n" not in str(refused.value)

    run(scenario())


def test_no_token_is_refused_without_losing_the_framing() -> None:
    async def scenario() -> None:
        async with FakeSerf(auth_token="s3cret") as fake, await fake.connect(None) as rpc:
            for _ in range(2):  # no body follows the refusal: the second answer still frames
                with pytest.raises(SerfAuthError, match=AUTH_REQUIRED):
                    await rpc.members()

    run(scenario())


def test_an_error_header_is_a_command_error_carrying_serf_text() -> None:
    text = "user event exceeds limit of 512 bytes"

    async def scenario() -> None:
        async with FakeSerf() as fake:
            fake.scripts["event"] = lambda seq, _: [header(seq, text)]
            async with await fake.connect() as rpc:
                with pytest.raises(SerfCommandError) as refused:
                    await rpc.event("heat", b"x" * 600)
                assert (refused.value.command, refused.value.serf_error) == ("event", text)
                assert fake.requests[-1] == (
                    "event",
                    {"Name": "heat", "Payload": b"x" * 600, "Coalesce": False},
                )
                assert await rpc.members() == []  # the connection survives a refusal

    run(scenario())


def test_members_addresses_and_tags_are_parsed() -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 7])
    v6 = bytes(15) + b"\x01"

    async def scenario() -> None:
        async with FakeSerf() as fake:
            members = [member("a", bytes([192, 0, 2, 1]), heat="41"), member("b", mapped)]
            members.append(member("c", v6, 7947))
            fake.scripts["members"] = lambda seq, _: [header(seq), {"Members": members}]
            async with await fake.connect() as rpc:
                seen = await rpc.members()
        assert [(m.name, m.addr, m.port) for m in seen] == [
            ("a", "192.0.2.1", 7946),
            ("b", "10.0.0.7", 7946),
            ("c", "::1", 7947),
        ]
        assert seen[0].tags == {"heat": "41"}
        assert seen[0].status == "alive"

    run(scenario())


def test_a_member_with_a_bad_address_is_the_agents_fault() -> None:
    async def scenario() -> None:
        async with FakeSerf() as fake:
            bad = [member("a", b"\x01\x02\x03")]
            fake.scripts["members"] = lambda seq, _: [header(seq), {"Members": bad}]
            async with await fake.connect() as rpc:
                with pytest.raises(SerfProtocolError, match=r"at 127\.0\.0\.1:\d+ .*4 or 16"):
                    await rpc.members()

    run(scenario())


def test_an_oversized_object_is_refused() -> None:
    async def scenario() -> None:
        async with FakeSerf() as fake:
            huge = {"Members": [member("a", b"\x7f\x00\x00\x01", blob="x" * (2 << 20))]}
            fake.scripts["members"] = lambda seq, _: [header(seq), huge]
            async with await fake.connect() as rpc:
                with pytest.raises(SerfProtocolError, match="over 1048576 bytes"):
                    await rpc.members()
                with pytest.raises(SerfProtocolError):  # the connection is over
                    await rpc.event("heat", b"")

    run(scenario())


def test_a_stream_delivers_records_then_stops() -> None:
    async def scenario() -> None:
        async with FakeSerf() as fake:
            streams: list[int] = []

            def stream(seq: int, _: Body) -> list[object]:
                streams.append(seq)
                join = {"Event": "member-join", "Members": [member("b", b"\x7f\x00\x00\x02")]}
                return [header(seq), *user_record(seq, 1, "heat", b"\x00\xff"), header(seq), join]

            fake.scripts["stream"] = stream
            # A record already in flight when the stream stops arrives after the stop's answer.
            fake.scripts["stop"] = lambda seq, _: [
                header(seq),
                *user_record(streams[0], 2, "late", b""),
            ]
            async with await fake.connect() as rpc:
                events = await rpc.stream("user,member-join")
                first = await asyncio.wait_for(anext(events), 5)
                second = await asyncio.wait_for(anext(events), 5)
                await events.stop()
                assert [event async for event in events] == []
                assert await rpc.members() == []  # the late record was framed, and dropped
            assert first == UserEvent(ltime=1, name="heat", payload=b"\x00\xff", coalesce=False)
            assert isinstance(second, MemberEvent)
            assert (second.kind, second.members[0].name) == ("member-join", "b")
            assert ("stream", {"Type": "user,member-join"}) in fake.requests
            assert ("stop", {"Stop": streams[0]}) in fake.requests

    run(scenario())


def test_a_query_collects_acks_and_responses_until_done() -> None:
    def query(seq: int, body: Body) -> list[object]:
        records = [
            {"Type": "ack", "From": "b", "Payload": None},
            {"Type": "response", "From": "b", "Payload": b"hot"},
            # Serf's agent, when the query ended just before the stream: records from nobody
            {"Type": "response", "From": "", "Payload": None},
            {"Type": "ack", "From": "", "Payload": None},
            {"Type": "done", "From": "", "Payload": None},
        ]
        return [header(seq)] + [obj for record in records for obj in (header(seq), record)]

    async def scenario() -> None:
        async with FakeSerf() as fake:
            fake.scripts["query"] = query
            async with await fake.connect() as rpc:
                result = await rpc.query("heat?", b"", 0.5, request_ack=True)
                assert await rpc.members() == []
        assert result.acks == ("b",)
        assert [(r.from_node, r.payload) for r in result.responses] == [("b", b"hot")]
        sent = dict(fake.requests)["query"]
        assert sent is not None
        assert (sent["Timeout"], sent["RequestAck"], sent["FilterNodes"]) == (500_000_000, True, [])

    run(scenario())


def test_a_peer_closing_mid_response_is_unreachable() -> None:
    async def scenario() -> None:
        async with FakeSerf() as fake:
            fake.scripts["members"] = lambda seq, _: [header(seq), CLOSE]  # the body never comes
            async with await fake.connect() as rpc:
                events = await rpc.stream("user")
                with pytest.raises(SerfUnreachableError, match="closed the connection"):
                    await rpc.members()
                with pytest.raises(SerfUnreachableError):
                    await asyncio.wait_for(anext(events), 5)

    run(scenario())


def test_a_command_before_the_handshake_ends_the_connection() -> None:
    async def scenario() -> None:
        async with FakeSerf() as fake:
            reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
            writer.write(encode_request("members", 0))
            answer = msgpack.unpackb(await asyncio.wait_for(reader.read(1024), 5))
            assert answer == header(0, HANDSHAKE_REQUIRED)
            assert await asyncio.wait_for(reader.read(1024), 5) == b""
            writer.close()

    run(scenario())


def test_nothing_listening_is_unreachable() -> None:
    async def scenario() -> None:
        with pytest.raises(SerfUnreachableError, match="cannot connect"):
            await SerfRpc.connect("127.0.0.1", free_port(), auth_key=None, timeout_s=2)

    run(scenario())


# --- the agent, pure -----------------------------------------------------------------------------


def test_agent_argv_keeps_secrets_off_the_command_line() -> None:
    argv = agent_argv(
        "/usr/bin/serf",
        "n1",
        "127.0.0.1:7946",
        rpc_address="127.0.0.1:7373",
        config_file="/run/x/serf.json",
        join=["10.0.0.2:7946", "10.0.0.3:7946"],
    )
    assert argv == [
        "/usr/bin/serf",
        "agent",
        "-node=n1",
        "-bind=127.0.0.1:7946",
        "-rpc-addr=127.0.0.1:7373",
        "-config-file=/run/x/serf.json",
        "-log-level=warn",
        "-join=10.0.0.2:7946",
        "-join=10.0.0.3:7946",
    ]


@pytest.mark.parametrize(
    ("key", "complaint"),
    [("not base64!", "not base64"), (base64.b64encode(bytes(20)).decode(), "20 bytes")],
)
def test_a_bad_encryption_key_is_refused_before_starting(key: str, complaint: str) -> None:
    with pytest.raises(EncryptKeyError, match=complaint):
        decode_encrypt_key(key)
    with pytest.raises(EncryptKeyError, match=complaint):
        asyncio.run(SerfAgent.start("n", "127.0.0.1:7946", encrypt_key=key, serf=sys.executable))
    for size in (16, 24, 32):
        assert len(decode_encrypt_key(base64.b64encode(bytes(size)).decode())) == size


def test_without_serf_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SerfMissingError) as missing:
        asyncio.run(SerfAgent.start("n", "127.0.0.1:7946", encrypt_key=new_key()))
    assert str(missing.value) == SERF_MISSING
    assert isinstance(missing.value, MaxwellError)
    with pytest.raises(SerfMissingError, match="not an executable serf"):
        asyncio.run(SerfAgent.start("n", "127.0.0.1:7946", encrypt_key=new_key(), serf="/nope"))


# --- real Serf -----------------------------------------------------------------------------------


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def free_port() -> int:
    return free_gossip_port()


def node_prefix() -> str:
    return f"mxtest-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def cluster(size: int, prefix: str, key: str | None = None) -> AsyncIterator[list[SerfAgent]]:
    """`size` agents on loopback, all joined through the first; all stopped, whatever happens."""
    key = key or new_key()
    agents: list[SerfAgent] = []
    try:
        seed = f"127.0.0.1:{free_port()}"
        agents.append(await SerfAgent.start(f"{prefix}-0", seed, encrypt_key=key))
        for index in range(1, size):
            bind = f"127.0.0.1:{free_port()}"
            agent = await SerfAgent.start(f"{prefix}-{index}", bind, join=[seed], encrypt_key=key)
            agents.append(agent)
        yield agents
    finally:
        await asyncio.gather(*(agent.stop(leave=False) for agent in agents))


async def poll(check: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def alive(agent: SerfAgent) -> dict[str, dict[str, str]]:
    """The alive members `agent` sees, by name, with their tags."""
    async with await agent.connect() as rpc:
        return {m.name: m.tags for m in await rpc.members() if m.status == "alive"}


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may be slow to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def serfs_named(prefix: str) -> str:
    found = subprocess.run(
        ["pgrep", "-af", "--", f"-node={prefix}"], capture_output=True, text=True, check=False
    )
    assert found.returncode in (0, 1), found.stderr  # 1: none; anything else: pgrep failed
    return found.stdout.strip()


@needs_serf
def test_three_agents_converge_gossip_events_and_share_tags() -> None:
    prefix = node_prefix()

    async def scenario() -> None:
        async with cluster(3, prefix) as agents:

            async def converged() -> bool:
                seen = [await alive(agent) for agent in agents]
                return all(len(members) == 3 for members in seen)

            assert await poll(converged, within_s=5), "members did not converge to 3 alive"
            async with await agents[2].connect() as listener, await agents[0].connect() as sender:
                events = await listener.stream("user")
                await sender.event("heat", b"\x00\xff joules", coalesce=False)
                event = await asyncio.wait_for(anext(events), 10)
                assert isinstance(event, UserEvent)
                assert (event.name, event.payload) == ("heat", b"\x00\xff joules")
                await events.stop()
                await sender.set_tags({"heat_c": "71", "role": "seller"})
                await sender.set_tags({}, delete=["role"])

            async def tagged() -> bool:
                return (await alive(agents[1])).get(f"{prefix}-0") == {"heat_c": "71"}

            assert await poll(tagged, within_s=5), "tags did not reach another agent"

    run(scenario())
    assert serfs_named(prefix) == ""


@needs_serf
def test_a_query_is_answered_by_another_agent() -> None:
    prefix = node_prefix()

    async def answer(rpc: SerfRpc) -> None:
        async with await rpc.stream("query") as queries:
            async for query in queries:
                if isinstance(query, QueryEvent) and query.name == "heat?":
                    await rpc.respond(query.query_id, b"71 C")

    async def scenario() -> None:
        async with cluster(2, prefix) as agents, await agents[1].connect() as responder:
            answering = asyncio.create_task(answer(responder))
            try:
                await asyncio.sleep(0.2)  # the stream is open before the query goes out
                async with await agents[0].connect() as asker:
                    result = await asker.query("heat?", b"", timeout_s=1.0, request_ack=True)
            finally:
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering
            assert [(r.from_node, r.payload) for r in result.responses] == [
                (f"{prefix}-1", b"71 C")
            ]
            assert set(result.acks) == {f"{prefix}-0", f"{prefix}-1"}

    run(scenario())


@needs_serf
def test_serf_refuses_an_oversized_event_with_its_own_text() -> None:
    async def scenario() -> None:
        async with cluster(1, node_prefix()) as agents, await agents[0].connect() as rpc:
            with pytest.raises(
                SerfCommandError, match="exceeds configured limit of 512 bytes"
            ) as refused:
                await rpc.event("heat", bytes(1024))
            assert refused.value.command == "event"

    run(scenario())


@needs_serf
def test_a_wrong_rpc_token_is_refused() -> None:
    async def scenario() -> None:
        async with cluster(1, node_prefix()) as agents:
            host, port = agents[0].rpc_address
            with pytest.raises(SerfAuthError, match=INVALID_AUTH_TOKEN):
                await SerfRpc.connect(host, port, auth_key="0" * 32)
            async with await SerfRpc.connect(host, port, auth_key=None) as anonymous:
                with pytest.raises(SerfAuthError, match=AUTH_REQUIRED):
                    await anonymous.members()

    run(scenario())


@needs_serf
def test_secrets_stay_off_the_command_line_and_the_config_is_removed() -> None:
    key = new_key()

    async def scenario() -> None:
        async with cluster(1, node_prefix(), key) as agents:
            argv = Path(f"/proc/{agents[0].pid}/cmdline").read_bytes().decode().split("\0")
            assert agents[0].auth_token not in " ".join(argv)
            assert key not in " ".join(argv)
            config = next(arg for arg in argv if arg.startswith("-config-file="))
            assert not Path(config.removeprefix("-config-file=")).exists()

    run(scenario())


@needs_serf
def test_an_agent_with_a_wrong_encryption_key_does_not_join() -> None:
    prefix = node_prefix()

    async def scenario() -> None:
        async with cluster(1, prefix) as agents:
            with pytest.raises(SerfAgentError, match="No installed keys could decrypt") as failed:
                await SerfAgent.start(
                    f"{prefix}-stranger",
                    f"127.0.0.1:{free_port()}",
                    join=[agents[0].bind],
                    encrypt_key=new_key(),
                )
            assert failed.value.pid is not None and process_gone(failed.value.pid)
            assert list(await alive(agents[0])) == [f"{prefix}-0"]

    run(scenario())
    assert serfs_named(prefix) == ""


@needs_serf
def test_stop_leaves_gracefully_and_leaves_no_serf_behind() -> None:
    prefix = node_prefix()

    async def scenario() -> list[int]:
        async with cluster(2, prefix) as agents:
            pids = [agent.pid for agent in agents]
            assert await agents[1].stop() == 0  # graceful: leave over RPC, then exit 0

            async def left() -> bool:
                async with await agents[0].connect() as rpc:
                    return [m.status for m in await rpc.members() if m.name.endswith("-1")] == [
                        "left"
                    ]

            assert await poll(left, within_s=5), "the stopped agent was not seen to leave"
        return pids

    pids = asyncio.run(scenario())
    assert all(process_gone(pid) for pid in pids)
    assert serfs_named(prefix) == ""


SIGKILLED_PARENT = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from maxwell.gossip import SerfAgent

async def main():
    agent = await SerfAgent.start(sys.argv[2], sys.argv[3], encrypt_key=sys.argv[4])
    print(agent.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@needs_serf
def test_serf_dies_with_a_sigkilled_parent() -> None:
    prefix = node_prefix()
    argv = [sys.executable, "-c", SIGKILLED_PARENT, str(SRC), f"{prefix}-0"]
    parent = subprocess.Popen(
        [*argv, f"127.0.0.1:{free_port()}", new_key()], stdout=subprocess.PIPE, text=True
    )
    serf_pid = None
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 15)
        assert ready, "the parent did not start its serf agent within 15 s"
        serf_pid = int(parent.stdout.readline())
        assert not process_gone(serf_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while not process_gone(serf_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_gone(serf_pid), "serf outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if serf_pid is not None and not process_gone(serf_pid):
            os.kill(serf_pid, signal.SIGKILL)
    assert serfs_named(prefix) == ""
