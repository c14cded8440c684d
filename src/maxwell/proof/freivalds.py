"""Freivalds' check of a matrix product, with a tolerance for float32 rounding. Pure.

To check Y = A B without recomputing it, draw a secret random vector r and compare Y r with
A (B r): O(MN + MK) work against O(MKN) for the product. The entries of r are drawn uniformly from
`ALPHABET`, {-2, -1, 1, 2}: for a nonzero error e, fixing every entry of r but one where e_j != 0
leaves at most one of the four values with e.r = 0, so a wrong Y passes one round with
probability at most 1/4 in exact arithmetic, and k independent rounds leave at most 4^-k per layer
(the default 4 rounds: 2^-8, as 8 rounds of +-1 signs did, at half the cost). Under a tolerance T
on |e.r|: one changed element j moves (Y r)_i by |delta r_j| >= |delta|, so it is always caught
above T (a sign vector's floor is T / 1.58, its entries all as large as their rms; here the noise
scales with the rms, sqrt(2.5) = 1.58, while the smallest entry is 1), and an error with an
element above 2 T passes a round with probability at most 1/4 (the four values e_j r_j lie at
least |e_j| apart).

Float32 runs differ from exact products by rounding, so each row i and round is judged by

    z = |(Y r)_i - (alpha A' (B' r) + beta C r)_i| / (u (||Y_i|| + ||beta C_i||) + tiny sqrt(N))

(u = 2^-24, float32's unit roundoff; norms over the row's N outputs). The honest rounding error
of (Y r)_i is a sum of N per-element errors of size ~u |y_ij| |r_j| with random signs, so its
scale is u ||Y_i|| rms(r); z divides by rms(r) too (in the formula above r is scaled to rms 1), and
`tolerance.FREIVALDS_TOLERANCE` bounds z. All the secret products (B' r for a weight
B) can be made once per model and secret r (`SecretProjection`); the check itself is then
O(MN + MK) (`maxwell bench proof` measures it against recomputing).

The verifier's own arithmetic: z is first computed in float32, which reads Y and A once at BLAS
speed but adds the verifier's own rounding, a sum of N roundings of random sign, of the size of
the honest noise (`tolerance.screen_gap_bound`: 58 at N = 4096, where 36 is the most measured).
Where that quick z is at most the screen (`Tolerance.freivalds_screen`: the tolerance less three
such bounds, at most half the tolerance; 135 at N = 4096, where honest layers stay below 70) it is
the answer; above it, the layer is checked again in float64, whose rounding is far below the
honest noise, and that z is the answer. A verdict is therefore the float64 check's unless the
verifier's float32 rounding is three times its bound, and honest layers, the common case, cost the
float32 check alone. The room shrinks as N grows (20 at N = 16,384, where honest layers are
checked again); past N = 19,000 or so every layer is checked in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
from numpy.typing import NDArray

UNIT_ROUNDOFF: Final = 2.0**-24  # float32
TINY: Final = float(np.finfo(np.float32).tiny)

Float64 = NDArray[np.float64]
Float32 = NDArray[np.float32]


ALPHABET: Final = (-2.0, -1.0, 1.0, 2.0)
ALPHABET_RMS: Final = float(np.sqrt(np.mean(np.square(ALPHABET))))  # 1.58
ALPHABET_SMALLEST: Final = 1.0


def draw_vectors(rng: np.random.Generator, width: int, rounds: int) -> Float64:
    """`rounds` secret vectors with entries drawn from `ALPHABET`, as the columns of a
    (width, rounds) matrix."""
    return np.asarray(ALPHABET)[rng.integers(0, len(ALPHABET), size=(width, rounds))]


@dataclass(frozen=True)
class BiasTerms:
    """beta C r and ||beta C_i||, each broadcastable against the (..., M, k) projections."""

    projection: Float64
    row_norms: Float64


def bias_terms(bias: NDArray[np.floating], beta: float, width: int, vectors: Float64) -> BiasTerms:
    """The bias's share of a Gemm check. A bias constant along rows costs O(N k), once."""
    scaled = np.asarray(bias, dtype=np.float64) * beta
    if scaled.ndim <= 1 or scaled.shape[0] == 1:
        row = np.broadcast_to(scaled.reshape(-1) if scaled.ndim else scaled, (width,))
        return BiasTerms(
            projection=(row @ vectors)[np.newaxis, :],
            row_norms=np.array([[float(np.sqrt(row @ row))]]),
        )
    full = np.broadcast_to(scaled, (scaled.shape[0], width))
    return BiasTerms(
        projection=full @ vectors,
        row_norms=np.sqrt(np.linalg.vecdot(full, full))[:, np.newaxis],
    )


