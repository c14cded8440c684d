"""Physical constants and models: Landauer's bound and the first-order thermal RC model of a die.

Pure functions and small value objects; no I/O, no clock. Temperatures in °C at the edges,
kelvin inside the Landauer formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# CODATA 2018 exact value of the Boltzmann constant, J/K.
BOLTZMANN_J_PER_K = 1.380649e-23
ZERO_CELSIUS_K = 273.15
BITS_PER_BYTE = 8


def landauer_joules_per_bit(temperature_c: float) -> float:
    """k_B T ln 2: the least heat erasing one bit dissipates at temperature T (°C)."""
    return BOLTZMANN_J_PER_K * (temperature_c + ZERO_CELSIUS_K) * math.log(2)


def landauer_joules(bytes_freed: int, temperature_c: float) -> float:
    """Physical Landauer cost of erasing `bytes_freed` bytes at `temperature_c`.

    About 2.9e-21 J per bit at 300 K, so 1 GiB costs ~2.5e-11 J (shared/REFERENCE.md).
    """
    return bytes_freed * BITS_PER_BYTE * landauer_joules_per_bit(temperature_c)


@dataclass(frozen=True)
class ThermalRC:
    """First-order die model: C dT/dt = P - (T - T_amb) / R  (shared/REFERENCE.md, Control).

    `resistance_k_per_w` R is the die-to-ambient thermal resistance, `capacitance_j_per_k` C its
    heat capacity; the time constant is R C. The steady state at power P is T_amb + P R.
    """

    ambient_c: float = 25.0
    resistance_k_per_w: float = 0.5
    capacitance_j_per_k: float = 40.0
    critical_c: float = 95.0

    @property
    def time_constant_s(self) -> float:
        return self.resistance_k_per_w * self.capacitance_j_per_k

    def steady_state_c(self, power_w: float) -> float:
        return self.ambient_c + power_w * self.resistance_k_per_w

    def step(self, temperature_c: float, power_w: float, seconds: float) -> float:
        """Temperature after `seconds` at constant `power_w`, solved exactly."""
        if seconds <= 0:
            return temperature_c
        target = self.steady_state_c(power_w)
        decay = math.exp(-seconds / self.time_constant_s)
        return target + (temperature_c - target) * decay

    def headroom_c(self, temperature_c: float) -> float:
        return self.critical_c - temperature_c
