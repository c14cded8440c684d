"""Typed units: energy as integer micro-joules, explicit conversions, energy parsing.

Rules: a stored or summed energy is always an `int` of micro-joules (`EnergyUJ`); floats appear
only at the edges (display, JSON, physical models) and are converted with the functions here.
"""

from __future__ import annotations

import math
import re
from typing import NewType

from maxwell.errors import UsageError

EnergyUJ = NewType("EnergyUJ", int)
# Money: integer micro-$JOULE (µ$J). 1 $J buys 1 J at spot price 1.0.
Money = NewType("Money", int)

UJ_PER_J = 1_000_000
MICRO_PER_TOKEN = 1_000_000  # µ$J per $J
J_PER_WH = 3600.0

# Multipliers to joules for the units `maxwell run --budget` accepts (case-sensitive, as SI is).
_ENERGY_UNITS_J: dict[str, float] = {
    "": 1.0,
    "J": 1.0,
    "kJ": 1e3,
    "MJ": 1e6,
    "mWh": J_PER_WH / 1e3,
    "Wh": J_PER_WH,
    "kWh": J_PER_WH * 1e3,
}

_ENERGY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def joules_to_uj(joules: float) -> EnergyUJ:
    """Round a float of joules to integer micro-joules."""
    return EnergyUJ(round(joules * UJ_PER_J))


def uj_to_joules(energy_uj: int) -> float:
    return energy_uj / UJ_PER_J


def watts_over(power_w: float, seconds: float) -> EnergyUJ:
    """Energy of a constant power over an interval, in integer µJ."""
    return joules_to_uj(power_w * seconds)


def parse_energy(text: str) -> EnergyUJ:
    """Parse `10`, `10J`, `2.5kJ`, `300mWh`, `1Wh`, `0.01kWh` into micro-joules.

    A bare number is joules. Raises `UsageError` with a one-line reason on anything else,
    including zero, negative, NaN and infinite amounts.
    """
    match = _ENERGY_RE.match(text)
    if match is None:
        raise UsageError(
            f"cannot read energy {text!r}: expected a number with J, kJ, mWh, Wh or kWh"
        )
    number, unit = match.groups()
    if unit not in _ENERGY_UNITS_J:
        known = ", ".join(u for u in _ENERGY_UNITS_J if u)
        raise UsageError(f"unknown energy unit {unit!r} in {text!r}: use one of {known}")
    joules = float(number) * _ENERGY_UNITS_J[unit]
    if not math.isfinite(joules) or joules <= 0:
        raise UsageError(f"energy must be a positive finite amount, got {text!r}")
    energy = joules_to_uj(joules)
    if energy <= 0:
        raise UsageError(f"energy {text!r} is below one micro-joule")
    return energy


def tokens_to_money(tokens: float) -> Money:
    """Round a float amount of $JOULE to integer µ$J (Python's round: half to even)."""
    if not math.isfinite(tokens):
        raise UsageError(f"an amount of $JOULE must be finite, got {tokens!r}")
    return Money(round(tokens * MICRO_PER_TOKEN))


def money_to_tokens(amount: int) -> float:
    return amount / MICRO_PER_TOKEN
