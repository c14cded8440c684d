"""Heat gossip between real Serf agents on loopback (`maxwell.gossip.node`): records published
as tags, verified by every node, distress spread as events, nothing left running."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from gossip_support import (
    ClusterKeys,
    free_port,
    gossipers,
    needs_serf,
    node_prefix,
    serfs_named,
    start_gossiper,
    wait_for,
)
from maxwell.gossip.agent import SerfAgent
from maxwell.gossip.config import GossipConfigError
from maxwell.gossip.keys import KeyFileError, generate, load_cluster_key, public_path

pytestmark = needs_serf


def test_three_nodes_believe_each_other_and_hear_distress(tmp_path) -> None:
    prefix = node_prefix()
    names = [f"{prefix}-{i}" for i in range(3)]
    keys = ClusterKeys.make(tmp_path, names)
    with gossipers(keys, names) as nodes:

        def all_verified() -> bool:
            rows = [node.view.members().members for node in nodes]
            return all(len(r) == 3 and all(m.verified for m in r) for r in rows)

        wait_for(all_verified, 15, "every node verifies every node")
        prices = nodes[1].view.prices()
        assert {p.node for p in prices.nodes} == set(names)
        assert nodes[1].view.neighbours_headroom() == [40.0, 40.0]

        nodes[0].dial.set(headroom_c=2.0, spot=1.5)  # about to throttle, and dearer
        for listener in nodes[1:]:
            wait_for(
                lambda listener=listener: any(
                    seen.node == names[0] for seen in listener.view.distress_seen()
                ),
                10,
                f"{listener.node} hears {names[0]}'s distress",
            )
        assert sorted(nodes[2].view.neighbours_headroom()) == [2.0, 40.0]
        cheapest = nodes[2].view.prices()
        assert cheapest.nodes[-1].node == names[0] and cheapest.cheapest != names[0]
        assert nodes[0].gossip.distress_sent >= 1
        # Honest nodes refuse nothing but, on a busy machine, a distress event that arrived
        # after the hot node's newer tags: to them an older record, a replay (docs/gossip.md).
        assert all(set(node.view.rejected()) <= {"replayed"} for node in nodes)
    assert serfs_named(prefix) == ""


def test_a_node_the_authority_did_not_sign_is_listed_but_never_believed(tmp_path) -> None:
    prefix = node_prefix()
    names = [f"{prefix}-{i}" for i in range(2)]
    keys = ClusterKeys.make(tmp_path, names)
    stranger, own_authority = f"{prefix}-stranger", tmp_path / "own-authority"
    generate(own_authority)
    keys.add(stranger, authority=own_authority)
    with gossipers(keys, names) as nodes:
        # It holds the cluster key and signs its records with a key its own authority certified.
        config = replace(
            keys.config(stranger, f"127.0.0.1:{free_port()}", join=(nodes[0].bind,)),
            authority=public_path(own_authority),
        )
        impostor = start_gossiper(config, stranger)
        try:
            view = nodes[1].view
            # The signed neighbour believed first: the stranger may be refused at once (its own
            # question carries the certificate that no one admits).
            wait_for(
                lambda: names[0] in {m.node for m in view.members().members if m.verified},
                15, "the signed nodes believe each other",
            )  # fmt: skip

            def listed() -> bool:
                return any(m.node == stranger for m in view.members().members)

            wait_for(listed, 15, "the stranger is a member")
            wait_for(lambda: view.rejected().get("not-admitted", 0) >= 1, 10, "it is refused")
            row = next(m for m in view.members().members if m.node == stranger)
            assert not row.verified and row.price is None
            assert stranger not in {p.node for p in view.prices().nodes}
            assert len(view.neighbours_headroom()) == 1  # the other signed node alone
        finally:
            impostor.gossip.close()
    assert serfs_named(prefix) == ""


def test_starting_refuses_what_peers_would_not_believe(tmp_path) -> None:
    prefix = node_prefix()
    keys = ClusterKeys.make(tmp_path, [f"{prefix}-0"])
    generate(tmp_path / "elsewhere")
    keys.add(f"{prefix}-x", authority=tmp_path / "elsewhere")
    with pytest.raises(KeyFileError, match="not signed by the --authority key"):
        start_gossiper(keys.config(f"{prefix}-x", f"127.0.0.1:{free_port()}"), f"{prefix}-x")
    with pytest.raises(GossipConfigError, match="--gossip HOST:PORT or --serf-rpc"):
        replace(keys.config(f"{prefix}-0", "127.0.0.1:1"), bind=None)
    assert serfs_named(prefix) == ""


def test_a_node_attaches_to_a_serf_agent_someone_else_runs(tmp_path, monkeypatch) -> None:
    prefix = node_prefix()
    name = f"{prefix}-0"
    keys = ClusterKeys.make(tmp_path, [name])
    loop = asyncio.new_event_loop()  # the foreign agents' owner, alive through the test
    owner = threading.Thread(target=loop.run_forever, daemon=True)
    owner.start()

    def on_loop(coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    key = load_cluster_key(keys.cluster_key)
    try:
        for agent_name, ok in ((f"{prefix}-other", False), (name, True)):
            bind = f"127.0.0.1:{free_port()}"
            agent = on_loop(SerfAgent.start(agent_name, bind, encrypt_key=key))
            try:
                monkeypatch.setenv("SERF_RPC_AUTH", agent.auth_token)
                host, port = agent.rpc_address
                config = replace(keys.config(name, "127.0.0.1:1"), bind=None, cluster_key=None,
                                 serf_rpc=f"{host}:{port}")  # fmt: skip
                if not ok:
                    with pytest.raises(GossipConfigError, match="peers would take its records"):
                        start_gossiper(config, name)
                    continue
                node = start_gossiper(config, name)
                try:
                    wait_for(lambda n=node: n.gossip.published >= 1, 10, "a record published")
                    assert node.gossip.serf_pid is None  # not its own agent
                finally:
                    node.gossip.close()
                assert agent.returncode is None  # left running for whoever runs it
            finally:
                on_loop(agent.stop(leave=False))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        owner.join()
        loop.close()
    assert serfs_named(prefix) == ""
