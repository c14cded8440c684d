"""Small ONNX models for the proof tests, built with `onnx.helper` (no binary fixtures).

The other `test_proof_*` modules import the builders from here; the tests below only pin that
each builder makes a model onnx's own checker accepts and Maxwell's loader reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from maxwell.proof.graph import Model, model_from_bytes

F32 = NDArray[np.float32]
OPSET = 17


def weight(rng: np.random.Generator, *shape: int) -> F32:
    return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def make_onnx(
    nodes: Sequence[onnx.NodeProto],
    initializers: dict[str, F32],
    input_shape: Sequence[int | str],
    output_shape: Sequence[int | str],
    opset: int = OPSET,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "proof-test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))],
        [numpy_helper.from_array(array, name) for name, array in initializers.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8  # readable by every onnxruntime we support
    return proto


def mlp_gemm(rng: np.random.Generator, d_in: int, hidden: int, d_out: int) -> onnx.ModelProto:
    """Gemm + Relu + Gemm (transB) + Softmax: the classic classifier head."""
    init = {
        "w1": weight(rng, d_in, hidden),
        "b1": rng.standard_normal(hidden).astype(np.float32),
        "w2": weight(rng, d_out, hidden),  # stored transposed: transB=1
        "b2": rng.standard_normal(d_out).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], name="fc2", transB=1),
        helper.make_node("Softmax", ["h2"], ["y"], name="prob", axis=-1),
    ]
    return make_onnx(nodes, init, ["n", d_in], ["n", d_out])


def mlp_matmul(rng: np.random.Generator, d_in: int, hidden: int, d_out: int) -> onnx.ModelProto:
    """MatMul + Add + Tanh + MatMul + Add + Sigmoid."""
    init = {
        "w1": weight(rng, d_in, hidden),
        "b1": rng.standard_normal(hidden).astype(np.float32),
        "w2": weight(rng, hidden, d_out),
        "b2": rng.standard_normal(d_out).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b1"], ["s1"], name="add1"),
        helper.make_node("Tanh", ["s1"], ["t1"], name="tanh1"),
        helper.make_node("MatMul", ["t1", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "b2"], ["s2"], name="add2"),
        helper.make_node("Sigmoid", ["s2"], ["y"], name="sigmoid"),
    ]
    return make_onnx(nodes, init, ["n", d_in], ["n", d_out])


def flatten_net(rng: np.random.Generator, channels: int, side: int, d_out: int) -> onnx.ModelProto:
    """Flatten an image-shaped input (N, C, H, W), then Gemm (alpha, beta) + Relu + Gemm."""
    features = channels * side * side
    init = {
        "w1": weight(rng, features, 24),
        "b1": rng.standard_normal((1, 24)).astype(np.float32),
        "w2": weight(rng, 24, d_out),
    }
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h1"], name="fc1", alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2"], ["y"], name="fc2"),
    ]
    return make_onnx(nodes, init, ["n", channels, side, side], ["n", d_out])


def tanh_net(rng: np.random.Generator, d_in: int, hidden: int) -> onnx.ModelProto:
    """Gemm + Tanh + MatMul + Add + Relu + Softmax (no Sigmoid: onnxruntime's is approximate)."""
    init = {
        "w1": weight(rng, d_in, hidden),
        "w2": weight(rng, hidden, hidden),
        "b2": rng.standard_normal(hidden).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Tanh", ["h1"], ["t1"], name="tanh"),
        helper.make_node("MatMul", ["t1", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "b2"], ["s2"], name="add2"),
        helper.make_node("Relu", ["s2"], ["r2"], name="relu2"),
        helper.make_node("Softmax", ["r2"], ["y"], name="prob"),
    ]
    return make_onnx(nodes, init, ["n", d_in], ["n", hidden])


def batched_self_product(rng: np.random.Generator, batch: int, side: int) -> onnx.ModelProto:
    """MatMul of X with itself (B is an activation, batched), Tanh, then MatMul by a vector."""
    init = {"v": rng.standard_normal(side).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["x", "x"], ["p"], name="square"),
        helper.make_node("Tanh", ["p"], ["t"], name="tanh"),
        helper.make_node("MatMul", ["t", "v"], ["y"], name="project"),
    ]
    return make_onnx(nodes, init, [batch, side, side], [batch, side])


Builder = Callable[[np.random.Generator], tuple[onnx.ModelProto, tuple[int, ...]]]
# name -> (model, input shape): the zoo the differential and verification tests run over.
ZOO: dict[str, Builder] = {
    "gemm_mlp_small": lambda rng: (mlp_gemm(rng, 8, 16, 4), (3, 8)),
    "gemm_mlp_wide": lambda rng: (mlp_gemm(rng, 64, 128, 10), (32, 64)),
    "gemm_mlp_one_token": lambda rng: (mlp_gemm(rng, 20, 7, 5), (1, 20)),
    "matmul_tanh_sigmoid": lambda rng: (mlp_matmul(rng, 12, 32, 6), (5, 12)),
    "matmul_tanh_sigmoid_wide": lambda rng: (mlp_matmul(rng, 96, 64, 16), (16, 96)),
    "flatten": lambda rng: (flatten_net(rng, 3, 4, 5), (4, 3, 4, 4)),
    "tanh_softmax": lambda rng: (tanh_net(rng, 10, 20), (6, 10)),
    "batched_self_product": lambda rng: (batched_self_product(rng, 3, 6), (3, 6, 6)),
}


def build(name: str, seed: int = 0) -> tuple[onnx.ModelProto, Model, F32]:
    """The zoo model `name`, as ONNX and as Maxwell's `Model`, with an input for it."""
    rng = np.random.default_rng(seed)
    proto, shape = ZOO[name](rng)
    x = rng.standard_normal(shape).astype(np.float32)
    return proto, model_from_bytes(proto.SerializeToString()), x


def save(proto: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(proto.SerializeToString())
    return path


def onnxruntime_activations(proto: onnx.ModelProto, model: Model, x: F32) -> list[F32]:
    """Every activation as onnxruntime computes it (each layer's output made a graph output)."""
    ort = pytest.importorskip("onnxruntime")
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    known = {output.name for output in exposed.graph.output}
    for node in model.nodes:
        if node.output not in known:
            exposed.graph.output.append(
                helper.make_tensor_value_info(node.output, TensorProto.FLOAT, None)
            )
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = dict(zip(names, session.run(None, {"x": x}), strict=True))
    return [x, *(np.asarray(values[node.output], dtype=np.float32) for node in model.nodes)]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_is_valid_onnx_and_loads(name: str) -> None:
    proto, model, _ = build(name)
    onnx.checker.check_model(proto, full_check=True)
    assert len(model.nodes) == len(proto.graph.node)
    assert model.input_name == "x" and model.output_name == "y"
    assert [node.index for node in model.nodes] == list(range(1, len(model.nodes) + 1))
