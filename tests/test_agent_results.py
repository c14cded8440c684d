"""Bytes a spawn hands its agent and bytes it hands back (`maxwell.node.results`), on a real
daemon (real processes, no cgroups) served on a Unix socket and driven through the SDK."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import wait_until
from maxwell.client import Client, ClientError
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState
from maxwell.node.wire import MAX_PAYLOAD_BYTES

# Copies its payload to its result, reversed, then says where the payload was and its mode.
MIRROR = (
    'p="$MAXWELL_AGENT_PAYLOAD"; r="$MAXWELL_AGENT_RESULT"; '
    'rev < "$p" > "$r.tmp" && mv "$r.tmp" "$r"; stat -c "%a %u" "$p"'
)


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemon = NodeDaemon(NodeConfig(state_dir=root / "state", tick_s=0.1, cgroup="none"))
        self.socket = str(root / "api.sock")
        self.server = serve(create_app(self.daemon), socket_path=self.socket, listen=None)

    def client(self, token: str | None = None) -> Client:
        return Client(socket=self.socket, token=token or self.daemon.admin_token)

    def ended(self, agent: str) -> None:
        def done() -> bool:
            self.daemon.tick_once()
            return self.daemon.agent(agent).state in (AgentState.EXITED, AgentState.DEAD)

        wait_until(done, timeout_s=30, what=f"agent {agent} ended")


@pytest.fixture
def node() -> Iterator[Node]:
    root = Path(tempfile.mkdtemp(prefix="mxw-results-", dir="/tmp"))
    root.chmod(0o711)  # a root daemon's agents, uids of their own, pass through it
    made = Node(root)
    try:
        yield made
    finally:
        made.server.stop()
        made.daemon.shutdown(kill_agents=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_payload_reaches_its_agent_alone_and_its_result_comes_back_byte_for_byte(
    node: Node,
) -> None:
    payload = b"line one\nline two\n"
    with node.client() as admin:
        spawned = admin.spawn(["sh", "-c", MIRROR], fund=1.0, bid=1.0, payload=payload)
        node.ended(spawned.agent)
        assert admin.agent(spawned.agent).exit_code == 0
        assert admin.result(spawned.agent) == b"eno enil\nowt enil\n"
        with node.client(spawned.token) as itself:  # the agent reads its own
            assert itself.result(spawned.agent) == b"eno enil\nowt enil\n"
    work = node.root / "state" / "work" / spawned.agent
    log = (node.root / "state" / "agents" / f"{spawned.agent}.log").read_text().split()
    assert log == ["600", str(os.stat(work).st_uid)]  # its own file, mode 0600
    assert (work / "payload").read_bytes() == payload
    started = next(e for e in node.daemon.events() if e.kind == "spawned").detail
    assert started["argv"] == ["sh", "-c", MIRROR]  # not in its command line


def test_a_result_is_bytes_of_any_kind_and_none_without_a_payload(node: Node) -> None:
    blob = bytes(range(256)) * 64
    with node.client() as admin:
        spawned = admin.spawn(
            ["sh", "-c", 'while [ ! -f "$MAXWELL_AGENT_DIR/ready" ]; do sleep 0.05; done; '
             'test -z "$MAXWELL_AGENT_PAYLOAD" && cat "$MAXWELL_AGENT_DIR/in" '
             '> "$MAXWELL_AGENT_RESULT"'], fund=1.0, bid=1.0,
        )  # fmt: skip
        # No payload: the agent finds none named; it leaves what it finds in its directory.
        work = node.root / "state" / "work" / spawned.agent
        wait_until(work.exists, what="its directory")
        (work / "in").write_bytes(blob)
        os.chown(work / "in", os.stat(work).st_uid, -1)
        (work / "ready").touch()
        node.ended(spawned.agent)
        assert admin.agent(spawned.agent).exit_code == 0
        assert admin.result(spawned.agent) == blob


def test_a_payload_over_its_limit_or_not_base64_is_refused_and_nothing_starts(node: Node) -> None:
    with node.client() as admin:
        with pytest.raises(ClientError) as large:
            admin.spawn(["true"], fund=1.0, bid=1.0, payload=b"x" * (MAX_PAYLOAD_BYTES + 1))
        assert large.value.status == 422 and "payload" in large.value.message
        transport = httpx.HTTPTransport(uds=node.socket)
        with httpx.Client(transport=transport, base_url="http://maxwell") as http:
            said = http.post(
                "/agents", headers={"Authorization": f"Bearer {node.daemon.admin_token}"},
                json={"argv": ["true"], "fund": 1.0, "bid": 1.0, "payload": "a==b"},
            )  # fmt: skip
        assert said.status_code == 422 and "payload" in said.json()["error"]
        assert admin.agents() == []
        fits = admin.spawn(["true"], fund=1.0, bid=1.0, payload=b"y" * MAX_PAYLOAD_BYTES)
        node.ended(fits.agent)
    path = node.root / "state" / "work" / fits.agent / "payload"
    assert path.stat().st_size == MAX_PAYLOAD_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
