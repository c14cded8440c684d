"""Agents under the daemon's audit, for `maxwell experiment audit`: cheaters with a strategy,
billed by their own claims, and honest agents whose claims carry measurement noise. Pure and
deterministic: every draw comes from the `random.Random` the caller seeds.

Rules (the daemon's: `maxwell.node.claims`, `maxwell.node.audits`, `maxwell.node.policy`):

- An agent burns `cores` every tick of `tick_s`; the kernel counts it (the measured `Usage`).
  Its claim is cumulative since spawn, and each tick bills the claim's increase (`bill_claim`):
  what that under-bills against the meter is what the agent keeps (its shadow).
- A lie stays in every later claim. A cheater that told the truth again later would bill the
  difference and pay back what it kept, so a tick's lie is exposed to every audit that follows,
  until it is slashed: an intermittent cheater is a persistent one from its first lie on.
- Each tick the agent is audited with probability `p` (`draw_audits`). The verdict is `judge`
  (the claim against the counters read at the same instant, with the documented tolerances);
  the money is `judge_audit` (the two as the twin's `maxwell.sim.audits.audit_claim`): the bond,
  and the claw-back of the shadow (the agent is assumed to hold enough to pay it back). A
  slashed agent is billed by the meter: it keeps nothing more.
- The bond is the daemon's (`bond_for`): Becker's, for the agent's whole bill at full demand
  for one tick, whatever it means to lie.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from maxwell.audit.policy import (
    CPU_TOLERANCE,
    MEMORY_TOLERANCE,
    Tolerance,
    Usage,
    draw_audits,
    judge,
)
from maxwell.node.policy.audit import judge_audit
from maxwell.node.policy.optimistic import (
    TickPrices,
    bill_claim,
    bond_for,
    gain_per_tick,
    joules_per_cpu_ns,
)
from maxwell.sim.audits import audit_claim

AGENT = "cheater"
NO_TOLERANCE = Tolerance(relative=0.0, absolute=0)
RICH = 10**18  # µ$J: the balance assumed behind every claw-back (it is never the limit here)


@dataclass(frozen=True)
class Node:
    """The node and the price an agent is billed at: one core burnt per tick by default."""

    cores: float = 1.0
    tick_s: float = 1.0  # the daemon's default tick
    w_per_core: float = 10.0  # the twin's active watts per core
    spot_price: float = 1.0  # $J per J
    temperature_c: float = 60.0

    @property
    def tick_ns(self) -> int:
        """CPU time the agent burns in one tick."""
        return round(self.cores * self.tick_s * 1e9)

    @property
    def full_bill(self) -> int:
        """µ$J: one tick's bill at full demand, the most a tick of lying can keep."""
        return round(gain_per_tick(self.cores, self.w_per_core, self.tick_s, self.spot_price))

    def bond(self, p: float) -> int:
        """µ$J: the bond the daemon asks of an agent audited with probability `p`."""
        return bond_for(self.full_bill, p)

    def kept(self, lie: float) -> int:
        """µ$J one tick keeps by leaving `lie` of its CPU unclaimed (`bill_claim`'s shadow)."""
        used = self.tick_ns
        energy = round(used * self.w_per_core / 1000)  # W x ns = nJ: / 1000 for µJ
        rate = joules_per_cpu_ns({AGENT: used}, {AGENT: energy}, self.w_per_core)
        prices = TickPrices(self.spot_price, self.temperature_c, landauer_multiplier=0.0)
        claimed = Usage(used - round(used * lie), 0)
        billed = bill_claim(claimed, Usage(0, 0), rate, Usage(used, 0), energy, prices)
        return billed.under_billed


@dataclass(frozen=True)
class Strategy:
    """A cheater: on a lying tick it leaves `lie` of that tick's CPU unclaimed; it lies on
    `share` of its ticks (drawn each tick; 1: every tick)."""

    name: str
    lie: float
    share: float = 1.0
    note: str = ""


@dataclass(frozen=True)
class Trial:
    """One cheater's run: what it kept after each tick had nobody checked (`unaudited`, to the
    horizon), and, audited, the tick it was slashed on and what the slash took."""

    unaudited: list[int]
    caught_at: int | None = None  # 1-based tick; None: never caught
    bond_taken: int = 0
    clawback: int = 0


