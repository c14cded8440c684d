"""Market mechanisms behind one interface: `Mechanism.clear(bids, capacity, reserve, rng)`.

- `base`: the interface, `Clearing` / `Allocation`, and the walk from the top of the book.
- `uniform`: uniform price at the highest price not completely filled (truthful, unit demand).
- `vcg`: uniform's allocation, each winner pays its externality (truthful, linear values).
- `kelly`: proportional share of budgets, water-filled at demand caps (Tycoon-like).
- `lottery`: quanta drawn in proportion to budgets from a sum tree (Kelly in expectation).
- `posted`: a tatonnement controller posts a price; each agent takes it or leaves it.
"""

from __future__ import annotations

from maxwell.economy.mechanisms.base import Allocation, Clearing, Mechanism
from maxwell.economy.mechanisms.kelly import Kelly
from maxwell.economy.mechanisms.lottery import Lottery, SumTree
from maxwell.economy.mechanisms.posted import Posted
from maxwell.economy.mechanisms.uniform import Uniform
from maxwell.economy.mechanisms.vcg import Vcg
from maxwell.errors import UsageError

MECHANISM_NAMES = ("uniform", "vcg", "kelly", "lottery", "posted")


def make_mechanism(name: str, *, quantum: float = 0.01) -> Mechanism:
    """The mechanism called `name`, with its default settings (`quantum`: lottery's, cores)."""
    if name == "uniform":
        return Uniform()
    if name == "vcg":
        return Vcg()
    if name == "kelly":
        return Kelly()
    if name == "lottery":
        return Lottery(quantum=quantum)
    if name == "posted":
        return Posted()
    known = ", ".join(MECHANISM_NAMES)
    raise UsageError(f"unknown mechanism {name!r}: use one of {known}")


__all__ = [
    "MECHANISM_NAMES",
    "Allocation",
    "Clearing",
    "Kelly",
    "Lottery",
    "Mechanism",
    "Posted",
    "SumTree",
    "Uniform",
    "Vcg",
    "make_mechanism",
]
