"""One keep-alive HTTP/1.1 connection to a node's API, over its Unix socket or its loopback TCP
listener, on the standard library's `http.client`.

It is the SDK's transport (`maxwell.client`). Agents bid and report often, and a general-purpose
client (httpx) spent more of a bid's round trip (about 0.5 ms on a 2-core VM) than the daemon's
whole answer; this one spends a fifth of that. It does what the SDK needs and no more:

- one connection, opened on first use and kept open between requests;
- a connection the daemon has closed meanwhile (its keep-alive timeout, a restart) is noticed
  before a request is sent (the socket reads as closed) and opened again; a request is never
  sent twice, since a funding or a spawn must not happen twice;
- every failure to connect, send or receive is an `UnreachableError` naming its cause, and
  leaves the connection closed (no descriptor waits for the garbage collector);
- a `timeout_s` for the connect and for each read.
"""

from __future__ import annotations

import http.client
import select
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from maxwell.errors import UsageError

__all__ = ["NodeConnection", "Response", "UnixConnection", "UnreachableError"]


class UnreachableError(OSError):
    """The node could not be reached, or the connection failed mid-request."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    body: bytes


class UnixConnection(http.client.HTTPConnection):
    """`http.client` over a Unix socket; the Host header says `maxwell` (never resolved)."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("maxwell", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _tcp_connection(base_url: str, timeout_s: float) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"{base_url}: the node's address is http://HOST:PORT")
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)


class NodeConnection:
    """Requests to one node, one at a time (see the module); not shared between threads."""

    def __init__(
        self,
        *,
        socket_path: str | None = None,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if base_url is not None:
            self._conn = _tcp_connection(base_url, timeout_s)
        elif socket_path is not None:
            self._conn = UnixConnection(socket_path, timeout_s)
        else:
            raise UsageError("a node connection needs a socket path or a base URL")
        self._headers = dict(headers or {})

    def request(
        self,
        method: str,
        path: str,
        *,
        json: bytes | None = None,
        params: Mapping[str, int] | None = None,
    ) -> Response:
        """Send one request (`json`: a body already encoded) and read the whole answer."""
        if params:
            path = f"{path}?{urlencode(params)}"
        headers = dict(self._headers)
        if json is not None:
            headers["Content-Type"] = "application/json"
        self._drop_if_closed()
        try:
            self._conn.request(method, path, body=json, headers=headers)
            answer = self._conn.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise UnreachableError(_cause(exc)) from exc
        if answer.will_close:
            self._conn.close()
        return Response(answer.status, answer.reason, body)

    def _drop_if_closed(self) -> None:
        """Close a kept connection that reads as closed (or has unread bytes, which a
        well-behaved server never sends between requests): the next request opens a new one."""
        sock = self._conn.sock
        if sock is None:
            return
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            readable = [sock]
        if readable:
            self._conn.close()

    def close(self) -> None:
        self._conn.close()


def _cause(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the node closed the connection"
    said = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return said or type(exc).__name__
