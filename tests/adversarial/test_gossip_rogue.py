"""Attack: a member that holds the cluster's Serf key (so Serf lets it in and gossips whatever it
says) tries to change what the honest nodes believe: it shows another node's tags under its own
name, sends altered and replayed copies of that node's records as distress events, advertises
itself as the cheapest node with a key no authority certified, and floods the cluster with
garbage events and tags. Every attempt must be refused and counted, the honest nodes must go on
believing each other, and the rogue must never be the cheapest node."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import replace

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gossip_support import ClusterKeys, Gossiper, gossipers, needs_serf, node_prefix, serfs_named
from gossip_support import free_port as gossip_port
from helpers import wait_until
from maxwell.gossip.agent import SerfAgent
from maxwell.gossip.keys import load_cluster_key
from maxwell.gossip.publish import DISTRESS_EVENT
from maxwell.gossip.record import body_of, decode, encode
from maxwell.gossip.rpc import SerfRpc
from maxwell.gossip.tags import HEAT_TAG, node_tags, record_in

pytestmark = needs_serf


def _all_verified(nodes: list[Gossiper]) -> bool:
    names = {node.node for node in nodes}
    return all(
        {m.node for m in node.view.members().members if m.verified} >= names for node in nodes
    )


async def _rogue(keys: ClusterKeys, name: str, seed: str) -> tuple[SerfAgent, SerfRpc]:
    """A serf agent holding the cluster key, driven directly: no Maxwell behind it."""
    key = load_cluster_key(keys.cluster_key)
    agent = await SerfAgent.start(name, f"127.0.0.1:{gossip_port()}", join=[seed], encrypt_key=key)
    return agent, await agent.connect()


async def _tags_of(rpc: SerfRpc, node: str) -> dict[str, str]:
    return next(m.tags for m in await rpc.members() if m.name == node)


def test_a_rogue_with_the_cluster_key_cannot_change_what_anyone_believes(tmp_path) -> None:
    prefix = node_prefix()
    names = [f"{prefix}-{i}" for i in range(2)]
    rogue_name = f"{prefix}-rogue"
    keys = ClusterKeys.make(tmp_path, names)
    with gossipers(keys, names) as honest:
        wait_until(lambda: _all_verified(honest), timeout_s=20, what="the honest nodes agree")
        victim = honest[1]

        async def attack() -> None:
            agent, rpc = await _rogue(keys, rogue_name, honest[0].bind)
            try:
                first = record_in(await _tags_of(rpc, victim.node))
                assert first is not None
                await _wait_for_newer(rpc, victim.node, first)
                stolen = await _tags_of(rpc, victim.node)
                await rpc.set_tags(stolen)  # the victim's record, under the rogue's name
                watcher = honest[0].view
                # Seen before the next tags replace these (Serf gossips a member's latest alone).
                wait_until(lambda: "impostor" in watcher.rejected(), timeout_s=20,
                           what="the stolen tags refused")  # fmt: skip
                current = decode(record_in(stolen) or b"")
                cheaper = replace(current.record, seq=current.record.seq + 1, price=1e-6)
                altered = msgpack.packb([body_of(cheaper), current.signature])
                await rpc.event(DISTRESS_EVENT, altered, coalesce=False)  # forged
                await rpc.event(DISTRESS_EVENT, first, coalesce=False)  # an older one: replayed
                own = Ed25519PrivateKey.generate()  # a key no authority certified
                bargain = replace(current.record, node=rogue_name, price=1e-9, free_cores=64.0,
                                  capacity_cores=64.0, seq=1, at=time.time())  # fmt: skip
                await rpc.set_tags(node_tags(encode(bargain, own)))
                wait_until(
                    lambda: (
                        {"impostor", "forged", "replayed", "not-admitted"}
                        <= set(watcher.rejected())
                    ),
                    timeout_s=40,  # not-admitted: after three unanswered questions, 5 s apart
                    what="every attempt refused",
                )
            finally:
                await rpc.close()
                await agent.stop(leave=False)

        asyncio.run(attack())
        for node in honest:
            prices = node.view.prices()
            assert rogue_name not in {p.node for p in prices.nodes}
            assert prices.cheapest in names
            believed = next(p for p in prices.nodes if p.node == victim.node)
            assert believed.price == 1.0  # what the victim said, not the forger's 1e-6
            row = next(m for m in node.view.members().members if m.node == rogue_name)
            assert not row.verified and row.price is None
    assert serfs_named(prefix) == ""


async def _wait_for_newer(rpc: SerfRpc, node: str, first: bytes) -> None:
    """Until `node` has published a record after `first` (so `first` is a replay)."""
    deadline = time.monotonic() + 20
    while record_in(await _tags_of(rpc, node)) == first:
        assert time.monotonic() < deadline, f"{node} published nothing new"
        await asyncio.sleep(0.1)


GARBAGE_EVENTS = 2_000
GARBAGE_TAGS = 40


def _garbage_tag(rng: random.Random) -> dict[str, str]:
    choice = rng.randrange(4)
    if choice == 0:
        return {HEAT_TAG: base64.b64encode(rng.randbytes(rng.randrange(1, 280))).decode()}
    if choice == 1:
        return {HEAT_TAG: "".join(rng.choice("!@#é€ \t") for _ in range(rng.randrange(1, 60)))}
    if choice == 2:
        return {HEAT_TAG: "QUJD" * 120}  # longer than any honest record
    return {HEAT_TAG: base64.b64encode(msgpack.packb([rng.randbytes(40), bytes(64)])).decode()}


def test_garbage_events_and_tags_are_counted_and_nobody_falls_over(tmp_path) -> None:
    prefix = node_prefix()
    names = [f"{prefix}-{i}" for i in range(2)]
    keys = ClusterKeys.make(tmp_path, names)
    rng = random.Random(12)
    with gossipers(keys, names) as honest:
        wait_until(lambda: _all_verified(honest), timeout_s=20, what="the honest nodes agree")

        watcher = honest[0].view

        async def flood() -> None:
            agent, rpc = await _rogue(keys, f"{prefix}-rogue", honest[0].bind)
            try:
                for sent in range(GARBAGE_EVENTS):
                    payload = rng.randbytes(rng.randrange(0, 400))
                    await rpc.event(DISTRESS_EVENT, payload, coalesce=False)
                    if sent % 50 == 49:  # paced, so that Serf delivers rather than drops them
                        await asyncio.sleep(0.5)
                for _ in range(GARBAGE_TAGS):
                    await rpc.set_tags(_garbage_tag(rng))
                deadline = time.monotonic() + 30
                while watcher.distress_events < GARBAGE_EVENTS // 4:  # Serf drops "old" ones
                    assert time.monotonic() < deadline, f"{watcher.distress_events} arrived"
                    await asyncio.sleep(0.1)
            finally:
                await rpc.close()
                await agent.stop(leave=False)

        asyncio.run(flood())
        refused = sum(watcher.rejected().values())
        assert refused >= watcher.distress_events  # every garbage event counted as refused
        assert set(watcher.rejected()) <= {"malformed", "oversized", "version", "unsigned"}
        # Nobody fell over: the gossip threads live, and real distress still gets through.
        assert all(node.gossip.running for node in honest)
        honest[1].dial.set(headroom_c=1.0)
        wait_until(
            lambda: any(seen.node == names[1] for seen in watcher.distress_seen()),
            timeout_s=30,
            what="an honest distress after the flood",
        )
        assert _all_verified(honest)
    assert serfs_named(prefix) == ""
