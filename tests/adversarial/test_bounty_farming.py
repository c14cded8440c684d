"""Bounty farming (issue 11, 4): an agent that picks its own inputs (30 one-row, near-zero
inputs had earned 30 $J for 0.13 CPU-s) earns nothing now, costs the node no verification and
pays no fee: only inputs someone posted in a job pay. And the node's copy of a posted input
cannot be turned against the node: a link the agent plants where the copy goes is replaced,
never followed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live import ledger_verifies

from helpers import AGENTS_AS_DAEMON
from maxwell.node import bounties
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError
from maxwell.proof import make_proof, model_from_bytes, run, write_proof
from maxwell.proof.files import write_tensor
from maxwell.samples.useful import make_weights, mlp_onnx
from maxwell.units import Money
from test_node_bounty import TOKENS, WIDTH, post, prove

J = 1_000_000
FARMED = 30


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeDaemon, str, Path, Path]]:
    """A daemon, an agent that proves the model, its directory, and the model."""
    model = tmp_path / "mlp.onnx"
    model.write_bytes(mlp_onnx(make_weights(WIDTH, 2, np.random.default_rng(1)), TOKENS))
    daemon = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"
        )
    )
    try:
        agent = daemon.spawn(
            ["sleep", "30"], fund=Money(10 * J), bid=1.0, bounty=Money(J), model=str(model)
        ).agent
        yield daemon, agent, tmp_path / "state" / "work" / agent, model
    finally:
        daemon.shutdown(kill_agents=True)


def test_self_chosen_inputs_earn_nothing_and_cost_the_node_no_verification(
    node: tuple[NodeDaemon, str, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, agent, directory, model_path = node
    post(daemon, model_path, [1])  # real work exists; the farmer ignores it
    model = model_from_bytes(model_path.read_bytes())
    verified: list[object] = []
    real_verify = bounties.verify

    def counted(*args: Any, **kwargs: Any) -> Any:
        verified.append(args)
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(bounties, "verify", counted)
    before = daemon.agent(agent).balance
    for n in range(FARMED):
        x = np.zeros((1, WIDTH), dtype=np.float32)
        x[0, n % WIDTH] = 1e-6 * (n + 1)  # a distinct, nearly free input each time
        activations = run(model, x)
        write_tensor(directory / "x.npy", x)
        write_tensor(directory / "y.npy", activations[-1])
        write_proof(directory / "proof.mxp", make_proof(model, activations))
        with pytest.raises(NodeError, match="not an unpaid input of a job posted"):
            daemon.submit_proof(agent, "x.npy", "y.npy", "proof.mxp")
    assert verified == []  # refused on the input's digest, before any verification
    info = daemon.agent(agent)
    assert (info.balance, info.proofs, info.bounties) == (before, 0, 0)  # no bounty, no fee
    assert [e.kind for e in daemon.events() if e.kind in ("bounty", "rejected")] == []
    prove(model_path, directory, seed=1)  # the posted input: paid
    assert daemon.submit_proof(agent, "x.npy", "y.npy", "proof.mxp").bounty == J
    assert len(verified) == 1
    assert ledger_verifies(daemon)


def test_a_link_planted_where_an_input_is_delivered_is_replaced_not_followed(
    node: tuple[NodeDaemon, str, Path, Path], tmp_path: Path
) -> None:
    daemon, agent, directory, model_path = node
    job = post(daemon, model_path, [1])
    secret = tmp_path / "secret"
    secret.write_text("the node's secret")
    directory.mkdir(parents=True, exist_ok=True)
    os.symlink(secret, directory / f"job-{job}-0.npy")
    taken = daemon.take_input(agent, job)
    delivered = directory / taken.input
    assert not delivered.is_symlink() and delivered.stat().st_nlink == 1
    assert delivered.read_bytes() == (tmp_path / "state" / "jobs" / job / "0.npy").read_bytes()
    assert secret.read_text() == "the node's secret"  # untouched
