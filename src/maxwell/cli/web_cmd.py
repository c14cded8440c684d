"""`maxwell web [--state DIR | --socket PATH] [--listen-address HOST:PORT] [--open] [--json]`:
where the daemon's live page is (`maxwell.web`), once it has checked that the page answers there.

The page is served at / on every listener of the daemon. With --listen-address (the daemon's
`--listen`, loopback only) this prints the page's http URL, and with --open opens it in a
browser. Without it the daemon found by --state, --socket, $MAXWELL_SOCKET or $MAXWELL_STATE
listens on its Unix socket alone, which no browser opens: this prints the socket and one line
that reaches it over SSH (`ssh -L PORT:SOCKET HOST`, then http://127.0.0.1:PORT/ on your
machine). The page asks for the admin token for agents' details (<state>/admin.token); it keeps
it in the browser tab's session storage and never puts it in a URL.

Exit status: 0 printed (and opened); 1 nothing answers with the page there, or no browser could
be opened; 2 usage error (a non-loopback address, --open without --listen-address).
"""

from __future__ import annotations

import argparse
import os
import webbrowser
from dataclasses import dataclass

from maxwell.cli.common import EXIT_USAGE, fail, print_json
from maxwell.errors import MaxwellError, UsageError
from maxwell.node.api import parse_listen
from maxwell.node.paths import locate_daemon
from maxwell.transport import NodeConnection, UnreachableError

PROG = "maxwell web"
EXIT_NO_PAGE = 1
FORWARD_PORT = 8765  # the local port the ssh -L hint suggests
_PAGE_MARK = b"<title>Maxwell</title>"  # what tells Maxwell's page from any other answer


class NoPageError(MaxwellError):
    """Nothing answers with the page where it should be, or no browser could open it."""


@dataclass(frozen=True)
class PagePlace:
    """Where the page is: its http URL (a TCP listener), else the Unix socket it is on."""

    url: str | None
    socket: str | None

    def lines(self) -> list[str]:
        if self.url is not None:
            return [self.url]
        return [
            f"unix:{self.socket}",
            f"reach it from your machine: ssh -L {FORWARD_PORT}:{self.socket} HOST, then open "
            f"http://127.0.0.1:{FORWARD_PORT}/ (or start the daemon with --listen "
            f"127.0.0.1:{FORWARD_PORT} and run maxwell web --listen-address 127.0.0.1:"
            f"{FORWARD_PORT})",
        ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="DIR", help="the daemon's state directory")
    where.add_argument("--socket", metavar="PATH", help="the daemon's Unix socket")
    parser.add_argument(
        "--listen-address", metavar="HOST:PORT",
        help="the daemon's loopback TCP listener (its --listen): print the page's URL there",
    )  # fmt: skip
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument("--json", action="store_true", help="JSON for scripts")


def run(args: argparse.Namespace) -> int:
    try:
        place = find_page(args.state, args.socket, args.listen_address, wants_browser=args.open)
        if args.open:
            open_in_browser(place)
    except UsageError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    except NoPageError as exc:
        return fail(PROG, str(exc), EXIT_NO_PAGE)
    if args.json:
        print_json({"url": place.url, "socket": place.socket, "opened": bool(args.open)})
    else:
        print("\n".join(place.lines()), flush=True)
    return 0


def find_page(
    state: str | None, socket: str | None, listen_address: str | None, *, wants_browser: bool
) -> PagePlace:
    """Where the page answers: the TCP listener named, else the daemon's socket."""
    if listen_address is not None:
        try:
            address = parse_listen(listen_address)
        except UsageError as exc:  # the API's words name the daemon's flag: say this one's
            raise UsageError(str(exc).replace("--listen ", "--listen-address ", 1)) from None
        host = f"[{address.host}]" if ":" in address.host else address.host
        url = f"http://{host}:{address.port}/"
        _check(NodeConnection(base_url=url.rstrip("/")), f"no page at {url}: is the daemon "
               f"running with --listen {listen_address}?")  # fmt: skip
        return PagePlace(url=url, socket=None)
    if wants_browser:
        raise UsageError(
            "--open needs the daemon's TCP listener: start it with --listen 127.0.0.1:PORT and "
            "pass --listen-address 127.0.0.1:PORT (a browser cannot open a Unix socket)"
        )
    found = locate_daemon(state=state, socket=socket, env=os.environ)
    _check(NodeConnection(socket_path=found.socket), found.no_daemon())
    return PagePlace(url=None, socket=found.socket)


def _check(connection: NodeConnection, missing: str) -> None:
    """Fail with `missing` unless the page answers on `connection`."""
    try:
        answer = connection.request("GET", "/")
    except UnreachableError as exc:
        raise NoPageError(f"{missing} ({exc})") from None
    finally:
        connection.close()
    if answer.status != 200 or _PAGE_MARK not in answer.body:
        raise NoPageError(f"{missing} (it answered {answer.status}, not Maxwell's page)")


def open_in_browser(place: PagePlace) -> None:
    """Open the page's URL in this machine's browser ($BROWSER, else the system's)."""
    assert place.url is not None  # find_page refused --open without a TCP address
    try:
        opened = webbrowser.open(place.url)
    except webbrowser.Error as exc:
        raise NoPageError(f"cannot open a browser here ({exc}): open {place.url}") from None
    if not opened:
        raise NoPageError(f"no browser could be opened here: open {place.url} yourself")
