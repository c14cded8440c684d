"""Who may do what on a node (issue 11, 1): on the Unix socket the kernel says who connected
(`SO_PEERCRED`, `SO_PEERGROUPS`). Root, the daemon's user and the `maxwell` group are the admin
without a token; every other local user may connect, spawns agents that run as itself from its
own account (which the admin funds) and sees and acts on those alone; an agent's dynamic uid gets
nothing without its token, and no peer is trusted on loopback TCP."""

from __future__ import annotations

import errno
import json
import os
import pwd
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import NobodyPython
from fake_node import FakeNode, serving
from helpers import wait_until
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.peers import AdminPeers, Peer, read_peer
from maxwell.units import Money

STRANGER = "nobody"  # an unprivileged user Debian always has
ADMIN_GID = 4242  # a group no one has: made the admins' group for the test
J = 1_000_000


def _node_with_an_agent() -> tuple[FakeNode, str, str]:
    node = FakeNode()
    spawned = node.spawn(["sleep", "60"], fund=Money(J), bid=1.0)
    return node, spawned.agent, spawned.token


# One HTTP request over the Unix socket, from whatever user runs it: prints status and body.
_CLIENT = r"""
import http.client, json, socket, sys
path, method, url, body, token = sys.argv[1:6]
conn = http.client.HTTPConnection("maxwell")
conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.sock.connect(path)
headers = {"Content-Type": "application/json"} if body else {}
if token:
    headers["Authorization"] = "Bearer " + token
conn.request(method, url, body=body or None, headers=headers)
answer = conn.getresponse()
print(json.dumps([answer.status, answer.read().decode()]))
"""


def _stranger() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root: calls the API as another user")
    try:
        return pwd.getpwnam(STRANGER)
    except KeyError:
        pytest.skip(f"needs the user {STRANGER!r}")


PYTHON = sys.executable  # replaced by one user nobody may run (`_python`)


@pytest.fixture(autouse=True)
def _python(request: pytest.FixtureRequest) -> None:
    global PYTHON
    if "root" in request.keywords and os.geteuid() == 0:
        found: NobodyPython = request.getfixturevalue("nobody_python")
        PYTHON = found.python


def _call(
    socket_path: str, method: str, url: str, body: str = "", *, uid: int, gid: int, token: str = ""
) -> tuple[int, str]:
    result = subprocess.run(
        [PYTHON, "-c", _CLIENT, socket_path, method, url, body, token],
        user=uid, group=gid, extra_groups=[], capture_output=True, text=True, check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=60,
    )  # fmt: skip
    status, text = json.loads(result.stdout)
    return int(status), str(text)


@pytest.mark.parametrize(
    ("peer", "admin"),
    [
        (Peer(pid=1, uid=0, gid=0), True),  # root
        (Peer(pid=1, uid=1000, gid=1000), True),  # the daemon's own user
        (Peer(pid=1, uid=1001, gid=ADMIN_GID), True),  # the admins' group, as its primary one
        (Peer(pid=1, uid=1001, gid=100, groups=frozenset({27, ADMIN_GID})), True),  # supplementary
        (Peer(pid=1, uid=1001, gid=100, groups=frozenset({27})), False),
        (Peer(pid=1, uid=65534, gid=65534), False),
    ],
)
def test_who_is_the_admin_without_a_token(peer: Peer, admin: bool) -> None:
    admins = AdminPeers(uids=frozenset({1000}), gids=frozenset({ADMIN_GID}))
    assert admins.is_admin(peer) is admin


def test_the_kernel_names_the_peer_of_a_unix_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = read_peer(left)
    assert peer is not None
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert set(os.getgroups()) <= peer.groups | {os.getegid()}
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with tcp:
        assert read_peer(tcp) is None  # no peer credentials off the Unix socket


