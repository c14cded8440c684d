"""The pure parts of the gossip daemon side: tags, the publication rule, the cluster view and
the settings (`maxwell.gossip.tags`, `publish`, `view`, `config`)."""

from __future__ import annotations

import base64
import itertools
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gossip_support import status
from maxwell.economy.coupling import CoupledPrice
from maxwell.economy.price import SpotQuote
from maxwell.gossip.config import GossipConfig, GossipConfigError
from maxwell.gossip.publish import Publication, heat_record, next_seq, spacing_s
from maxwell.gossip.record import MAX_NODE_ID, HeatRecord, RecordError, encode
from maxwell.gossip.rpc import Member
from maxwell.gossip.tags import HEAT_TAG, SERF_TAGS_LIMIT, node_tags, record_in
from maxwell.gossip.trust import REJECTIONS, Admission, Verifier, certify
from maxwell.gossip.view import ClusterView
from maxwell.node.facade import AgentInfo, AgentState

AUTHORITY = Ed25519PrivateKey.generate()
KEYS = {name: Ed25519PrivateKey.generate() for name in ("a", "b", "c")}
NOW = 1_800_000_000.0


def _record(node: str = "a", **changes: object) -> HeatRecord:
    fields: dict[str, object] = {
        "node": node, "seq": 1, "at": NOW, "temperature_c": 50.0, "measured": False,
        "headroom_c": 40.0, "power_w": 20.0, "price": 1.0, "capacity_cores": 2.0,
        "free_cores": 2.0, "load": 0.0,
    }  # fmt: skip
    fields.update(changes)
    return HeatRecord(**fields)  # type: ignore[arg-type]


def _tags(node: str, **changes: object) -> dict[str, str]:
    return node_tags(encode(_record(node, **changes), KEYS[node]))


def _certificate(node: str) -> bytes:
    return certify(AUTHORITY, node, KEYS[node].public_key()).encode()


def _member(node: str, status: str = "alive", tags: dict[str, str] | None = None) -> Member:
    return Member(node, "127.0.0.1", 7946, tags if tags is not None else _tags(node), status)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _view(clock: Clock, node: str = "a", knows: tuple[str, ...] = ("b", "c")) -> ClusterView:
    """A view that has learnt the certificates of `knows` (as answers to its queries)."""
    verifier = Verifier(Admission(authority=AUTHORITY.public_key()))
    view = ClusterView(verifier, node=node, wall=clock)
    for other in knows:
        view.learned(other, _certificate(other))
    return view


# --- tags -------------------------------------------------------------------------------------


def test_the_widest_record_fits_in_serfs_tags() -> None:
    node = "x" * MAX_NODE_ID
    key = Ed25519PrivateKey.generate()
    widest = _record(node, seq=2**63 - 1, at=4e9, power_w=1e300, price=1e300)
    tags = node_tags(encode(widest, key))
    assert 1 + len(msgpack.packb(tags)) <= SERF_TAGS_LIMIT
    assert record_in(tags) == encode(widest, key)
    typical = node_tags(encode(_record("node-1"), key))
    assert 1 + len(msgpack.packb(typical)) < 260  # what `publish.spacing_s` counts on


@pytest.mark.parametrize(
    ("text", "reason"),
    [("not base64!", "malformed"), ("QUJD" * 200, "oversized"), ("é", "malformed")],
)
def test_a_tag_that_is_not_an_honest_value_is_refused(text: str, reason: str) -> None:
    with pytest.raises(RecordError) as refused:
        record_in({HEAT_TAG: text})
    assert refused.value.reason == reason
    assert record_in({}) is None and record_in({"other": "x"}) is None


# --- the publication rule -----------------------------------------------------------------------


