"""Calibrate the verifier's tolerances on honest runs (`python -m maxwell.proof.calibration`).

An honest prover's activations differ from exact arithmetic only by float32 rounding, and how much
depends on the summation order its BLAS picked (thread count, blocking, transposition). This
runs random MLPs under several honest orders (`HONEST_ORDERS`), verifies each run `REPEATS`
times (fresh vectors each time) with unbounded tolerances to collect every layer's normalised
discrepancy z (see `freivalds`, `elementwise`), and reports the largest z per kind of check and
the tolerance it implies: `CALIBRATION_MARGIN` (10x, after REFERENCE.md's Verification notes)
times the largest z, rounded up to two significant figures. `tolerance.py` records the figures
of the full sweep; a test reruns the quick sweep.

The models: per width w and token count t, X (t x w) standard normal, then
Gemm(w x w, bias) -> Relu -> Gemm(transB) -> Tanh -> MatMul -> Add(bias) -> Sigmoid ->
Gemm -> Softmax, weights normal with variance 1/w (so activations stay of order 1).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from maxwell.proof.bundle import Proof, make_proof
from maxwell.proof.graph import MATMUL_OPS, Model, Node, Tensor
from maxwell.proof.ops import MatMul
from maxwell.proof.runtime import blas_matmul, output_of, run
from maxwell.proof.tolerance import CALIBRATION_MARGIN, Tolerance
from maxwell.proof.verifier import DEFAULT_ROUNDS, make_key, verify

FULL_WIDTHS = (16, 64, 256, 1024, 4096)
QUICK_WIDTHS = (16, 64, 256)
TOKENS = (1, 7, 32, 64)
REPEATS = 4  # verifications of each run, each with fresh secret vectors
SEED = 20_240_605


def _with_vectors_promoted(product: MatMul) -> MatMul:
    """`product` for 2-D-and-up operands, extended to numpy's 1-D rules (row A, column B)."""

    def promoted(a: Tensor, b: Tensor) -> Tensor:
        result = product(
            a[np.newaxis, :] if a.ndim == 1 else a, b[:, np.newaxis] if b.ndim == 1 else b
        )
        if b.ndim == 1:
            result = result[..., 0]
        if a.ndim == 1:
            result = result[..., 0, :] if b.ndim > 1 else result[..., 0]
        return np.ascontiguousarray(result, dtype=np.float32)

    return promoted


@_with_vectors_promoted
def transposed_matmul(a: Tensor, b: Tensor) -> Tensor:
    """(B^T A^T)^T: the same products, summed by a BLAS call with the roles swapped."""
    return np.swapaxes(np.matmul(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2)), -1, -2)


def blocked_matmul(block: int) -> MatMul:
    """Float32 accumulation of K-blocks of `block`: a BLAS with a different blocking."""

    @_with_vectors_promoted
    def product(a: Tensor, b: Tensor) -> Tensor:
        depth = a.shape[-1]
        total = np.matmul(a[..., :, :block], b[..., :block, :])
        for start in range(block, depth, block):
            total += np.matmul(a[..., :, start : start + block], b[..., start : start + block, :])
        return np.asarray(total, dtype=np.float32)

    return product


HONEST_ORDERS: Mapping[str, MatMul] = {
    "blas": blas_matmul,
    "transposed": transposed_matmul,
    "blocked64": blocked_matmul(64),
    "blocked256": blocked_matmul(256),
}


def calibration_mlp(width: int, rng: np.random.Generator) -> Model:
    """The calibration model of the module docstring, at one width."""

    def weight(rows: int, columns: int) -> Tensor:
        return (rng.standard_normal((rows, columns)) / math.sqrt(rows)).astype(np.float32)

    def vector(size: int) -> Tensor:
        return rng.standard_normal(size).astype(np.float32)

    initializers = {
        "w1": weight(width, width),
        "b1": vector(width),
        "w2": weight(width, width),
        "w3": weight(width, width),
        "b3": vector(width),
        "w4": weight(width, width),
    }
    layers: list[tuple[str, str, tuple[str, ...], dict[str, int | float]]] = [
        ("fc1", "Gemm", ("x", "w1", "b1"), {}),
        ("relu", "Relu", ("h1",), {}),
        ("fc2", "Gemm", ("h2", "w2"), {"transB": 1}),
        ("tanh", "Tanh", ("h3",), {}),
        ("fc3", "MatMul", ("h4", "w3"), {}),
        ("bias", "Add", ("h5", "b3"), {}),
        ("sigmoid", "Sigmoid", ("h6",), {}),
        ("fc4", "Gemm", ("h7", "w4"), {"alpha": 0.5}),
        ("prob", "Softmax", ("h8",), {}),
    ]
    nodes = tuple(
        Node(index, name, op, inputs, f"h{index}", attributes)
        for index, (name, op, inputs, attributes) in enumerate(layers, start=1)
    )
    return Model(
        sha256="0" * 64,
        input_name="x",
        output_name=nodes[-1].output,
        nodes=nodes,
        initializers=initializers,
        opset=17,
    )


