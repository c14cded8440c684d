"""Who is calling on the Unix socket: the kernel's word (`SO_PEERCRED`), not a token.

A process that connects to a Unix socket cannot lie about its user: the kernel records the
connecting process's pid, uid and gid (`SO_PEERCRED`) and its supplementary groups
(`SO_PEERGROUPS`, Linux 4.13+) when it connects. The API serves each connection with those
credentials in the request's scope (`PeerProtocol`, `peer_of`), and `AdminPeers` says which of
them are the node's administrators without a token:

- root (uid 0), and the daemon's own user (a daemon run by an unprivileged user administers
  itself);
- members of the administrators' group (`ADMIN_GROUP`, "maxwell", when the system has it), as
  their primary group or a supplementary one.

Anyone else connecting without a token is a local user (`maxwell.node.accounts`), unless its
uid is an agent's dynamic one: agents and loopback TCP callers authenticate with tokens. A root
daemon runs each agent as a user of its own (a dynamic uid unless its spawn names one), so
agents are held to their tokens; only an agent of a daemon that does not run as root, or one
run with `--dynamic-uids none`, runs as the daemon's user and so is the admin here, as it
already was by reading `admin.token`. The rule is pure (`AdminPeers.is_admin`); the group
lookup and the socket options are the adapters at the bottom.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import socket
import struct
from dataclasses import dataclass
from typing import Final, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)

ADMIN_GROUP: Final = "maxwell"
PEER_EXTENSION: Final = "maxwell.peer"  # the key of a request's peer in `scope["extensions"]`
SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)  # Linux's number
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FEW_GROUPS = 64
_MAX_GROUPS = 65_536  # NGROUPS_MAX


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a Unix socket, as the kernel saw it when it connected."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()


@dataclass(frozen=True)
class AdminPeers:
    """Which peers administer the node without a token (see the module)."""

    uids: frozenset[int]
    gids: frozenset[int]

    def is_admin(self, peer: Peer) -> bool:
        return (
            peer.uid == 0
            or peer.uid in self.uids
            or peer.gid in self.gids
            or not peer.groups.isdisjoint(self.gids)
        )

    @classmethod
    def of_this_system(cls) -> AdminPeers:
        """Root, this process's user, and the `ADMIN_GROUP` group where the system has one."""
        try:
            gids = frozenset({grp.getgrnam(ADMIN_GROUP).gr_gid})
        except KeyError:
            gids = frozenset()
        return cls(uids=frozenset({os.geteuid()}), gids=gids)


def peer_of(scope: Scope) -> Peer | None:
    """The peer of a request served by `PeerProtocol` over a Unix socket; None otherwise."""
    found = scope.get("extensions", {}).get(PEER_EXTENSION)
    return found if isinstance(found, Peer) else None


# --- the adapters ------------------------------------------------------------------------------


class Connected(Protocol):
    """A connected socket: `socket.socket`, or asyncio's `TransportSocket` around one."""

    @property
    def family(self) -> int: ...

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


def read_peer(sock: Connected) -> Peer | None:
    """The kernel's credentials of `sock`'s peer; None for a socket that is not a Unix one."""
    if sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return Peer(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: Connected) -> frozenset[int]:
    """The peer's supplementary groups; empty where the kernel cannot say (before 4.13). Asked
    with room for `_FEW_GROUPS` first (most users have a handful), then for all there may be."""
    for room in (_FEW_GROUPS, _MAX_GROUPS):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * room)
        except OSError as exc:
            if exc.errno == errno.ERANGE and room < _MAX_GROUPS:
                continue
            log.debug("SO_PEERGROUPS unavailable (%s): primary groups only", exc.strerror)
            return frozenset()
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return frozenset()


def _with_peer(app: ASGIApp, peer: Peer) -> ASGIApp:
    async def app_with_peer(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {**scope.get("extensions", {}), PEER_EXTENSION: peer}
        await app({**scope, "extensions": extensions}, receive, send)

    return app_with_peer


class PeerProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, with each Unix connection's peer in its requests' scope."""

    def connection_made(self, transport: object) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")  # type: ignore[attr-defined]
        peer = read_peer(sock) if sock is not None else None
        if peer is not None:
            served: ASGIApp = self.app  # type: ignore[has-type]
            self.app = _with_peer(served, peer)
