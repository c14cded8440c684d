"""Recheck of a cheap layer (Add, Relu, Sigmoid, Tanh, Softmax, Flatten). Pure.

These layers cost O(n), about what reading their activations costs, so the verifier recomputes
them in float64 from the committed inputs and compares element by element:

    z = |y - f(x)| / (u scale + tiny)

with u = 2^-24 and the operator's scale: the size a correctly rounded float32 result may be off
by, in units of u. Add: |a| + |b|. Sigmoid, Tanh: |f(x)|. Softmax: f(x) (1 + |x - max|), since
the exponent's argument x - max is itself rounded. Relu and Flatten: 0, so they must be exact
(but for numbers below float32's smallest normal, which some runtimes flush to zero).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from maxwell.proof import ops
from maxwell.proof.freivalds import TINY, UNIT_ROUNDOFF
from maxwell.proof.graph import Node


def expected_output(
    node: Node, inputs: list[NDArray[np.floating]], opset: int
) -> NDArray[np.float64]:
    """f(x) in float64 (raises `ops.ShapeError` if the inputs do not fit the layer)."""
    wide = [array.astype(np.float64) for array in inputs]
    return np.asarray(ops.elementwise(node, list(wide), opset), dtype=np.float64)


def rounding_scale(
    node: Node,
    inputs: list[NDArray[np.floating]],
    reference: NDArray[np.float64],
    opset: int,
) -> NDArray[np.float64] | float:
    op = node.op_type
    if op == "Add":
        return np.abs(inputs[0].astype(np.float64)) + np.abs(inputs[1].astype(np.float64))
    if op in ("Sigmoid", "Tanh"):
        return np.abs(reference)
    if op == "Softmax":
        shift = ops.softmax_shift(inputs[0].astype(np.float64), node, opset)
        return reference * (1.0 + shift)
    return 0.0


def elementwise_statistic(
    node: Node, inputs: list[NDArray[np.floating]], y: NDArray[np.floating], opset: int
) -> float:
    """The largest z over the layer's elements; inf if shapes differ or anything is not finite."""
    reference = expected_output(node, inputs, opset)
    if reference.shape != y.shape:
        return float("inf")
    scale = rounding_scale(node, inputs, reference, opset)
    z = np.abs(y.astype(np.float64) - reference) / (UNIT_ROUNDOFF * scale + TINY)
    if z.size == 0:
        return 0.0
    largest = float(z.max())
    return largest if np.isfinite(largest) else float("inf")