def cheater_trial(
    strategy: Strategy, node: Node, p: float, horizon: int, rng: random.Random
) -> Trial:
    """Run one cheater for `horizon` ticks: each tick it lies or not, bills its claim, and (until
    slashed) may be audited. One audit draw per tick until it is caught, none after."""
    gain, tick_ns, bond = node.kept(strategy.lie), node.tick_ns, node.bond(p)
    lying_ns = tick_ns - round(tick_ns * strategy.lie)
    measured = claimed = kept = shadow = 0
    unaudited: list[int] = []
    slash: Trial | None = None  # the tick it was caught on and what the slash took
    for tick in range(1, horizon + 1):
        lies = strategy.share >= 1.0 or rng.random() < strategy.share
        measured += tick_ns
        claimed += lying_ns if lies else tick_ns
        kept += gain if lies else 0
        unaudited.append(kept)
        if slash is not None:
            continue
        shadow += gain if lies else 0
        if draw_audits([AGENT], p, rng):
            judgement = audit_claim(
                AGENT, Usage(claimed, 0), Usage(measured, 0), bond=bond, shadow=shadow, balance=RICH
            )
            if not judgement.honest:
                slash = Trial(unaudited, tick, judgement.bond_taken, judgement.clawback)
    return slash if slash is not None else Trial(unaudited)


@dataclass(frozen=True)
class ProfitPaths:
    """A strategy's mean cumulative profit (µ$J) after each tick 1..horizon, over the trials:
    audited with the bond (the daemon), audited without it (only the claw-back), and unaudited
    (nobody checks: fair share's case); and the fraction caught by each tick."""

    strategy: Strategy
    p: float
    bond: int
    trials: int
    bonded: list[float] = field(default_factory=list)
    clawback_only: list[float] = field(default_factory=list)
    unaudited: list[float] = field(default_factory=list)
    caught: list[float] = field(default_factory=list)
    mean_caught_at: float | None = None  # over the trials caught


def profit_paths(
    strategy: Strategy, node: Node, p: float, horizon: int, trials: int, rng: random.Random
) -> ProfitPaths:
    """`trials` runs of `strategy` (`cheater_trial`), averaged tick by tick."""
    if trials < 1 or horizon < 1:
        raise ValueError(f"trials and horizon must be >= 1, got {trials} and {horizon}")
    bonded, clawback_only, unaudited, caught = ([0.0] * horizon for _ in range(4))
    caught_ticks: list[int] = []
    for _ in range(trials):
        trial = cheater_trial(strategy, node, p, horizon, rng)
        end = horizon if trial.caught_at is None else trial.caught_at - 1
        for index in range(horizon):
            kept = trial.unaudited[index]
            unaudited[index] += kept
            if index < end:
                bonded[index] += kept
                clawback_only[index] += kept
                continue
            left = trial.unaudited[end] - trial.clawback  # kept by the slash, less the claw-back
            bonded[index] += left - trial.bond_taken
            clawback_only[index] += left
            caught[index] += 1
        if trial.caught_at is not None:
            caught_ticks.append(trial.caught_at)
    return ProfitPaths(
        strategy, p, node.bond(p), trials,
        bonded=[total / trials for total in bonded],
        clawback_only=[total / trials for total in clawback_only],
        unaudited=[total / trials for total in unaudited],
        caught=[count / trials for count in caught],
        mean_caught_at=sum(caught_ticks) / len(caught_ticks) if caught_ticks else None,
    )  # fmt: skip


@dataclass(frozen=True)
class HonestAudits:
    """Honest agents audited many times: how often the verdict slashed one (it must be never)."""

    agents: int
    audits: int
    slashed: int  # audits whose verdict found an offence
    slashed_money: int  # µ$J those verdicts took
    edge_audits: int  # of `audits`, those of agents that fall short by all the tolerance allows
    strict_slashed: int  # the same claims judged with no tolerance: what the tolerance spares
    worst_cpu: float  # the largest CPU shortfall as a share of what the tolerance allows
    worst_memory: float


def allowance(tolerance: Tolerance, measured: int) -> float:
    """How far a claim may fall short of `measured` and still be honest."""
    return measured * tolerance.relative + tolerance.absolute


