"""Audits of bonded agents, sampled each tick or on demand: an adapter over
`maxwell.node.policy.audit` (the verdict and the money) and `maxwell.audit` (ptrace, manifests).

Rules:

- Each tick each bonded, live agent is audited with the node's `audit_probability`, drawn from
  the operating system's randomness (unpredictable to agents) unless a test seeds it.
- An audit checks what can be checked: the agent's latest report against the kernel's counters
  it must cover (`maxwell.node.claims`: those read when its previous report arrived; once its
  lease lapsed, those of the moment), and, where it declared its code at spawn, its threads'
  instruction pointers against that code (sampled by ptrace: each thread stops for an
  instant). An agent that traces itself, keeping the auditor out, fails the code check; a
  sampler that is unavailable for reasons not the agent's checks nothing and says why.
- The verdict is one journal entry: `audited`, or `slashed`, which moves the liar's bond to the
  slashing pool and claws back what its reports under-billed, at most the balance it holds once
  its accrued bills are settled, and clears its `shadow`. An honest audit forgives nothing: the
  shadow is what its claims have not yet covered (a claim lags the meter by at most a lease),
  and it stays for the claims to come or for a later slash.
- The declared code is a manifest of ELF files: those named, and those found (symbolic links not
  followed) in the directories named.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from maxwell.audit.ipsample import AlreadyTracedError, check, module_histogram, sample_threads
from maxwell.audit.manifest import CodeManifest, ManifestError
from maxwell.audit.policy import Usage, draw_audits, judge
from maxwell.errors import MaxwellError
from maxwell.node import tick as ticks
from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry, settled_balance
from maxwell.node.claims import lapsed
from maxwell.node.facade import AuditResult, NodeError
from maxwell.node.policy.audit import judge_audit
from maxwell.node.state import PendingEntry, ReportRow
from maxwell.node.store import NodeStore
from maxwell.units import Money


def declared_manifest(code: Sequence[str]) -> CodeManifest:
    """The manifest of the code an agent declares: ELF files, and the ELF files found (walking,
    symlinks not followed) in declared directories. A `NodeError` names what is unusable."""
    files: list[str] = []
    for declared in code:
        if not isinstance(declared, str) or not declared:
            raise NodeError("each declared code path must be a non-empty string")
        if os.path.isdir(declared):
            for root, _dirs, names in os.walk(declared):
                files += [p for p in (os.path.join(root, n) for n in sorted(names)) if _is_elf(p)]
        elif os.path.exists(declared):
            files.append(declared)
        else:
            raise NodeError(f"declared code {declared!r} does not exist")
    if not files:
        raise NodeError(f"no ELF file in the declared code {list(code)!r}")
    try:
        return CodeManifest.from_files(files)
    except ManifestError as exc:
        raise NodeError(f"cannot hash the declared code: {exc}") from exc


def _is_elf(path: str) -> bool:
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


@dataclass(frozen=True)
class CodeAudit:
    """What the instruction-pointer part of an audit found."""

    checked: bool = False  # against a declared manifest
    findings: tuple[str, ...] = ()
    modules: Mapping[str, float] = field(default_factory=dict)
    samples: int = 0
    pause_us: float | None = None
    note: str | None = None  # why nothing was checked


class Auditor:
    """Audits agents and writes the verdicts' entries (see the module)."""

    def __init__(
        self,
        *,
        probability: float,
        registry: AgentRegistry,
        store: NodeStore,
        wall: Callable[[], float],
        rng: random.Random | None = None,
        report_lease_s: float = 3.0,
    ) -> None:
        self._probability = probability
        self._lease_s = report_lease_s
        self._agents = registry
        self._store = store
        self._wall = wall
        # Unpredictable to agents: the operating system's randomness, unless a test seeds one.
        self._rng = rng if rng is not None else random.SystemRandom()

    def sampled(self, tick: int, plan: ticks.TickPlan) -> list[PendingEntry]:
        """Audit each bonded agent with the node's probability (unpredictably); entries to post."""
        candidates = sorted(
            agent.id
            for agent in self._agents
            if agent.bond and agent.state in LIVE and not agent.finished
        )
        entries: list[PendingEntry] = []
        for agent_id in draw_audits(candidates, self._probability, self._rng):
            agent = self._agents[agent_id]
            planned = plan.agents.get(agent_id)
            balance = planned.balance if planned is not None else Money(0)
            key = ticks.event_key(tick, agent_id, "audit")
            _result, entry = self.judge(agent, key, tick, balance, sampled=True)
            entries.append(entry)
        return entries

    def audit_now(self, agent: AgentRecord, tick: int) -> AuditResult:
        """Audit a live agent on demand and post the verdict at once; its next tick settles it."""
        balance = settled_balance(self._store.ledger, agent)  # what it holds once its bills settle
        agent.settle_next = True
        key = f"audit:{agent.id}:{secrets.token_hex(8)}"
        result, entry = self.judge(agent, key, tick, balance, sampled=False)
        self._store.post([entry], at=self._wall())
        return result

    def judge(
        self,
        agent: AgentRecord,
        key: str,
        tick: int,
        balance: Money,
        *,
        sampled: bool,
    ) -> tuple[AuditResult, PendingEntry]:
        """The verdict on an agent's reports and on where its threads are (its code, where it
        declared it), and the entry that records it: an `audited` event, or a `slashed` entry
        that moves its bond to the slashing pool and claws back what its reports under-billed
        (at most its `balance`)."""
        code = self._sample_code(agent)
        agent.audits += 1
        stale = lapsed(agent, self._lease_s)
        findings = self._check_reports(agent, stale)
        checked = ["reports"] if findings is not None else []
        findings = findings or []
        if code.checked:
            checked.append("code")
            findings += code.findings
        detail: dict[str, object] = {
            "agent": agent.id,
            "honest": not findings,
            "audits": agent.audits,
            "probability": self._probability,
            "sampled": sampled,
            "checked": checked,
            "lapsed": stale,
        }
        if code.modules:
            detail["modules"] = dict(code.modules)
        if code.note:
            detail["code"] = code.note
        judgement = judge_audit(
            agent.id, findings, bond=agent.bond, shadow=agent.shadow, balance=balance
        )
        if not judgement.honest:
            detail.update(findings=findings, bond=agent.bond, clawback=judgement.clawback)
            agent.bond, agent.claim_billed = 0, None
            agent.slashed += judgement.slashed
            agent.shadow = 0  # settled by the claw-back; an honest audit forgives nothing
        kind = "slashed" if findings else "audited"
        result = AuditResult(
            agent=agent.id,
            honest=not findings,
            findings=tuple(findings),
            checked=tuple(checked),
            audits=agent.audits,
            probability=self._probability,
            slashed=Money(judgement.slashed),
            modules=dict(code.modules),
            samples=code.samples,
            pause_us=code.pause_us,
        )
        return result, PendingEntry(key, tick, kind, judgement.movements, detail)

    def _check_reports(self, agent: AgentRecord, stale: bool) -> list[str] | None:
        """What is wrong with the agent's latest claim (None: no claim to check)."""
        reported = agent.reported
        if reported is None or reported.measured_cpu_ns is None:
            return None
        measured = self._truth(agent, reported, stale)
        return list(judge(Usage(reported.cpu_ns, reported.freed_bytes), measured).findings)

    @staticmethod
    def _truth(agent: AgentRecord, reported: ReportRow, stale: bool) -> Usage:
        """What a claim is judged against: the counters it must cover (`maxwell.node.claims`);
        once its lease lapsed, the counters now (a silent agent's stale claim must cover all it
        ran)."""
        if stale and agent.group is not None and agent.counted is not None:
            try:
                return Usage(agent.group.cpu_ns(), agent.counted.freed_seen)
            except MaxwellError:  # its group is going away: judged as when it reported
                pass
        assert reported.measured_cpu_ns is not None
        return Usage(reported.measured_cpu_ns, reported.measured_freed_bytes or 0)

    def _sample_code(self, agent: AgentRecord) -> CodeAudit:
        """Stop each of the agent's threads for an instant and read where it is (ptrace): the
        per-module histogram, and, against the code it declared, which samples fall outside."""
        if agent.group is None:
            return CodeAudit(note="no processes to sample")
        pids = sorted(agent.group.pids())
        try:
            samples = sample_threads(pids)
        except AlreadyTracedError as exc:
            if exc.tracer_pid in pids:  # it traces itself: a way to keep auditors out
                finding = f"code: thread {exc.tid} is traced by its own process {exc.tracer_pid}"
                return CodeAudit(checked=True, findings=(f"{finding}, so it cannot be sampled",))
            return CodeAudit(note=f"instruction-pointer sampling unavailable: {exc}")
        except (MaxwellError, OSError) as exc:  # not the agent's fault: say why, check nothing
            return CodeAudit(note=f"instruction-pointer sampling unavailable: {exc}")
        pauses = sorted(sample.pause_ns for sample in samples)
        pause_us = pauses[len(pauses) // 2] / 1000 if pauses else None
        modules = module_histogram(samples)
        if agent.manifest is None:
            return CodeAudit(
                modules=modules, samples=len(samples), pause_us=pause_us,
                note="no code declared at spawn: where its threads were, not checked",
            )  # fmt: skip
        verdict = check(samples, agent.manifest)
        return CodeAudit(
            checked=True,
            findings=() if verdict.passed else (f"code: {verdict.describe()}",),
            modules=modules,
            samples=len(samples),
            pause_us=pause_us,
        )
