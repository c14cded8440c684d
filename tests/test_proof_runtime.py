"""Maxwell's numpy runtime against onnxruntime, and the loader's refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from maxwell.proof.errors import InputShapeError, ModelFormatError, UnsupportedModelError
from maxwell.proof.graph import model_from_bytes
from maxwell.proof.runtime import output_of, run
from test_proof_models import ZOO, build, make_onnx, mlp_gemm, onnxruntime_activations, weight

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("seed", [0, 1])
def test_runtime_agrees_with_onnxruntime_on_every_layer(name: str, seed: int) -> None:
    proto, model, x = build(name, seed)
    ours = run(model, x)
    theirs = onnxruntime_activations(proto, model, x)
    assert len(ours) == len(theirs) == len(model.nodes) + 1
    for node, mine, reference in zip(model.nodes, ours[1:], theirs[1:], strict=True):
        assert mine.dtype == np.float32, node.label()
        assert mine.shape == reference.shape, node.label()
        np.testing.assert_allclose(mine, reference, rtol=1e-5, atol=1e-5, err_msg=node.label())
    assert output_of(model, ours) is ours[-1]


@pytest.mark.parametrize("tokens", [1, 2, 17])
def test_runtime_agrees_with_onnxruntime_for_several_batch_sizes(tokens: int) -> None:
    rng = np.random.default_rng(tokens)
    proto = mlp_gemm(rng, 16, 33, 7)
    model = model_from_bytes(proto.SerializeToString())
    x = rng.standard_normal((tokens, 16)).astype(np.float32)
    np.testing.assert_allclose(
        run(model, x)[-1], onnxruntime_activations(proto, model, x)[-1], rtol=1e-5, atol=1e-6
    )


def test_legacy_softmax_flattens_from_its_axis_like_onnxruntime() -> None:
    # Before opset 13, Softmax(axis=1) of (N, C, K) normalises over C*K together.
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="prob", axis=1)]
    proto = make_onnx(nodes, {}, ["n", 3, 4], ["n", 3, 4], opset=11)
    model = model_from_bytes(proto.SerializeToString())
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    ours = run(model, x)[-1]
    np.testing.assert_allclose(ours.reshape(2, -1).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ours, onnxruntime_activations(proto, model, x)[-1], rtol=1e-5)


def test_sigmoid_of_large_inputs_neither_overflows_nor_warns() -> None:
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"], name="s")]
    model = model_from_bytes(make_onnx(nodes, {}, [4], [4]).SerializeToString())
    y = run(model, np.array([-1000.0, -30.0, 30.0, 1000.0], dtype=np.float32))[-1]
    assert np.all(np.isfinite(y)) and y[0] == 0.0 and y[-1] == 1.0


def test_an_unsupported_operator_is_named() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")]
    proto = make_onnx(nodes, {"w": np.ones((1, 1, 3, 3), np.float32)}, [1, 1, 5, 5], [1, 1, 3, 3])
    with pytest.raises(UnsupportedModelError, match=r"unsupported operator Conv in layer 1"):
        model_from_bytes(proto.SerializeToString())


def test_integer_weights_are_refused() -> None:
    proto = mlp_gemm(np.random.default_rng(0), 4, 4, 2)
    proto.graph.initializer[0].CopyFrom(
        onnx.numpy_helper.from_array(np.ones((4, 4), np.int8), "w1")
    )
    with pytest.raises(UnsupportedModelError, match="INT8"):
        model_from_bytes(proto.SerializeToString())


@pytest.mark.parametrize("data", [b"", b"not a model at all", b"\x08\x07" + bytes(50)])
def test_garbage_is_not_an_onnx_model(data: bytes) -> None:
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        model_from_bytes(data)


def test_nodes_out_of_execution_order_are_refused() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Relu", ["h"], ["y"], name="late"),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="early"),
    ]
    proto = make_onnx(nodes, {"w": weight(rng, 3, 3)}, [2, 3], [2, 3])
    with pytest.raises(UnsupportedModelError, match="no earlier layer produces"):
        model_from_bytes(proto.SerializeToString())


def test_an_input_of_the_wrong_width_names_the_layer() -> None:
    _, model, _ = build("gemm_mlp_small")
    with pytest.raises(InputShapeError, match=r"layer 1 \(Gemm 'fc1'\) cannot take"):
        run(model, np.zeros((2, 5), np.float32))


def test_a_float64_input_is_refused() -> None:
    _, model, x = build("gemm_mlp_small")
    with pytest.raises(InputShapeError, match="float64"):
        run(model, x.astype(np.float64))  # type: ignore[arg-type]
