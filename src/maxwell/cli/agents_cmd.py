"""The client commands of the node daemon: `maxwell spawn`, `ps`, `fund`, `bid`, `kill`, `rm`,
`events`, `price`, `top`, `status`, `audit` and `report` (an agent's own). Each talks to the
daemon through the SDK (`maxwell.client`).

JSON (`--json`, every command): one object per answer (per event for `events`), money in $J as
the API's answers have it (events' details too: `maxwell.node.eventtext`), with a `version`
field, the package's version (`print_json`).

Finding the daemon: `--socket PATH`, else `<state>/maxwell.sock` with `--state DIR`, else
`$MAXWELL_SOCKET`, else `$MAXWELL_STATE`'s, else the default layout's (`maxwell.node.paths`).
The token: `--token`, else `<state>/admin.token` where this user may read it, else
`$MAXWELL_TOKEN`, else the agent's own (`$MAXWELL_AGENT_TOKEN`, or the file
`$MAXWELL_AGENT_TOKEN_FILE` names), so an agent may run `maxwell price` itself.

Money: an ENERGY (`--fund 50J`, `2kJ`, `1Wh`) is converted to $J one to one, 1 J of budget =
1 $J, which buys 1 J at spot price 1.0 (at spot 2.0 it buys half a joule).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, StopRequest, fail, print_json
from maxwell.cli.naming import resolve_agent
from maxwell.client import Client, ClientError, NodeUnreachableError, agent_token
from maxwell.errors import UsageError
from maxwell.node.eventtext import detail_in_j
from maxwell.node.facade import AgentInfo, AgentState, Event, NodeStatus
from maxwell.node.paths import ADMIN_TOKEN_FILE, DaemonAddress, locate_daemon
from maxwell.node.wire import AgentList, status_to_json, to_json
from maxwell.units import UJ_PER_J, money_to_tokens, parse_energy

EXIT_REFUSED = 1  # the node answered with a 4xx
# `maxwell ps`: BALANCE in $J, BID in $J per J, DEMAND and SHARE in cores, W now, ENERGY in J
PS_COLUMNS = ("ID", "NAME", "STATE", "BALANCE", "BID", "DEMAND", "SHARE", "W", "ENERGY", "PID")
ENDED = (AgentState.DEAD, AgentState.EXITED)
AGENT_HELP = "an agent's id, its name, or a prefix of its id that no other agent has"
EXIT_AUDIT_FAILED = 3  # `maxwell audit`: the agent failed its audit

COMMON_EPILOG = """\
daemon: --socket PATH, else <DIR>/maxwell.sock with --state DIR, else $MAXWELL_SOCKET, else
$MAXWELL_STATE's socket, else /run/maxwell/maxwell.sock (the service's) if it exists, else
/var/lib/maxwell/maxwell.sock (a plain `maxwell daemon`'s).
token: --token, else the admin token of that state directory where this user may read it, else
$MAXWELL_TOKEN, else
$MAXWELL_AGENT_TOKEN, else the file $MAXWELL_AGENT_TOKEN_FILE names (the agent's own); on the Unix
socket none is needed by root, the daemon's user and the maxwell group (the kernel says who calls),
nor by a local user acting on its own account and agents.
ENERGY: a number with a unit: J, kJ, MJ, mWh, Wh, kWh; 1 J of budget = 1 $J.

exit status: 0 done; 1 the node refused (the message says why); 2 usage error;
3 (maxwell audit) the agent failed its audit; 125 the daemon cannot be reached (or failed).
"""

DESCRIPTIONS = {
    "spawn": (
        "Start CMD as an agent in its own cgroup, funded from the treasury (a local user's: runs"
        " as that user, funded from its own account, `maxwell user`); print its id."
    ),
    "ps": (
        "List the node's running agents (-a: ended ones too, with why they ended; a local user sees"
        " its own, an agent token only itself). BALANCE in $J, BID in $J per J, DEMAND and SHARE"
        " in cores, W the power now, ENERGY in J since spawn. Ids, states and figures are never"
        " cut: at 80 columns a long name folds."
    ),
    "fund": (
        "Move ENERGY worth of $J from the treasury to AGENT (a local user: from its own account"
        " to its own agent)."
    ),
    "bid": "Set AGENT's limit price ($J per J) and, optionally, the cores it asks for.",
    "kill": "Kill AGENT's whole process group.",
    "rm": (
        "Forget an ended AGENT (kill it first): it leaves `ps -a` and the API. Its ledger"
        " history stays, and so does its money: what is left in its account agent:<id> stays"
        " there (`maxwell ledger balances`)."
    ),
    "events": "Print the node's events (spawned, funded, bid, frozen, apoptosis, ...).",
    "price": "Show the spot price and what it is made of.",
    "top": (
        "A live view of the market: price, temperature, agents, events as they happen; q quits"
        " (or Ctrl-C). --json prints one snapshot (the status and the latest events) and ends."
    ),
    "status": (
        "The node's health (admin): ticks and how long they take (median and p99 over the"
        " recent ticks), failed ticks and the last error, ledger rows, capacity, mechanism,"
        " cgroup layout, spot price and agents by state. --json prints GET /status."
    ),
    "audit": (
        "Audit AGENT now (admin): its latest report against the kernel's counters and, where it"
        " declared its code, its threads' instruction pointers against the code manifest. A liar"
        " is slashed. Exit 0 when it passed, 3 when it failed."
    ),
    "report": (
        "Report, with the agent's own token ($MAXWELL_AGENT_TOKEN_FILE), what the agent has"
        " consumed since it was spawned: cumulative, so a later report may never claim less."
        " (`maxwell report --out DIR` is another form: the evidence report; see"
        " `maxwell report --out DIR --help`.)"
    ),
}


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


_positive.__name__ = "positive number"


def _price(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


_price.__name__ = "price (a number >= 0)"


def _non_negative(text: str) -> float:
    return _price(text)


_non_negative.__name__ = "number >= 0"


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_count.__name__ = "integer >= 0"


_BINARY = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(text: str) -> int:
    """A byte count: an integer, or one with a binary suffix (K, M, G, T; KiB... too)."""
    number, suffix = text.strip(), ""
    for unit in ("KiB", "MiB", "GiB", "TiB", "K", "M", "G", "T"):
        if number.upper().endswith(unit.upper()):
            number, suffix = number[: -len(unit)], unit[0].upper()
            break
    value = int(number) * _BINARY[suffix]
    if value <= 0:
        raise ValueError(text)
    return value


_bytes.__name__ = "byte count (e.g. 512M, 2G)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.split()[-1]
    parser.description = DESCRIPTIONS[command]
    add_client_arguments(parser)
    add_own_arguments = _COMMAND_ARGUMENTS.get(command)
    if add_own_arguments is not None:
        add_own_arguments(parser)


def add_client_arguments(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """How a client command finds the daemon and its token (`connect`), and `--json`."""
    parser.epilog = COMMON_EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--socket", metavar="PATH", help="the daemon's Unix socket")
    parser.add_argument("--state", metavar="DIR", help="the daemon's state directory")
    parser.add_argument("--token", metavar="TOKEN", help="admin or agent token")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="JSON for scripts")


def _spawn_arguments(parser: argparse.ArgumentParser) -> None:
    """CMD and what it may spend, bid, run as and be paid for."""
    parser.add_argument("--fund", required=True, metavar="ENERGY", help="initial budget")
    parser.add_argument("--bid", required=True, type=_price, metavar="PRICE", help="$J per J")
    parser.add_argument(
        "--demand", type=_positive, default=1.0, metavar="CORES", help="cores (default 1)"
    )
    parser.add_argument("--name", metavar="NAME", help="a name (default: from CMD)")
    parser.add_argument(
        "--user", metavar="USER",
        help="run CMD as this user (default: a root daemon gives it a uid of its own, "
        "dynamic:UID; see maxwell daemon --help)",
    )  # fmt: skip
    parser.add_argument(
        "--code", action="append", metavar="PATH",
        help="a binary, library or directory of them that CMD runs (repeatable): the code "
        "manifest audits check its threads against",
    )  # fmt: skip
    parser.add_argument(
        "--bounty", metavar="ENERGY",
        help="kept for scripts: a proof earns the bounty of the job whose input it proves "
        "(maxwell job post)",
    )  # fmt: skip
    parser.add_argument(
        "--model", metavar="MODEL.onnx",
        help="the model it proves inference of: its proofs of a posted job's inputs earn",
    )  # fmt: skip
    parser.add_argument(
        "--memory", type=_bytes, metavar="BYTES",
        help="memory its group may use, e.g. 512M (default: the node's memory_max, 4G)",
    )  # fmt: skip
    parser.add_argument(
        "--pids", type=int, metavar="N",
        help="processes and threads it may have (default: the node's pids_max, 256)",
    )  # fmt: skip
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _ps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="ended agents too")


def _fund_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent", metavar="AGENT", help=AGENT_HELP)
    parser.add_argument("energy", metavar="ENERGY")


def _bid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent", metavar="AGENT", help=AGENT_HELP)
    parser.add_argument("price", type=_price, metavar="PRICE", help="$J per J")
    parser.add_argument("--demand", type=_positive, metavar="CORES", help="cores asked for")


def _agent_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent", metavar="AGENT", help=AGENT_HELP)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    """An agent's own account of its work since spawn."""
    parser.add_argument(
        "--cpu", required=True, type=_non_negative, metavar="SECONDS",
        help="CPU seconds of the whole process tree since spawn",
    )  # fmt: skip
    parser.add_argument(
        "--memory-freed", type=_count, default=0, metavar="BYTES",
        help="bytes of memory freed since spawn (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--work", type=_count, metavar="N", help="units of useful work done since spawn"
    )


def _top_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh", type=_positive, default=1.0, metavar="S", help="seconds between polls (1)"
    )


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--follow", action="store_true", help="keep printing new events")
    parser.add_argument("--after", type=int, default=0, metavar="SEQ", help="skip up to SEQ")
    parser.add_argument(
        "--poll", type=_positive, default=1.0, metavar="S", help="--follow poll (1 s)"
    )


# Each command's own arguments, after the common ones; a command not listed has none.
_COMMAND_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "spawn": _spawn_arguments,
    "fund": _fund_arguments,
    "bid": _bid_arguments,
    "kill": _agent_argument,
    "rm": _agent_argument,
    "ps": _ps_arguments,
    "audit": _agent_argument,
    "report": _report_arguments,
    "top": _top_arguments,
    "events": _events_arguments,
}


