"""Recovery billing: what a restarted daemon bills for the interval it was down. Pure.

Rules:

- The kernel's counters are cumulative and outlive the daemon. An agent was billed up to the
  counters recorded with its last committed tick; the interval it was down is the difference to
  the counters read now, never negative (a counter that went back bills nothing).
- The node's energy over that interval was not observed: the agent's share is modelled from its
  CPU time at the power model's active watts per busy core (W x ns = nJ), labelled modelled.
- The interval is billed once: it becomes the first tick of the restarted daemon, after which the
  recorded counters are the ones read now.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DownInterval", "down_interval"]


@dataclass(frozen=True)
class DownInterval:
    """What an agent used while no daemon watched it."""

    cpu_ns: int
    bytes_freed: int
    energy_uj: int  # modelled


def down_interval(
    *,
    billed_cpu_ns: int,
    billed_freed_bytes: int,
    now_cpu_ns: int,
    now_freed_bytes: int,
    active_w_per_core: float,
) -> DownInterval:
    """The usage between the counters billed up to and the counters now."""
    cpu = max(now_cpu_ns - billed_cpu_ns, 0)
    freed = max(now_freed_bytes - billed_freed_bytes, 0)
    return DownInterval(cpu, freed, round(cpu * active_w_per_core / 1000))
