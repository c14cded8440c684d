"""Settlement: the tick accrues each agent's bills in memory; the ledger takes them at most once
per settlement interval. Pure.

Rules:

- Each tick's planned bill (`maxwell.node.tick`: what the agent pays to the grid and to the
  Landauer sink, capped at its balance) is added to the agent's `Accrual`; nothing is written.
- An agent's balance, for apoptosis and for what it is shown, is its ledger balance minus what
  it has accrued (`owed`), which the tick's cap keeps at or above zero.
- An accrual is settled, as ONE `bill` entry (key `bill:<tick>:<agent>`, the tick that settles
  it: at most one per agent per tick), when the settlement interval has passed since the agent
  was last settled, or at once when an event needs the ledger to be exact (funding, a bid, a
  kill, apoptosis, an exit, an audit, a bond, a bounty, shutdown): `due(..., forced=True)`.
- An accrual that holds nothing (an idle agent) is never settled: an idle agent writes no row.
- The entry moves exactly the accrued amounts; its detail sums the ticks' figures (energy, bytes
  freed, costs, shortfall) and says which ticks it covers, so `sum(bills' energy_uj)` over the
  journal is the energy billed, as it was with one entry per tick.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from maxwell.economy.ledger import GRID, LANDAUER, Movement, agent_account

__all__ = ["Accrual", "accrue", "due", "settlement_entry"]

DEFAULT_SETTLEMENT_S = 1.0
_SLACK_S = 1e-9


@dataclass(frozen=True)
class Accrual:
    """What one agent has been billed since its last settlement (µJ, bytes, µ$J)."""

    from_tick: int = 0  # the first tick accrued (0: none)
    to_tick: int = 0  # the last tick accrued
    ticks: int = 0
    energy_uj: int = 0
    bytes_freed: int = 0
    bytes_rewritten: int = 0  # the erasure meter's, when it is on
    energy_cost: int = 0  # as billed, before the cap
    landauer_cost: int = 0
    paid_energy: int = 0  # to the grid
    paid_landauer: int = 0  # to the Landauer sink
    shortfall: int = 0
    physical_landauer_j: float = 0.0
    taxed_landauer_j: float = 0.0
    spot_price: float = 0.0  # of the last tick accrued
    temperature_c: float = 0.0

    @property
    def owed(self) -> int:
        return self.paid_energy + self.paid_landauer

    @property
    def empty(self) -> bool:
        return self.ticks == 0


def accrue(accrual: Accrual, tick: int, bill: dict[str, object], paid: tuple[int, int]) -> Accrual:
    """`accrual` plus one tick's bill: its detail (`maxwell.node.tick`'s bill entry) and what the
    agent pays of it, `(to the grid, to the Landauer sink)`."""

    def number(key: str) -> float:
        value = bill.get(key, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    return replace(
        accrual,
        from_tick=accrual.from_tick or tick,
        to_tick=tick,
        ticks=accrual.ticks + 1,
        energy_uj=accrual.energy_uj + int(number("energy_uj")),
        bytes_freed=accrual.bytes_freed + int(number("bytes_freed")),
        bytes_rewritten=accrual.bytes_rewritten + int(number("bytes_rewritten")),
        energy_cost=accrual.energy_cost + int(number("energy_cost")),
        landauer_cost=accrual.landauer_cost + int(number("landauer_cost")),
        paid_energy=accrual.paid_energy + paid[0],
        paid_landauer=accrual.paid_landauer + paid[1],
        shortfall=accrual.shortfall + int(number("shortfall")),
        physical_landauer_j=accrual.physical_landauer_j + number("physical_landauer_j"),
        taxed_landauer_j=accrual.taxed_landauer_j + number("taxed_landauer_j"),
        spot_price=number("spot_price"),
        temperature_c=number("temperature_c"),
    )


def due(
    accrual: Accrual, *, now_s: float, settled_at_s: float, interval_s: float, forced: bool
) -> bool:
    """Whether to settle `accrual` now: never when it is empty, at once when forced, else once
    `interval_s` has passed since the agent was last settled (to within a nanosecond: a clock
    advanced in tick steps adds up in floating point, 5 x 0.1 < 0.5)."""
    if accrual.empty:
        return False
    return forced or now_s - settled_at_s >= interval_s - _SLACK_S


def settlement_entry(
    agent: str, accrual: Accrual, tick: int
) -> tuple[str, tuple[Movement, ...], dict[str, object]]:
    """The `bill` entry that settles `accrual` at `tick`: key, movements, detail."""
    account = agent_account(agent)
    movements = tuple(
        Movement(account, sink, amount)
        for sink, amount in ((GRID, accrual.paid_energy), (LANDAUER, accrual.paid_landauer))
        if amount > 0
    )
    detail: dict[str, object] = {
        "agent": agent,
        "tick": tick,
        "ticks": accrual.ticks,
        "from_tick": accrual.from_tick,
        "to_tick": accrual.to_tick,
        "energy_uj": accrual.energy_uj,
        "bytes_freed": accrual.bytes_freed,
        "spot_price": accrual.spot_price,
        "temperature_c": accrual.temperature_c,
        "energy_cost": accrual.energy_cost,
        "landauer_cost": accrual.landauer_cost,
        "physical_landauer_j": accrual.physical_landauer_j,
        "taxed_landauer_j": accrual.taxed_landauer_j,
        "shortfall": accrual.shortfall,
    }
    if accrual.bytes_rewritten:
        detail["bytes_rewritten"] = accrual.bytes_rewritten
    return f"bill:{tick}:{agent}", movements, detail