def noisy_claim(measured: Usage, cores: float, rng: random.Random) -> Usage:
    """An honest agent's claim of `measured`, with the noise the tolerances are documented for.
    CPU: the agent reads getrusage an instant from the node's read of cpu.stat (exponential,
    mean 100 µs, either side), so it is short or over by `cores` x that instant; 1 read in 50
    misses a thread that exited between the two reads (up to 10 ms of CPU). Memory: the agent
    counts its frees at its allocator, whose caches make it differ from the kernel's figure by a
    normal 1 % (clipped at 4 %) and up to 256 KiB either way."""
    instant_ns = rng.expovariate(1 / 100_000) * (1 if rng.random() < 0.5 else -1)
    exited_ns = rng.uniform(0, 10_000_000) if rng.random() < 0.02 else 0.0
    cpu = measured.cpu_ns - round(cores * instant_ns + exited_ns)
    relative = min(max(rng.gauss(0.0, 0.01), -0.04), 0.04)
    cache = rng.randint(-(256 << 10), 256 << 10)
    freed = round(measured.freed_bytes * (1 + relative)) + cache
    return Usage(max(cpu, 0), max(freed, 0))


def edge_claim(measured: Usage) -> Usage:
    """The shortest claim an honest agent might make: 99.9 % of what each tolerance allows."""
    cpu = measured.cpu_ns - math.floor(0.999 * allowance(CPU_TOLERANCE, measured.cpu_ns))
    freed = measured.freed_bytes - math.floor(
        0.999 * allowance(MEMORY_TOLERANCE, measured.freed_bytes)
    )
    return Usage(max(cpu, 0), max(freed, 0))


def honest_audits(
    agents: int, ticks: int, p: float, node: Node, rng: random.Random, *, edge_every: int = 10
) -> HonestAudits:
    """`agents` honest agents (each burns 0.05 to 4 cores and frees 0 to 1 GiB a tick, drawn)
    run `ticks` ticks, audited with probability `p` each; every `edge_every`-th agent claims at
    the edge of the tolerance (`edge_claim`), the others with noise (`noisy_claim`)."""
    names = [f"honest-{index:05d}" for index in range(agents)]
    index_of = {name: index for index, name in enumerate(names)}
    cores = [rng.uniform(0.05, 4.0) for _ in names]
    freed_per_tick = [rng.uniform(0, 1 << 30) for _ in names]
    tally = _Tally()
    for tick in range(1, ticks + 1):
        for name in draw_audits(names, p, rng):
            index = index_of[name]
            measured = Usage(
                round(cores[index] * tick * node.tick_s * 1e9),
                round(freed_per_tick[index] * tick),
            )
            at_edge = index % edge_every == 0
            claimed = edge_claim(measured) if at_edge else noisy_claim(measured, cores[index], rng)
            tally.add(name, claimed, measured, node, p, at_edge)
    return tally.result(agents)


@dataclass
class _Tally:
    """What the honest agents' audits found, as they happen."""

    audits: int = 0
    slashed: int = 0
    slashed_money: int = 0
    edge_audits: int = 0
    strict_slashed: int = 0
    worst_cpu: float = 0.0
    worst_memory: float = 0.0

    def add(
        self, agent: str, claimed: Usage, measured: Usage, node: Node, p: float, at_edge: bool
    ) -> None:
        verdict = judge(claimed, measured)
        # What its claim under-billed (µ$J), for the claw-back a slash would take.
        shadow = round(verdict.cpu_short_ns * node.w_per_core / 1000 * node.spot_price)
        judgement = judge_audit(
            agent, verdict.findings, bond=node.bond(p), shadow=shadow, balance=RICH
        )
        strict = judge(claimed, measured, cpu=NO_TOLERANCE, memory=NO_TOLERANCE)
        self.audits += 1
        self.edge_audits += at_edge
        self.slashed += not judgement.honest
        self.slashed_money += judgement.slashed
        self.strict_slashed += not strict.honest
        cpu_room = allowance(CPU_TOLERANCE, measured.cpu_ns)
        memory_room = allowance(MEMORY_TOLERANCE, measured.freed_bytes)
        self.worst_cpu = max(self.worst_cpu, verdict.cpu_short_ns / cpu_room)
        self.worst_memory = max(self.worst_memory, verdict.freed_short_bytes / memory_room)

    def result(self, agents: int) -> HonestAudits:
        return HonestAudits(
            agents, self.audits, self.slashed, self.slashed_money, self.edge_audits,
            self.strict_slashed, self.worst_cpu, self.worst_memory,
        )  # fmt: skip
