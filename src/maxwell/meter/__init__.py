"""The meter: attribution of an interval's measured (or modelled) energy to workloads."""

from maxwell.meter.attribution import Attribution, attribute

__all__ = ["Attribution", "attribute"]
