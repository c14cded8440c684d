"""`maxwell top` at 80 columns (issue 15, 5): headers and numbers whole, events as short
sentences in $J, and `q` quits: the key rule as a pure function, the loop with a key source, and
the real command in a pseudo-terminal."""

from __future__ import annotations

import dataclasses
import io
import os
import pty
import select
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from rich.console import Console

from fake_node import ADMIN_TOKEN, FakeNode, serving
from maxwell.node.eventtext import detail_in_j, sentence
from maxwell.node.facade import AgentInfo, AgentState, Event, NodeStatus, PriceInfo
from maxwell.node.top import fit, render, run_top, wants_quit
from maxwell.units import Money

PRICE = PriceInfo(
    spot=1.2345, grid=1.0, thermal_factor=1.2345, temperature_c=71.25, headroom_c=3.5,
    measured=True, energy_source="powercap", temperature_source="hwmon",
)  # fmt: skip


def _agent(n: int, state: AgentState, ended: str | None = None) -> AgentInfo:
    return AgentInfo(
        id=f"3f2a9c{n:02d}", name=f"agent-{n}", state=state, balance=Money(123_456_789_012),
        bid=123456.5, demand=16.0, share=12.75, power_w=1234.5, energy_uj=98_765_432_100_000,
        paid=Money(0), landauer=Money(0), pid=4242, ended=ended,
    )  # fmt: skip


AGENTS = [
    _agent(1, AgentState.RUNNING),
    _agent(2, AgentState.THROTTLED),
    _agent(3, AgentState.FROZEN),
    _agent(4, AgentState.DEAD, "apoptosis"),
    _agent(5, AgentState.DEAD, "killed"),
    _agent(6, AgentState.EXITED, "exited 0"),
]
STATUS = NodeStatus(
    price=PRICE, agents=AGENTS, tick_s=1.0, last_tick_duration_s=0.0123, ticks=123456,
    mechanism="uniform", cgroup="v2",
)  # fmt: skip
# As the journal holds them: money in integer µ$J, a nested apoptosis decision.
EVENTS = [
    Event(1, 0.0, "funded", "3f2a9c01", {"agent": "3f2a9c01", "amount": 2_500_000}),
    Event(2, 1.0, "spawned", "3f2a9c01", {"agent": "3f2a9c01", "fund": 2_500_000, "bid": 1.5}),
    Event(3, 2.0, "insolvent", "3f2a9c04", {"agent": "3f2a9c04", "shortfall": 161_661}),
    Event(
        4,
        3.0,
        "apoptosis",
        "3f2a9c04",
        {
            "agent": "3f2a9c04",
            "balance": 0,
            "reason": "balance 0 µ$J is not positive",
            "apoptosis": {"agent": "3f2a9c04", "balance": 0, "required": 156_652},
        },
    ),
    Event(5, 4.0, "killed", "3f2a9c05", {"agent": "3f2a9c05", "reason": "killed on request"}),
    Event(6, 5.0, "slashed", "3f2a9c03", {"agent": "3f2a9c03", "bond": 1_000_000, "clawback": 5}),
]


def _text(width: int = 80) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(STATUS, EVENTS))
    return console.export_text()


def test_a_frame_fits_80_columns_with_every_header_and_number_whole() -> None:
    text = _text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    header = next(line for line in text.splitlines() if line.startswith("id "))
    for heading in ("name", "state", "balance $J", "bid $J/J", "demand", "share", "watts",
                    "energy J"):  # fmt: skip
        assert heading in header  # on one line: not wrapped, not cut
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("3f2a9c")}
    assert set(rows) == {agent.id for agent in AGENTS}  # ids whole
    for cell in ("123456.789", "123456.5", "16.00", "12.75", " 1234 ", "98765432"):
        assert cell in rows["3f2a9c01"]
    for agent_id, said in (("3f2a9c04", "apoptosis"), ("3f2a9c05", "killed"),
                           ("3f2a9c06", "exited 0"), ("3f2a9c02", "throttled")):  # fmt: skip
        assert said in rows[agent_id]
    assert "spot 1.2345 $J/J" in text and "tick #123456 every 1 s, last 12.3 ms" in text


