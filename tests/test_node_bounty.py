"""Proofs of inference in the daemon: an agent's valid proof of a posted job's input earns the
job's bounty, once per input; an invalid one earns nothing, costs a fee and is recorded."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import AGENTS_AS_DAEMON
from maxwell.node.config import NodeConfig, NodeConfigError
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError
from maxwell.proof import make_proof, model_from_bytes, run, write_proof
from maxwell.proof.files import write_tensor
from maxwell.samples.useful import make_weights, mlp_onnx
from maxwell.units import Money

J = 1_000_000
TOKENS, WIDTH = 4, 16


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp_onnx(make_weights(WIDTH, 2, np.random.default_rng(1)), TOKENS))
    return path


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    node = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"
        )
    )
    try:
        yield node
    finally:
        node.shutdown(kill_agents=True)


def seeded_input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((TOKENS, WIDTH)).astype(np.float32)


ONE_J = Money(J)


def post(node: NodeDaemon, model_path: Path, seeds: Sequence[int], bounty: Money = ONE_J) -> str:
    """Post a job of the seeded inputs (what a user wants inferred); its id."""
    inputs = model_path.parent / f"inputs-{secrets.token_hex(4)}"
    inputs.mkdir()
    for seed in seeds:
        write_tensor(inputs / f"{seed:04d}.npy", seeded_input(seed))
    return node.post_job(str(model_path), str(inputs), bounty).id


def prove(model_path: Path, directory: Path, seed: int, *, tamper: bool = False) -> None:
    """What an agent does: run the model on an input, leave X, Y and the proof in its dir."""
    model = model_from_bytes(model_path.read_bytes())
    x = seeded_input(seed)
    activations = run(model, x)
    y = activations[model.output_layer.index].copy()
    write_tensor(directory / "x.npy", x)
    if tamper:  # claims an output it did not compute, with the proof of the real one
        y[0, 0] += 0.01
    write_tensor(directory / "y.npy", y)
    write_proof(directory / "proof.mxp", make_proof(model, activations))


def test_a_valid_proof_earns_the_bounty_once_and_an_invalid_one_nothing(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    spawned = daemon.spawn(
        ["sleep", "30"], fund=Money(10 * J), bid=1.0, bounty=Money(2 * J), model=str(model_path)
    )
    directory = tmp_path / "state" / "work" / spawned.agent
    assert directory.is_dir() and (directory.stat().st_mode & 0o777) == 0o700
    job = post(daemon, model_path, [1, 2, 3], Money(2 * J))
    before = daemon.agent(spawned.agent).balance
    prove(model_path, directory, seed=1)
    paid = daemon.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp")
    assert paid.valid and paid.bounty == 2 * J and paid.proofs == 1
    assert daemon.agent(spawned.agent).balance == before + 2 * J
    assert (daemon.job(job).paid, daemon.job(job).escrow) == (1, 4 * J)
    with pytest.raises(NodeError, match="paid for already"):
        daemon.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp")
    prove(model_path, directory, seed=2, tamper=True)
    refused = daemon.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp")
    assert not refused.valid and refused.bounty == 0
    assert refused.fee == 2 * J  # a rejection costs what a valid proof earns (by default)
    assert refused.reason == (
        "invalid: layer 4 (Softmax 'softmax'): the output Y does not match the committed output"
    )
    prove(model_path, directory, seed=3)
    assert daemon.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp").proofs == 2
    info = daemon.agent(spawned.agent)
    assert (info.proofs, info.bounties, info.balance) == (2, 4 * J, before + 4 * J - 2 * J)
    kinds = [e.kind for e in daemon.events() if e.agent == spawned.agent]
    assert kinds.count("bounty") == 2 and kinds.count("rejected") == 1
    assert daemon.ledger().verify().ok


def test_the_node_reads_only_the_agent_s_own_files(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    spawned = daemon.spawn(
        ["sleep", "30"], fund=Money(J), bid=1.0, bounty=Money(J), model=str(model_path)
    )
    directory = tmp_path / "state" / "work" / spawned.agent
    post(daemon, model_path, [1])
    prove(model_path, directory, seed=1)
    secret = tmp_path / "secret.npy"
    secret.write_bytes((directory / "x.npy").read_bytes())
    os.symlink(secret, directory / "link.npy")
    for bad, says in (
        ("../../secret.npy", "outside the agent's directory"),
        (str(secret), "relative to it"),
        ("link.npy", "symbolic link"),
        ("missing.npy", "no such file"),
    ):
        with pytest.raises(NodeError, match=says):
            daemon.submit_proof(spawned.agent, bad, "y.npy", "proof.mxp")
    assert daemon.agent(spawned.agent).proofs == 0


def test_a_bounty_needs_its_model_and_an_agent_without_one_cannot_claim(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(NodeError, match="--model"):
        daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0, bounty=Money(J))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(NodeError, match=r"bad\.onnx"):
        daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0, bounty=Money(J), model=str(bad))
    assert daemon.agents() == []
    plain = daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0)
    with pytest.raises(NodeError, match="names no model"):
        daemon.submit_proof(plain.agent, "x.npy", "y.npy", "proof.mxp")


def test_proofs_and_bounties_survive_a_restart(model_path: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = NodeDaemon(
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, cgroup="none")
    )
    try:
        spawned = first.spawn(
            ["sleep", "30"], fund=Money(J), bid=1.0, bounty=Money(J), model=str(model_path)
        )
        job = post(first, model_path, [1, 2])
        prove(model_path, state / "work" / spawned.agent, seed=1)
        assert first.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp").valid
        first.kill(spawned.agent)
    finally:
        first.shutdown(kill_agents=True)
    again = NodeDaemon(
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, cgroup="none")
    )
    try:
        info = again.agent(spawned.agent)
        assert (info.proofs, info.bounties) == (1, J)
        assert (again.job(job).paid, again.job(job).escrow) == (1, J)
    finally:
        again.shutdown(kill_agents=True)


def _key_of(daemon: NodeDaemon, agent: str) -> object:
    return daemon._registry.get(agent).model_key


def test_a_rejection_replaces_the_key_and_a_valid_proof_keeps_it(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    spawned = daemon.spawn(
        ["sleep", "30"], fund=Money(10 * J), bid=1.0, bounty=Money(J), model=str(model_path)
    )
    directory = tmp_path / "state" / "work" / spawned.agent
    first = _key_of(daemon, spawned.agent)
    post(daemon, model_path, [1, 2])
    prove(model_path, directory, seed=1)
    assert daemon.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp").valid
    assert _key_of(daemon, spawned.agent) is first  # young, and no proof failed against it
    prove(model_path, directory, seed=2, tamper=True)
    assert not daemon.submit_proof(spawned.agent, "x.npy", "y.npy", "proof.mxp").valid
    assert _key_of(daemon, spawned.agent) is not first


@contextlib.contextmanager
def _agent_on(
    tmp_path: Path, model_path: Path, fund: Money, **settings: Any
) -> Iterator[tuple[NodeDaemon, str, Path]]:
    """A daemon with these settings, an agent paid 1 $J a proof, and the agent's directory."""
    config = NodeConfig(
        dynamic_uids=AGENTS_AS_DAEMON,
        state_dir=tmp_path / "state",
        tick_s=0.1,
        cgroup="none",
        **settings,
    )
    node = NodeDaemon(config)
    try:
        spawned = node.spawn(
            ["sleep", "30"], fund=fund, bid=1.0, bounty=Money(J), model=str(model_path)
        )
        post(node, model_path, [1, 2])
        yield node, spawned.agent, tmp_path / "state" / "work" / spawned.agent
    finally:
        node.shutdown(kill_agents=True)


