"""The labels every reading carries: where it came from (`Source`) and what it is (`Kind`).

They live here rather than in the facade so that backends (hwmon's channels) can use them without
importing `maxwell.sensors` itself; the facade re-exports both.
"""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    RAPL_POWERCAP = "rapl-powercap"
    RAPL_MSR = "rapl-msr"
    HWMON = "hwmon"
    THERMAL = "thermal"
    NVML = "nvml"
    MODEL = "model"


class Kind(StrEnum):
    ENERGY = "energy"
    POWER = "power"
    TEMPERATURE = "temperature"