def locate(args: argparse.Namespace) -> DaemonAddress:
    """Where the flags, then the environment, then the default layout put the daemon."""
    return locate_daemon(state=args.state, socket=args.socket, env=os.environ)


def connect(args: argparse.Namespace, address: DaemonAddress | None = None) -> Client:
    """A `Client` for the daemon and token the flags and the environment name."""
    address = address or locate(args)
    token = args.token
    if token is None and address.state is not None:
        token = _admin_token(address.state / ADMIN_TOKEN_FILE)
    if not token:
        token = os.environ.get("MAXWELL_TOKEN") or agent_token() or token
    if not token and not address.socket.startswith("/"):  # on the socket the kernel says who calls
        raise UsageError("no token: pass --token or --state DIR, or set MAXWELL_TOKEN")
    return Client(socket=address.socket, token=token)


def _admin_token(path: Path) -> str:
    """The admin token in `path`; "" (none: the daemon judges the caller by its user) where
    there is none or this user may not read it, as a member of the `maxwell` group may not."""
    try:
        return path.read_text().strip()
    except (PermissionError, FileNotFoundError):
        return ""
    except OSError as exc:
        raise UsageError(f"cannot read the admin token {path}: {exc.strerror}") from exc


def event_json(event: Event) -> dict[str, object]:
    """An event as the CLI prints it in JSON: the API's, its detail's money in $J."""
    return {**to_json(event), "detail": detail_in_j(event.detail)}