def test_a_record_goes_out_when_a_figure_moves_or_the_refresh_is_due() -> None:
    rule = Publication(refresh_s=2.0, distress_below_c=5.0)
    last = _record()
    assert rule.due(None, last)
    assert not rule.due(last, _record(at=NOW + 1, temperature_c=50.4, price=1.01))
    assert rule.due(last, _record(at=NOW + 1, temperature_c=50.6))
    assert rule.due(last, _record(at=NOW + 1, price=1.03))
    assert rule.due(last, _record(at=NOW + 1, free_cores=1.8))
    assert rule.due(last, _record(at=NOW + 2))  # nothing moved: the refresh
    hot = _record(at=NOW + 0.1, headroom_c=4.9, temperature_c=50.2)
    assert rule.due(_record(headroom_c=5.2, temperature_c=50.0), hot)  # entering distress
    spaced = replace(rule, spacing_s=5.0)
    assert not spaced.due(last, _record(at=NOW + 4, temperature_c=60.0))  # moved, too soon
    assert spaced.due(last, _record(at=NOW + 5, temperature_c=60.0))
    assert spaced.due(_record(headroom_c=6.0), _record(at=NOW + 0.1, headroom_c=1.0))


def test_records_are_spaced_more_the_larger_the_cluster() -> None:
    assert spacing_s(1) == spacing_s(3) == 1.0
    assert spacing_s(10) == pytest.approx(10 * 8 / 15)
    assert spacing_s(30) == pytest.approx(16.0)
    sizes = list(range(1, 60))
    assert all(spacing_s(a) <= spacing_s(b) for a, b in itertools.pairwise(sizes))
    assert spacing_s(45) < 30.0  # still inside the age after which a record is stale


def test_distress_goes_out_at_once_then_every_refresh_while_it_lasts() -> None:
    rule = Publication(refresh_s=2.0, distress_below_c=5.0)
    assert not rule.distress_due(None, _record(headroom_c=5.0))
    assert rule.distress_due(None, _record(headroom_c=4.0))
    assert not rule.distress_due(NOW, _record(at=NOW + 1.9, headroom_c=4.0))
    assert rule.distress_due(NOW, _record(at=NOW + 2.0, headroom_c=4.0))


@given(st.one_of(st.none(), st.integers(0, 2**62)), st.floats(1e9, 4e9))
def test_sequence_numbers_only_go_up(last: int | None, at: float) -> None:
    seq = next_seq(last, at)
    assert last is None or seq > last
    assert seq >= int(at * 1000) - 1


def test_a_record_says_what_the_last_tick_published() -> None:
    snapshot = status(headroom_c=12.0, spot=1.3, capacity=4.0)
    agent = AgentInfo(
        id="x", name="x", state=AgentState.RUNNING, balance=1, bid=2.0, demand=1.5, share=1.0,
        power_w=5.0, energy_uj=0, paid=0, landauer=0, pid=1,
    )  # fmt: skip
    dead = replace(agent, id="y", state=AgentState.DEAD, demand=3.0, share=3.0)
    record = heat_record("a", 7, NOW, replace(snapshot, agents=(agent, dead)))
    assert (record.headroom_c, record.price, record.capacity_cores) == (12.0, 1.3, 4.0)
    assert (record.free_cores, record.load, record.power_w) == (2.5, 1.0, 20.0)
    assert record.temperature_c == 78.0 and record.measured is False


# --- the cluster view ---------------------------------------------------------------------------


def test_members_are_believed_from_their_own_signed_tags_only() -> None:
    clock = Clock()
    view = _view(clock)
    view.members_seen([_member("b"), _member("c", tags=_tags("b"))])  # c shows b's tags
    rows = {row.node: row for row in view.members().members}
    assert rows["b"].verified and rows["b"].price == 1.0 and rows["b"].age_s == 0.0
    assert not rows["c"].verified and rows["c"].price is None
    assert view.rejected() == {"impostor": 1}  # b's record, under c
    assert view.neighbours_headroom() == [40.0]


