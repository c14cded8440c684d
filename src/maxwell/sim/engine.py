"""The twin's engine (issue 14, 2 and 3): one node on virtual time, run under the market (the
daemon's own pure tick, `maxwell.node.tick.plan_tick`) or under fair share (CFS-like equal
weights, no prices), with the same agents, so that every figure is a side-by-side ratio.

A tick of `tick_s` virtual seconds:

1. each live agent uses cores for the interval just past: under the market, at most what the
   last plan let it (its granted cores, a hard quota, shared fairly by the kernel where quotas
   add up to more than the node has, as before the first clearing; an unserved bidder that the
   plan lets run on what the winners leave idle shares that leftover equally); under fair
   share, capacity is shared equally among those that want it, and what one leaves unused goes
   to the others (work conserving), as CFS does;
2. the node meters it: the interval's energy (idle + `w_per_core` per busy core) is split
   among the agents by CPU time by the meter's own pure core (`maxwell.meter.attribution`:
   integer µJ, the idle part the house's), bytes freed by its behaviour; the die follows the
   first-order RC model (`maxwell.physics.ThermalRC`) at idle + active power;
3. under the market, `plan_tick` bills the interval, decides apoptosis and clears the next one;
   the engine applies the plan (balances, states, grants). Fair share has no step 3: nobody pays
   and nobody dies.

Optimistic billing (market only; `maxwell.sim.audits`, the daemon's cores): an agent whose
behaviour reports its own use (a `cheater`) posts the daemon's bond once it can afford it and is
then billed by its claims, not the meter; each tick every agent billed by its claims is audited
with probability `Scenario.audit_probability`, and a liar caught loses its bond and pays back
what its claims under-billed, then is metered. Every other agent is metered. Fair share neither
bills nor audits. Money stays with the agent: paid + slashed + balance + bond held = funding.

Deterministic: no randomness but the mechanism's own (seeded by the tick) and the audits' (one
`random.Random(Scenario.seed)` per node), agents in id order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from maxwell.audit.policy import DEFAULT_AUDIT_PROBABILITY, Usage, draw_audits
from maxwell.meter.attribution import attribute
from maxwell.node.facade import AgentState
from maxwell.node.policy.optimistic import TickPrices, joules_per_cpu_ns
from maxwell.node.tick import (
    CORES_EPSILON,
    AgentTickInput,
    Enforcement,
    TickInput,
    TickPlan,
    plan_tick,
)
from maxwell.physics import ThermalRC
from maxwell.sim import audits
from maxwell.sim.behaviours import LOW_VALUE, Behaviour
from maxwell.units import Money

Policy = Literal["maxwell", "fairshare"]
POLICIES: Final = ("maxwell", "fairshare")
_UJ: Final = 1_000_000
_ENDED: Final = (AgentState.DEAD, AgentState.EXITED)


@dataclass(frozen=True)
class AgentSpec:
    """One simulated agent: what it does, its funds ($J) and its bid ($J per J)."""

    name: str
    behaviour: Behaviour
    fund_j: float
    bid: float


@dataclass(frozen=True)
class Scenario:
    """A node and its agents for `duration_s` virtual seconds."""

    agents: tuple[AgentSpec, ...]
    cores: float = 2.0
    duration_s: float = 120.0
    tick_s: float = 1.0
    idle_w: float = 10.0
    w_per_core: float = 10.0
    spot_price: float = 1.0
    landauer_multiplier: float = 4e11
    grace_s: float = 3.0
    thermal: ThermalRC = field(default_factory=ThermalRC)
    audit_probability: float = DEFAULT_AUDIT_PROBABILITY  # per tick, of each agent billed by claims
    seed: int = 0  # the audits' draws


@dataclass
class SimAgent:
    """An agent's state in a run, and what it did."""

    spec: AgentSpec
    index: int
    state: AgentState = AgentState.RUNNING
    balance: Money = field(default_factory=lambda: Money(0))
    price: float = 0.0
    burn_per_s: float = 0.0
    insolvent_since_s: float | None = None
    granted: float = 0.0  # cores it may use (a hard quota under the market)
    idle_share: float = 0.0  # cores it may take of what the winners leave (market only)
    energy_uj: int = 0  # the last interval's, for its bill
    cpu_ns: int = 0  # the last interval's
    freed: int = 0
    units: float = 0.0
    energy_j: float = 0.0
    paid_j: float = 0.0
    tax_j: float = 0.0  # of what it paid, the Landauer tax ($J)
    freed_total: int = 0  # bytes freed in all
    ended_at_s: float | None = None
    reports: audits.Reports = field(default_factory=audits.Reports)  # its claims, bond, audits

    @property
    def slashed_j(self) -> float:
        """What audits took of it: bonds and claw-backs ($J)."""
        return self.reports.slashed / _UJ

    @property
    def live(self) -> bool:
        return self.state not in _ENDED

    @property
    def done(self) -> bool:
        job = self.spec.behaviour.job_units
        return job is not None and self.units >= job


