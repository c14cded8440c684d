"""Attribution of one interval's node energy to workloads, by CPU time. Pure.

Rules and invariants:

- The interval's node energy `total_uj` splits into a static part `idle_uj` (idle/static power,
  which no workload caused) and an active part `total_uj - idle_uj`.
- Each workload receives the active part in proportion to its CPU time in the interval, out of the
  node's busy CPU time (from /proc/stat). Its CPU time comes from its cgroup's own counter, so
  children that lived and died inside the interval still count. Processes outside any workload
  (the OS, Maxwell itself) keep their share of the active part in `house`.
- `house` receives the idle part, the unattributed active part and every rounding remainder, so
  `sum(workloads) + house == total` holds exactly, in integer micro-joules, every interval.
- If the workloads' CPU time exceeds the node's busy time (the two counters are read a few
  microseconds apart), the workloads' sum is the denominator: nothing is ever attributed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Attribution:
    """Energy per workload for one interval, plus the `house` remainder, in integer µJ."""

    workloads_uj: Mapping[str, int]
    house_uj: int

    @property
    def total_uj(self) -> int:
        return sum(self.workloads_uj.values()) + self.house_uj


def attribute(
    *,
    total_uj: int,
    idle_uj: int,
    node_busy_ns: int,
    workload_cpu_ns: Mapping[str, int],
) -> Attribution:
    """Split `total_uj` among workloads by CPU time; the rest is `house`.

    All arguments are deltas over one interval. Negative inputs are errors of the caller
    (counters must already be wrap-corrected), so they raise `ValueError`.
    """
    if total_uj < 0 or idle_uj < 0 or node_busy_ns < 0:
        raise ValueError("energy and CPU deltas must be non-negative")
    if any(cpu_ns < 0 for cpu_ns in workload_cpu_ns.values()):
        raise ValueError("workload CPU deltas must be non-negative")
    active_uj = max(total_uj - min(idle_uj, total_uj), 0)
    workload_busy_ns = sum(workload_cpu_ns.values())
    denominator = max(node_busy_ns, workload_busy_ns)
    if denominator == 0 or active_uj == 0:
        shares = dict.fromkeys(workload_cpu_ns, 0)
    else:
        # Integer floor division: each share rounds down, so the sum never exceeds active_uj.
        shares = {
            name: active_uj * cpu_ns // denominator for name, cpu_ns in workload_cpu_ns.items()
        }
    return Attribution(workloads_uj=shares, house_uj=total_uj - sum(shares.values()))
