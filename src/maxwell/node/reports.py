"""Reports between ticks: an agent's self-report is checked and queued at once, never waiting for
a tick, as bids are (`maxwell.node.bids`); the next tick, or the next call that changes the
node, stores the queued reports in one unit of work before it plans or acts.

Rules:

- A report is checked when it arrives: well formed (`maxwell.node.claims.check_report`) and
  never below the agent's latest claim, queued or stored. The kernel's counters are read then:
  what the agent's next claim must cover (`maxwell.node.claims`).
- One queued report per agent: a later one replaces it and goes to the back. It then must cover
  what the counters were when the report it replaced arrived, as if that one had been stored.
- The queue's lock is held only to check, put or take a report: never across a tick, a query or
  a write.
- A report queued for an agent that is no longer live when it is taken is dropped (its kill,
  exit or apoptosis came first), and so is one that falls below a claim stored meanwhile; each
  with a log line.
- If storing fails, the reports go back to the queue (unless a later report of the same agent
  arrived meanwhile), and the tick or call fails; the next one retries.
- A daemon killed between a report and the next tick forgets that report: the agent's latest
  claim is the last one stored (a cumulative claim: its next report claims it again).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from maxwell.audit.policy import Usage
from maxwell.node.facade import NodeError
from maxwell.node.state import ReportRow


@dataclass(frozen=True)
class QueuedReport:
    """A checked report waiting to be stored: the claim (`at`: when it arrived), the counters
    then (None where its group was going away), and, once it replaced a queued report, what that
    one's counters were (`replaced`), which it then must cover."""

    claim: ReportRow
    arrival: Usage | None
    replaced: bool = False
    covers: Usage | None = None

    @property
    def agent(self) -> str:
        return self.claim.agent


def fell(last: ReportRow | None, claim: ReportRow) -> list[str]:
    """What `claim` claims less of than `last` (cumulative claims never fall); empty if none."""
    if last is None:
        return []
    pairs: list[tuple[str, float, float]] = [
        ("cpu_s", last.cpu_ns / 1e9, claim.cpu_ns / 1e9),
        ("memory_freed_bytes", last.freed_bytes, claim.freed_bytes),
    ]
    if last.work is not None and claim.work is not None:
        pairs.append(("work", last.work, claim.work))
    return [f"{name} fell from {a:g} to {b:g}" for name, a, b in pairs if b < a]


def refuse_fall(last: ReportRow | None, claim: ReportRow) -> None:
    """Raise a `NodeError` if `claim` falls below `last`."""
    falls = fell(last, claim)
    if falls:
        raise NodeError(f"reports are cumulative since spawn: {'; '.join(falls)}")


class ReportQueue:
    """The latest report of each agent since they were last stored, in arrival order
    (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: dict[str, QueuedReport] = {}

    def put(self, report: QueuedReport, stored: ReportRow | None) -> None:
        """Queue `report` unless it falls below the agent's queued report, or below `stored`
        (its latest stored claim) when none is queued: a `NodeError` says why."""
        with self._lock:
            queued = self._reports.get(report.agent)
            refuse_fall(queued.claim if queued is not None else stored, report.claim)
            if queued is not None:
                report = dataclasses.replace(report, replaced=True, covers=queued.arrival)
                del self._reports[report.agent]
            self._reports[report.agent] = report

    def queued(self, agent_id: str) -> QueuedReport | None:
        """The agent's report waiting to be stored, if any."""
        return self._reports.get(agent_id)

    def take(self) -> list[QueuedReport]:
        """Every queued report, oldest first; the queue is then empty."""
        with self._lock:
            reports, self._reports = list(self._reports.values()), {}
        return reports

    def put_back(self, reports: Sequence[QueuedReport]) -> None:
        """Reports taken and not stored, ahead of those that arrived since; a later report of
        the same agent replaces the one taken (see `put`)."""
        with self._lock:
            newer = self._reports
            older = {r.agent: r for r in reports if r.agent not in newer}
            for report in reports:
                later = newer.get(report.agent)
                if later is not None and not later.replaced:
                    newer[report.agent] = dataclasses.replace(
                        later, replaced=True, covers=report.arrival
                    )
            self._reports = {**older, **newer}

    def __len__(self) -> int:
        return len(self._reports)