def test_keys_are_replaced_once_they_are_older_than_the_node_allows(
    model_path: Path, tmp_path: Path
) -> None:
    with _agent_on(tmp_path, model_path, Money(10 * J), proof_key_max_age_s=1e-9) as found:
        node, agent, directory = found
        first = _key_of(node, agent)
        prove(model_path, directory, seed=1)
        assert node.submit_proof(agent, "x.npy", "y.npy", "proof.mxp").valid
        assert _key_of(node, agent) is not first  # too old by the check: replaced


def test_the_rejection_fee_is_configurable_and_never_more_than_the_account_holds(
    model_path: Path, tmp_path: Path
) -> None:
    with _agent_on(tmp_path, model_path, Money(5 * J), proof_rejection_fee=3.0) as found:
        node, agent, directory = found
        fees = []
        for seed in (1, 2):
            prove(model_path, directory, seed=seed, tamper=True)
            fees.append(node.submit_proof(agent, "x.npy", "y.npy", "proof.mxp").fee)
        assert fees == [3 * J, 2 * J]  # the second takes what was left
        assert node.agent(agent).balance == 0
        rejected = [e for e in node.events() if e.kind == "rejected"]
        assert [e.detail["fee"] for e in rejected] == [3 * J, 2 * J]
        assert node.ledger().verify().ok


def test_the_proof_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="proof_key_max_age_s must be a finite number"):
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path, proof_key_max_age_s=0.0)
    with pytest.raises(NodeConfigError, match="proof_rejection_fee must be a finite number"):
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path, proof_rejection_fee=-1.0)
