"""What each operator computes, written once for any float dtype. Pure.

The runtime calls these on float32 arrays (what a model runs in); the verifier calls the
elementwise ones on float64 copies of the committed activations to get a reference that is exact
to well below float32's rounding. Matrix products go through an injected `MatMul`, so a test or a
calibration run can change the summation order (or cheat) without touching the layer logic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from maxwell.proof.graph import Node

Array = NDArray[np.floating]
MatMul = Callable[[NDArray[np.float32], NDArray[np.float32]], NDArray[np.float32]]


class ShapeError(ValueError):
    """A layer was given tensors of shapes it cannot take."""


def gemm_operands(node: Node, a: Array, b: Array) -> tuple[Array, Array]:
    """Gemm's A' and B' (transposed as `transA`/`transB` say); both must be 2-D."""
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"Gemm takes 2-D A and B, not shapes {a.shape} and {b.shape}")
    a_eff = a.T if node.int_attribute("transA", 0) else a
    b_eff = b.T if node.int_attribute("transB", 0) else b
    if a_eff.shape[1] != b_eff.shape[0]:
        raise ShapeError(f"Gemm cannot multiply {a_eff.shape} by {b_eff.shape}")
    return a_eff, b_eff


def gemm(node: Node, inputs: list[NDArray[np.float32]], matmul: MatMul) -> NDArray[np.float32]:
    """Y = alpha A' B' + beta C, in float32."""
    a_eff, b_eff = gemm_operands(node, inputs[0], inputs[1])
    product = matmul(a_eff, b_eff)
    alpha = node.float_attribute("alpha", 1.0)
    if alpha != 1.0:
        product = product * np.float32(alpha)
    if len(inputs) == 3:
        beta = node.float_attribute("beta", 1.0)
        bias = inputs[2] if beta == 1.0 else inputs[2] * np.float32(beta)
        if np.broadcast_shapes(bias.shape, product.shape) != product.shape:
            raise ShapeError(f"Gemm's C {inputs[2].shape} does not broadcast to {product.shape}")
        product = product + bias
    return np.asarray(product, dtype=np.float32)


def relu(x: Array) -> Array:
    return np.maximum(x, x.dtype.type(0))


def sigmoid(x: Array) -> Array:
    """1 / (1 + e^-x) without overflow: e^-|x| is at most 1."""
    decay = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + decay), decay / (one + decay))


def tanh(x: Array) -> Array:
    return np.tanh(x)


def softmax_axis(node: Node, opset: int, ndim: int) -> int:
    """The axis Softmax normalises over (opset < 13: everything from `axis` on, flattened)."""
    axis = node.int_attribute("axis", -1 if opset >= 13 else 1)
    if not -ndim <= axis < ndim:
        raise ShapeError(f"Softmax axis {axis} is out of range for a {ndim}-D tensor")
    return axis % ndim


def softmax_rows(x: Array, node: Node, opset: int) -> tuple[Array, tuple[int, ...]]:
    """The tensor as rows that Softmax normalises (last axis), and the shape to restore."""
    axis = softmax_axis(node, opset, x.ndim)
    if opset >= 13:
        return np.moveaxis(x, axis, -1), x.shape
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1), x.shape


def softmax(x: Array, node: Node, opset: int) -> Array:
    rows, shape = softmax_rows(x, node, opset)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    result = exps / exps.sum(axis=-1, keepdims=True)
    return _restore_softmax(result, node, opset, shape)


def _restore_softmax(rows: Array, node: Node, opset: int, shape: tuple[int, ...]) -> Array:
    if opset >= 13:
        return np.moveaxis(rows, -1, softmax_axis(node, opset, len(shape)))
    return rows.reshape(shape)


def softmax_shift(x: Array, node: Node, opset: int) -> Array:
    """|x - max| over the Softmax rows, in x's shape: how far each exponent's argument is."""
    rows, shape = softmax_rows(x, node, opset)
    gaps = np.abs(rows - rows.max(axis=-1, keepdims=True))
    return _restore_softmax(gaps, node, opset, shape)


def flatten(x: Array, node: Node) -> Array:
    axis = node.int_attribute("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ShapeError(f"Flatten axis {axis} is out of range for a {x.ndim}-D tensor")
    axis = axis % x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(outer, int(np.prod(x.shape[axis:], dtype=np.int64)))


def add(a: Array, b: Array) -> Array:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError as exc:
        raise ShapeError(f"Add cannot broadcast {a.shape} with {b.shape}") from exc
    return a + b


def elementwise(node: Node, inputs: list[Array], opset: int) -> Array:
    """Apply a non-matmul layer in its inputs' dtype."""
    op = node.op_type
    if op == "Add":
        return add(inputs[0], inputs[1])
    if op == "Relu":
        return relu(inputs[0])
    if op == "Sigmoid":
        return sigmoid(inputs[0])
    if op == "Tanh":
        return tanh(inputs[0])
    if op == "Softmax":
        return softmax(inputs[0], node, opset)
    if op == "Flatten":
        return flatten(inputs[0], node)
    raise ShapeError(f"{op} is not an elementwise layer")  # the graph admits no other
