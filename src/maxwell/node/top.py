"""`maxwell top`: a live terminal view (rich) of one node's market.

`render` is a pure function of a `NodeStatus` snapshot and the latest events; `run_top` polls two
callables and redraws, and knows nothing of HTTP (the CLI passes functions that ask the daemon
through the SDK, which reads the API's JSON back into the facade's types with `maxwell.node.wire`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, tzinfo

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from maxwell.errors import MaxwellError
from maxwell.node.facade import AgentInfo, AgentState, Event, NodeStatus
from maxwell.units import money_to_tokens, uj_to_joules

__all__ = ["render", "run_top"]

STATE_STYLES: Mapping[AgentState, str] = {
    AgentState.RUNNING: "green",
    AgentState.THROTTLED: "yellow",
    AgentState.FROZEN: "cyan",
    AgentState.DEAD: "bold red",
    AgentState.EXITED: "dim",
}

# Events whose kind says something went wrong for an agent, drawn in red.
_ALARMING_EVENTS = frozenset({"apoptosis", "killed", "frozen"})

DEFAULT_MAX_EVENTS = 10


def _source(measured: bool) -> str:
    return "measured" if measured else "modelled"


def _header(status: NodeStatus) -> Table:
    price = status.price
    grid = Table.grid(padding=(0, 3))
    grid.add_row(
        Text.assemble(("spot ", "bold"), f"{price.spot:.4f} $J/J"),
        Text.assemble(("grid ", "bold"), f"{price.grid:.4f} $J/J"),
        Text.assemble(("thermal factor ", "bold"), f"{price.thermal_factor:.3f}"),
    )
    headroom_style = "red" if price.headroom_c < 5.0 else ""
    grid.add_row(
        Text.assemble(
            ("temperature ", "bold"),
            f"{price.temperature_c:.1f} °C ",
            (f"({_source(price.measured)}, {price.temperature_source})", "dim"),
        ),
        Text.assemble(("headroom ", "bold"), (f"{price.headroom_c:.1f} °C", headroom_style)),
        Text.assemble(("energy ", "bold"), f"{price.energy_source} ({_source(price.measured)})"),
    )
    grid.add_row(
        Text.assemble(("mechanism ", "bold"), status.mechanism),
        Text.assemble(("cgroup ", "bold"), status.cgroup),
        Text.assemble(
            ("tick ", "bold"),
            f"#{status.ticks} every {status.tick_s:g} s, "
            f"last {status.last_tick_duration_s * 1e3:.1f} ms",
        ),
    )
    return grid


def _agents_table(agents: Sequence[AgentInfo]) -> Table:
    table = Table(title=f"agents ({len(agents)})", title_justify="left", expand=True)
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="ellipsis")
    table.add_column("state", no_wrap=True)
    table.add_column("balance $J", justify="right")
    table.add_column("bid $J/J", justify="right")
    table.add_column("demand", justify="right")
    table.add_column("share", justify="right")
    table.add_column("watts", justify="right")
    table.add_column("energy J", justify="right")
    for agent in agents:
        table.add_row(
            agent.id,
            Text(agent.name),
            Text(str(agent.state), style=STATE_STYLES.get(agent.state, "")),
            f"{money_to_tokens(agent.balance):.3f}",
            f"{agent.bid:.4f}",
            f"{agent.demand:.2f}",
            f"{agent.share:.2f}",
            f"{agent.power_w:.2f}",
            f"{uj_to_joules(agent.energy_uj):.2f}",
        )
    if not agents:
        table.add_row("", Text("no agents", style="dim"), *[""] * 7)
    return table


def _event_line(event: Event, tz: tzinfo | None) -> Text:
    at = datetime.fromtimestamp(event.at, tz).strftime("%H:%M:%S")
    detail = " ".join(f"{key}={value}" for key, value in event.detail.items())
    style = "red" if event.kind in _ALARMING_EVENTS else ""
    return Text.assemble(
        (f"{at} ", "dim"),
        (f"{event.kind:<10}", style or "bold"),
        " ",
        (event.agent or "-", "cyan"),
        f"  {detail}" if detail else "",
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


def run_top(
    fetch_status: Callable[[], NodeStatus],
    fetch_events: Callable[[int], list[Event]],
    *,
    refresh_s: float = 1.0,
    stop: threading.Event | None = None,
    console: Console | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
    retry_on: tuple[type[BaseException], ...] = (MaxwellError, OSError),
) -> None:
    """Poll and redraw every `refresh_s` until `stop` is set or the user presses Ctrl-C.

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
                stop.wait(refresh_s)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a live view is left