def state_text(info: AgentInfo) -> str:
    """An agent's state, or once it ended, why (which says it ended): `apoptosis`, `killed`,
    `slashed`, `exited 0`."""
    return info.ended or str(info.state)


def dollars_j(amount: int) -> str:
    """µ$J as $J, six significant digits."""
    return f"{money_to_tokens(amount):.6g}"


def _agent_line(info: AgentInfo) -> str:
    return (
        f"{info.id} ({info.name}): {info.state}, balance {dollars_j(info.balance)} $J, "
        f"bid {info.bid:g} $J/J for {info.demand:g} cores"
    )


def _spawn(client: Client, args: argparse.Namespace, out: Console) -> None:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command given: maxwell spawn --fund ENERGY --bid PRICE -- CMD...")
    fund_j = parse_energy(args.fund) / UJ_PER_J  # 1 J of budget = 1 $J
    code = [os.path.abspath(path) for path in args.code or ()]  # the daemon has its own cwd
    bounty_j = parse_energy(args.bounty) / UJ_PER_J if args.bounty is not None else None
    model = os.path.abspath(args.model) if args.model is not None else None
    result = client.spawn(
        command, fund=fund_j, bid=args.bid, demand=args.demand, name=args.name, user=args.user,
        code=code or None, bounty=bounty_j, model=model, memory=args.memory, pids=args.pids,
    )  # fmt: skip
    if args.json:
        print_json(to_json(result))
    else:
        print(result.agent)


