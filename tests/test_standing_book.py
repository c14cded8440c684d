"""The daemon's standing order book clears exactly as the book rebuilt every tick did."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwell.economy.mechanisms import Uniform
from maxwell.economy.mechanisms.base import Clearing
from maxwell.economy.orderbook import BookError, OrderBook
from maxwell.node.facade import AgentState
from maxwell.node.tick import AgentTickInput, TickInput, clear_market, plan_tick
from maxwell.units import Money

NOW = 1_700_000_000.0
PRICES = [0.0, 0.5, 1.0, 1.0, 2.0, 3.0]  # few prices: ties in price are common
DEMANDS = [0.25, 0.5, 1.0, 1.5, 3.0]


def rebuilt_clearing(
    bidders: Iterable[AgentTickInput], capacity: float, reserve: float
) -> Clearing:
    """The reference: today's clearing, a book rebuilt from the bids (arrival, then id)."""
    ordered = sorted(bidders, key=lambda agent: (agent.bid_seq, agent.agent))
    book = OrderBook.from_rows((a.agent, a.bid, a.demand, None) for a in ordered)
    return Uniform().clear_book(book, capacity, reserve)


def assert_same_clearing(got: Clearing, want: Clearing, names: Iterable[str]) -> None:
    assert got.clearing_price == want.clearing_price
    assert got.extra == want.extra  # the marginal bid
    assert tuple(got.bids.agents) == tuple(want.bids.agents)  # the bids visited, in order
    for name in names:
        assert got.allocation(name) == want.allocation(name)


@dataclass
class Model:
    """An agent as the daemon holds it: its standing bid and whether it may bid now."""

    bid: float
    demand: float
    seq: int
    live: bool = True
    insolvent: bool = False


op_strategy = st.one_of(
    st.tuples(st.just("spawn"), st.sampled_from(PRICES), st.sampled_from(DEMANDS)),
    st.tuples(
        st.just("bid"), st.integers(0, 30), st.sampled_from(PRICES), st.sampled_from(DEMANDS)
    ),
    st.tuples(st.just("insolvent"), st.integers(0, 30)),
    st.tuples(st.just("solvent"), st.integers(0, 30)),
    st.tuples(st.just("end"), st.integers(0, 30)),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(op_strategy, max_size=40),
    capacity=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 8.0, 100.0]),
    reserve=st.sampled_from(PRICES),
)
def test_standing_book_clears_as_the_rebuilt_book(
    ops: list[tuple[object, ...]], capacity: float, reserve: float
) -> None:
    agents: dict[str, Model] = {}
    book = OrderBook()
    next_seq = 1  # the journal's arrival numbers (SQLite rowids): unique, increasing

    def pick(index: object) -> str | None:
        names = sorted(agents)
        return names[int(index) % len(names)] if names else None  # type: ignore[call-overload]

    for op in ops:
        kind = op[0]
        if kind == "spawn":
            name = f"a{len(agents):02d}"
            agents[name] = Model(float(op[1]), float(op[2]), next_seq)  # type: ignore[arg-type]
            book.insert(name, agents[name].bid, agents[name].demand, seq=next_seq)
            next_seq += 1
        else:
            picked = pick(op[1])
            if picked is None or not agents[picked].live:
                continue
            name, found = picked, agents[picked]
            if kind == "bid":  # a new bid arrives: re-queued at its new number
                found.bid, found.demand, found.seq = float(op[2]), float(op[3]), next_seq  # type: ignore[arg-type]
                book.cancel(name)
                book.insert(name, found.bid, found.demand, seq=next_seq)
                next_seq += 1
            elif kind == "insolvent":  # frozen for insolvency: stays in the book, skipped
                found.insolvent = True
            elif kind == "solvent":
                found.insolvent = False
            else:  # dead or exited: its bid is cancelled
                found.live = False
                book.cancel(name)
        bidders = [
            AgentTickInput(
                agent=name,
                state=AgentState.RUNNING,
                balance=Money(10**9),
                bid=model.bid,
                demand=model.demand,
                bid_seq=model.seq,
            )
            for name, model in sorted(agents.items())
            if model.live and not model.insolvent
        ]
        want = rebuilt_clearing(bidders, capacity, reserve)
        got = clear_market(
            bidders, capacity=capacity, reserve=reserve, mechanism=None, seed=0, book=book
        )
        assert_same_clearing(got, want, agents)


