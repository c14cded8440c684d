"""Optimistic billing and audits on the twin (issue 14, 2): an agent that reports its own use,
its bond, the bills its claims make and the audits that check them, all by the daemon's own pure
cores (`maxwell.node.policy.optimistic`, `maxwell.node.policy.audit`, `maxwell.audit.policy`), as
`maxwell.node.claims` and `maxwell.node.audits` drive them on a real node. Pure: the audit draws
come from the `random.Random` the caller seeds.

Rules (the daemon's, on virtual time):

- A reporting agent's claim is cumulative since spawn (`maxwell.node.facade.Report`); the twin's
  agent reports at the end of every tick, and the counters it must cover are those of the same
  instant (`Reports.record`).
- Once it can afford it, it posts the daemon's bond (`bond`: Becker's, for its whole bill at
  full demand for one tick at the spot price, `bond_for` of `gain_per_tick`) and from the next
  tick on is billed by its claims (`bill_claim`: the claim's increase, never a decrease); what
  that under-bills against the meter accumulates in its `shadow`. One that cannot afford it stays
  billed by the meter and tries again each tick. With `p = 0` nobody checks: it posts no bond
  (Becker's bond is unbounded) and is billed by its claims from its first report, the case of
  trust without verification (the daemon, with audits off, bills everyone by the meter).
- An audit (`audit_claim`) compares its claim with the counters (`judge`, the documented
  tolerances) and settles the verdict (`judge_audit`): a liar loses its whole bond and what its
  claims under-billed is clawed back (at most its balance); it never bonds again and is billed by
  the meter from then on. An honest verdict moves nothing and forgives nothing.
- An agent that ends gets its bond back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maxwell.audit.policy import Usage, judge
from maxwell.node.policy.audit import Judgement, judge_audit
from maxwell.node.policy.optimistic import TickPrices, bill_claim, bond_for, gain_per_tick
from maxwell.units import Money


def bond(demand: float, w_per_core: float, tick_s: float, spot_price: float, p: float) -> Money:
    """The bond (µ$J) the daemon asks of an agent of `demand` cores audited with probability `p`
    (0 where `p` is 0: nothing to deter with)."""
    if p <= 0:
        return Money(0)
    return bond_for(gain_per_tick(demand, w_per_core, tick_s, spot_price), p)


def audit_claim(
    agent: str, claimed: Usage, measured: Usage, *, bond: int, shadow: int, balance: int
) -> Judgement:
    """The daemon's verdict on `claimed` against the counters `measured` at the same instant,
    and the money it moves (`bond` held, `shadow` under-billed, `balance` in its account)."""
    verdict = judge(claimed, measured)
    return judge_audit(agent, verdict.findings, bond=bond, shadow=shadow, balance=balance)


@dataclass
class Reports:
    """A reporting agent's claims and where its optimistic billing stands (µ$J, ns, bytes)."""

    claimed: Usage = field(default_factory=lambda: Usage(0, 0))  # cumulative, as reported
    measured: Usage = field(default_factory=lambda: Usage(0, 0))  # cumulative, the counters
    billed_up_to: Usage | None = None  # None: billed by the meter
    bond: int = 0  # held in its stake
    shadow: int = 0  # what its claims under-billed since the last slash
    slashed: int = 0  # bond taken + claw-back, in all
    audits: int = 0
    caught_at_s: float | None = None

    @property
    def by_claims(self) -> bool:
        return self.billed_up_to is not None

    def record(self, cpu_ns: int, freed_bytes: int, claimed_cpu_ns: int) -> None:
        """A tick's use, and its report: `claimed_cpu_ns` of its `cpu_ns`, its bytes as freed."""
        self.measured = Usage(
            self.measured.cpu_ns + cpu_ns, self.measured.freed_bytes + freed_bytes
        )
        self.claimed = Usage(
            self.claimed.cpu_ns + claimed_cpu_ns, self.claimed.freed_bytes + freed_bytes
        )

    def start(self, bond: int) -> None:
        """Billed by its claims from the next tick, holding `bond` (already taken from it)."""
        self.bond, self.billed_up_to = bond, self.claimed

    def bill(
        self, rate_uj_per_ns: float, metered: Usage, metered_energy_uj: int, prices: TickPrices
    ) -> tuple[int, int]:
        """The energy (µJ) and bytes freed to bill this tick by its claim (`bill_claim`); the
        under-billing goes to its shadow. `metered`: this tick's CPU and bytes by the meter."""
        assert self.billed_up_to is not None, "billed by the meter"
        billed = bill_claim(
            self.claimed, self.billed_up_to, rate_uj_per_ns, metered, metered_energy_uj, prices
        )
        self.billed_up_to = billed.billed_up_to
        self.shadow += billed.under_billed
        return billed.energy_uj, billed.bytes_freed

    def audit(self, agent: str, balance: int, now_s: float) -> Judgement:
        """Audit its latest claim (see the module); a liar is slashed and metered from now on.
        The caller takes `clawback` from its balance."""
        judgement = audit_claim(
            agent, self.claimed, self.measured, bond=self.bond, shadow=self.shadow, balance=balance
        )
        self.audits += 1
        if not judgement.honest:
            self.slashed += judgement.slashed
            self.bond, self.shadow, self.billed_up_to = 0, 0, None
            self.caught_at_s = now_s if self.caught_at_s is None else self.caught_at_s
        return judgement

    def release(self) -> int:
        """The bond handed back to an agent that ended (µ$J)."""
        released, self.bond, self.billed_up_to = self.bond, 0, None
        return released
