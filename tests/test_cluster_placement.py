"""The placement rule (`maxwell.cluster.placement`, issue 13, 4): pure, property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.cluster.placement import (
    MAX_AGE_S,
    REASONS,
    Demand,
    Offer,
    PlacementError,
    offers,
    rank,
)
from maxwell.node.facade import ClusterMember, ClusterMembers

NODES = st.sampled_from([f"n{i}" for i in range(8)])
FIGURE = st.one_of(st.none(), st.floats(min_value=0, max_value=100))
OFFER = st.builds(
    Offer, node=NODES, alive=st.booleans(), verified=st.booleans(), price=FIGURE,
    free_cores=FIGURE, age_s=st.one_of(st.none(), st.floats(min_value=0, max_value=60)),
)  # fmt: skip
DEMAND = st.builds(
    Demand,
    cores=st.floats(min_value=0.01, max_value=8),
    bid=st.floats(min_value=0.01, max_value=100),
)


def _ok(offer: Offer, demand: Demand) -> bool:
    return (
        offer.alive and offer.verified and offer.price is not None
        and offer.free_cores is not None and offer.age_s is not None
        and offer.age_s <= MAX_AGE_S and offer.free_cores >= demand.cores
        and offer.price <= demand.bid
    )  # fmt: skip


@given(st.lists(OFFER, max_size=12), DEMAND)
def test_every_candidate_is_alive_verified_fresh_roomy_and_within_the_bid(
    table: list[Offer], demand: Demand
) -> None:
    placement = rank(table, demand)
    first = {}
    for offer in table:
        first.setdefault(offer.node, offer)
    assert all(_ok(offer, demand) for offer in placement.ranked)
    chosen = {offer.node for offer in placement.ranked}
    # Every node is either a candidate or passed over, with a known reason, never both.
    assert chosen.isdisjoint(placement.passed_over)
    assert chosen | set(placement.passed_over) == set(first)
    assert set(placement.passed_over.values()) <= set(REASONS)
    assert all(not _ok(first[node], demand) for node in placement.passed_over)


@given(st.lists(OFFER, max_size=12), DEMAND)
def test_the_cheapest_comes_first_and_ties_go_the_same_way_whatever_the_order(
    table: list[Offer], demand: Demand
) -> None:
    placement = rank(table, demand)
    keys = [(o.price, -(o.free_cores or 0.0), o.node) for o in placement.ranked]
    assert keys == sorted(keys)
    unique = list({offer.node: offer for offer in reversed(table)}.values())  # first entries
    assert rank(reversed(unique), demand).ranked == placement.ranked


@given(st.lists(OFFER, max_size=12), DEMAND, st.sets(NODES))
def test_an_excluded_node_is_never_chosen(
    table: list[Offer], demand: Demand, refused: set[str]
) -> None:
    placement = rank(table, demand, exclude=refused)
    assert not {offer.node for offer in placement.ranked} & refused
    listed = {offer.node for offer in table}
    assert all(placement.passed_over[node] == "excluded" for node in refused & listed)


def test_a_worked_table() -> None:
    table = [
        Offer("hot", True, True, price=3.0, free_cores=2.0, age_s=1.0),
        Offer("cool", True, True, price=0.9, free_cores=1.0, age_s=2.0),
        Offer("twin", True, True, price=0.9, free_cores=1.5, age_s=2.0),
        Offer("full", True, True, price=0.1, free_cores=0.2, age_s=2.0),
        Offer("old", True, True, price=0.1, free_cores=4.0, age_s=31.0),
        Offer("liar", True, False),
        Offer("gone", False, True, price=0.1, free_cores=4.0, age_s=1.0),
    ]
    placement = rank(table, Demand(cores=1.0, bid=2.0))
    assert [o.node for o in placement.ranked] == ["twin", "cool"]  # a tie: more room first
    assert placement.chosen is not None and placement.chosen.node == "twin"
    assert placement.passed_over == {
        "hot": "too-dear", "full": "no-room", "old": "stale", "liar": "unverified",
        "gone": "not-alive",
    }  # fmt: skip
    nothing = rank(table, Demand(cores=8.0, bid=2.0))
    assert nothing.chosen is None and nothing.why_none().startswith("no node can take the job (")
    assert rank([], Demand(1.0, 1.0)).why_none() == "no node is known"


def test_the_members_table_gives_offers() -> None:
    members = ClusterMembers(members=(
        ClusterMember("a", "10.0.0.1:7946", "alive", True, 50.0, False, 40.0, 1.0, 2.0, 1.5),
        ClusterMember("b", "10.0.0.2:7946", "failed", False),
    ))  # fmt: skip
    assert offers(members) == [
        Offer("a", True, True, price=1.0, free_cores=2.0, age_s=1.5),
        Offer("b", False, False),
    ]


NOT_A_NUMBER = float("nan")


@pytest.mark.parametrize("cores, bid", [(0, 1), (1, 0), (-1, 1), (NOT_A_NUMBER, 1), (1, 1e400)])
def test_a_demand_that_is_no_demand_is_refused(cores: float, bid: float) -> None:
    with pytest.raises(PlacementError, match="must be a positive number"):
        Demand(cores, bid)
