"""Attack by DNS rebinding: a web page on a name its author controls makes that name resolve to
127.0.0.1, and its script calls the node's loopback port, or the node's Unix socket forwarded
to a local port (`ssh -L 8765:/var/lib/maxwell/maxwell.sock`), where the kernel vouches for the
user who forwarded it: an administrator's rights without a token. The node answers only to names
no page can rebind (`maxwell.node.hosts`), whichever listener the request came in on."""

from __future__ import annotations

import http.client
import json
import os
import stat
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fake_node import ADMIN_TOKEN, FakeNode, serving
from maxwell.node.api import ApiServer
from maxwell.node.hosts import refused_host
from maxwell.transport import UnixConnection
from maxwell.units import Money

PAGE = "evil.example:8765"


@pytest.fixture
def server() -> Iterator[tuple[FakeNode, ApiServer]]:
    node = FakeNode()
    node.spawn(["sleep", "9"], fund=Money(10**6), bid=1.0, name="victim")
    with serving(node, listen="127.0.0.1:0") as running:
        yield node, running


def _ask(
    connection: http.client.HTTPConnection, method: str, path: str, host: str, **headers: str
) -> tuple[int, dict[str, object]]:
    """One request as a browser sends it: `Host` is the page's name, whatever was connected to."""
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", host)
    for name, value in headers.items():
        connection.putheader(name, value)
    body = b"{}" if method == "POST" else b""
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    is_json = response.getheader("content-type", "").startswith("application/json")
    return response.status, json.loads(data) if is_json else {}


def test_a_rebound_page_gets_nothing_on_the_forwarded_socket(
    server: tuple[FakeNode, ApiServer],
) -> None:
    node, running = server
    assert running.socket_path is not None and stat.S_ISSOCK(os.stat(running.socket_path).st_mode)
    victim = next(iter(node.agents_by_id))
    for method, path in (("GET", "/agents"), ("POST", f"/agents/{victim}/kill"), ("GET", "/")):
        status, body = _ask(UnixConnection(running.socket_path, 10.0), method, path, PAGE)
        assert status == 403, (method, path, status)
        assert "evil.example" in str(body["error"]) and "rebinding" in str(body["error"])
    assert node.agent(victim).state.value == "running"  # the kill never reached the node
    # The SDK's name on the socket, with the kernel's word for the admin: answered.
    status, body = _ask(UnixConnection(running.socket_path, 10.0), "GET", "/agents", "maxwell")
    assert status == 200 and [a["id"] for a in body["agents"]] == [victim]  # type: ignore[index]


def test_a_rebound_page_gets_nothing_on_the_loopback_port(
    server: tuple[FakeNode, ApiServer],
) -> None:
    _, running = server
    address = running.tcp_address
    assert address is not None and address.host == "127.0.0.1" and address.port > 0

    def ask(path: str, host: str, **headers: str) -> int:
        return _ask(http.client.HTTPConnection(address.host, address.port), "GET", path, host,
                    **headers)[0]  # fmt: skip

    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path in ("/", "/metrics", "/price", "/static/maxwell.js"):
        assert ask(path, PAGE) == 403, path
    assert ask("/agents", PAGE, **token) == 403  # even with a token it may have stolen
    for name in (f"127.0.0.1:{address.port}", f"localhost:{address.port}", "LOCALHOST.", "[::1]"):
        assert ask("/metrics", name) == 200, name
    assert ask("/agents", "localhost", **token) == 200


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8765", "[::1]:8765", "[::1]", "10.0.0.7:80", "localhost",
     "Localhost:1", "localhost.", "app.localhost:3000", "maxwell", "maxwell:80", ""],
)  # fmt: skip
def test_names_no_page_can_rebind_are_answered(host: str) -> None:
    assert refused_host(host.encode()) is None
    assert refused_host(None) is None  # HTTP/1.0: no Host at all


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8765", "localhost.evil.example", "127.0.0.1.nip.io",
     "maxwell.evil.example", "[::1", "[::1]x", "127.0.0.1:http", "::1",
     "evillocalhost", "0x7f000001"],
)  # fmt: skip
def test_every_other_name_is_refused(host: str) -> None:
    why = refused_host(host.encode())
    assert why is not None and why.startswith(f"Host {host!r}: the node answers only to")


@given(st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){1,3}", fullmatch=True))
def test_a_dotted_name_is_refused_unless_it_is_an_address_or_under_localhost(name: str) -> None:
    answered = refused_host(name.encode()) is None
    is_address = all(part.isdigit() and int(part) < 256 and str(int(part)) == part
                     for part in name.split(".")) and name.count(".") == 3  # fmt: skip
    assert answered == (is_address or name.endswith(".localhost"))
