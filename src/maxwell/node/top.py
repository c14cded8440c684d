"""`maxwell top`: a live terminal view (rich) of one node's market.

`render` is a pure function of a `NodeStatus` snapshot and the latest events; `run_top` polls two
callables and redraws, and knows nothing of HTTP (the CLI passes functions that ask the daemon
through the SDK, which reads the API's JSON back into the facade's types with `maxwell.node.wire`).

Rules:

- A frame fits 80 columns whole: headers on one line each, numbers never cut (one that would not
  fit its column loses decimals, then goes to three significant digits); only an agent's name
  and a long reading's source fold onto the next line. Ids are never cut.
- The events panel says what happened in short sentences, money in $J
  (`maxwell.node.eventtext`), never a repr of the journal's detail.
- Keys: `q` (or Ctrl-C) quits. Where standard input is a terminal, `TerminalKeys` reads it in
  cbreak mode (a key arrives as it is pressed, no echo) and restores the terminal on the way out;
  `wants_quit` is the pure rule on what was typed.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from maxwell.errors import MaxwellError
from maxwell.node.eventtext import sentence
from maxwell.node.facade import AgentInfo, AgentState, Event, NodeStatus
from maxwell.units import money_to_tokens, uj_to_joules

__all__ = ["TerminalKeys", "render", "run_top", "wants_quit"]

STATE_STYLES: Mapping[AgentState, str] = {
    AgentState.RUNNING: "green",
    AgentState.THROTTLED: "yellow",
    AgentState.FROZEN: "cyan",
    AgentState.DEAD: "bold red",
    AgentState.EXITED: "dim",
}

# Events whose kind says something went wrong for an agent, drawn in red.
_ALARMING_EVENTS = frozenset({"apoptosis", "killed", "frozen", "slashed"})
QUIT_KEYS = frozenset("qQ\x04")  # q, and Ctrl-D (cbreak mode reads it as a key)

DEFAULT_MAX_EVENTS = 10


def _source(measured: bool) -> str:
    return "measured" if measured else "modelled"


def _header(status: NodeStatus) -> Group:
    """Four short lines, each under 76 columns for usual readings (a long one folds)."""
    price = status.price
    headroom_style = "red" if price.headroom_c < 5.0 else ""
    gap = "   "
    return Group(
        Text.assemble(
            ("spot ", "bold"), f"{price.spot:.4f} $J/J", gap,
            ("grid ", "bold"), f"{price.grid:.4f} $J/J", gap,
            ("thermal factor ", "bold"), f"{price.thermal_factor:.3f}",
        ),
        Text.assemble(
            ("temperature ", "bold"), f"{price.temperature_c:.1f} °C ",
            (f"({_source(price.measured)}, {price.temperature_source})", "dim"), gap,
            ("headroom ", "bold"), (f"{price.headroom_c:.1f} °C", headroom_style),
        ),
        Text.assemble(
            ("energy ", "bold"), f"{price.energy_source} ({_source(price.measured)})", gap,
            ("mechanism ", "bold"), status.mechanism, gap, ("cgroup ", "bold"), status.cgroup,
        ),
        Text.assemble(
            ("tick ", "bold"),
            f"#{status.ticks} every {status.tick_s:g} s, "
            f"last {status.last_tick_duration_s * 1e3:.1f} ms",
        ),
    )  # fmt: skip


def fit(value: float, decimals: int, width: int) -> str:
    """`value` in at most `width` characters where it can be: fewer decimals first, then three
    significant digits. Never cut: a column too narrow grows."""
    for places in range(decimals, -1, -1):
        shown = f"{value:.{places}f}"
        if len(shown) <= width:
            return shown
    return f"{value:.3g}"


# The agents' columns: heading (one line, never cut), decimals of its numbers.
_NUMBERS = (("balance $J", 3), ("bid $J/J", 4), ("demand", 2), ("share", 2), ("watts", 2))


def _agents_table(agents: Sequence[AgentInfo]) -> Table:
    table = Table(
        title=f"agents ({len(agents)})", title_justify="left", expand=True,
        box=None, pad_edge=False, header_style="bold",
    )  # fmt: skip
    table.add_column("id", no_wrap=True)  # never cut: commands take it whole
    table.add_column("name", overflow="fold", ratio=1, min_width=4)
    table.add_column("state", overflow="fold", min_width=9)
    for heading, _ in _NUMBERS:
        table.add_column(heading, justify="right", no_wrap=True, min_width=len(heading))
    table.add_column("energy J", justify="right", no_wrap=True, min_width=8)
    for agent in agents:
        numbers = (
            money_to_tokens(agent.balance),
            agent.bid,
            agent.demand,
            agent.share,
            agent.power_w,
        )
        table.add_row(
            agent.id,
            Text(agent.name),
            Text(agent.ended or str(agent.state), style=STATE_STYLES.get(agent.state, "")),
            *(fit(n, places, len(h)) for n, (h, places) in zip(numbers, _NUMBERS, strict=True)),
            fit(uj_to_joules(agent.energy_uj), 2, 8),
        )
    if not agents:
        table.add_row("", Text("no agents", style="dim"), *[""] * 7)
    return table


def _event_line(event: Event, tz: tzinfo | None) -> Text:
    """`12:00:01 3f2a9c1e died of apoptosis, balance 0 $J`: when, who, what (`sentence`)."""
    at = datetime.fromtimestamp(event.at, tz).strftime("%H:%M:%S")
    style = "red" if event.kind in _ALARMING_EVENTS else ""
    return Text.assemble(
        (f"{at} ", "dim"),
        (event.agent or "node", "cyan"),
        " ",
        (sentence(event), style),
        overflow="fold",
    )


def _events_panel(events: Sequence[Event], max_events: int, tz: tzinfo | None) -> Panel:
    latest = sorted(events, key=lambda event: event.seq, reverse=True)[:max_events]
    body: RenderableType
    if latest:
        body = Group(*(_event_line(event, tz) for event in latest))
    else:
        body = Text("no events yet", style="dim")
    return Panel(body, title="latest events", title_align="left")


def render(
    status: NodeStatus,
    events: Sequence[Event],
    *,
    max_events: int = DEFAULT_MAX_EVENTS,
    tz: tzinfo | None = None,
    error: str | None = None,
) -> RenderableType:
    """One frame of the view: the market header, the agents, the newest `max_events` events
    (newest first, times in `tz`, local when None), and `error` when the last poll failed."""
    parts: list[RenderableType] = [
        Panel(_header(status), title="maxwell node", title_align="left"),
        _agents_table(status.agents),
        _events_panel(events, max_events, tz),
    ]
    if error is not None:
        parts.insert(0, Text(f"stale: {error}", style="bold red"))
    return Group(*parts)


def wants_quit(typed: str) -> bool:
    """Whether the keys typed ask `top` to quit: `q`, `Q` or Ctrl-D (Ctrl-C is a SIGINT)."""
    return any(key in QUIT_KEYS for key in typed)


class KeySource(Protocol):
    def read(self, timeout_s: float) -> str: ...  # the keys typed within `timeout_s`, or ""


class TerminalKeys:
    """The keys typed on a terminal, read in cbreak mode: as pressed, without echo. A context
    manager: the terminal's settings are restored on the way out, whatever happened."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._saved: list[Any] | None = None

    @classmethod
    def of_stdin(cls) -> TerminalKeys | None:
        """Standard input's keys where it is a terminal; None where it is not (a pipe, a file)."""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return None
        return cls(fd) if os.isatty(fd) else None

    def __enter__(self) -> TerminalKeys:
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout_s: float) -> str:
        ready, _, _ = select.select([self._fd], [], [], max(timeout_s, 0.0))
        if not ready:
            return ""
        typed = os.read(self._fd, 64)
        return typed.decode(errors="replace") if typed else "\x04"  # the terminal went away