@dataclass(frozen=True)
class Sample:
    """The node after one tick: each agent's energy so far (J) and balance ($J)."""

    at_s: float
    temperature_c: float
    cores_used: float
    energy_j: Mapping[str, float]
    balance_j: Mapping[str, float]


@dataclass(frozen=True)
class Outcome:
    """A run's figures: per agent, and per node (see `summary`); `trace`, tick by tick."""

    policy: str
    agents: tuple[SimAgent, ...]
    idle_wanted_core_s: float  # capacity left idle while someone wanted more
    peak_c: float
    duration_s: float
    trace: tuple[Sample, ...] = ()

    def summary(self) -> dict[str, object]:
        """The figures an experiment reports (JSON-ready)."""
        energy = sum(a.energy_j for a in self.agents)
        value = sum(a.units * a.spec.behaviour.value_per_unit for a in self.agents)
        low = sum(a.energy_j for a in self.agents if a.spec.behaviour.kind in LOW_VALUE)
        return {
            "energy_j": round(energy, 3),
            "value": round(value, 3),
            "value_per_j": round(value / energy, 4) if energy else 0.0,
            "low_value_energy_j": round(low, 3),
            "idle_wanted_core_s": round(self.idle_wanted_core_s, 3),
            "killed": sorted(a.spec.name for a in self.agents if a.state is AgentState.DEAD),
            "jobs_done": sorted(a.spec.name for a in self.agents if a.done),
            "peak_c": round(self.peak_c, 2),
            "agents": {a.spec.name: _agent_figures(a) for a in self.agents},
        }


def _agent_figures(agent: SimAgent) -> dict[str, object]:
    return {
        "kind": agent.spec.behaviour.kind, "state": agent.state.value,
        "energy_j": round(agent.energy_j, 3), "units": round(agent.units, 3),
        "paid_j": round(agent.paid_j, 3), "tax_j": round(agent.tax_j, 3),
        "freed_bytes": agent.freed_total, "ended_at_s": agent.ended_at_s,
        "slashed_j": round(agent.slashed_j, 3), "audits": agent.reports.audits,
        "caught_at_s": agent.reports.caught_at_s,
    }  # fmt: skip


def run(scenario: Scenario, policy: Policy, *, trace: bool = True) -> Outcome:
    """`scenario` under `policy` (see the module); `trace`: keep a sample of every tick."""
    node = NodeRun(scenario, policy, trace=trace)
    for _ in range(round(scenario.duration_s / scenario.tick_s)):
        node.meter()
        node.settle(scenario.spot_price, scenario.cores)
    return node.outcome()


