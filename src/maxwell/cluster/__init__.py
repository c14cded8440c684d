"""Beyond one machine (issue 13): where a job runs, and the money that follows it.

- `placement`: the placement rule, pure: a price table in, nodes ranked out (no Ray in it, so a
  Kubernetes scheduler extender can use it too).
- `transfers`: money across nodes, pure: the halves, the vouchers, reconciliation.
- `jobs`: jobs placed by price on Ray; `submit` is here too (`maxwell.cluster.submit(spec,
  home=client)` returns a `JobHandle` whose `.result()` waits for the outcome).
- `call`: a Python call run as an agent, the agent's side (`maxwell.ray` is the caller's).
- `local`: a cluster of nodes on one machine, for the benchmark.
"""

from __future__ import annotations

from typing import Any

_FROM_JOBS = ("JobError", "JobHandle", "JobOutcome", "JobSpec", "submit")
__all__ = list(_FROM_JOBS)


def __getattr__(name: str) -> Any:
    """`submit` and its types, from `jobs` when first asked for (the node imports this package
    for its pure parts, which must not pull in the client and its dependencies)."""
    if name in _FROM_JOBS:
        from maxwell.cluster import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
