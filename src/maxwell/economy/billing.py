"""Billing: the core equation, one agent, one interval. Pure.

    cost = energy_J x spot_price  +  bits_freed x k_B x T_die x ln 2 x landauer_multiplier

Rules and invariants:

- Inputs are integers where they count things (`energy_uj` µJ, `bytes_freed` bytes) and floats
  where they are physical or policy figures (spot price in $J per J, die temperature in °C, the
  multiplier). Negative, NaN or infinite inputs are the caller's error: `ValueError`.
- Outputs in money are integer µ$J (`Money`). Each component is rounded once, half to even, from
  the exact value of the floats behind it (in integers, from each float's exact ratio, so no
  second float rounding decides a tie): `energy_cost` from `energy_uj x spot_price`,
  `landauer_cost` from the reported `taxed_landauer_j`, `physical_landauer_cost` from
  `physical_landauer_j`.
  `total == energy_cost + landauer_cost` exactly, so a bill's ledger entries add up to its total.
- The Landauer term is joules of heat that erasing `bits_freed` bits must dissipate at the die's
  temperature. The equation adds it, times the multiplier, straight to the cost, so it is charged
  at the unit of account's definition, 1 $J per J, not at the spot price: the tax goes to the
  Landauer sink, not to the grid, and does not follow the grid tariff or the thermal factor.
- The multiplier is a policy knob. Physically, freeing 1 GiB at 300 K costs ~2.5e-11 J (~3e-11 J
  at a hot die), so with the default 1.0 (the physical figure) the tax rounds to 0 µ$J. A
  multiplier around 1e9 to 1e12 makes memory churn cost something next to energy (1e12: about
  25 $J per GiB freed). Both figures are always reported: `physical_landauer_j` beside
  `taxed_landauer_j = physical x multiplier`, and the money of each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from maxwell.physics import ZERO_CELSIUS_K, landauer_joules
from maxwell.units import MICRO_PER_TOKEN, Money

DEFAULT_LANDAUER_MULTIPLIER = 1.0


@dataclass(frozen=True)
class Bill:
    """One agent's bill for one interval: the inputs, both Landauer figures, and the money."""

    energy_uj: int
    spot_price: float
    bytes_freed: int
    temperature_c: float
    landauer_multiplier: float
    energy_cost: Money
    physical_landauer_j: float
    taxed_landauer_j: float
    physical_landauer_cost: Money
    landauer_cost: Money
    total: Money
    bytes_rewritten: int = 0  # pages re-written (the erasure meter), taxed as bytes_freed is


def _money(count: int, factor: float) -> Money:
    """`count x factor` (a float taken at its exact binary value) rounded half to even: the
    same as `round(Fraction(count) * Fraction(factor))`, in integers (a tick bills every agent:
    Fractions cost most of its time)."""
    numerator, denominator = factor.as_integer_ratio()  # denominator: a power of 2, > 0
    quotient, remainder = divmod(count * numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return Money(quotient)


def bill(
    *,
    energy_uj: int,
    spot_price: float,
    bytes_freed: int = 0,
    temperature_c: float,
    landauer_multiplier: float = DEFAULT_LANDAUER_MULTIPLIER,
    bytes_rewritten: int = 0,
) -> Bill:
    """Apply the core equation to one interval's energy and memory release. The bits erased are
    those of the bytes freed and of the bytes re-written (`bytes_rewritten`, from the optional
    erasure meter: every re-written page counted at its full size).

    `energy_uj x spot_price` is already in µ$J (µJ x $J/J). The Landauer cost is computed at
    `temperature_c` (the die's), converted to kelvin inside `maxwell.physics.landauer_joules`.
    """
    if energy_uj < 0:
        raise ValueError(f"energy_uj must be >= 0, got {energy_uj}")
    if bytes_freed < 0 or bytes_rewritten < 0:
        raise ValueError(
            f"bytes freed and re-written must be >= 0: {bytes_freed}, {bytes_rewritten}"
        )
    if not math.isfinite(spot_price) or spot_price < 0:
        raise ValueError(f"spot_price must be finite and >= 0, got {spot_price!r}")
    if not math.isfinite(temperature_c) or temperature_c < -ZERO_CELSIUS_K:
        raise ValueError(
            f"temperature_c must be finite and above absolute zero, got {temperature_c!r}"
        )
    if not math.isfinite(landauer_multiplier) or landauer_multiplier < 0:
        raise ValueError(
            f"landauer_multiplier must be finite and >= 0, got {landauer_multiplier!r}"
        )
    erased = bytes_freed + bytes_rewritten
    physical_j = landauer_joules(erased, temperature_c) if erased else 0.0
    taxed_j = physical_j * landauer_multiplier
    energy_cost = _money(energy_uj, spot_price)
    physical_cost = _money(MICRO_PER_TOKEN, physical_j)
    landauer_cost = _money(MICRO_PER_TOKEN, taxed_j)
    return Bill(
        energy_uj=energy_uj,
        spot_price=spot_price,
        bytes_freed=bytes_freed,
        temperature_c=temperature_c,
        landauer_multiplier=landauer_multiplier,
        energy_cost=energy_cost,
        physical_landauer_j=physical_j,
        taxed_landauer_j=taxed_j,
        physical_landauer_cost=physical_cost,
        landauer_cost=landauer_cost,
        total=Money(energy_cost + landauer_cost),
        bytes_rewritten=bytes_rewritten,
    )


def charged_price(mechanism_price: float, bid: float, spot_price: float) -> float:
    """What a winner pays per joule of the cores it won ($J per J): its mechanism's price, never
    above its bid and never below the spot price (which is also the market's reserve, so a
    winner's bid is at least spot)."""
    return max(min(mechanism_price, bid), spot_price)
