"""The audit policy: how large a bond deters cheating, which agents to audit, and the verdict on
an agent's claims. Pure: randomness is passed in, nothing is read or written.

Trust, then verify a sample (Axiom III). An agent that reports its own consumption is billed by
its reports; each tick it is audited with probability `p`, and an audit catches a lie with
probability `q` (comparing the claims with the kernel's counters catches any lie beyond the
tolerance: q = 1). Becker's condition makes cheating a losing bet: a cheater who gains `G` per tick
and loses `F` when caught is deterred when `p q F >= (1 - p q) G`. The bond an agent posts before it
may be billed by its reports is that `F`, for `G` = the most it could gain in one tick (its whole
bill at full demand). A liar loses the bond and pays back the difference.

Claims are cumulative since spawn (`maxwell.node.facade.Report`), and the node reads the kernel's
counters at the moment each report arrives, so a verdict compares a claim with the truth at the
same instant: no tick-length slack is needed, only a tolerance for the agent's own measurement
(`getrusage` lags the cgroup's counter by microseconds) and for the memory figure, which the kernel
reports as a lower bound (drops of `memory.current`). Over-claiming is never an offence: it only
costs the agent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from maxwell.units import Money

DEFAULT_AUDIT_PROBABILITY = 0.001
DETECTION_PROBABILITY = 1.0  # q for the counter check: any lie beyond the tolerance is caught


@dataclass(frozen=True)
class Tolerance:
    """A claim may fall short of the counter by `relative` of it plus `absolute`."""

    relative: float
    absolute: int

    def allows(self, claimed: int, measured: int) -> bool:
        return claimed >= measured * (1.0 - self.relative) - self.absolute


# CPU: 2 % + 20 ms. An honest agent's getrusage and the cgroup's cpu.stat agree to well under a
# millisecond; the slack covers threads that exit between the two reads.
CPU_TOLERANCE = Tolerance(relative=0.02, absolute=20_000_000)  # ns
# Memory freed: 5 % + 1 MiB. The kernel's figure is a lower bound, so only claiming less than it is
# a lie; allocator caches make an agent's own count differ a little either way.
MEMORY_TOLERANCE = Tolerance(relative=0.05, absolute=1 << 20)  # bytes


@dataclass(frozen=True)
class Usage:
    """Cumulative consumption since spawn: CPU time and bytes of memory freed."""

    cpu_ns: int
    freed_bytes: int


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing a claim with the counters it must cover."""

    honest: bool
    findings: tuple[str, ...]  # one line per offence; empty when honest
    cpu_short_ns: int  # how far the claim falls short of the counter (0 when it does not)
    freed_short_bytes: int


def becker_bond(gain: Money, p: float, q: float = DETECTION_PROBABILITY) -> Money:
    """The smallest fine `F` with `p q F >= (1 - p q) G`: the bond that deters a cheater who gains
    at most `gain` per tick, audited with probability `p` per tick, caught with probability `q`."""
    if gain < 0:
        raise ValueError(f"the gain must be >= 0, got {gain}")
    pq = p * q
    if not (0.0 < p <= 1.0 and 0.0 < q <= 1.0):
        raise ValueError(f"p and q must be probabilities in (0, 1], got p={p!r}, q={q!r}")
    # (1 - pq) / pq in float, rounded up; then nudged until `deterred` (the same float
    # condition) holds, since at p q near 1e-8 the rounding can land a µ$J or two short.
    fine = math.ceil(gain * (1.0 - pq) / pq)
    while not deterred(fine, gain, p, q):
        fine += 1 + fine // 10**12
    return Money(fine)


def deterred(fine: int, gain: int, p: float, q: float = DETECTION_PROBABILITY) -> bool:
    """Becker's condition: does losing `fine` when caught outweigh gaining `gain` when not?"""
    pq = p * q
    return pq * fine >= (1.0 - pq) * gain


def detection_probability(p: float, ticks: int) -> float:
    """The chance that a persistent cheater is audited at least once in `ticks` ticks."""
    return 1.0 - (1.0 - p) ** ticks


def draw_audits(agents: Iterable[str], p: float, rng: random.Random) -> list[str]:
    """The agents audited this tick: each independently with probability `p`. The daemon passes a
    `random.SystemRandom`, so no agent can predict its turn from what it has seen."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the audit probability must be in [0, 1], got {p!r}")
    return [agent for agent in agents if rng.random() < p]


def judge(
    claimed: Usage,
    measured: Usage,
    *,
    cpu: Tolerance = CPU_TOLERANCE,
    memory: Tolerance = MEMORY_TOLERANCE,
) -> Verdict:
    """Compare a claim with the counters read at the instant it was made."""
    findings: list[str] = []
    cpu_short = max(measured.cpu_ns - claimed.cpu_ns, 0)
    freed_short = max(measured.freed_bytes - claimed.freed_bytes, 0)
    if not cpu.allows(claimed.cpu_ns, measured.cpu_ns):
        findings.append(
            f"claimed {claimed.cpu_ns / 1e9:.3f} s of CPU, the kernel counted "
            f"{measured.cpu_ns / 1e9:.3f} s"
        )
    if not memory.allows(claimed.freed_bytes, measured.freed_bytes):
        findings.append(
            f"claimed {claimed.freed_bytes} bytes freed, the kernel saw at least "
            f"{measured.freed_bytes}"
        )
    return Verdict(
        honest=not findings,
        findings=tuple(findings),
        cpu_short_ns=cpu_short,
        freed_short_bytes=freed_short,
    )