class NodeRun:
    """One node stepped tick by tick, so that a cluster (`maxwell.sim.cluster`) can run many
    side by side: `meter` runs the interval just past (use, energy, the die), then `settle`
    plans the next under the price and capacity the caller quotes (the market; fair share only
    ends finished jobs). `run` is a `NodeRun` on the scenario's constant price. Agents may join
    between ticks (`admit`); `thermal` may change (a failing fan); `trace` only if asked."""

    def __init__(self, scenario: Scenario, policy: Policy, *, trace: bool = True) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
        if not 0 <= scenario.audit_probability <= 1:
            raise ValueError(f"audit_probability in [0, 1], got {scenario.audit_probability!r}")
        self.scenario, self.policy, self.thermal = scenario, policy, scenario.thermal
        self.agents: list[SimAgent] = []
        self.live: list[SimAgent] = []  # the agents not yet ended, in admission order
        for spec in sorted(scenario.agents, key=lambda s: s.name):
            self.admit(spec)
        self.temperature_c = self.peak_c = scenario.thermal.ambient_c
        self.idle_wanted, self.tick, self.used = 0.0, 0, 0.0
        self._trace: list[Sample] | None = [] if trace else None
        self._audit_rng = random.Random(scenario.seed)

    @property
    def now_s(self) -> float:
        return self.tick * self.scenario.tick_s

    def admit(self, spec: AgentSpec) -> SimAgent:
        """A new agent, funded, which may ask for its demand until its first clearing (as a
        spawn's quota)."""
        agent = SimAgent(spec, len(self.agents), balance=Money(round(spec.fund_j * _UJ)))
        agent.granted = min(spec.behaviour.demand, self.scenario.cores)
        self.agents.append(agent)
        self.live.append(agent)
        return agent

    def meter(self) -> float:
        """Run the next interval under the last plan; the die's temperature at its end."""
        scenario = self.scenario
        self.tick += 1
        used, wanted = _use(self.live, scenario, self.now_s - scenario.tick_s, self.policy)
        for agent in self.live:  # a reporting agent reports the interval (and may lie)
            behaviour = agent.spec.behaviour
            if behaviour.reports:
                claim = behaviour.claims(agent.cpu_ns, self.tick, agent.index)
                agent.reports.record(agent.cpu_ns, agent.freed, claim)
        self.idle_wanted += max(0.0, min(wanted, scenario.cores) - used) * scenario.tick_s
        power = scenario.idle_w + scenario.w_per_core * used
        self.temperature_c = self.thermal.step(self.temperature_c, power, scenario.tick_s)
        self.peak_c, self.used = max(self.peak_c, self.temperature_c), used
        return self.temperature_c

    def settle(self, spot_price: float, capacity_cores: float) -> None:
        """Close the tick: under the market, the daemon's plan at `spot_price` over
        `capacity_cores` (fewer than the node's cores when derated for heat) is carried out."""
        now = self.now_s
        if self.policy == "maxwell":
            prices = TickPrices(spot_price, self.temperature_c, self.scenario.landauer_multiplier)
            bills = _bills(self.live, self.scenario, prices)
            plan = _plan(self.live, self.scenario, self.tick, now, self.temperature_c,
                         spot_price, capacity_cores, bills)  # fmt: skip
            _apply(self.live, plan, now)
            self._audit(now)
            _stake(self.live, self.scenario, spot_price)
        else:
            _end_finished(self.live, now)
        if self._trace is not None:
            self._trace.append(_sample(self.agents, now, self.temperature_c, self.used))
        self.live = [a for a in self.live if a.live]

    def _audit(self, now: float) -> None:
        """Audit each agent billed by its claims with the node's probability (the daemon's
        `draw_audits`, after the plan); a liar's claw-back comes out of its new balance."""
        billed_by_claims = {a.spec.name: a for a in self.live if a.reports.bond > 0}
        drawn = draw_audits(sorted(billed_by_claims), self.scenario.audit_probability,
                            self._audit_rng)  # fmt: skip
        for name in drawn:
            agent = billed_by_claims[name]
            judgement = agent.reports.audit(name, agent.balance, now)
            agent.balance = Money(agent.balance - judgement.clawback)

    def outcome(self) -> Outcome:
        return Outcome(self.policy, tuple(self.agents), self.idle_wanted, self.peak_c,
                       self.now_s, tuple(self._trace or ()))  # fmt: skip


def _sample(agents: Sequence[SimAgent], now: float, temperature: float, used: float) -> Sample:
    return Sample(
        now, temperature, used, {a.spec.name: a.energy_j for a in agents},
        {a.spec.name: a.balance / _UJ for a in agents},
    )  # fmt: skip


