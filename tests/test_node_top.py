"""`maxwell top`: the frame it draws, its polling loop, and the JSON readers behind it."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from datetime import UTC
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from maxwell.errors import MaxwellError
from maxwell.node.facade import (
    AgentInfo,
    AgentState,
    AuditResult,
    Event,
    NodeStatus,
    PriceInfo,
    Report,
)
from maxwell.node.top import STATE_STYLES, render, run_top
from maxwell.node.wire import from_json, status_from_json, status_to_json, to_json
from maxwell.units import Money

PRICE = PriceInfo(
    spot=1.5,
    grid=1.0,
    thermal_factor=1.5,
    temperature_c=62.5,
    headroom_c=17.5,
    measured=False,
    energy_source="model",
    temperature_source="model",
)


def _agent(agent_id: str, name: str, state: AgentState) -> AgentInfo:
    return AgentInfo(
        id=agent_id,
        name=name,
        state=state,
        balance=Money(12_500_000),
        bid=2.0,
        demand=2.0,
        share=1.25,
        power_w=7.5,
        energy_uj=3_250_000,
        paid=Money(4_000_000),
        landauer=Money(10),
        pid=4242,
    )


AGENTS = [
    _agent("a1", "useful", AgentState.THROTTLED),
    _agent("a2", "[bold]looper", AgentState.DEAD),
]
STATUS = NodeStatus(
    price=PRICE,
    agents=AGENTS,
    tick_s=1.0,
    last_tick_duration_s=0.0042,
    ticks=17,
    mechanism="uniform",
    cgroup="v2",
)
EVENTS = [
    Event(seq=1, at=0.0, kind="spawned", agent="a1", detail={"pid": 4242}),
    Event(seq=2, at=61.0, kind="apoptosis", agent="a2", detail={"reason": "insolvent"}),
]


def _text(renderable: object) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_header_shows_price_temperature_and_headroom() -> None:
    text = _text(render(STATUS, EVENTS, tz=UTC))
    assert "spot 1.5000 $J/J" in text
    assert "grid 1.0000 $J/J" in text
    assert "thermal factor 1.500" in text
    assert "temperature 62.5 °C (modelled, model)" in text
    assert "headroom 17.5 °C" in text
    assert "tick #17 every 1 s, last 4.2 ms" in text


def test_agents_table_has_one_row_per_agent() -> None:
    text = _text(render(STATUS, EVENTS, tz=UTC))
    assert "agents (2)" in text
    for column in ("balance $J", "bid $J/J", "demand", "share", "watts", "energy J"):
        assert column in text
    useful = next(line for line in text.splitlines() if line.startswith("a1 "))
    for cell in ("useful", "throttled", "12.500", "2.0000", "2.00", "1.25", "7.50", "3.25"):
        assert cell in useful
    # A name is shown as given, never read as rich markup.
    looper = next(line for line in text.splitlines() if line.startswith("a2 "))
    assert "[bold]looper" in looper
    assert "dead" in looper


def test_every_state_has_a_colour() -> None:
    assert set(STATE_STYLES) == set(AgentState)


def test_events_newest_first_and_capped() -> None:
    text = _text(render(STATUS, EVENTS, tz=UTC))
    lines = text.splitlines()
    apoptosis = next(i for i, line in enumerate(lines) if "apoptosis" in line)
    spawned = next(i for i, line in enumerate(lines) if "spawned" in line)
    assert apoptosis < spawned
    assert "00:01:01 a2 died of apoptosis" in lines[apoptosis]  # a sentence (issue 15)
    assert "00:00:00 a1 spawned" in lines[spawned]

    many = [Event(seq=i, at=float(i), kind=f"bid{i}", agent="a1") for i in range(1, 31)]
    text = _text(render(STATUS, many, max_events=5, tz=UTC))
    assert "bid30" in text
    assert "bid26" in text
    assert "bid25" not in text


def test_an_empty_market_says_so() -> None:
    empty = NodeStatus(PRICE, [], 1.0, 0.0, 0, "uniform", "none")
    text = _text(render(empty, []))
    assert "agents (0)" in text
    assert "no agents" in text
    assert "no events yet" in text


def test_a_failed_poll_marks_the_frame_stale() -> None:
    text = _text(render(STATUS, EVENTS, error="daemon unreachable"))
    assert text.splitlines()[0] == "stale: daemon unreachable"


class FakeNode:
    """Two callables for `run_top` that stop the loop after `polls` status fetches."""

    def __init__(self, polls: int, events: list[Event], failures: set[int] | None = None) -> None:
        self.stop = threading.Event()
        self.polls = polls
        self.events = events
        self.failures = failures or set()
        self.calls = 0
        self.after_seqs: list[int] = []

    def fetch_status(self) -> NodeStatus:
        self.calls += 1
        if self.calls >= self.polls:
            self.stop.set()
        if self.calls in self.failures:
            raise MaxwellError("daemon unreachable")
        return STATUS

    def fetch_events(self, after_seq: int) -> list[Event]:
        self.after_seqs.append(after_seq)
        # The daemon's log grows by one event per poll.
        visible = self.events[: len(self.after_seqs)]
        return [event for event in visible if event.seq > after_seq]


def _console() -> tuple[Console, io.StringIO]:
    # A terminal, so that Live draws every frame and not only the last one; no colour codes.
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=True, color_system=None), out


def test_run_top_polls_events_after_the_last_seen_one() -> None:
    node = FakeNode(polls=3, events=EVENTS)
    console, out = _console()
    run_top(node.fetch_status, node.fetch_events, refresh_s=0.0, stop=node.stop, console=console)
    assert node.calls == 3
    assert node.after_seqs == [0, 1, 2]
    assert "apoptosis" in out.getvalue()
    assert "useful" in out.getvalue()


def test_run_top_keeps_the_last_frame_through_a_failed_poll() -> None:
    node = FakeNode(polls=3, events=EVENTS, failures={1, 3})
    console, out = _console()
    run_top(node.fetch_status, node.fetch_events, refresh_s=0.0, stop=node.stop, console=console)
    shown = out.getvalue()
    assert "waiting for the node: daemon unreachable" in shown
    assert "stale: daemon unreachable" in shown
    assert "useful" in shown


def test_run_top_lets_unexpected_errors_through() -> None:
    def broken() -> NodeStatus:
        raise RuntimeError("bug")

    console, _ = _console()
    with pytest.raises(RuntimeError, match="bug"):
        run_top(broken, lambda after_seq: [], refresh_s=0.0, console=console)


def test_run_top_returns_when_stopped_before_starting() -> None:
    stop = threading.Event()
    stop.set()
    console, _ = _console()
    run_top(lambda: STATUS, lambda after_seq: [], refresh_s=10.0, stop=stop, console=console)


# --- the wire: `from_json` reads back what `to_json` writes ---

_money = st.integers(min_value=0, max_value=10**15).map(Money)
_finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
_text_st = st.text(max_size=20)

_reports = st.builds(
    Report,
    cpu_s=st.floats(min_value=0, max_value=1e9),
    memory_freed_bytes=st.integers(min_value=0, max_value=2**62),
    work=st.none() | st.integers(min_value=0, max_value=2**62),
)
_agents = st.builds(
    AgentInfo,
    id=_text_st,
    name=_text_st,
    state=st.sampled_from(AgentState),
    balance=_money,
    bid=_finite,
    demand=_finite,
    share=_finite,
    power_w=_finite,
    energy_uj=st.integers(min_value=0, max_value=10**15),
    paid=_money,
    landauer=_money,
    pid=st.none() | st.integers(min_value=1, max_value=2**22),
    exit_code=st.none() | st.integers(min_value=-64, max_value=255),
    reported=st.none() | _reports,
    bond=_money,
    slashed=_money,
    bounties=_money,
)
_prices = st.builds(
    PriceInfo,
    spot=_finite,
    grid=_finite,
    thermal_factor=_finite,
    temperature_c=_finite,
    headroom_c=_finite,
    measured=st.booleans(),
    energy_source=_text_st,
    temperature_source=_text_st,
)
_audits = st.builds(
    AuditResult,
    agent=_text_st,
    honest=st.booleans(),
    findings=st.lists(_text_st, max_size=3).map(tuple),
    checked=st.lists(_text_st, max_size=3).map(tuple),
    audits=st.integers(min_value=0, max_value=10**6),
    probability=st.floats(min_value=0, max_value=1),
    slashed=_money,
    modules=st.dictionaries(_text_st, st.floats(min_value=0, max_value=1), max_size=3),
    samples=st.integers(min_value=0, max_value=10**6),
    pause_us=st.none() | st.floats(min_value=0, max_value=1e6),
)


def _sent(document: object) -> str:
    """`document` as the API sends it: JSON text."""
    return json.dumps(document)


@given(_agents)
def test_agent_json_round_trips(agent: AgentInfo) -> None:
    assert from_json(AgentInfo, _sent(to_json(agent))) == agent


@given(_prices)
def test_price_json_round_trips(price: PriceInfo) -> None:
    assert from_json(PriceInfo, _sent(to_json(price))) == price


@given(_audits)
def test_audit_json_round_trips(audit: AuditResult) -> None:
    assert from_json(AuditResult, _sent(to_json(audit))) == audit


def test_event_json_round_trips() -> None:
    for event in [*EVENTS, Event(seq=3, at=1.5, kind="tick", agent=None)]:
        assert from_json(Event, _sent(to_json(event))) == event


@given(st.lists(_agents, max_size=4), _prices)
def test_status_json_round_trips(agents: list[AgentInfo], price: PriceInfo) -> None:
    status = NodeStatus(price, agents, 0.1, 0.002, 9, "vickrey", "v1")
    back = status_from_json(_sent(status_to_json(status)))
    assert back == NodeStatus(price, list(agents), 0.1, 0.002, 9, "vickrey", "v1")


def test_the_wire_names_and_units() -> None:
    """Money in $J, energy in J, and the names scripts depend on (`paid_j`, not `paid`)."""
    document = to_json(AGENTS[0])
    assert document["balance"] == AGENTS[0].balance / 1e6
    assert document["energy_j"] == AGENTS[0].energy_uj / 1e6
    assert {"paid_j", "landauer_j", "energy_j"} <= set(document)
    assert not {"paid", "landauer", "energy_uj"} & set(document)
    assert document["state"] == str(AGENTS[0].state)


def test_an_older_nodes_agent_reads_with_defaults() -> None:
    document = to_json(AGENTS[0])
    for added_later in ("cpu_s", "reported", "billing", "bond", "audits", "proofs", "bounties"):
        del document[added_later]
    document["added_by_a_newer_node"] = 1
    assert from_json(AgentInfo, _sent(document)) == AGENTS[0]


def test_status_from_price_and_agents_alone() -> None:
    status = status_from_json(
        _sent({"price": to_json(PRICE), "agents": [to_json(agent) for agent in AGENTS]})
    )
    assert status.agents == AGENTS
    assert status.price == PRICE
    assert (status.mechanism, status.cgroup, status.ticks) == ("unknown", "unknown", 0)


_AGENT = to_json(AGENTS[0])


@pytest.mark.parametrize(
    ("reader", "document", "complaint"),
    [
        (partial(from_json, AgentInfo), [], "malformed AgentInfo: Input should be a valid dict"),
        (partial(from_json, AgentInfo), {**_AGENT, "bid": "high"}, "bid: Input should be a valid"),
        (partial(from_json, AgentInfo), {**_AGENT, "share": True}, "share: Input should be a"),
        (partial(from_json, AgentInfo), {**_AGENT, "pid": 1.0}, "pid: Input should be a valid int"),
        (partial(from_json, AgentInfo), {**_AGENT, "state": "zombie"}, "state: Input should be"),
        (partial(from_json, AgentInfo), {**_AGENT, "balance": 1e400}, "balance: Input should be"),
        (partial(from_json, AgentInfo), {"id": "a1"}, r"name: Field required \(and \d+ more\)"),
        (partial(from_json, PriceInfo), {**to_json(PRICE), "measured": 1}, "measured: Input"),
        (partial(from_json, Event), {"seq": 1.5, "at": 0, "kind": "x"}, "seq: Input should be"),
        (partial(from_json, Event), {"seq": 1, "at": 0, "kind": "x", "agent": 3}, "agent: Input"),
        (status_from_json, {"price": to_json(PRICE), "agents": {}}, "agents: Input should be"),
    ],
)
def test_malformed_json_is_refused_with_a_reason(
    reader: Callable[[str], object], document: object, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint) as refused:
        reader(_sent(document))
    assert "\n" not in str(refused.value)
