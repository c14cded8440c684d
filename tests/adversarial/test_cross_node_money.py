"""Attack: make money while it crosses nodes (`maxwell.node.transfers`). A runner returns more than
it was sent, a third certified node returns money for a job it never ran, a node the authority
never certified sends money, a return voucher is altered, a local user sends what it does not
hold, a voucher is spent twice. Every attempt is refused and the ledgers stay as they were."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gossip_support import ClusterKeys
from maxwell.cluster.transfers import Transfer, sign
from maxwell.economy.ledger import user_account
from maxwell.gossip.keys import NodeIdentity, load_identity, load_public
from maxwell.gossip.trust import Admission, certify
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentState, NodeError, PaymentError
from maxwell.node.transfers import NodeTransfers, TransferConflictError
from maxwell.units import Money

AT = 1_800_000_000.0
IDENTITIES: dict[str, NodeIdentity] = {}
J = 1_000_000  # µ$J in a $J


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, tuple[NodeDaemon, NodeTransfers]]]:
    keys = ClusterKeys.make(tmp_path / "keys", ["home", "runner", "thief"])
    authority = load_public(keys.authority_public)
    made: dict[str, tuple[NodeDaemon, NodeTransfers]] = {}
    try:
        for name in ("home", "runner", "thief"):
            daemon = NodeDaemon(NodeConfig(state_dir=tmp_path / name, tick_s=0.1, cgroup="none"))
            identity = IDENTITIES[name] = load_identity(keys.node_key(name), authority)
            transfers = NodeTransfers(
                identity, Admission(authority=authority), daemon.ledger(), daemon.changing,
                lambda: AT,
            )  # fmt: skip
            made[name] = (daemon, transfers)
        yield made
    finally:
        for daemon, _ in made.values():
            daemon.shutdown(kill_agents=True)


def _voucher(identity: NodeIdentity, transfer: Transfer) -> str:
    wire = sign(transfer, AT, identity.key, identity.certificate).encode()
    return base64.b64encode(wire).decode()


def _identity(node: str) -> NodeIdentity:
    """A node's own key and certificate (the test plays it, as a compromised node would)."""
    return IDENTITIES[node]


def _ended(agent: str) -> AgentState:
    return AgentState.DEAD


def test_no_node_returns_more_than_was_sent_nor_for_a_job_it_never_ran(
    nodes: dict[str, tuple[NodeDaemon, NodeTransfers]],
) -> None:
    home_daemon, home = nodes["home"]
    home.send("job-1", "runner", Money(2 * J))
    before = home_daemon.ledger().balances()
    greedy = Transfer("back", "job-1", "runner", "home", 3 * J)  # more than was sent
    stranger = Transfer("back", "job-1", "thief", "home", 1 * J)  # never ran it
    for voucher in (_voucher(_identity("runner"), greedy), _voucher(_identity("thief"), stranger)):
        with pytest.raises(TransferConflictError):
            home.refund(voucher)
    assert home_daemon.ledger().balances() == before
    with pytest.raises(NodeError, match="no xfer-out half"):
        home.refund(_voucher(_identity("runner"), Transfer("back", "job-9", "runner", "home", 1)))


def test_a_node_the_authority_never_certified_cannot_send_money(
    nodes: dict[str, tuple[NodeDaemon, NodeTransfers]],
) -> None:
    runner_daemon, runner = nodes["runner"]
    rogue = Ed25519PrivateKey.generate()
    own_authority = Ed25519PrivateKey.generate()
    identity = NodeIdentity(rogue, certify(own_authority, "home", rogue.public_key()))
    voucher = _voucher(identity, Transfer("out", "job-1", "home", "runner", 100 * J))
    with pytest.raises(NodeError, match="not-admitted"):
        runner.received(voucher)
    assert "inbound:home" not in runner_daemon.ledger().balances()


def test_an_altered_return_is_refused(nodes: dict[str, tuple[NodeDaemon, NodeTransfers]]) -> None:
    _, home = nodes["home"]
    home.send("job-1", "runner", Money(5 * J))
    honest = base64.b64decode(_voucher(_identity("runner"), Transfer("back", "job-1", "runner",
                                                                    "home", 1 * J)))  # fmt: skip
    body, certificate, signature = msgpack.unpackb(honest)
    fields = msgpack.unpackb(body)
    fields[5] = 4 * J  # the amount, raised after signing
    altered = msgpack.packb([msgpack.packb(fields), certificate, signature])
    with pytest.raises(NodeError, match="forged"):
        home.refund(base64.b64encode(altered).decode())


def test_a_local_user_sends_only_what_it_holds_and_a_voucher_spends_once(
    nodes: dict[str, tuple[NodeDaemon, NodeTransfers]],
) -> None:
    (home_daemon, home), (runner_daemon, runner) = nodes["home"], nodes["runner"]
    home_daemon.fund_user(1000, Money(1 * J))
    with pytest.raises(PaymentError):
        home.send("job-1", "runner", Money(2 * J), payer=user_account(1000))
    receipt = home.send("job-2", "runner", Money(1 * J), payer=user_account(1000))
    assert home_daemon.user_account(1000).balance == 0
    transfer = runner.received(str(receipt.voucher))
    spawned = runner_daemon.spawn(["sleep", "30"], fund=Money(transfer.amount), bid=1.0,
                                  transfer=transfer)  # fmt: skip
    with pytest.raises(TransferConflictError, match=spawned.agent):
        runner.received(str(receipt.voucher))
    runner_daemon.kill(spawned.agent)
    settled = runner.settle("job-2", _ended)
    home.refund(str(settled.voucher))
    assert home_daemon.user_account(1000).balance == settled.amount  # back to the user, no more
    for daemon in (home_daemon, runner_daemon):
        assert daemon.ledger().verify().ok