def run_top(
    fetch_status: Callable[[], NodeStatus],
    fetch_events: Callable[[int], list[Event]],
    *,
    refresh_s: float = 1.0,
    stop: threading.Event | None = None,
    console: Console | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    retry_on: tuple[type[BaseException], ...] = (MaxwellError, OSError),
    keys: KeySource | None = None,
) -> None:
    """Poll and redraw every `refresh_s` until `stop` is set, `keys` say quit (`wants_quit`),
    or the user presses Ctrl-C. Without `keys`, only `stop` and Ctrl-C end it.

    `fetch_events(after_seq)` returns the events newer than `after_seq`. A poll that raises one
    of `retry_on` (the daemon restarting, say) keeps the last frame on screen, marked stale,
    and is retried at the next refresh; anything else propagates.
    """
    stop = stop or threading.Event()
    recent: deque[Event] = deque(maxlen=max_events)
    last_seq = 0
    status: NodeStatus | None = None
    with Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while not stop.is_set():
                error: str | None = None
                try:
                    status = fetch_status()
                    for event in fetch_events(last_seq):
                        if event.seq > last_seq:
                            recent.append(event)
                            last_seq = event.seq
                except retry_on as exc:
                    error = str(exc) or type(exc).__name__
                if status is not None:
                    frame = render(status, list(recent), max_events=max_events, error=error)
                    live.update(frame, refresh=True)
                elif error is not None:
                    live.update(
                        Text(f"waiting for the node: {error}", style="bold red"), refresh=True
                    )
                if keys is None:
                    stop.wait(refresh_s)
                elif wants_quit(keys.read(refresh_s)):
                    return
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a live view is left