def test_a_book_that_disagrees_with_the_bids_is_not_used() -> None:
    bidders = [
        AgentTickInput("a", AgentState.RUNNING, Money(10**9), bid=2.0, demand=1.0, bid_seq=1),
        AgentTickInput("b", AgentState.RUNNING, Money(10**9), bid=2.0, demand=1.0, bid_seq=2),
    ]
    stale = OrderBook()
    stale.insert("a", 1.0, 1.0, seq=1)  # an old price
    stale.insert("b", 2.0, 1.0, seq=2)
    want = rebuilt_clearing(bidders, 1.0, 0.5)
    got = clear_market(bidders, capacity=1.0, reserve=0.5, mechanism=None, seed=0, book=stale)
    assert_same_clearing(got, want, ["a", "b"])
    assert got.allocation("a").cores == 1.0  # a arrived first at the price of 2


def test_insert_with_a_seq_keeps_the_arrival_number() -> None:
    book = OrderBook()
    book.insert("late", 1.0, 1.0, seq=10)
    book.insert("early", 1.0, 1.0, seq=3)
    assert [bid.agent for bid in book] == ["early", "late"]
    assert book.insert("next", 1.0, 1.0).seq == 11  # numbering goes on after the highest
    with pytest.raises(BookError):
        book.insert("again", 1.0, 1.0, seq=3)
    with pytest.raises(BookError):
        book.insert("negative", 1.0, 1.0, seq=-1)


@st.composite
def tick_agents(draw: st.DrawFn) -> list[AgentTickInput]:
    count = draw(st.integers(0, 8))
    seqs = draw(st.lists(st.integers(1, 1000), min_size=count, max_size=count, unique=True))
    found = []
    for index, seq in enumerate(seqs):
        state = draw(
            st.sampled_from(
                [AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN, AgentState.EXITED]
            )
        )
        insolvent = state is AgentState.FROZEN and draw(st.booleans())
        found.append(
            AgentTickInput(
                agent=f"a{index}",
                state=state,
                balance=Money(draw(st.integers(0, 10**7))),
                bid=draw(st.sampled_from(PRICES)),
                demand=draw(st.sampled_from(DEMANDS)),
                energy_uj=draw(st.integers(0, 10**7)),
                insolvent_since_s=NOW - draw(st.floats(0.0, 20.0)) if insolvent else None,
                bid_seq=seq,
            )
        )
    return found


@settings(max_examples=200, deadline=None)
@given(
    agents=tick_agents(),
    spot=st.sampled_from(PRICES),
    capacity=st.sampled_from([0.0, 1.0, 2.0, 3.5]),
)
def test_plan_tick_with_the_standing_book_is_the_same_plan(
    agents: list[AgentTickInput], spot: float, capacity: float
) -> None:
    inputs = TickInput(
        tick=7, now_s=NOW, interval_s=1.0, tick_s=1.0, spot_price=spot, temperature_c=50.0,
        capacity_cores=capacity, landauer_multiplier=1.0, grace_s=5.0, agents=agents,
    )  # fmt: skip
    # The daemon's book: every live agent's bid at its arrival number, insolvent ones included
    # (the tick skips them, and those it kills), dead and exited ones cancelled.
    book = OrderBook()
    for agent in agents:
        if agent.state is not AgentState.EXITED:
            book.insert(agent.agent, agent.bid, agent.demand, seq=agent.bid_seq)
    assert plan_tick(inputs, book=book) == plan_tick(inputs)
    assert plan_tick(replace(inputs, agents=tuple(reversed(agents))), book=book) == plan_tick(
        inputs
    )
