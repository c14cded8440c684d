"""The names a request may call the node by (its `Host` header): the defence against DNS
rebinding. Pure.

A web page served from a name its author controls (`evil.example`) can make that name resolve
to 127.0.0.1 once the page has loaded. The browser then sends the page's requests to the
node's loopback port, or to its Unix socket forwarded to a local port (`ssh -L PORT:SOCKET`),
where the kernel vouches for whoever forwarded it: an administrator's rights without a token.
Such a request carries the page's name in `Host`, which the page cannot change.

So the node answers only a request that calls it by a name no page can rebind: an IP address,
`localhost` or a name under `.localhost` (browsers resolve those to loopback themselves, RFC
6761), or `maxwell`, the name the SDK and `curl --unix-socket ... http://maxwell/` use on the
socket; a request without a `Host` (HTTP/1.0) too. Any other request is refused with 403 before
anything of it is read. A reverse proxy in front of the node must pass one of these names.
"""

from __future__ import annotations

import ipaddress

SOCKET_NAME = "maxwell"  # what clients call the node on its Unix socket
_SHOWN = 80  # characters of a refused name quoted back


def refused_host(host: bytes | None) -> str | None:
    """Why a request whose `Host` header is `host` is refused; None when it is answered."""
    if not host:
        return None
    text = host.decode("latin-1").strip()
    name = _name(text)
    if name is not None and _unrebindable(name):
        return None
    return (
        f"Host {text[:_SHOWN]!r}: the node answers only to an IP address, localhost or "
        f"{SOCKET_NAME} (a web page on another name may be rebinding it to this machine)"
    )


def _name(text: str) -> str | None:
    """The name of `HOST[:PORT]` or `[V6][:PORT]`, lower case, without a final dot; None when
    the header is malformed."""
    if text.startswith("["):
        end = text.find("]")
        name, rest = (text[1:end], text[end + 1 :]) if end > 0 else ("", "")
        port = rest.removeprefix(":") if rest.startswith(":") else None if rest else ""
    else:
        name, colon, port_text = text.rpartition(":")
        name, port = (name, port_text) if colon else (text, "")
    if not name or port is None or (port and not port.isdigit()):
        return None
    return name.lower().removesuffix(".")


def _unrebindable(name: str) -> bool:
    if name in ("localhost", SOCKET_NAME) or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
