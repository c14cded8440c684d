"""The meter: attribution of an interval's measured (or modelled) energy to workloads.

- `attribution`: the pure split of one interval's energy (workloads by CPU time; the rest to the
  house).
- `live`: `LiveMeter`, which drives it from node samples and workload groups' counters.
"""

from maxwell.meter.attribution import Attribution, attribute
from maxwell.meter.live import LiveMeter, WorkloadUsage

__all__ = ["Attribution", "LiveMeter", "WorkloadUsage", "attribute"]
