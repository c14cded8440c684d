"""Maxwell: a thermodynamic compute market for Linux.

A map of the package (each folder is one layer of shared/ARCHITECTURE.md):

- `units`, `physics`, `clock`, `errors`: typed quantities, Landauer and the die's RC model, the
  injected clock, and the error tree. Pure.
- `procfs`: the few /proc readers the meter needs (root injected).
- `sensors`: one facade (`Sensors`) over RAPL (powercap, MSR), hwmon, thermal zones, NVML and the
  labelled model fallback.
- `cgroups`: one interface over cgroup v2, v1 and hybrid hosts, plus a /proc process-tree fallback
  for machines where Maxwell may not use cgroups.
- `meter`: pure attribution of measured energy to workloads (`house` takes the rest).
- `runner`: `maxwell run --budget`: a pure budget policy and the loop that enforces it.
- `cli`: the `maxwell` command.
- `bench`: benchmarks that print JSON.
"""

from maxwell.errors import MaxwellError

__version__ = "0.1.0"

__all__ = ["MaxwellError", "__version__"]