def _use(
    agents: Sequence[SimAgent], scenario: Scenario, at_s: float, policy: Policy
) -> tuple[float, float]:
    """Each live agent's use of the interval from `at_s`; the cores used, and wanted, in all."""
    live = [a for a in agents if a.live]
    wants = {a.spec.name: a.spec.behaviour.wants(at_s, a.index) for a in live}
    if policy == "fairshare":  # CFS: equal shares of what each would really burn
        burns = {a.spec.name: a.spec.behaviour.uses(wants[a.spec.name], wants[a.spec.name])
                 for a in live}  # fmt: skip
        cores = water_fill(scenario.cores, burns)
    else:  # quotas cap each; the kernel shares the cores among those capped, if too many
        capped = {a.spec.name: a.spec.behaviour.uses(a.granted, wants[a.spec.name]) for a in live}
        cores = water_fill(scenario.cores, capped)
        left = scenario.cores - sum(cores.values())
        sharers = {a.spec.name: min(a.idle_share, wants[a.spec.name]) for a in live}
        for name, extra in water_fill(max(left, 0.0), sharers).items():
            cores[name] += extra
    dt = scenario.tick_s
    energies = _attribute(scenario, {a.spec.name: cores[a.spec.name] * dt for a in live})
    for agent in live:
        _burn(agent, cores[agent.spec.name] * dt, energies[agent.spec.name])
    wanted = sum(a.spec.behaviour.uses(wants[a.spec.name], wants[a.spec.name]) for a in live)
    return sum(cores.values()), wanted


def _attribute(scenario: Scenario, core_s: Mapping[str, float]) -> Mapping[str, int]:
    """The interval's node energy (idle + active power) split among the agents by CPU time, by
    the meter's own pure core (`maxwell.meter.attribution`): µJ each, the idle part the house's."""
    busy_s = sum(core_s.values())
    dt = scenario.tick_s
    return attribute(
        total_uj=round((scenario.idle_w * dt + scenario.w_per_core * busy_s) * _UJ),
        idle_uj=round(scenario.idle_w * dt * _UJ),
        node_busy_ns=round(busy_s * 1e9),
        workload_cpu_ns={name: round(used * 1e9) for name, used in core_s.items()},
    ).workloads_uj


def _burn(agent: SimAgent, core_s: float, energy_uj: int) -> None:
    behaviour = agent.spec.behaviour
    agent.energy_j += energy_uj / _UJ
    agent.energy_uj = energy_uj
    agent.cpu_ns = round(core_s * 1e9)
    agent.freed = behaviour.frees(core_s)
    agent.freed_total += agent.freed
    agent.units += behaviour.produces(core_s)
    if behaviour.job_units is not None:
        agent.units = min(agent.units, behaviour.job_units)


def water_fill(capacity: float, demands: Mapping[str, float]) -> dict[str, float]:
    """Equal shares of `capacity`, none above its demand, the rest shared again (max-min fair)."""
    given = dict.fromkeys(demands, 0.0)
    open_ = {name for name, demand in demands.items() if demand > 0}
    left = capacity
    while open_ and left > 1e-12:
        share = left / len(open_)
        for name in sorted(open_):
            take = min(share, demands[name] - given[name])
            given[name] += take
            left -= take
        open_ = {name for name in open_ if demands[name] - given[name] > 1e-12}
    return given