@pytest.mark.root
def test_a_local_user_sees_and_acts_on_its_own_agents_alone() -> None:
    stranger = _stranger()
    node, agent, token = _node_with_an_agent()  # the admin's agent
    with serving(node) as server:
        assert server.socket_path is not None
        path = server.socket_path
        os.chmod(Path(path).parent, 0o711)  # the stranger may pass through to the socket
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # every local user may connect
        me = {"uid": stranger.pw_uid, "gid": stranger.pw_gid}
        uid = stranger.pw_uid
        assert json.loads(_call(path, "GET", "/whoami", **me)[1]) == {
            "role": "user", "agent": None, "uid": uid,
        }  # fmt: skip
        # The node's own business and the admin's agent: refused.
        for method, url, body in [
            ("GET", "/status", ""), ("GET", "/events", ""), ("GET", f"/agents/{agent}", ""),
            ("POST", f"/agents/{agent}/fund", '{"amount": 5}'),
            ("POST", f"/agents/{agent}/kill", ""), ("POST", f"/agents/{agent}/bid", '{"price": 0}'),
            ("GET", "/users/0", ""), ("POST", f"/users/{uid}/fund", '{"amount": 5}'),
            ("POST", f"/agents/{agent}/audit", ""),
            ("GET", "/agents/no-such-agent", ""),  # 403 too: ids cannot be probed
        ]:  # fmt: skip
            assert _call(path, method, url, body, **me)[0] == 403, (method, url)
        assert json.loads(_call(path, "GET", "/agents", **me)[1]) == {"agents": []}
        # Its own account is empty until the admin funds it: no spawn on credit.
        spawn = json.dumps({"argv": ["sleep", "60"], "fund": 2, "bid": 1.0})
        assert _call(path, "POST", "/agents", spawn, **me)[0] == 402
        node.fund_user(uid, Money(5 * J))
        for refused in ({"user": "root"}, {"bounty": 1, "model": "m.onnx"}):
            body = json.dumps({**json.loads(spawn), **refused})
            assert _call(path, "POST", "/agents", body, **me)[0] == 403, refused
        status, text = _call(path, "POST", "/agents", spawn, **me)
        assert status == 201, text
        own = json.loads(text)["agent"]
        assert node.agent(own).user == STRANGER  # it runs as the user who spawned it
        listed = json.loads(_call(path, "GET", "/agents", **me)[1])["agents"]
        assert [info["id"] for info in listed] == [own]
        assert _call(path, "POST", f"/agents/{own}/fund", '{"amount": 1}', **me)[0] == 200
        account = json.loads(_call(path, "GET", f"/users/{uid}", **me)[1])
        assert account == {"uid": uid, "user": STRANGER, "balance": 2.0}  # 5 - 2 - 1
        assert _call(path, "POST", f"/agents/{own}/kill", "", **me)[0] == 200
        # an agent's token works from any user: agents run as users of their own
        assert _call(path, "GET", f"/agents/{agent}", token=token, **me)[0] == 200
    assert node.agent(agent).balance == J  # nothing the stranger sent reached the admin's agent
    assert node.agent(own).balance == 3 * J
    node.check_invariants()


@pytest.mark.root
def test_an_agent_s_own_uid_is_no_local_user_it_must_show_its_token() -> None:
    _stranger()  # root, to call as another uid
    node, agent, _ = _node_with_an_agent()
    with serving(node) as server:
        assert server.socket_path is not None
        path = server.socket_path
        os.chmod(Path(path).parent, 0o711)
        dynamic = {"uid": 70001, "gid": 70001}  # in the node's dynamic range: an agent's uid
        assert _call(path, "GET", "/whoami", **dynamic)[0] == 401
        spawn = json.dumps({"argv": ["sleep", "60"], "fund": 0, "bid": 1.0})
        status, text = _call(path, "POST", "/agents", spawn, **dynamic)
        assert status == 401 and "Authorization" in text  # refused before its body is read
    assert [info.id for info in node.agents()] == [agent]


@pytest.mark.root
def test_root_and_the_admins_group_are_the_admin_without_a_token() -> None:
    stranger = _stranger()
    node, agent, _ = _node_with_an_agent()
    admins = AdminPeers(uids=frozenset(), gids=frozenset({ADMIN_GID}))
    with serving(node, admins=admins) as server:
        assert server.socket_path is not None
        path = server.socket_path
        os.chmod(Path(path).parent, 0o711)
        assert _call(path, "GET", "/status", uid=0, gid=0)[0] == 200
        whoami = _call(path, "GET", "/whoami", uid=0, gid=0)
        assert whoami == (200, '{"role":"admin","agent":null,"uid":null}')
        member = {"uid": stranger.pw_uid, "gid": ADMIN_GID}  # nobody, in the admins' group
        status, _ = _call(path, "POST", f"/agents/{agent}/fund", '{"amount": 5}', **member)
        assert status == 200
    assert node.agent(agent).balance == 6 * J


