"""What simulated agents do with the cores they get (issue 14, 2): pure, deterministic.

Each behaviour says how many cores it wants at a time, what a second of its CPU produces (units
of useful work, worth `value_per_unit` each), how many bytes it frees (the Landauer tax's base),
and when it is done. The node decides what it gets; the behaviour only uses it.

- `useful`: a finite job of `job_units`, `units_per_core_s` per core-second, each worth
  `value_per_unit`; it exits when the job is done.
- `looper`: wants a core forever and produces nothing (a `while(true)`).
- `bloat`: wants a core forever, produces nothing and churns memory: `churn_bytes_per_core_s`
  freed per core-second.
- `hoarder`: asks for cores and leaves them idle (it uses `use_fraction` of what it gets).
- `bursty`: a useful agent that wants its cores only `duty` of the time (periods of
  `period_s`), phase-shifted by its index so bursts do not all align.
- `cheater`: a looper that reports its own use (optimistic billing) and under-reports it: on a
  lying tick it claims only `claim_fraction` of the CPU it burnt. Its `strategy`: "persistent"
  (it lies every tick) or "intermittent" (it lies on `lie_share` of its ticks, drawn from its
  index and the tick, so a run is a function of its scenario).
- `malicious`: a looper by behaviour (a core forever, nothing produced); what makes it the
  vision's "well-funded malicious" agent is the funding its scenario gives it.

Only a cheater reports its use; every other kind is metered (its claims are the truth).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

KINDS: Final = ("useful", "looper", "bloat", "hoarder", "bursty", "cheater", "malicious")
# what produces nothing of value
LOW_VALUE: Final = frozenset({"looper", "bloat", "hoarder", "cheater", "malicious"})
REPORTING: Final = frozenset({"cheater"})  # billed by their own reports under the market
STRATEGIES: Final = ("persistent", "intermittent")


@dataclass(frozen=True)
class Behaviour:
    """One kind of agent (see the module); `demand` is the cores it asks for when it wants."""

    kind: str
    demand: float = 1.0
    value_per_unit: float = 0.0
    units_per_core_s: float = 0.0
    job_units: float | None = None  # None: it never ends of itself
    churn_bytes_per_core_s: float = 0.0
    use_fraction: float = 1.0
    duty: float = 1.0
    period_s: float = 10.0
    claim_fraction: float = 1.0  # of its CPU a lying tick claims (a cheater's)
    strategy: str = "persistent"  # when it lies: one of STRATEGIES
    lie_share: float = 1.0  # of its ticks an intermittent cheater lies on

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown behaviour {self.kind!r}: one of {', '.join(KINDS)}")
        if self.demand <= 0 or not 0 < self.use_fraction <= 1 or not 0 < self.duty <= 1:
            raise ValueError(f"{self.kind}: demand > 0, use_fraction and duty in (0, 1]")
        if not 0 <= self.claim_fraction <= 1 or not 0 <= self.lie_share <= 1:
            raise ValueError(f"{self.kind}: claim_fraction and lie_share in [0, 1]")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: one of {', '.join(STRATEGIES)}")

    @property
    def reports(self) -> bool:
        """Whether it reports its own use (optimistic billing) rather than being metered."""
        return self.kind in REPORTING

    def lies(self, tick: int, index: int) -> bool:
        """Whether its report of tick `tick` under-claims (a draw from its index and the tick:
        the same each run, independent of every other agent's)."""
        if not self.reports or self.claim_fraction >= 1:
            return False
        if self.strategy == "persistent":
            return True
        return random.Random(f"lie/{index}/{tick}").random() < self.lie_share

    def claims(self, cpu_ns: int, tick: int, index: int) -> int:
        """The CPU time (ns) it claims of the `cpu_ns` it burnt in tick `tick`."""
        return round(cpu_ns * self.claim_fraction) if self.lies(tick, index) else cpu_ns

    def wants(self, now_s: float, index: int) -> float:
        """The cores it asks for at `now_s` (a bursty agent only in its bursts)."""
        if self.duty >= 1:
            return self.demand
        phase = (now_s / self.period_s + index * 0.37) % 1.0
        return self.demand if phase < self.duty else 0.0

    def uses(self, granted: float, wanted: float) -> float:
        """The cores it burns of those it may use."""
        return min(granted, wanted) * self.use_fraction

    def produces(self, core_s: float) -> float:
        """Units of useful work from `core_s` core-seconds."""
        return core_s * self.units_per_core_s

    def frees(self, core_s: float) -> int:
        return int(core_s * self.churn_bytes_per_core_s)


USEFUL = Behaviour("useful", value_per_unit=1.0, units_per_core_s=10.0, job_units=300.0)
LOOPER = Behaviour("looper")
BLOAT = Behaviour("bloat", churn_bytes_per_core_s=2e9)
HOARDER = Behaviour("hoarder", demand=2.0, use_fraction=0.05)
BURSTY = Behaviour("bursty", value_per_unit=1.0, units_per_core_s=10.0, duty=0.3)
CHEATER = Behaviour("cheater", claim_fraction=0.2, lie_share=0.3)  # lie_share: intermittent
MALICIOUS = Behaviour("malicious")
DEFAULTS: Final = {b.kind: b for b in (USEFUL, LOOPER, BLOAT, HOARDER, BURSTY, CHEATER, MALICIOUS)}
