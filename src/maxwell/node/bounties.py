"""Proofs of inference and the bounties that pay for them: an adapter over `maxwell.proof`.

Rules:

- A bounty pays `bounty` µ$J from the treasury for each valid proof of inference of the model
  the user named at spawn. The verifier's secret key for that model is drawn from the
  operating system's randomness and never leaves the daemon; its random vectors are drawn
  after each proof is committed.
- A proof is read from the agent's own directory (`maxwell.node.processes.work_dir`): its
  input, output and bundle are named relative to it and read as `maxwell.node.intake` says (no
  link followed, regular files of the agent's own, sizes capped: `MAX_TENSOR_BYTES`,
  `MAX_BUNDLE_BYTES`, the bundle unpacked too), then verified, all outside the daemon's lock;
  only the payment (or the rejection's journal entry) takes it.
- Each distinct input is paid once: the ledger key is `bounty:<agent>:<input digest>`. An
  invalid proof pays nothing and is journalled (`rejected`, with the verifier's reason).
- A restarted daemon reloads a live agent's model and pays on only if the file is the one the
  agent was spawned with (same digest).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
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
from maxwell.node.intake import read_agent_file
from maxwell.node.paths import StatePaths
from maxwell.node.processes import agent_uid, work_dir
from maxwell.proof import (
    DEFAULT_ROUNDS,
    Model,
    ProofInputError,
    Verdict,
    VerifierKey,
    make_key,
    verify,
)
from maxwell.proof.bundle import proof_from_bytes
from maxwell.proof.files import read_model, tensor_from_bytes
from maxwell.units import Money

log = logging.getLogger(__name__)


MAX_TENSOR_BYTES = 64 << 20  # an input or output `.npy` an agent submits
MAX_BUNDLE_BYTES = 128 << 20  # a proof bundle, on disk and unpacked (it is stored, not deflated)


@dataclass(frozen=True)
class CheckedProof:
    """A proof read and verified (outside the daemon's lock), waiting to be paid or rejected."""

    input_sha256: str
    merkle_root: str
    verdict: Verdict


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

    def check(self, agent: AgentRecord, input: str, output: str, proof: str) -> CheckedProof:
        """Read the proof the live `agent` left in its directory and verify it. Takes no lock and
        changes nothing: a slow or hostile submission stalls no tick (`maxwell.node.intake`)."""
        model, key = agent.model, agent.model_key
        if model is None or key is None:
            raise NodeError(f"agent {agent.id} has no bounty: nothing pays for its proofs")
        directory, uid = work_dir(self._paths, agent), agent_uid(agent)
        files = [
            read_agent_file(directory, name, uid=uid, limit=limit)
            for name, limit in (
                (input, MAX_TENSOR_BYTES), (output, MAX_TENSOR_BYTES), (proof, MAX_BUNDLE_BYTES),
            )
        ]  # fmt: skip
        try:
            x = tensor_from_bytes(files[0], "input", input)
            y = tensor_from_bytes(files[1], "output", output)
            bundle = proof_from_bytes(files[2], proof, max_unpacked=MAX_BUNDLE_BYTES)
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        rng = np.random.default_rng(secrets.randbits(128))  # one per check: checks run at once
        verdict = verify(model, x, y, bundle, rng=rng, key=key)
        return CheckedProof(bundle.input_sha256, bundle.merkle_root, verdict)

    def pay(self, agent: AgentRecord, checked: CheckedProof) -> ProofResult:
        """Pay the live `agent`'s bounty for a valid proof whose input was not paid for yet, or
        journal the rejection. Under the daemon's lock."""
        key = f"bounty:{agent.id}:{checked.input_sha256}"
        if self._ledger.key_used(key):
            raise NodeError("this input's inference was paid for already")
        verdict = checked.verdict
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
            "input_sha256": checked.input_sha256,
            "merkle_root": checked.merkle_root,
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