@dataclass(frozen=True)
class SecretProjection:
    """A matmul layer's secret: its vectors r and, for a weight B', the product B' r."""

    vectors: Float64
    weight_projection: Float64
    bias: BiasTerms | None

    @cached_property
    def vectors32(self) -> tuple[Float32, ...]:
        return _column_blocks(self.vectors)  # exact: small integers

    @cached_property
    def noise_scale(self) -> Float64:
        """rms(r) of each round: what the honest noise of (Y r)_i is scaled by."""
        return np.asarray(np.sqrt(np.mean(np.square(self.vectors), axis=0)), dtype=np.float64)

    @cached_property
    def weight_projection32(self) -> tuple[Float32, ...]:
        return _column_blocks(self.weight_projection)


# OpenBLAS's sgemm multiplies a (32, 4096) Y by 8 columns at once 1.5-2x slower than by two
# blocks of 4 in column-major order (measured on this machine, `maxwell bench proof`), so the
# float32 check goes by blocks of this many rounds.
ROUNDS_PER_BLOCK: Final = 4


def _column_blocks(matrix: Float64) -> tuple[Float32, ...]:
    """`matrix` (..., K, k) in float32, cut into column-major blocks of `ROUNDS_PER_BLOCK`."""
    return tuple(
        np.asfortranarray(matrix[..., start : start + ROUNDS_PER_BLOCK], dtype=np.float32)
        for start in range(0, max(matrix.shape[-1], 1), ROUNDS_PER_BLOCK)
    )


def _blockwise(left: Float32, blocks: tuple[Float32, ...]) -> Float32:
    products = [np.matmul(left, block) for block in blocks]
    return products[0] if len(products) == 1 else np.concatenate(products, axis=-1)


def project_weight(weight: NDArray[np.floating], vectors: Float64) -> Float64:
    """B' r for every round at once: (..., K, N) @ (N, k)."""
    return np.asarray(np.matmul(weight.astype(np.float64), vectors), dtype=np.float64)


def freivalds_statistic(
    y: NDArray[np.floating],
    a: NDArray[np.floating],
    secret: SecretProjection,
    *,
    alpha: float = 1.0,
    bias: BiasTerms | None = None,
    screen: float = 0.0,
) -> float:
    """The largest z (module docstring) over rows and rounds; inf if anything is not finite.

    `y` is (..., M, N), `a` is (..., M, K) and the secret's B' r is (..., K, k), with batch
    dimensions that broadcast as numpy's matmul does. `bias` (None: the secret's own) is added to
    A B'. With `screen` > 0 and float32 operands, z is computed in float32 first and returned if
    it is at most `screen`; otherwise (and with `screen` 0) it is computed in float64.
    """
    bias = bias if bias is not None else secret.bias
    if screen > 0 and y.dtype == np.float32 and a.dtype == np.float32:
        quick = _float32_statistic(y, a, secret, alpha, bias)
        if quick <= screen:
            return quick
    return _float64_statistic(y, a, secret, alpha, bias)


def _float32_statistic(
    y: Float32, a: Float32, secret: SecretProjection, alpha: float, bias: BiasTerms | None
) -> float:
    """z with float32 arithmetic; inf where any part overflowed (the float64 check then rules)."""
    with np.errstate(over="ignore", invalid="ignore"):
        projected = _blockwise(y, secret.vectors32)
        expected = _blockwise(a, secret.weight_projection32)
        if alpha != 1.0:
            expected *= np.float32(alpha)
        row_norms = np.sqrt(np.linalg.vecdot(y, y))[..., np.newaxis]
        if bias is not None:
            expected += bias.projection.astype(np.float32)
            row_norms = row_norms + bias.row_norms.astype(np.float32)
    if projected.shape != expected.shape or not np.isfinite(row_norms).all():
        return float("inf")
    tiny = np.float32(TINY * np.sqrt(y.shape[-1]))
    scale = (np.float32(UNIT_ROUNDOFF) * row_norms + tiny) * secret.noise_scale.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and nan are answered by float64
        return _largest(np.abs(projected - expected) / scale)


def _float64_statistic(
    y: NDArray[np.floating],
    a: NDArray[np.floating],
    secret: SecretProjection,
    alpha: float,
    bias: BiasTerms | None,
) -> float:
    y64 = y.astype(np.float64)
    projected = np.matmul(y64, secret.vectors)
    expected = np.matmul(a.astype(np.float64), secret.weight_projection)
    if alpha != 1.0:
        expected *= alpha
    row_norms = np.sqrt(np.linalg.vecdot(y64, y64))[..., np.newaxis]
    if bias is not None:
        expected += bias.projection
        row_norms = row_norms + bias.row_norms
    if projected.shape != expected.shape:
        return float("inf")
    scale = (UNIT_ROUNDOFF * row_norms + TINY * np.sqrt(y.shape[-1])) * secret.noise_scale
    return _largest(np.abs(projected - expected) / scale)


def _largest(z: NDArray[np.floating]) -> float:
    if z.size == 0:
        return 0.0
    largest = float(z.max())
    return largest if np.isfinite(largest) else float("inf")