def test_the_same_refused_tags_are_counted_once_not_at_every_listing() -> None:
    view = _view(Clock())
    rogue = _member("c", tags=_tags("b"))
    for _ in range(5):
        view.members_seen([rogue])
    assert view.rejected() == {"impostor": 1}


def test_a_silent_or_failed_member_drops_out_of_the_market() -> None:
    clock = Clock()
    view = _view(clock)
    view.members_seen([_member("b"), _member("c", tags=_tags("c", price=0.5, headroom_c=3.0))])
    assert [p.node for p in view.prices().nodes] == ["c", "b"]
    assert view.prices().cheapest == "c"
    view.members_seen([_member("c", status="failed")])
    assert [p.node for p in view.prices().nodes] == ["b"]
    clock.now += 31  # b's record is now stale
    assert view.prices().nodes == () and view.prices().cheapest is None
    assert view.neighbours_headroom() == []
    assert not any(row.verified for row in view.members().members)
    view.members_gone(["b", "c"])
    assert view.members().members == ()


def test_a_node_with_no_free_core_is_never_the_cheapest() -> None:
    view = _view(Clock())
    view.members_seen([_member("b", tags=_tags("b", price=0.1, free_cores=0.0)), _member("c")])
    prices = view.prices()
    assert prices.nodes[0].node == "b" and prices.cheapest == "c"


def test_distress_events_are_believed_by_signature_and_kept_once() -> None:
    clock = Clock()
    view = _view(clock)
    view.members_seen([_member("b")])
    hot = encode(_record("b", seq=2, headroom_c=2.0), KEYS["b"])
    assert view.distress(hot) == _record("b", seq=2, headroom_c=2.0)
    assert view.distress(hot) is None  # the same again: a duplicate
    assert view.distress(encode(_record("b", seq=3), KEYS["c"])) is None  # b's, c's signature
    assert [(d.node, d.seq) for d in view.distress_seen()] == [("b", 2)]
    assert view.rejected() == {"forged": 1} and view.distress_events == 3


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=700), max_size=4), st.text())
def test_any_tags_at_all_are_counted_never_raised(tags: dict[str, str], heat: str) -> None:
    view = _view(Clock())
    view.members_seen([_member("b", tags=tags | {HEAT_TAG: heat})])
    view.learned("b", heat.encode())
    assert set(view.rejected()) <= set(REJECTIONS)
    assert view.prices().nodes == ()


def test_a_record_waits_for_its_certificate_which_is_asked_for_once_in_a_while() -> None:
    clock = Clock()
    view = _view(clock, knows=())
    view.members_seen([_member("b"), _member("c")])
    assert sorted(view.wanted()) == ["b", "c"] and view.wanted() == []  # asked: not again yet
    assert view.rejected() == {} and view.prices().nodes == ()
    hot = encode(_record("b", seq=2, headroom_c=1.0), KEYS["b"])
    assert view.distress(hot) is None  # parked too, beside the tags' record
    view.learned("b", _certificate("b"))
    assert view.members().members[0].verified and view.neighbours_headroom() == [1.0]
    assert [(d.node, d.seq) for d in view.distress_seen()] == [("b", 2)]
    clock.now += 5
    assert view.wanted() == ["c"]  # no answer yet: asked again
    view.learned("c", _certificate("b"))  # an answer, but b's certificate: refused
    assert view.rejected() == {"impostor": 1}
    assert [p.node for p in view.prices().nodes] == ["b"]


def test_a_member_that_never_answers_has_its_record_refused_as_not_admitted() -> None:
    view = _view(Clock(), knows=())
    view.members_seen([_member("b")])
    assert view.wanted() == ["b"]
    view.unanswered("b")
    view.unanswered("b")
    assert view.rejected() == {}  # a lost answer or two is no evidence
    view.unanswered("b")
    assert view.rejected() == {"not-admitted": 1} and view.prices().nodes == ()