def _plan(
    agents: Sequence[SimAgent],
    scenario: Scenario,
    tick: int,
    now: float,
    temperature: float,
    spot_price: float,
    capacity_cores: float,
    bills: Mapping[str, tuple[int, int]],
) -> TickPlan:
    """The daemon's own tick over the interval just metered; `bills`: each live agent's energy
    and bytes freed to bill (`_bills`)."""
    inputs = [
        AgentTickInput(
            agent=a.spec.name, state=AgentState.EXITED if a.done else a.state,
            balance=a.balance, bid=a.spec.bid, demand=a.spec.behaviour.demand,
            energy_uj=bills[a.spec.name][0], bytes_freed=bills[a.spec.name][1],
            burn_per_s=a.burn_per_s,
            insolvent_since_s=a.insolvent_since_s, bid_seq=a.index, price=a.price,
        )
        for a in agents if a.live
    ]  # fmt: skip
    tick_input = TickInput(
        tick=tick, now_s=now, interval_s=scenario.tick_s, tick_s=scenario.tick_s,
        spot_price=spot_price, temperature_c=temperature,
        capacity_cores=capacity_cores, landauer_multiplier=scenario.landauer_multiplier,
        grace_s=scenario.grace_s, agents=inputs,
        share_idle=capacity_cores >= scenario.cores - CORES_EPSILON,
    )  # fmt: skip
    return plan_tick(tick_input)


def _apply(agents: Sequence[SimAgent], plan: TickPlan, now: float) -> None:
    """Carry out the plan: bills paid, states, the next interval's grants."""
    for agent in agents:
        planned = plan.agents.get(agent.spec.name)
        if planned is None:
            continue
        agent.balance, agent.price = planned.balance, planned.price
        agent.paid_j += planned.paid / _UJ
        agent.tax_j += planned.paid_landauer / _UJ
        agent.burn_per_s, agent.insolvent_since_s = planned.burn_per_s, planned.insolvent_since_s
        agent.state = planned.state
        if agent.done and agent.state not in _ENDED:
            agent.state = AgentState.EXITED
        if planned.enforcement is Enforcement.KILL:
            agent.state = AgentState.DEAD
        if agent.state in _ENDED:
            agent.ended_at_s = agent.ended_at_s if agent.ended_at_s is not None else now
            agent.granted = agent.idle_share = 0.0
        elif agent.state is AgentState.FROZEN:
            agent.granted = agent.idle_share = 0.0
        else:
            agent.granted = planned.cores
            quota = planned.quota_cores if planned.quota_cores is not None else planned.cores
            agent.idle_share = max(0.0, quota - planned.cores)


def _bills(
    agents: Sequence[SimAgent], scenario: Scenario, prices: TickPrices
) -> dict[str, tuple[int, int]]:
    """What each live agent is billed this tick (energy µJ, bytes freed): the meter's figures,
    or, for an agent billed by its claims, as the daemon's `maxwell.node.claims` bills it: its
    claim's increase at the tick's joules per CPU second over every agent metered, what that
    under-bills going to its shadow."""
    live = [a for a in agents if a.live]
    if not any(a.reports.by_claims for a in live):
        return {a.spec.name: (a.energy_uj, a.freed) for a in live}
    cpu_ns = {a.spec.name: a.cpu_ns for a in live}
    energies = {a.spec.name: a.energy_uj for a in live}
    rate = joules_per_cpu_ns(cpu_ns, energies, scenario.w_per_core)
    return {
        a.spec.name: a.reports.bill(rate, Usage(a.cpu_ns, a.freed), a.energy_uj, prices)
        if a.reports.by_claims
        else (a.energy_uj, a.freed)
        for a in live
    }


def _stake(agents: Sequence[SimAgent], scenario: Scenario, spot_price: float) -> None:
    """After the plan: an agent that ended gets its bond back; a live reporting agent not yet
    billed by its claims (and never caught) posts its bond if it can afford it (none at p = 0),
    and is billed by its claims from the next tick on."""
    p = scenario.audit_probability
    for agent in agents:
        reports = agent.reports
        if not agent.live:
            agent.balance = Money(agent.balance + reports.release())
            continue
        if not agent.spec.behaviour.reports or reports.by_claims or reports.caught_at_s is not None:
            continue
        demand = agent.spec.behaviour.demand
        bond = audits.bond(demand, scenario.w_per_core, scenario.tick_s, spot_price, p)
        if agent.balance >= bond:
            agent.balance = Money(agent.balance - bond)
            reports.start(bond)


def _end_finished(agents: Sequence[SimAgent], now: float) -> None:
    for agent in agents:
        if agent.live and agent.done:
            agent.state, agent.ended_at_s = AgentState.EXITED, now
