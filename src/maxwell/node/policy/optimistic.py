"""Optimistic billing ("trust, then verify"): what an agent billed by its own reports posts as a
bond, what each claim bills, and what stays under-billed until the next audit. Pure.

Rules:

- The bond deters the largest gain a tick of lying can bring: the agent's bill at full demand for
  one tick (`demand` cores x the power model's active watts per core x the tick x the spot price,
  in µ$J), sized by Becker's condition for the audit probability (`becker_bond`), at least 1 µ$J.
- A claim is cumulative since spawn. Each tick bills the claim's increase over what was billed
  before (`billed_up_to`), never a decrease: `billed_up_to` only grows, so no claim is billed twice
  and a claim that falls back bills nothing.
- Claimed CPU time becomes energy at the tick's joules per CPU second (`joules_per_cpu_ns`): the
  meter attributes energy by CPU time, so that rate is every agent's this tick; with no CPU used
  it is the power model's active watts per core.
- What the claim under-bills against the meter this tick (metered bill - claimed bill, in µ$J; it
  may be negative when the claim over-bills) is added to the agent's `shadow`, for an audit to
  claw back (`maxwell.node.policy.audit`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from maxwell.audit.policy import Usage, becker_bond
from maxwell.economy.billing import bill
from maxwell.units import Money

__all__ = [
    "ClaimBill", "TickPrices", "bill_claim", "bond_for", "gain_per_tick", "joules_per_cpu_ns",
]  # fmt: skip


@dataclass(frozen=True)
class TickPrices:
    """What turns a tick's energy and bytes freed into money."""

    spot_price: float
    temperature_c: float
    landauer_multiplier: float

    def total(self, energy_uj: int, bytes_freed: int) -> int:
        """The core equation's bill (µ$J) for that energy and that memory release."""
        return bill(
            energy_uj=energy_uj,
            bytes_freed=bytes_freed,
            spot_price=self.spot_price,
            temperature_c=self.temperature_c,
            landauer_multiplier=self.landauer_multiplier,
        ).total


def gain_per_tick(
    demand_cores: float, active_w_per_core: float, tick_s: float, spot_price: float
) -> float:
    """The most a tick of claiming nothing saves (µ$J): the bill at full demand."""
    return demand_cores * active_w_per_core * tick_s * 1e6 * spot_price  # µJ x $J/J = µ$J


def bond_for(gain_per_tick: float, probability: float) -> Money:
    """The bond (µ$J) that deters a lie worth `gain_per_tick`, audited with `probability`."""
    return Money(max(becker_bond(Money(max(math.ceil(gain_per_tick), 1)), probability), 1))


def joules_per_cpu_ns(
    cpu_ns: Mapping[str, int], energy_uj: Mapping[str, int], active_w_per_core: float
) -> float:
    """The tick's µJ per ns of CPU over the agents metered (W x ns = nJ: W / 1000 µJ per ns)."""
    total_cpu = sum(cpu_ns.values())
    if total_cpu <= 0:
        return active_w_per_core / 1000
    return sum(energy_uj[agent] for agent in cpu_ns) / total_cpu


@dataclass(frozen=True)
class ClaimBill:
    """What one tick bills an agent by its claim, and what it under-bills."""

    energy_uj: int  # to bill
    bytes_freed: int  # to bill
    billed_up_to: Usage  # the claim billed up to after this tick
    under_billed: int  # µ$J: the metered bill minus the claimed one (negative: over-billed)


def bill_claim(
    claim: Usage,
    billed_up_to: Usage,
    rate_uj_per_ns: float,
    metered: Usage,
    metered_energy_uj: int,
    prices: TickPrices,
) -> ClaimBill:
    """Bill the claim's increase over `billed_up_to`; `metered` is this tick's metered CPU and
    bytes freed (only its bytes are read: the meter's energy comes as `metered_energy_uj`)."""
    energy = round(max(claim.cpu_ns - billed_up_to.cpu_ns, 0) * rate_uj_per_ns)
    freed = max(claim.freed_bytes - billed_up_to.freed_bytes, 0)
    up_to = Usage(
        max(claim.cpu_ns, billed_up_to.cpu_ns),
        max(claim.freed_bytes, billed_up_to.freed_bytes),
    )
    shadow = prices.total(metered_energy_uj, metered.freed_bytes) - prices.total(energy, freed)
    return ClaimBill(energy, freed, up_to, shadow)