def test_a_certificate_a_question_carries_introduces_its_node_but_replaces_no_known_key() -> None:
    view = _view(Clock(), knows=("c",))
    view.members_seen([_member("b"), _member("c")])
    view.introduced(_certificate("b"))  # b's question: its record, parked, is now checked
    assert [p.node for p in view.prices().nodes] == ["b", "c"] and view.wanted() == []
    rogue = Ed25519PrivateKey.generate()
    view.introduced(certify(AUTHORITY, "c", rogue.public_key()).encode())  # a second key for c
    view.members_seen([_member("c", tags=node_tags(encode(_record("c", seq=2), rogue)))])
    assert view.rejected() == {"forged": 1}  # c's admitted key stands
    view.introduced(b"\x93garbage")
    view.introduced(certify(Ed25519PrivateKey.generate(), "d", rogue.public_key()).encode())
    assert view.rejected() == {"forged": 1, "malformed": 1, "not-admitted": 1}


def test_a_record_of_a_node_that_is_no_member_is_never_parked() -> None:
    view = _view(Clock(), knows=())
    assert view.distress(encode(_record("z"), KEYS["a"])) is None
    assert view.rejected() == {"not-admitted": 1} and view.wanted() == []


def test_the_node_itself_is_listed_and_priced_but_is_not_its_own_neighbour() -> None:
    view = _view(Clock())
    view.own(_certificate("a"), encode(_record("a", price=0.9), KEYS["a"]))
    view.members_seen([_member("a", tags={}), _member("b")])
    assert [p.node for p in view.prices().nodes] == ["a", "b"]
    assert view.neighbours_headroom() == [40.0]


# --- the coupled price --------------------------------------------------------------------------


def test_a_coupled_quote_is_the_spot_times_the_multiplier_and_survives_a_deaf_gossip() -> None:
    hot = CoupledPrice(lambda: [0.0, 0.0])
    quote = SpotQuote(grid=1.0, thermal_factor=1.2, spot=1.2)
    coupled = hot.apply(quote, own_headroom_c=40.0)
    assert coupled.coupling == pytest.approx(0.95) and coupled.spot == pytest.approx(1.2 * 0.95)

    def deaf() -> list[float]:
        raise RuntimeError("the gossip thread died")

    silent = CoupledPrice(deaf)
    silent.multiplier = 0.8
    assert silent.apply(quote, 40.0).coupling == pytest.approx(0.85)  # back towards 1


# --- the settings -------------------------------------------------------------------------------


def test_gossip_settings_come_from_flags_over_the_table_and_refuse_what_cannot_work() -> None:
    table = {"node_key": "/k", "authority": "/a.pub", "cluster_key": "/c", "refresh_s": 3}
    config = GossipConfig.from_sources({"bind": "127.0.0.1:7946", "join": ["h:1"]}, table)
    assert config is not None
    assert (config.node_key, config.join, config.refresh_s) == (Path("/k"), ("h:1",), 3)
    assert GossipConfig.from_sources({"bind": None}, {}) is None
    refusals = {
        "not HOST:PORT": ({"bind": "nowhere"}, table),
        "needs --node-key": ({"bind": "h:1"}, {"authority": "/a", "cluster_key": "/c"}),
        "needs --cluster-key": ({"bind": "h:1"}, {"node_key": "/k", "authority": "/a"}),
        "--join and --cluster-key are its own": ({"serf_rpc": "h:1"}, table),
        "or --serf-rpc": ({"bind": "h:1", "serf_rpc": "h:2"}, table),
        "unknown key": ({"bind": "h:1"}, {**table, "colour": "red"}),
    }
    for complaint, (flags, section) in refusals.items():
        with pytest.raises(GossipConfigError, match=complaint):
            GossipConfig.from_sources(flags, section)


def test_a_record_tag_holds_base64_of_the_signed_record() -> None:
    tags = _tags("b")
    assert base64.b64decode(tags[HEAT_TAG]) == record_in(tags)
