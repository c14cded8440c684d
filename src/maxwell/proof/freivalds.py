"""Freivalds' check of a matrix product, with a tolerance for float32 rounding. Pure.

To check Y = A B without recomputing it, draw a secret random vector r of signs (+1 or -1) and
compare Y r with A (B r): O(MN + MK) work against O(MKN) for the product. In exact arithmetic a
wrong Y passes one round with probability at most 1/2 (for a nonzero error e, e.r = 0 for at most
half the sign vectors), so k independent rounds leave at most 2^-k per layer. Signs are the best
vectors under a tolerance too: a single changed element j moves (Y r)_i by exactly |delta|, never
less, because |r_j| = 1.

Float32 runs differ from exact products by rounding, so each row i and round is judged by

    z = |(Y r)_i - (alpha A' (B' r) + beta C r)_i| / (u (||Y_i|| + ||beta C_i||) + tiny sqrt(N))

(u = 2^-24, float32's unit roundoff; norms over the row's N outputs). The honest rounding error
of (Y r)_i is a sum of N per-element errors of size ~u |y_ij| with random signs, so its scale is
u ||Y_i||; `tolerance.FREIVALDS_TOLERANCE` bounds z. The verifier's own arithmetic is float64,
well below that noise. All the secret products (B' r for a weight B) can be made once per model
and secret r (`SecretProjection`); the check itself is then O(MN + MK) (`maxwell bench proof`
measures it against recomputing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

UNIT_ROUNDOFF: Final = 2.0**-24  # float32
TINY: Final = float(np.finfo(np.float32).tiny)

Float64 = NDArray[np.float64]


def draw_signs(rng: np.random.Generator, width: int, rounds: int) -> Float64:
    """`rounds` secret vectors of +1/-1, as the columns of a (width, rounds) matrix."""
    bits = rng.integers(0, 2, size=(width, rounds), dtype=np.int8)
    return (bits * 2 - 1).astype(np.float64)


@dataclass(frozen=True)
class BiasTerms:
    """beta C r and ||beta C_i||, each broadcastable against the (..., M, k) projections."""

    projection: Float64
    row_norms: Float64


def bias_terms(bias: NDArray[np.floating], beta: float, width: int, signs: Float64) -> BiasTerms:
    """The bias's share of a Gemm check. A bias constant along rows costs O(N k), once."""
    scaled = np.asarray(bias, dtype=np.float64) * beta
    if scaled.ndim <= 1 or scaled.shape[0] == 1:
        row = np.broadcast_to(scaled.reshape(-1) if scaled.ndim else scaled, (width,))
        return BiasTerms(
            projection=(row @ signs)[np.newaxis, :],
            row_norms=np.array([[float(np.sqrt(row @ row))]]),
        )
    full = np.broadcast_to(scaled, (scaled.shape[0], width))
    return BiasTerms(
        projection=full @ signs,
        row_norms=np.sqrt(np.linalg.vecdot(full, full))[:, np.newaxis],
    )


@dataclass(frozen=True)
class SecretProjection:
    """A matmul layer's secret: its sign vectors and, for a weight B', the product B' r."""

    signs: Float64
    weight_projection: Float64
    bias: BiasTerms | None


def project_weight(weight: NDArray[np.floating], signs: Float64) -> Float64:
    """B' r for every round at once: (..., K, N) @ (N, k)."""
    return np.asarray(np.matmul(weight.astype(np.float64), signs), dtype=np.float64)


def freivalds_statistic(
    y: NDArray[np.floating],
    a: NDArray[np.floating],
    weight_projection: Float64,
    signs: Float64,
    *,
    alpha: float = 1.0,
    bias: BiasTerms | None = None,
) -> float:
    """The largest z (module docstring) over rows and rounds; inf if anything is not finite.

    `y` is (..., M, N), `a` is (..., M, K) and `weight_projection` is B' r, (..., K, k), with
    batch dimensions that broadcast as numpy's matmul does.
    """
    y64 = y.astype(np.float64)
    projected = np.matmul(y64, signs)
    expected = np.matmul(a.astype(np.float64), weight_projection)
    if alpha != 1.0:
        expected *= alpha
    row_norms = np.sqrt(np.linalg.vecdot(y64, y64))[..., np.newaxis]
    if bias is not None:
        expected += bias.projection
        row_norms = row_norms + bias.row_norms
    if projected.shape != expected.shape:
        return float("inf")
    scale = UNIT_ROUNDOFF * row_norms + TINY * np.sqrt(y.shape[-1])
    z = np.abs(projected - expected) / scale
    if z.size == 0:
        return 0.0
    largest = float(z.max())
    return largest if np.isfinite(largest) else float("inf")