@dataclass(frozen=True)
class CalibrationReport:
    largest_freivalds_z: float
    largest_elementwise_z: float
    # the largest |float32 z - float64 z| of a matmul layer (same vectors), by width: the
    # verifier's own float32 rounding (`tolerance.screen_gap_bound`)
    screen_gap_by_width: Mapping[int, float]
    by_order: Mapping[str, tuple[float, float]]
    runs: int
    verifications: int
    widths: tuple[int, ...]

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(
            freivalds=round_up(CALIBRATION_MARGIN * self.largest_freivalds_z),
            elementwise=round_up(CALIBRATION_MARGIN * self.largest_elementwise_z),
        )

    def as_json(self) -> dict[str, object]:
        return {
            "largest_freivalds_z": round(self.largest_freivalds_z, 3),
            "largest_elementwise_z": round(self.largest_elementwise_z, 3),
            "screen_gap_by_width": {
                str(width): round(gap, 3) for width, gap in self.screen_gap_by_width.items()
            },
            "margin": CALIBRATION_MARGIN,
            "tolerance": self.tolerance.as_json(),
            "by_order": {
                order: {"freivalds_z": round(f, 3), "elementwise_z": round(e, 3)}
                for order, (f, e) in self.by_order.items()
            },
            "runs": self.runs,
            "verifications": self.verifications,
            "widths": list(self.widths),
        }


def round_up(value: float, figures: int = 2) -> float:
    """`value` rounded up to `figures` significant figures (187.3 -> 190)."""
    if value <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(value)) - figures + 1)
    return float(math.ceil(value / step) * step)


def calibrate(
    *,
    widths: Sequence[int] = FULL_WIDTHS,
    tokens: Sequence[int] = TOKENS,
    orders: Mapping[str, MatMul] = HONEST_ORDERS,
    rounds: int = DEFAULT_ROUNDS,
    repeats: int = REPEATS,
    seed: int = SEED,
) -> CalibrationReport:
    """Largest honest z per kind of check, over every width, token count and order."""
    # Two streams: the honest runs do not change when the verifier's vectors do.
    rng, vectors = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    by_order = {order: (0.0, 0.0) for order in orders}
    screen_gaps = dict.fromkeys(widths, 0.0)
    runs = 0
    for width in widths:
        model = calibration_mlp(width, rng)
        for count in tokens:
            x = rng.standard_normal((count, width)).astype(np.float32)
            for order, matmul in orders.items():
                activations = run(model, x, matmul=matmul)
                proof = make_proof(model, activations)
                runs += 1
                freivalds, elementwise = by_order[order]
                for _ in range(repeats):
                    found = _honest_z(model, x, proof, vectors, rounds)
                    freivalds = max(freivalds, found[0])
                    elementwise = max(elementwise, found[1])
                    screen_gaps[width] = max(screen_gaps[width], found[2])
                by_order[order] = (freivalds, elementwise)
    return CalibrationReport(
        largest_freivalds_z=max(f for f, _ in by_order.values()),
        largest_elementwise_z=max(e for _, e in by_order.values()),
        screen_gap_by_width=screen_gaps,
        by_order=by_order,
        runs=runs,
        verifications=runs * repeats,
        widths=tuple(widths),
    )


EXACT = Tolerance(freivalds=math.inf, elementwise=math.inf, screen=0.0)  # every z in float64
SCREENED = Tolerance(freivalds=math.inf, elementwise=math.inf, screen=math.inf)  # in float32


def _honest_z(
    model: Model, x: Tensor, proof: Proof, rng: np.random.Generator, rounds: int
) -> tuple[float, float, float]:
    """One verification with fresh vectors: the largest Freivalds z and elementwise z (float64),
    and the largest gap between a matmul layer's float32 z and its float64 z (same vectors)."""
    key = make_key(model, rounds, rng)
    y = output_of(model, list(proof.activations))
    exact = verify(model, x, y, proof, rng=rng, key=key, tolerance=EXACT).statistics
    screened = verify(model, x, y, proof, rng=rng, key=key, tolerance=SCREENED).statistics
    matmuls = [node.index for node in model.nodes if node.op_type in MATMUL_OPS]
    others = [node.index for node in model.nodes if node.op_type not in MATMUL_OPS]
    return (
        max(exact[index] for index in matmuls),
        max(exact[index] for index in others),
        max(abs(screened[index] - exact[index]) for index in matmuls),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maxwell.proof.calibration",
        description="Calibrate the proof verifier's tolerances on honest runs; print JSON.",
    )
    parser.add_argument("--quick", action="store_true", help=f"widths {QUICK_WIDTHS} only")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of models and inputs")
    args = parser.parse_args(argv)
    report = calibrate(widths=QUICK_WIDTHS if args.quick else FULL_WIDTHS, seed=args.seed)
    print(json.dumps(report.as_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
