"""Attacks on the API's intake, over a real Unix socket. Measured before the fixes: a 300 MB body
with no token took the daemon from 389 to 975 MB (bodies were parsed before authentication and
without a limit); names with ESC and NUL were stored and printed raw; 1,024 arguments of 4 KB
gave an HTTP 500 (E2BIG); a client that retried an unanswered funding minted twice."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from maxwell.client import Client, ClientError
from maxwell.node.api import MAX_BODY_BYTES
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError
from maxwell.units import Money

HUGE = 300_000_000


@pytest.fixture
def socket_path() -> Iterator[str]:
    with serving(FakeNode()) as server:
        assert server.socket_path is not None
        yield server.socket_path


@pytest.fixture
def tcp_address() -> Iterator[tuple[str, int]]:
    """The API on loopback TCP, where no caller is vouched for by the kernel: a stranger."""
    with serving(FakeNode(), listen="127.0.0.1:0") as server:
        assert server.tcp_address is not None
        yield server.tcp_address.host, server.tcp_address.port


def answer_to_headers(
    address: str | tuple[str, int], headers: str
) -> tuple[int, dict[str, object]]:
    """Send a request's headers and not a byte of its body: the node must answer anyway."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)  # a node waiting for the body it announced would time out here
        conn.connect(address)
        conn.sendall(f"POST /agents HTTP/1.1\r\nHost: maxwell\r\n{headers}\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(
    tcp_address: tuple[str, int], socket_path: str
) -> None:
    # (A stranger on the Unix socket is refused the same way: test_peer_credentials.py.)
    status, body = answer_to_headers(tcp_address, f"Content-Length: {HUGE}\r\n")
    assert status == 401 and "Authorization" in str(body["error"])
    for address in (tcp_address, socket_path):  # a forged token is refused from anyone
        status, body = answer_to_headers(
            address, f"Authorization: Bearer forged\r\nContent-Length: {HUGE}\r\n"
        )
        assert (status, body["error"]) == (401, "unknown token")


def test_a_body_over_the_limit_is_refused_even_with_the_admins_token(socket_path: str) -> None:
    token = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
    status, body = answer_to_headers(socket_path, f"{token}Content-Length: {HUGE}\r\n")
    assert status == 413 and str(MAX_BODY_BYTES) in str(body["error"])
    status, _ = answer_to_headers(socket_path, f"{token}Transfer-Encoding: chunked\r\n")
    assert status == 411  # a body of no announced length is not read either


@pytest.mark.parametrize("name", ["\x1b[2J\x1b[31mowned", "nul\x00byte", "bell\x07", "c1\x9b"])
def test_names_with_control_characters_are_refused(socket_path: str, name: str) -> None:
    with Client(socket=socket_path, token=ADMIN_TOKEN) as admin:
        with pytest.raises(ClientError) as refused:
            admin.spawn(["sleep", "1"], fund=1.0, bid=1.0, name=name)
        assert refused.value.status == 422 and "name" in refused.value.message
        with pytest.raises(ClientError) as nul:
            admin.spawn(["sleep", "1\x00rm -rf /"], fund=1.0, bid=1.0)
        assert nul.value.status == 422
        assert admin.agents() == []  # nothing was spawned


def test_a_command_line_too_long_for_the_kernel_is_a_400_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    daemon = NodeDaemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"))
    try:
        argv = ["true", *["x" * 4096] * 1023]  # 4 MiB: more than the kernel's ARG_MAX
        with pytest.raises(NodeError) as refused:
            daemon.spawn(argv, fund=Money(1_000_000), bid=1.0)
        assert refused.value.status == 400 and "E2BIG" in str(refused.value)
        assert daemon.agents() == []
        assert daemon.ledger().verify().ok
        assert not [e for e in daemon.ledger().entries() if e.kind == "funded"]
    finally:
        daemon.shutdown(kill_agents=True)


def test_a_funding_retried_with_its_key_mints_once(tmp_path: Path) -> None:
    daemon = NodeDaemon(NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"))
    try:
        agent = daemon.spawn(["sleep", "30"], fund=Money(1_000_000), bid=1.0).agent
        treasury = daemon.ledger().balance("treasury")
        for _ in range(3):  # the answer was lost twice: the client sent it three times
            assert daemon.fund(agent, Money(2_000_000), key="retry-k-0001").balance == 3_000_000
        assert daemon.ledger().balance("treasury") == treasury - 2_000_000
        with pytest.raises(NodeError) as conflict:
            daemon.fund(agent, Money(5_000_000), key="retry-k-0001")
        assert conflict.value.status == 409
        assert daemon.ledger().verify().ok
    finally:
        daemon.shutdown(kill_agents=True)
