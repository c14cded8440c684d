"""The probabilistic auction heap: capacity cut into quanta, each drawn in proportion to weight.

Rules. A bid's weight is its Kelly budget b_i = price x demand (bids priced > 0 and at or above
the reserve; a zero budget holds no tickets). If their total demand fits the capacity, each gets
its demand and nothing is drawn. Otherwise the capacity is cut into quanta of `quantum` cores
(the last one smaller); each quantum goes to one bid drawn with probability b_i / sum b over the
bids still drawing, from a sum tree: O(log n) per draw and per weight update. A bid is given at
most what it still lacks; once its demand is filled its weight is set to 0 and it leaves the
draw. Everyone pays the Kelly price per core it won.

The expected allocation converges to Kelly's water-filled shares as the quantum shrinks (the
fluid limit of "draw in proportion to budget, leave when full" is exactly water-filling), and
the error of a share is a binomial one: about capacity x sqrt(s (1 - s) / draws) for a bid with
share s of the capacity. Randomness comes only from the `rng` passed to `clear`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

import numpy as np

from maxwell.economy.mechanisms.base import Clearing, Mechanism
from maxwell.economy.mechanisms.kelly import kelly_shares
from maxwell.economy.orderbook import BidSet, FloatArray
from maxwell.errors import UsageError

UNIFORMS_PER_BATCH = 1024
RELATIVE_EPSILON = 1e-12


class SumTree:
    """Partial sums over non-negative weights: O(log n) `update` and `find`, exact zeros.

    A complete binary tree in a flat array (root at 1, leaves from `size`); every inner node is
    recomputed as the sum of its two children on update (never adjusted by a difference), so a
    weight set to 0 leaves no rounding residue and a zero-weight leaf is never drawn.
    """

    def __init__(self, weights: Sequence[float] | FloatArray) -> None:
        values = np.asarray(weights, dtype=np.float64)
        if values.ndim != 1:
            raise UsageError("sum tree weights must be a flat sequence")
        if len(values) and not (np.isfinite(values).all() and values.min() >= 0):
            raise UsageError("sum tree weights must be finite and >= 0")
        self._n = len(values)
        size = 1
        while size < self._n:
            size *= 2
        tree = np.zeros(2 * size, dtype=np.float64)
        tree[size : size + self._n] = values
        level = size // 2
        while level >= 1:  # each level from the one below, vectorised
            tree[level : 2 * level] = (
                tree[2 * level : 4 * level : 2] + tree[2 * level + 1 : 4 * level : 2]
            )
            level //= 2
        self._size = size
        self._tree = array("d", tree.tobytes())  # contiguous: fewer cache misses than a list

    def __len__(self) -> int:
        return self._n

    @property
    def total(self) -> float:
        return self._tree[1] if self._n else 0.0

    def weight(self, index: int) -> float:
        self._check_index(index)
        return self._tree[self._size + index]

    def update(self, index: int, weight: float) -> None:
        """Set one weight: O(log n)."""
        self._check_index(index)
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"a weight must be finite and >= 0, got {weight!r}")
        tree = self._tree
        node = self._size + index
        tree[node] = float(weight)
        node //= 2
        while node:
            tree[node] = tree[2 * node] + tree[2 * node + 1]
            node //= 2

    def find(self, point: float) -> int:
        """The index whose slice of [0, total) holds `point`: O(log n).

        A point at or past the total (rounding) lands on the last non-zero weight.
        """
        if self.total <= 0:
            raise UsageError("cannot draw from a sum tree whose weights are all zero")
        tree = self._tree
        size = self._size
        node = 1
        while node < size:
            node <<= 1  # the left child
            left = tree[node]
            if point >= left and tree[node + 1] > 0:
                point -= left
                node += 1
        return node - size

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._n:
            raise IndexError(f"sum tree index {index} out of range for {self._n} weights")

    def draw(self, uniform: float) -> int:
        """An index drawn with probability weight / total, given `uniform` in [0, 1)."""
        return self.find(uniform * self.total)


class Lottery(Mechanism):
    """Quanta of capacity drawn in proportion to budget (b_i = price x demand).

    Incentive property: not truthful, and random. In expectation it gives Kelly's proportional
    shares (so it inherits Kelly's incentives: bidders trade share against spend), with a
    binomial error that shrinks as 1 / sqrt(draws); its merit is cost, O(log n) per quantum
    and per bid update, which lets it run at scheduler rates. Lottery scheduling's guarantee
    holds: a bid's chance of each quantum is its share of the tickets still drawing.
    """

    name = "lottery"

    def __init__(self, quantum: float = 0.01) -> None:
        if not math.isfinite(quantum) or quantum <= 0:
            raise UsageError(
                f"the lottery quantum must be a positive number of cores, got {quantum!r}"
            )
        self.quantum = float(quantum)

    def _clear(
        self, bids: BidSet, capacity: float, reserve: float, rng: np.random.Generator
    ) -> Clearing:
        share = kelly_shares(bids, capacity, reserve)
        candidates = share.winners
        demands = bids.demands[candidates]
        if float(demands.sum()) <= capacity:
            return self._result(
                bids, capacity, reserve, share.price, candidates, demands.copy(),
                extra={"draws": 0, "quantum": self.quantum},
            )  # fmt: skip
        tree = SumTree(bids.prices[candidates] * demands)
        won: dict[int, float] = {}
        remaining = capacity
        epsilon = capacity * RELATIVE_EPSILON
        draws = 0
        uniforms: list[float] = []
        while remaining > epsilon and tree.total > 0:
            if not uniforms:
                uniforms = rng.random(UNIFORMS_PER_BATCH).tolist()
                uniforms.reverse()
            index = tree.draw(uniforms.pop())
            demand = float(demands[index])
            have = won.get(index, 0.0)
            lacking = demand - have
            amount = min(self.quantum, remaining, lacking)
            won[index] = have + amount
            remaining -= amount
            draws += 1
            if lacking - amount <= demand * RELATIVE_EPSILON:
                tree.update(index, 0.0)  # filled: it leaves the draw
        local = np.fromiter(won.keys(), dtype=np.intp, count=len(won))
        cores = np.fromiter(won.values(), dtype=np.float64, count=len(won))
        return self._result(
            bids, capacity, reserve, share.price, candidates[local], cores,
            extra={"draws": draws, "quantum": self.quantum},
        )  # fmt: skip