def test_numbers_lose_decimals_before_they_are_cut() -> None:
    assert fit(12.5, 3, 10) == "12.500"
    assert fit(123456.789, 3, 10) == "123456.789"
    assert fit(1234567.891, 3, 10) == "1234567.89"
    assert fit(98765432.1, 2, 8) == "98765432"
    assert fit(987654321.0, 2, 8) == "9.88e+08"


def test_events_are_short_sentences_in_dollars_j() -> None:
    text = _text()
    panel = text[text.index("latest events") :]
    for said in (
        "3f2a9c01 funded 2.5 $J",
        "3f2a9c01 spawned with 2.5 $J, bid 1.5 $J/J",
        "3f2a9c04 insolvent, 0.161661 $J short",
        "3f2a9c04 died of apoptosis, balance 0 $J",
        "3f2a9c05 killed (killed on request)",
        "3f2a9c03 slashed: lost 1.00001 $J (bond and claw-back)",
    ):
        assert said in panel
    for repr_or_micro in ("{", "}", "'", "µ", "=", "2500000"):
        assert repr_or_micro not in panel


def test_money_in_an_events_detail_is_shown_in_dollars_j_at_any_depth() -> None:
    shown = detail_in_j(EVENTS[3].detail)
    assert shown["balance"] == 0.0 and shown["apoptosis"] == {
        "agent": "3f2a9c04", "balance": 0.0, "required": 0.156652
    }  # fmt: skip
    assert detail_in_j({"amount": 1, "tick": 7, "honest": True}) == {
        "amount": 1e-6, "tick": 7, "honest": True
    }  # fmt: skip
    assert sentence(Event(9, 0.0, "posted_job", None, {})) == "posted job"  # unknown: its kind


def test_q_quits_and_nothing_else_does() -> None:
    assert wants_quit("q") and wants_quit("Q") and wants_quit("abq") and wants_quit("\x04")
    assert not wants_quit("") and not wants_quit("a") and not wants_quit("\x1b[A")


class _Keys:
    def __init__(self, typed: list[str]) -> None:
        self.typed = typed
        self.reads = 0

    def read(self, timeout_s: float) -> str:
        self.reads += 1
        return self.typed.pop(0) if self.typed else ""


def test_run_top_ends_when_q_is_typed() -> None:
    keys = _Keys(["", "x", "q", "never read"])
    polls: list[int] = []

    def status() -> NodeStatus:
        polls.append(1)
        return STATUS

    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    done = threading.Event()
    threading.Thread(
        target=lambda: (
            run_top(status, lambda after: [], refresh_s=0, console=console, keys=keys),
            done.set(),
        ),
        daemon=True,
    ).start()
    assert done.wait(10), "q did not end top"
    assert keys.reads == 3 and len(polls) == 3 and keys.typed == ["never read"]


def test_maxwell_top_in_a_terminal_quits_on_q_and_restores_the_terminal() -> None:
    fake = FakeNode()
    fake.spawn(["sleep", "9"], fund=Money(10**9), bid=1.0, name="worker")
    with serving(fake) as server:
        assert server.socket_path is not None
        controller, terminal = pty.openpty()
        settings = termios.tcgetattr(terminal)
        env = os.environ | {"COLUMNS": "80", "LINES": "40", "TERM": "xterm"}
        top = subprocess.Popen(
            [sys.executable, "-m", "maxwell.cli.main", "top", "--socket", server.socket_path,
             "--token", ADMIN_TOKEN, "--refresh", "0.2"],
            stdin=terminal, stdout=terminal, stderr=terminal, env=env,
            cwd=Path(__file__).parent, start_new_session=True,
        )  # fmt: skip
        try:
            seen = _read_until(controller, b"worker", timeout_s=30)
            assert b"worker" in seen, seen.decode(errors="replace")
            os.write(controller, b"q")
            assert top.wait(timeout=10) == 0
            assert termios.tcgetattr(terminal)[3] == settings[3]  # echo and lines back
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()
            os.close(controller)
            os.close(terminal)


def _read_until(fd: int, wanted: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            seen += os.read(fd, 65536)
    return seen


def test_a_frame_with_no_agents_fits_too() -> None:
    empty = dataclasses.replace(STATUS, agents=[])
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(render(empty, []))
    text = console.export_text()
    assert "…" not in text and "no agents" in text and "no events yet" in text