def _ps(client: Client, args: argparse.Namespace, out: Console) -> None:
    agents = [a for a in client.agents() if args.all or a.state not in ENDED]
    if args.json:
        print_json(to_json(AgentList(agents)))
        return
    rows = [
        (info.id, info.name, state_text(info), dollars_j(info.balance), f"{info.bid:g}",
         f"{info.demand:g}", f"{info.share:.2f}", f"{info.power_w:.1f}",
         f"{info.energy_uj / UJ_PER_J:.1f}", "-" if info.pid is None else str(info.pid))
        for info in agents
    ]  # fmt: skip
    for line in ps_lines(rows, out.width):
        print(line)


def ps_lines(rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """`maxwell ps`'s table in `width` columns: ids, states and figures whole; a name too long
    for what is left folds onto more lines (8 characters at least: a terminal narrower than
    the rest then wraps the lines, never loses a column)."""
    widths = [max([len(heading), *(len(row[i]) for row in rows)])
              for i, heading in enumerate(PS_COLUMNS)]  # fmt: skip
    name = PS_COLUMNS.index("NAME")
    rest = sum(widths) - widths[name] + 2 * (len(PS_COLUMNS) - 1)
    widths[name] = max(min(widths[name], 8), min(widths[name], width - rest))
    lines = []
    for row in [PS_COLUMNS, *rows]:
        parts = [row[name][i : i + widths[name]] for i in range(0, len(row[name]), widths[name])]
        for n, part in enumerate(parts or [""]):
            cells = [part if i == name else (cell if n == 0 else "")
                     for i, cell in enumerate(row)]  # fmt: skip
            lines.append("  ".join(
                cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ).rstrip())  # fmt: skip
    return lines


def print_agent(info: AgentInfo, args: argparse.Namespace) -> None:
    """An agent's answer: one line, or its JSON."""
    if args.json:
        print_json(to_json(info))
    else:
        print(_agent_line(info))


def _fund(client: Client, args: argparse.Namespace, out: Console) -> None:
    # One key per invocation: a lost answer retried with it never funds twice.
    agent = resolve_agent(args.agent, client.agents())
    info = client.fund(agent, parse_energy(args.energy) / UJ_PER_J, key=uuid.uuid4().hex)
    print_agent(info, args)


def _bid(client: Client, args: argparse.Namespace, out: Console) -> None:
    info = client.bid(args.price, args.demand, agent=resolve_agent(args.agent, client.agents()))
    print_agent(info, args)


def _report(client: Client, args: argparse.Namespace, out: Console) -> None:
    info = client.report(args.cpu, args.memory_freed, args.work)
    print_agent(info, args)


class AuditFailed(Exception):
    """`maxwell audit` found the agent lying: exit `EXIT_AUDIT_FAILED` after printing why."""


def _audit(client: Client, args: argparse.Namespace, out: Console) -> None:
    result = client.audit(resolve_agent(args.agent, client.agents()))
    if args.json:
        print_json(to_json(result))
    else:
        verdict = "passed" if result.honest else "FAILED"
        checked = ", ".join(result.checked) or "nothing to check (no report, no code manifest)"
        print(f"{result.agent}: audit {result.audits} {verdict} (checked: {checked})")
        for finding in result.findings:
            print(f"  - {finding}")
        if result.slashed:
            print(f"  slashed {dollars_j(result.slashed)} $J")
        for module, share in sorted(result.modules.items(), key=lambda item: -item[1]):
            print(f"  {share:6.1%} {module}")
    if not result.honest:
        raise AuditFailed


def _kill(client: Client, args: argparse.Namespace, out: Console) -> None:
    print_agent(client.kill(resolve_agent(args.agent, client.agents())), args)


def _rm(client: Client, args: argparse.Namespace, out: Console) -> None:
    """Forget an ended agent; the agent's last answer, so a script sees what was forgotten."""
    info = client.remove(resolve_agent(args.agent, client.agents()))
    if args.json:
        print_json(to_json(info))
    else:
        print(f"{info.id} ({info.name}): {state_text(info)}, forgotten; its account keeps "
              f"{dollars_j(info.balance)} $J")  # fmt: skip


def _shown(value: object) -> str:
    """A detail's value in an event line: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _event_line(event: Event) -> str:
    at = datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
    detail = " ".join(f"{key}={_shown(value)}" for key, value in detail_in_j(event.detail).items())
    return f"{event.seq:>6} {at} {event.kind:<10} {event.agent or '-':<10} {detail}".rstrip()


def _events(client: Client, args: argparse.Namespace, out: Console) -> None:
    if args.after < 0:
        raise UsageError(f"--after must be 0 or more, got {args.after}")
    after = args.after
    with StopRequest() as stop:
        while stop.signum is None:
            page = client.events(after)
            for event in page:
                if args.json:
                    print_json(event_json(event))
                else:
                    print(_event_line(event), flush=True)
                after = max(after, event.seq)
            if page:
                continue  # there may be more than one page
            if not args.follow:
                return
            select.select([stop.fileno()], [], [], args.poll)


def _price_cmd(client: Client, args: argparse.Namespace, out: Console) -> None:
    price = client.price()
    if args.json:
        print_json(to_json(price))
        return
    source = "measured" if price.measured else "modelled"
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("spot", f"{price.spot:.6g} $J/J")
    read = "" if price.grid_age_s is None else f", read {price.grid_age_s:.0f} s ago"
    if price.grid_source.startswith("http") and price.grid_age_s is None:
        read = ", no reading yet: the default"
    table.add_row("grid", f"{price.grid:.6g} $J/J ({price.grid_source}{read})")
    table.add_row("thermal factor", f"{price.thermal_factor:.4g}")
    if price.coupling != 1.0:
        table.add_row("coupling", f"{price.coupling:.4g} (neighbours hotter: cheaper here)")
    cleared = "not cleared yet" if price.clearing is None else f"{price.clearing:.6g} $J/J"
    table.add_row("clearing", f"{cleared} (what winners pay, at most their bid)")
    table.add_row("temperature", f"{price.temperature_c:.1f} °C ({price.temperature_source})")
    table.add_row("headroom", f"{price.headroom_c:.1f} °C")
    table.add_row("energy", f"{source} ({price.energy_source})")
    out.print(table)


def _agents_by_state(status: NodeStatus) -> str:
    counts = Counter(agent.state for agent in status.agents)
    parts = [f"{counts[state]} {state}" for state in AgentState if counts[state]]
    return f"{len(status.agents)}" + (f": {', '.join(parts)}" if parts else "")


def status_rows(status: NodeStatus) -> list[tuple[str, str]]:
    """The `maxwell status` block as (label, value) rows."""
    stats = status.tick_stats
    rows = [
        ("ticks", f"{status.ticks} (every {status.tick_s:g} s)"),
        ("last tick", f"{status.last_tick_duration_s * 1e3:.3g} ms"),
    ]
    if stats is None:
        rows.append(("tick stats", "not kept by this node"))
    else:
        error = stats.last_error or "none"
        if stats.last_error is not None and stats.last_error_at is not None:
            at = datetime.fromtimestamp(stats.last_error_at).strftime("%Y-%m-%d %H:%M:%S")
            error = f"{error} (at {at})"
        rows += [
            ("tick median", f"{stats.median_ms:.3g} ms, p99 {stats.p99_ms:.3g} ms"),
            ("failures", str(stats.failures)),
            ("last error", error),
            ("ledger rows", str(stats.ledger_rows)),
        ]
    rows += [
        ("capacity", f"{status.capacity_cores:g} cores"),
        ("mechanism", status.mechanism),
        ("cgroup", status.cgroup),
        ("spot price", f"{status.price.spot:.6g} $J/J"),
        ("agents", _agents_by_state(status)),
    ]
    return rows


def _status(client: Client, args: argparse.Namespace, out: Console) -> None:
    status = client.status()
    if args.json:
        print_json(status_to_json(status))
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in status_rows(status):
        table.add_row(label, Text(value))  # Text: an error message is not rich markup
    out.print(table)


def _top(client: Client, args: argparse.Namespace, out: Console) -> None:
    from maxwell.node.top import DEFAULT_MAX_EVENTS, TerminalKeys, run_top

    if args.json:  # one snapshot, as `top -b -n 1`
        status, latest = client.status(), deque[Event](maxlen=DEFAULT_MAX_EVENTS)
        page = client.events()
        while page:  # to the newest
            latest.extend(page)
            page = client.events(after=page[-1].seq)
        print_json({**status_to_json(status), "events": [event_json(e) for e in latest]})
        return

    keys = TerminalKeys.of_stdin()  # q quits, where a terminal types
    with keys or contextlib.nullcontext():
        run_top(
            client.status,
            lambda after: client.events(after=after),
            refresh_s=args.refresh,
            console=out,
            keys=keys,
        )


HANDLERS: dict[str, Callable[[Client, argparse.Namespace, Console], None]] = {
    "spawn": _spawn,
    "ps": _ps,
    "fund": _fund,
    "bid": _bid,
    "kill": _kill,
    "rm": _rm,
    "events": _events,
    "price": _price_cmd,
    "top": _top,
    "status": _status,
    "report": _report,
    "audit": _audit,
}


def run(args: argparse.Namespace) -> int:
    command = args.command_name
    return run_with_client(
        f"maxwell {command}", args, lambda client: HANDLERS[command](client, args, Console())
    )


def _unreachable(address: DaemonAddress, exc: NodeUnreachableError) -> str:
    """ "no daemon at DIR: start it with ..." where nothing listens there (no socket, or a socket
    its daemon left behind); else what went wrong (a permission, a timeout)."""
    gone = not os.path.exists(address.socket) or "refused" in exc.message.lower()
    return address.no_daemon() if gone else exc.message


def run_with_client(prog: str, args: argparse.Namespace, handle: Callable[[Client], None]) -> int:
    """Connect as the flags say, run `handle`, and turn what goes wrong into one line on stderr
    and the exit status `COMMON_EPILOG` documents."""
    address = locate(args)
    try:
        client = connect(args, address)
    except UsageError as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except NodeUnreachableError as exc:
        return fail(prog, str(exc), EXIT_FAILURE)
    with client:
        try:
            handle(client)
        except UsageError as exc:
            return fail(prog, str(exc), EXIT_USAGE)
        except AuditFailed:
            return EXIT_AUDIT_FAILED
        except NodeUnreachableError as exc:
            return fail(prog, _unreachable(address, exc), EXIT_FAILURE)
        except ClientError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return fail(prog, f"the node refused: {exc.message}", EXIT_REFUSED)
            return fail(prog, str(exc), EXIT_FAILURE)
    return 0
