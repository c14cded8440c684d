"""Proofs of inference and the bounties that pay for them: an adapter over `maxwell.proof`.

Rules:

- A bounty pays `bounty` µ$J from the treasury for each valid proof of inference of the model
  the user named at spawn. The verifier's secret key for that model is drawn from the
  operating system's randomness and never leaves the daemon; its random vectors are drawn
  after each proof is committed.
- A proof is read from the agent's own directory (`maxwell.node.processes.work_dir`): its
  input, output and bundle are named relative to it, never through a symbolic link, never
  outside it.
- Each distinct input is paid once: the ledger key is `bounty:<agent>:<input digest>`. An
  invalid proof pays nothing and is journalled (`rejected`, with the verifier's reason).
- A restarted daemon reloads a live agent's model and pays on only if the file is the one the
  agent was spawned with (same digest).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np

from maxwell.economy.ledger import (
    TREASURY,
    LedgerError,
    Movement,
    agent_account,
    batch_request,
    event_request,
)
from maxwell.economy.store import LedgerStore
from maxwell.node.agents import AgentRecord
from maxwell.node.facade import NO_MONEY, NodeError, ProofResult
from maxwell.node.paths import StatePaths
from maxwell.node.processes import work_dir
from maxwell.proof import DEFAULT_ROUNDS, Model, ProofInputError, VerifierKey, make_key, verify
from maxwell.proof.bundle import read_proof
from maxwell.proof.files import read_model, read_tensor
from maxwell.units import Money

log = logging.getLogger(__name__)


def inside(directory: Path, name: str) -> Path:
    """`directory/name`, refusing names that leave it or are symbolic links."""
    if not name or "\x00" in name or os.path.isabs(name):
        raise NodeError(f"{name!r}: name a file in the agent's directory, relative to it")
    path = directory / name
    if path.is_symlink():
        raise NodeError(f"{name}: a symbolic link; the node reads only the agent's own files")
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(directory)]) != os.path.realpath(directory):
        raise NodeError(f"{name}: outside the agent's directory")
    return path


class Bounties:
    """Loads the models bounties pay for and pays for valid proofs (see the module)."""

    def __init__(self, paths: StatePaths, ledger: LedgerStore, wall: Callable[[], float]) -> None:
        self._paths = paths
        self._ledger = ledger
        self._wall = wall
        # The proof verifier's secret vectors: from the OS, drawn after each proof is committed.
        self._rng = np.random.default_rng(secrets.randbits(128))

    def load_model(self, path: str) -> tuple[Model, VerifierKey]:
        """The model a bounty pays for, and the verifier's secret key for it."""
        try:
            model = read_model(Path(path))
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        return model, make_key(model, DEFAULT_ROUNDS, self._rng)

    def restore(self, agent: AgentRecord, path: str, digest: str, amount: int) -> None:
        """A reloaded agent's bounty, if its model file is still the one it was spawned with."""
        try:
            agent.model, agent.model_key = self.load_model(path)
            if agent.model.sha256 != digest:
                raise NodeError(f"{path} changed since the agent was spawned")
            agent.bounty = amount
        except NodeError as exc:
            agent.model = agent.model_key = None
            log.warning("agent %s: no more bounties: %s", agent.id, exc, exc_info=True)

    def submit_proof(self, agent: AgentRecord, input: str, output: str, proof: str) -> ProofResult:
        """Check a proof the live `agent` left in its directory; pay its bounty if it is valid
        and its input was not paid for yet."""
        if agent.model is None or agent.model_key is None:
            raise NodeError(f"agent {agent.id} has no bounty: nothing pays for its proofs")
        directory = work_dir(self._paths, agent)
        paths = [inside(directory, name) for name in (input, output, proof)]
        try:
            x = read_tensor(paths[0], "input")
            y = read_tensor(paths[1], "output")
            bundle = read_proof(paths[2])
        except ProofInputError as exc:
            raise NodeError(str(exc).replace(str(directory) + "/", "")) from exc
        key = f"bounty:{agent.id}:{bundle.input_sha256}"
        if self._ledger.key_used(key):
            raise NodeError("this input's inference was paid for already")
        verdict = verify(agent.model, x, y, bundle, rng=self._rng, key=agent.model_key)
        at = self._wall()
        if not verdict.valid:
            self._ledger.submit(
                event_request(
                    f"rejected:{agent.id}:{secrets.token_hex(8)}",
                    "rejected",
                    {"agent": agent.id, "reason": verdict.message()},
                ),
                at=at,
            )
            return ProofResult(agent.id, False, verdict.message(), NO_MONEY, agent.proofs)
        detail = {
            "agent": agent.id,
            "bounty": agent.bounty,
            "input_sha256": bundle.input_sha256,
            "merkle_root": bundle.merkle_root,
            "layers_checked": verdict.layers_checked,
            "rounds": verdict.rounds,
        }
        try:
            self._ledger.submit(
                batch_request(
                    key,
                    [Movement(TREASURY, agent_account(agent.id), agent.bounty)],
                    kind="bounty",
                    detail=detail,
                ),
                at=at,
            )
        except LedgerError as exc:
            raise NodeError(f"cannot pay the bounty: {exc}") from exc
        agent.proofs += 1
        agent.settle_next = True
        agent.bounties += agent.bounty
        return ProofResult(agent.id, True, verdict.message(), Money(agent.bounty), agent.proofs)
