"""The tolerances a verifier applies, and where their values come from.

Both bound normalised discrepancies, z, in multiples of float32's rounding at that point:

- `FREIVALDS_TOLERANCE` bounds z of a matmul layer (see `freivalds`): |Y r - A (B r)| per row
  and round, over u ||Y_i|| (u = 2^-24).
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
320 verifications, 8 rounds each. Measured on 2 cores with OpenBLAS 0.3.31 (numpy 2.4):

- largest honest Freivalds z: 30.6 (numpy's BLAS, width 4096); it grows slowly with the width
  (about 5 at 16, 20 at 256, 25-30 at 1024-4096). Tolerance 310.
- largest honest elementwise z: 3.85 (Sigmoid; Add stays below 1, Relu and Flatten at 0).
  Tolerance 39.

What the tolerance costs: a single changed element of a matmul output is flagged when it moves by
more than about `FREIVALDS_TOLERANCE` u ||Y_i|| = 310 u sqrt(N) rms(Y_i): 1.2e-3 of the row's rms
at N = 4096, 5.9e-4 at N = 1024 (smaller changes are within what honest rounding can do to one
Freivalds projection). Elementwise layers are held to 39 u relative: about 2.3e-6.
Runtimes whose transcendental functions are approximations (onnxruntime's Sigmoid is off by up
to ~5e-6 relative) fall outside the elementwise tolerance; its matrix products fall inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CALIBRATION_MARGIN: Final = 10.0

HONEST_FREIVALDS_Z: Final = 30.6
HONEST_ELEMENTWISE_Z: Final = 3.85
FREIVALDS_TOLERANCE: Final = 310.0
ELEMENTWISE_TOLERANCE: Final = 39.0


@dataclass(frozen=True)
class Tolerance:
    freivalds: float = FREIVALDS_TOLERANCE
    elementwise: float = ELEMENTWISE_TOLERANCE

    def as_json(self) -> dict[str, float]:
        return {"freivalds": self.freivalds, "elementwise": self.elementwise}


DEFAULT_TOLERANCE: Final = Tolerance()
