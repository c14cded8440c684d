"""Self-reporting for the sample agents: when run by a daemon (its token is set, in
`MAXWELL_AGENT_TOKEN` or the file `MAXWELL_AGENT_TOKEN_FILE` names), tell
it at most every `period_s` what the process has consumed since it started (`SelfMeter`): its CPU
time scaled by `claim` (1.0 is the truth; the cheater claims less) and the memory its cgroup
freed. Outside a daemon it does nothing."""

from __future__ import annotations

import os
import sys
import time

from maxwell.client import AGENT_TOKEN_ENV, AGENT_TOKEN_FILE_ENV, Client, ClientError, SelfMeter
from maxwell.node.facade import ProofResult, TakenInput


class Reporter:
    def __init__(self, *, claim: float = 1.0, period_s: float = 0.25) -> None:
        self.claim = claim
        self.period_s = period_s
        self._next = 0.0
        self._said = False
        self._meter = SelfMeter()
        self._client: Client | None = None
        if os.environ.get(AGENT_TOKEN_ENV) or os.environ.get(AGENT_TOKEN_FILE_ENV):
            try:
                self._client = Client()
            except ClientError as exc:  # no socket to report to: billed by the meter
                self._say(exc)

    def maybe(self, work: int | None = None) -> None:
        """Report now if a period has passed since the last report."""
        now = time.monotonic()
        if self._client is None or now < self._next:
            return
        self._next = now + self.period_s
        cpu_s, freed = self._meter.usage()
        try:
            self._client.report(cpu_s * self.claim, freed, work=work)
        except ClientError as exc:  # billed by the meter instead
            self._say(exc)

    def submit_proof(self, input: str, output: str, proof: str) -> ProofResult | None:
        """Submit a proof left in the agent's directory; None outside a daemon or when refused."""
        if self._client is None:
            return None
        try:
            return self._client.submit_proof(input, output, proof)
        except ClientError as exc:
            self._say(exc)
            return None

    def take_input(self, job: str) -> TakenInput | None:
        """Lease an input of a posted job, written into the agent's directory; None outside a
        daemon or when refused (every input paid or leased)."""
        if self._client is None:
            return None
        try:
            return self._client.take_input(job)
        except ClientError as exc:
            self._say(exc)
            return None

    def _say(self, exc: ClientError) -> None:
        if not self._said:  # once
            self._said = True
            print(f"the node refused or did not answer: {exc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