def test_no_peer_is_vouched_for_on_loopback_tcp() -> None:
    # Not marked root: whoever runs the suite is the admin on the socket (root, or the daemon's
    # own user), and a stranger on TCP. (The pure v2 VM has no loopback network.)
    node, _, _ = _node_with_an_agent()
    with serving(node, listen="127.0.0.1:0") as server:
        assert server.socket_path is not None and server.tcp_address is not None
        own = {"uid": os.geteuid(), "gid": os.getegid()}
        assert _call(server.socket_path, "GET", "/status", **own)[0] == 200
        with socket.create_connection(
            (server.tcp_address.host, server.tcp_address.port), timeout=10
        ) as tcp:
            tcp.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert tcp.recv(64).startswith(b"HTTP/1.1 401")


def test_a_client_that_may_not_read_the_admin_token_goes_by_its_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A member of the maxwell group may not read <state>/admin.token (0600, the daemon's): the
    # client then sends no token, and the daemon judges it by its peer credentials.
    import argparse

    from maxwell.cli.agents_cmd import connect

    (tmp_path / "admin.token").write_text("secret\n")
    args = argparse.Namespace(state=str(tmp_path), socket=None, token=None)
    assert connect(args).token == "secret"

    def refused(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refused)
    monkeypatch.delenv("MAXWELL_TOKEN", raising=False)
    monkeypatch.delenv("MAXWELL_AGENT_TOKEN", raising=False)
    monkeypatch.delenv("MAXWELL_AGENT_TOKEN_FILE", raising=False)
    assert connect(args).token == ""


class _ManyGroups:
    """A Unix socket whose peer is in more groups than the first ask has room for."""

    family = socket.AF_UNIX

    def __init__(self, groups: int) -> None:
        self.groups = list(range(1000, 1000 + groups))
        self.asked: list[int] = []

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes:
        if option == socket.SO_PEERCRED:
            return struct.pack("3i", 42, 1001, 100)
        self.asked.append(buflen)
        if buflen < 4 * len(self.groups):
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        return struct.pack(f"{len(self.groups)}I", *self.groups)


def test_a_peer_in_many_groups_is_asked_again_with_room_for_all() -> None:
    many = _ManyGroups(300)
    peer = read_peer(many)
    assert peer is not None and (peer.pid, peer.uid, peer.gid) == (42, 1001, 100)
    assert peer.groups == frozenset(many.groups) and len(many.asked) == 2
    few = _ManyGroups(3)
    assert read_peer(few) == Peer(42, 1001, 100, frozenset(few.groups))
    assert len(few.asked) == 1  # a handful of groups: asked once


@pytest.mark.root
def test_a_local_user_s_agent_on_the_real_daemon_runs_as_that_user() -> None:
    stranger = _stranger()
    with tempfile.TemporaryDirectory(prefix="mx-user-", dir="/tmp") as base:
        os.chmod(base, 0o711)  # the user reaches the socket, its agent its directory
        state = Path(base) / "state"
        daemon = NodeDaemon(NodeConfig(state_dir=state, tick_s=0.1, cgroup="none"))
        server = serve(create_app(daemon), socket_path=str(Path(base) / "api.sock"), listen=None)
        try:
            path = str(Path(base) / "api.sock")
            me = {"uid": stranger.pw_uid, "gid": stranger.pw_gid}
            daemon.fund_user(stranger.pw_uid, Money(3 * J))
            spawn = json.dumps({"argv": ["sleep", "60"], "fund": 1, "bid": 1.0})
            status, text = _call(path, "POST", "/agents", spawn, **me)
            assert status == 201, text
            spawned = json.loads(text)
            proc = Path(f"/proc/{spawned['pid']}")
            # setpriv drops to the user, then becomes the agent: read the uid once it has
            wait_until(lambda: (proc / "comm").read_text().strip() == "sleep", what="the exec")
            uids = (proc / "status").read_text().split("Uid:")[1].split()
            assert int(uids[0]) == int(uids[1]) == stranger.pw_uid  # real and effective
            assert daemon.user_account(stranger.pw_uid).balance == 2 * J
            assert _call(path, "POST", f"/agents/{spawned['agent']}/kill", "", **me)[0] == 200
            assert daemon.ledger().verify().ok
        finally:
            server.stop()
            daemon.shutdown(kill_agents=True)
