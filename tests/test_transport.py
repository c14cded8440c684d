"""The SDK's transport (`maxwell.transport`) against small real servers on a Unix socket: a kept
connection the server closed is opened again, a request is never sent twice, and every failure
is one `UnreachableError` that leaves no descriptor open."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from maxwell.errors import UsageError
from maxwell.transport import NodeConnection, UnreachableError

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

Handler = Callable[[socket.socket, bytes], bool]  # answers one request; False: close


class Server:
    """Accepts connections one at a time and hands each request to `handler`."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path, self.handler = str(path), handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released each time a connection is closed
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as stream:
                while True:
                    request = _read_request(stream)
                    if not request:
                        break
                    self.requests.append(request)
                    if not self.handler(conn, request):
                        break
            self.closed.release()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)


def _read_request(stream: BinaryIO) -> bytes:
    """One whole request (head and `Content-Length` body), or b"" at the end of the stream."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            return b""
        head += line
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + stream.read(length)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Handler], Server]]:
    servers: list[Server] = []

    def start(handler: Handler) -> Server:
        servers.append(Server(tmp_path / f"api{len(servers)}.sock", handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _answer(conn: socket.socket, request: bytes) -> bool:
    conn.sendall(ANSWER)
    return True


def _answer_then_close(conn: socket.socket, request: bytes) -> bool:
    conn.sendall(ANSWER)  # keep-alive by HTTP/1.1's default, and yet closed (a timeout, a restart)
    return False


def _close_unanswered(conn: socket.socket, request: bytes) -> bool:
    return False


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_requests_share_one_kept_connection(serve: Callable[[Handler], Server]) -> None:
    server = serve(_answer)
    connection = NodeConnection(socket_path=server.path, headers={"Authorization": "Bearer t"})
    try:
        for _ in range(3):
            response = connection.request("POST", "/agents/a/bid", json=b'{"price":1}')
            assert (response.status, response.body) == (200, b"{}")
    finally:
        connection.close()
    assert server.connections == 1 and len(server.requests) == 3
    first = server.requests[0]
    assert first.startswith(b"POST /agents/a/bid HTTP/1.1\r\n")
    assert b"Authorization: Bearer t\r\n" in first and b"Content-Type: application/json" in first
    assert first.endswith(b'\r\n\r\n{"price":1}')


def test_a_connection_the_server_closed_is_opened_again(
    serve: Callable[[Handler], Server],
) -> None:
    server = serve(_answer_then_close)
    connection = NodeConnection(socket_path=server.path)
    try:
        for _ in range(3):
            assert connection.request("GET", "/price", params={"after": 2}).status == 200
            assert server.closed.acquire(timeout=10)  # closed while the connection is kept
    finally:
        connection.close()
    assert server.connections == 3 and len(server.requests) == 3  # each sent exactly once
    assert server.requests[0].startswith(b"GET /price?after=2 HTTP/1.1\r\n")


def test_a_request_the_server_dropped_is_not_sent_again(
    serve: Callable[[Handler], Server],
) -> None:
    server = serve(_close_unanswered)
    connection = NodeConnection(socket_path=server.path)
    before = _open_descriptors()
    with pytest.raises(UnreachableError, match="closed the connection"):
        connection.request("POST", "/agents/a/fund", json=b'{"amount":1}')
    assert len(server.requests) == 1  # a funding must never happen twice
    assert _open_descriptors() == before
    connection.close()


def test_no_server_and_a_silent_one_are_unreachable(
    tmp_path: Path, serve: Callable[[Handler], Server]
) -> None:
    before = _open_descriptors()
    missing = NodeConnection(socket_path=str(tmp_path / "none.sock"))
    with pytest.raises(UnreachableError, match="No such file"):
        missing.request("GET", "/price")
    assert _open_descriptors() == before
    silent = serve(lambda conn, request: True)  # reads and never answers
    waiting = NodeConnection(socket_path=silent.path, timeout_s=0.2)
    with pytest.raises(UnreachableError, match="timed out"):
        waiting.request("GET", "/price")
    waiting.close()


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:1", "127.0.0.1:1", "http://127.0.0.1:1/api", "http://:80"]
)
def test_a_base_url_other_than_http_host_port_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match="http://HOST:PORT"):
        NodeConnection(base_url=url)
