"""Proofs of inference and the bounties that pay for them: an adapter over `maxwell.proof`.

Rules:

- Bounties pay for posted work only (`maxwell.node.jobs`): a proof's input must be an unpaid
  input of a job posted for the agent's model, which is looked up from the input's digest before
  anything else is read or verified; a valid proof is paid the job's bounty from the job's
  account, once per input. The agent's model (`--model` at spawn) says which model it proves;
  the bounty it was spawned with is kept and shown, and no longer sets what a proof earns.
- The verifier's secret key for the agent's model (its random vectors) is drawn from the
  operating system's randomness, one per agent, and never leaves the daemon.
- A key holds a bank of `KEY_BANK` vectors per layer, and each proof is checked with
  `DEFAULT_ROUNDS` of them drawn afresh (`VerifierKey.draw`), so a forgery that once passed
  passes the next proof with about the floor's odds, not for sure. A key is never used again
  once a proof failed against it (replaced outside the lock, right after the check), so what a
  failed probe taught is void, and keys are replaced once they are `proof_key_max_age_s` old.
- A rejection tells the submitter which layer failed and which check, never by how much (that
  number is derived from the secret vectors): the full verdict goes to the daemon's log only.
- Each rejected proof costs its agent a fee (`proof_rejection_fee`; by default the job's bounty),
  moved from its account to the treasury, up to what the account holds: a campaign of probes
  pays a bounty for each failure, and with a fresh key for every probe, each forgery passes
  with at most the verifier's floor (4^-rounds per layer, 2^-8 at the default), so probing
  never pays.
- A proof is read from the agent's own directory (`maxwell.node.processes.work_dir`): its
  input, output and bundle are named relative to it and read as `maxwell.node.intake` says (no
  link followed, regular files of the agent's own, sizes capped: `MAX_TENSOR_BYTES`,
  `MAX_BUNDLE_BYTES`, the bundle unpacked too), then verified, all outside the daemon's lock;
  only the payment (or the rejection's journal entry) takes it.
- Each posted input is paid once: the ledger key is `bounty:<job>:<n>`. An invalid proof pays
  nothing and is journalled (`rejected`, with the public reason and the fee).
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

from maxwell.clock import Clock
from maxwell.economy.ledger import (
    TREASURY,
    LedgerError,
    Movement,
    UnknownAccountError,
    agent_account,
    batch_request,
    event_request,
    job_account,
)
from maxwell.node.agents import AgentRecord
from maxwell.node.config import NodeConfig
from maxwell.node.facade import NO_MONEY, NodeError, ProofResult
from maxwell.node.intake import read_agent_file
from maxwell.node.jobs import MAX_TENSOR_BYTES, JobBoard, PayableInput
from maxwell.node.processes import agent_uid, work_dir
from maxwell.node.store import NodeStore
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
from maxwell.proof.commitment import tensor_digest
from maxwell.proof.files import read_model, tensor_from_bytes
from maxwell.proof.graph import Tensor
from maxwell.units import Money

log = logging.getLogger(__name__)


MAX_BUNDLE_BYTES = 128 << 20  # a proof bundle, on disk and unpacked (it is stored, not deflated)
KEY_BANK = 64  # vectors a key holds per layer; each proof meets DEFAULT_ROUNDS of them, at random


@dataclass(frozen=True)
class CheckedProof:
    """A proof read and verified (outside the daemon's lock), waiting to be paid or rejected."""

    input_sha256: str
    merkle_root: str
    verdict: Verdict
    payable: PayableInput  # the posted input it proves, as it stood before the check


class Bounties:
    """Loads the models bounties pay for and pays for valid proofs (see the module)."""

    def __init__(
        self,
        config: NodeConfig,
        store: NodeStore,
        jobs: JobBoard,
        wall: Callable[[], float],
        clock: Clock,
    ) -> None:
        self._config = config
        self._paths = config.paths
        self._store = store
        self._ledger = store.ledger
        self._jobs = jobs
        self._wall = wall
        self._clock = clock
        # The proof verifier's secret vectors: from the OS, drawn after each proof is committed.
        self._rng = np.random.default_rng(secrets.randbits(128))

    def load_model(self, path: str) -> tuple[Model, VerifierKey]:
        """The model a bounty pays for, and the verifier's secret key for it."""
        try:
            model = read_model(Path(path))
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        return model, make_key(model, DEFAULT_ROUNDS, self._rng, bank=KEY_BANK)

    def restore(self, agent: AgentRecord, path: str, digest: str, amount: int) -> None:
        """A reloaded agent's bounty, if its model file is still the one it was spawned with."""
        try:
            agent.model, agent.model_key = self.load_model(path)
            agent.model_key_at = self._clock.monotonic()
            if agent.model.sha256 != digest:
                raise NodeError(f"{path} changed since the agent was spawned")
            agent.bounty = amount
        except NodeError as exc:
            agent.model = agent.model_key = None
            log.warning("agent %s: no more bounties: %s", agent.id, exc, exc_info=True)

    def check(self, agent: AgentRecord, input: str, output: str, proof: str) -> CheckedProof:
        """Read the proof the live `agent` left in its directory and verify it. Takes no lock and
        changes nothing: a slow or hostile submission stalls no tick (`maxwell.node.intake`)."""
        model = agent.model
        if model is None or agent.model_key is None:
            raise NodeError(f"agent {agent.id} names no model: nothing pays for its proofs")
        directory, uid = work_dir(self._paths, agent), agent_uid(agent)
        x = _tensor(
            read_agent_file(directory, input, uid=uid, limit=MAX_TENSOR_BYTES), "input", input
        )
        digest = tensor_digest(x).hex()
        payable = self._jobs.payable(model.sha256, digest)
        if payable is None and self._jobs.was_paid(model.sha256, digest):
            raise NodeError("this input's inference was paid for already")
        if payable is None:  # before anything is verified: self-chosen work costs the node nothing
            raise NodeError(
                f"{input} is not an unpaid input of a job posted for this model: no bounty pays "
                "for its proof (take inputs from a job: maxwell job ls)"
            )
        y = _tensor(
            read_agent_file(directory, output, uid=uid, limit=MAX_TENSOR_BYTES), "output", output
        )
        bundle_bytes = read_agent_file(directory, proof, uid=uid, limit=MAX_BUNDLE_BYTES)
        try:
            bundle = proof_from_bytes(bundle_bytes, proof, max_unpacked=MAX_BUNDLE_BYTES)
        except ProofInputError as exc:
            raise NodeError(str(exc)) from exc
        key = self._current_key(agent)
        rng = np.random.default_rng(secrets.randbits(128))  # one per check: checks run at once
        verdict = verify(model, x, y, bundle, rng=rng, key=key)
        if not verdict.valid:  # here, outside the lock: a key costs a pass over the weights
            self._replace_key(agent)
        return CheckedProof(bundle.input_sha256, bundle.merkle_root, verdict, payable)

    def _current_key(self, agent: AgentRecord) -> VerifierKey | None:
        """The agent's verifier key, replaced first if it is older than the node allows."""
        if agent.model is None or agent.model_key is None:
            return None
        if self._clock.monotonic() - agent.model_key_at >= self._config.proof_key_max_age_s:
            self._replace_key(agent)
        return agent.model_key

    def _replace_key(self, agent: AgentRecord) -> None:
        if agent.model is not None:
            agent.model_key = make_key(agent.model, DEFAULT_ROUNDS, self._rng, bank=KEY_BANK)
            agent.model_key_at = self._clock.monotonic()

    def pay(self, agent: AgentRecord, checked: CheckedProof) -> ProofResult:
        """Pay the job's bounty for a valid proof of an input not paid for yet, or reject the
        proof: its fee, the journal entry. Under the daemon's lock."""
        payable = checked.payable
        key = f"bounty:{payable.job}:{payable.n}"
        if self._ledger.key_used(key):
            raise NodeError("this input's inference was paid for already")
        if not checked.verdict.valid:
            return self._reject(agent, checked.verdict, payable.bounty)
        verdict, amount = checked.verdict, payable.bounty
        detail = {
            "agent": agent.id, "job": payable.job, "input": payable.n, "bounty": amount,
            "input_sha256": checked.input_sha256, "merkle_root": checked.merkle_root,
            "layers_checked": verdict.layers_checked, "rounds": verdict.rounds,
        }  # fmt: skip
        movement = Movement(job_account(payable.job), agent_account(agent.id), amount)
        try:
            with self._store.unit_of_work():  # the payment and the input marked paid, together
                self._ledger.submit(
                    batch_request(key, [movement], kind="bounty", detail=detail), at=self._wall()
                )
                self._jobs.mark_paid(payable, agent.id)
        except LedgerError as exc:
            raise NodeError(f"cannot pay the bounty: {exc}") from exc
        agent.proofs += 1
        agent.settle_next = True
        agent.bounties += amount
        return ProofResult(agent.id, True, verdict.message(), amount, agent.proofs)

    def _reject(self, agent: AgentRecord, verdict: Verdict, bounty: Money) -> ProofResult:
        """A proof that failed (its key was replaced by `check`): the agent pays the fee (what
        its account holds at most), the public reason is journalled and answered; the rest is
        logged."""
        reason = verdict.public_message()
        log.info(
            "agent %s: proof rejected (%s); verifier key replaced", agent.id, verdict.message()
        )
        fee = Money(min(self._fee(bounty), max(self._balance(agent), 0)))
        entry_key = f"rejected:{agent.id}:{secrets.token_hex(8)}"
        detail = {"agent": agent.id, "reason": reason, "fee": fee}
        movements = [Movement(agent_account(agent.id), TREASURY, fee)] if fee else []
        try:
            if movements:
                request = batch_request(entry_key, movements, kind="rejected", detail=detail)
            else:
                request = event_request(entry_key, "rejected", detail)
            self._ledger.submit(request, at=self._wall())
        except LedgerError as exc:
            raise NodeError(f"cannot record the rejection: {exc}") from exc
        if fee:
            agent.settle_next = True
        return ProofResult(agent.id, False, reason, NO_MONEY, agent.proofs, fee=fee)

    def _fee(self, bounty: Money) -> int:
        configured = self._config.proof_rejection_fee
        return bounty if configured is None else round(configured * 1_000_000)

    def _balance(self, agent: AgentRecord) -> int:
        """What the agent could pay now: its ledger balance less what it accrued unsettled."""
        try:
            return self._ledger.balance(agent_account(agent.id)) - agent.accrual.owed
        except UnknownAccountError:
            return 0


def _tensor(data: bytes, role: str, name: str) -> Tensor:
    try:
        return tensor_from_bytes(data, role, name)
    except ProofInputError as exc:
        raise NodeError(str(exc)) from exc
