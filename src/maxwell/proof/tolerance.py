"""The tolerances a verifier applies, and where their values come from.

Both bound normalised discrepancies, z, in multiples of float32's rounding at that point:

- `FREIVALDS_TOLERANCE` bounds z of a matmul layer (see `freivalds`): |Y r - A (B r)| per row
  and round, over u ||Y_i|| rms(r) (u = 2^-24).
- `ELEMENTWISE_TOLERANCE` bounds z of a recomputed layer (see `elementwise`): |y - f(x)| per
  element over u times the operator's scale (|f(x)| for Sigmoid and Tanh, |a| + |b| for Add,
  f(x) (1 + |x - max|) for Softmax; 0 for Relu and Flatten, which must be exact).

Worst-case rounding bounds (gamma_K = K u per inner product) were too loose to catch tampering
(REFERENCE.md, Verification), so the tolerances are calibrated instead: 10x the largest z of
honest runs, rounded up to two significant figures. `python -m maxwell.proof.calibration` reruns
the sweep (`calibration.calibrate`): random MLPs (Gemm, Relu, Gemm transB, Tanh, MatMul, Add,
Sigmoid, Gemm alpha, Softmax) at widths 16, 64, 256, 1024 and 4096 with 1, 7, 32 and 64 tokens,
each run under four honest summation orders (numpy's BLAS; the transposed product; float32
accumulation over K-blocks of 64 and of 256), each verified 4 times with fresh vectors: 80 runs,
320 verifications. Measured on 2 cores with OpenBLAS 0.3.31 (numpy 2.4):

- largest honest Freivalds z: 30.6 with 8 rounds of +-1 vectors (numpy's BLAS, width 4096), 25.2
  with today's 4 rounds of {-2, -1, 1, 2}; it grows slowly with the width (about 5 at 16, 20 at
  256, 25-30 at 1024-4096). The tolerance keeps the larger: 310.
- largest honest elementwise z: 3.85 (Sigmoid; Add stays below 1, Relu and Flatten at 0).
  Tolerance 39.

What the tolerance costs: a single changed element of a matmul output is always flagged when it
moves by more than `FREIVALDS_TOLERANCE` u ||Y_i|| rms(r) = 310 x 1.58 u sqrt(N) rms(Y_i): 1.9e-3
of the row's rms at N = 4096, 9.3e-4 at N = 1024 (smaller changes are within what honest
rounding can do to one Freivalds projection). Elementwise layers are held to 39 u relative:
about 2.3e-6. Runtimes whose transcendental functions are approximations (onnxruntime's Sigmoid
is off by up to ~5e-6 relative) fall outside the elementwise tolerance; its matrix products fall
inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

CALIBRATION_MARGIN: Final = 10.0

HONEST_FREIVALDS_Z: Final = 30.6
HONEST_ELEMENTWISE_Z: Final = 3.85
FREIVALDS_TOLERANCE: Final = 310.0
ELEMENTWISE_TOLERANCE: Final = 39.0


# The float32 screen (see `freivalds`): the verifier's own float32 rounding moves z by at most
# SCREEN_GAP_OFFSET + SCREEN_GAP_PER_ROOT_WIDTH sqrt(N) (a sum of N roundings of random sign
# grows as sqrt(N)), an envelope of the calibration's largest gaps by width (two sweeps: 11-15 at
# 16, 6-10 at 64, 8-9 at 256, 13 at 1024, 28-36 at 4096). A float32 z is trusted at or below the
# tolerance less SCREEN_MARGIN such bounds, and at most SCREEN_FRACTION of the tolerance: 135 at
# width 4096, 20 at 16,384; past about 19,000 none is, and every layer is checked in float64.
SCREEN_GAP_OFFSET: Final = 20.0
SCREEN_GAP_PER_ROOT_WIDTH: Final = 0.6
SCREEN_MARGIN: Final = 3.0
SCREEN_FRACTION: Final = 0.5


def screen_gap_bound(width: int) -> float:
    """The most the verifier's float32 rounding moves z of a layer `width` wide (calibrated)."""
    return SCREEN_GAP_OFFSET + SCREEN_GAP_PER_ROOT_WIDTH * math.sqrt(width)


@dataclass(frozen=True)
class Tolerance:
    """The bounds on z, and `screen`: the float32 z at or below which a matmul layer is not
    checked again in float64 (None: the default rule, `freivalds_screen`; 0: always float64)."""

    freivalds: float = FREIVALDS_TOLERANCE
    elementwise: float = ELEMENTWISE_TOLERANCE
    screen: float | None = None

    def freivalds_screen(self, width: int) -> float:
        """The screen for a matmul layer whose sums run over `width` terms."""
        if self.screen is not None:
            return self.screen
        if not math.isfinite(self.freivalds):
            return 0.0
        trusted = self.freivalds - SCREEN_MARGIN * screen_gap_bound(width)
        return max(0.0, min(SCREEN_FRACTION * self.freivalds, trusted))

    def as_json(self) -> dict[str, float]:
        """The bounds; `screen` is the float32 screen of a layer 4,096 wide."""
        return {
            "freivalds": self.freivalds,
            "elementwise": self.elementwise,
            "screen": self.freivalds_screen(4096),
        }


DEFAULT_TOLERANCE: Final = Tolerance()
