"""Maxwell's own numpy runtime: run a float32 model and keep every layer's activation. Pure.

`run` returns the activations in leaf order: X first, then each layer's output in execution order,
which is exactly what a proof commits to. The matrix product is injected (`matmul`): the default
is numpy's (BLAS); tests and the calibration pass other summation orders, and the tamper tests
pass dishonest ones (fp16 arithmetic), without a second copy of the layer logic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from maxwell.proof.errors import InputShapeError
from maxwell.proof.graph import Model, Tensor
from maxwell.proof.ops import MatMul, ShapeError, elementwise, gemm


def blas_matmul(a: Tensor, b: Tensor) -> Tensor:
    return np.asarray(np.matmul(a, b), dtype=np.float32)


def run(model: Model, x: Tensor, *, matmul: MatMul = blas_matmul) -> list[Tensor]:
    """Every activation of `model` on input `x`, X first; the last layer's output is last.

    Raises `InputShapeError` (naming the layer) when a layer cannot take the shapes it gets.
    """
    if x.dtype != np.float32:
        raise InputShapeError(f"the input is {x.dtype}; the model takes float32")
    tensors: dict[str, NDArray[np.float32]] = {model.input_name: x, **model.initializers}
    activations: list[Tensor] = [x]
    for node in model.nodes:
        inputs = [tensors[name] for name in node.inputs]
        try:
            if node.op_type == "Gemm":
                output = gemm(node, inputs, matmul)
            elif node.op_type == "MatMul":
                output = np.asarray(matmul(inputs[0], inputs[1]), dtype=np.float32)
            else:
                output = np.asarray(elementwise(node, list(inputs), model.opset), np.float32)
        except (ShapeError, ValueError) as exc:
            shapes = ", ".join(str(array.shape) for array in inputs)
            raise InputShapeError(
                f"{node.label()} cannot take inputs of shapes {shapes}: {exc}"
            ) from exc
        tensors[node.output] = output
        activations.append(output)
    return activations


def output_of(model: Model, activations: list[Tensor]) -> Tensor:
    """The graph output among `run`'s activations."""
    return activations[model.output_layer.index]
