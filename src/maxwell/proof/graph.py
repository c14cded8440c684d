"""A model as the runtime and the verifier see it: a list of layers over named tensors. Pure.

Rules and invariants (checked by `model_from_bytes`, relied upon everywhere else):

- One graph input (the tensor X; not an initializer) and one graph output (produced by a node).
- Nodes are in execution order: every input of a node is X, an initializer, or the output of an
  earlier node. Every node has exactly one output, and no tensor is produced twice.
- Layer numbers are 1-based positions in that order; layer n's output is leaf n of the proof's
  Merkle commitment, and leaf 0 is X.
- Every initializer and X are float32; only the operators in `SUPPORTED_OPS` appear.
- `sha256` is the hash of the model file's bytes, so a proof names the exact file it was made for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from maxwell.proof.errors import ModelFormatError, UnsupportedModelError

Tensor = NDArray[np.float32]

MATMUL_OPS: Final = frozenset({"Gemm", "MatMul"})
ELEMENTWISE_OPS: Final = frozenset({"Add", "Relu", "Sigmoid", "Tanh", "Softmax", "Flatten"})
SUPPORTED_OPS: Final = MATMUL_OPS | ELEMENTWISE_OPS
# How many inputs each operator takes (Gemm's bias C is optional).
ARITY: Final[Mapping[str, tuple[int, int]]] = {
    "Gemm": (2, 3),
    "MatMul": (2, 2),
    "Add": (2, 2),
    "Relu": (1, 1),
    "Sigmoid": (1, 1),
    "Tanh": (1, 1),
    "Softmax": (1, 1),
    "Flatten": (1, 1),
}
DEFAULT_DOMAINS: Final = frozenset({"", "ai.onnx"})


@dataclass(frozen=True)
class Node:
    """One layer: an operator applied to named tensors, producing one named tensor."""

    index: int
    name: str
    op_type: str
    inputs: tuple[str, ...]
    output: str
    attributes: Mapping[str, int | float]

    def label(self) -> str:
        """How messages name the layer: `layer 3 (Gemm 'fc2')`."""
        return f"layer {self.index} ({self.op_type} '{self.name}')"

    def int_attribute(self, name: str, default: int) -> int:
        value = self.attributes.get(name, default)
        return int(value)

    def float_attribute(self, name: str, default: float) -> float:
        value = self.attributes.get(name, default)
        return float(value)


@dataclass(frozen=True)
class Model:
    """A float32 model: X, the layers in order, the weights, and the output's name."""

    sha256: str
    input_name: str
    output_name: str
    nodes: tuple[Node, ...]
    initializers: Mapping[str, Tensor]
    opset: int

    @property
    def output_layer(self) -> Node:
        return next(node for node in self.nodes if node.output == self.output_name)


def model_from_bytes(data: bytes) -> Model:
    """Parse and check an ONNX model file's bytes (see the module docstring for the rules)."""
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError, and others on garbage
        raise ModelFormatError(f"not an ONNX model ({type(exc).__name__})") from exc
    return model_from_proto(proto, sha256=hashlib.sha256(data).hexdigest())


def model_from_proto(proto: onnx.ModelProto, *, sha256: str) -> Model:
    graph = proto.graph
    if not graph.node:
        raise ModelFormatError("not an ONNX model (no graph, or a graph without nodes)")
    opset = next(
        (entry.version for entry in proto.opset_import if entry.domain in DEFAULT_DOMAINS), 0
    )
    if opset <= 0:
        raise ModelFormatError("not an ONNX model (no opset for the default domain)")
    initializers = _float32_initializers(graph)
    input_name = _float32_input(graph, initializers)
    if len(graph.output) != 1:
        raise UnsupportedModelError(
            f"unsupported model: {len(graph.output)} graph outputs; Maxwell's runtime takes one"
        )
    output_name = graph.output[0].name
    nodes = _nodes_in_execution_order(graph, known={input_name, *initializers})
    if output_name not in {node.output for node in nodes}:
        raise UnsupportedModelError(
            f"unsupported model: the graph output '{output_name}' is not produced by a layer"
        )
    return Model(
        sha256=sha256,
        input_name=input_name,
        output_name=output_name,
        nodes=tuple(nodes),
        initializers=initializers,
        opset=opset,
    )


def _float32_initializers(graph: onnx.GraphProto) -> dict[str, Tensor]:
    """The graph's weights by name; any that is not float32 is refused."""
    initializers: dict[str, Tensor] = {}
    for tensor in graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            kind = onnx.TensorProto.DataType.Name(tensor.data_type)
            raise UnsupportedModelError(
                f"unsupported model: initializer '{tensor.name}' is {kind}; "
                "Maxwell's runtime runs float32 models"
            )
        initializers[tensor.name] = np.asarray(numpy_helper.to_array(tensor), dtype=np.float32)
    return initializers


def _float32_input(graph: onnx.GraphProto, initializers: Mapping[str, Tensor]) -> str:
    """The name of X, the one graph input that is not an initializer, which must be float32."""
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"unsupported model: {len(inputs)} graph inputs; Maxwell's runtime takes exactly one"
        )
    elem_type = inputs[0].type.tensor_type.elem_type
    if elem_type != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(elem_type)
        raise UnsupportedModelError(
            f"unsupported model: input '{inputs[0].name}' is {kind}; "
            "Maxwell's runtime runs float32 models"
        )
    input_name: str = inputs[0].name
    return input_name


def _nodes_in_execution_order(graph: onnx.GraphProto, *, known: set[str]) -> list[Node]:
    """The layers, checked to read only `known` tensors (X and the weights) or earlier layers'
    outputs, and to produce each tensor once."""
    nodes: list[Node] = []
    for position, proto_node in enumerate(graph.node, start=1):
        node = _node(position, proto_node)
        missing = [name for name in node.inputs if name not in known]
        if missing:
            raise UnsupportedModelError(
                f"unsupported model: {node.label()} reads '{missing[0]}', which no earlier layer "
                "produces (nodes must be in execution order)"
            )
        if node.output in known:
            raise ModelFormatError(f"not a valid model: tensor '{node.output}' is produced twice")
        known.add(node.output)
        nodes.append(node)
    return nodes


def _node(position: int, proto_node: onnx.NodeProto) -> Node:
    op_type = proto_node.op_type
    name = proto_node.name or f"{op_type}_{position}"
    if proto_node.domain not in DEFAULT_DOMAINS or op_type not in SUPPORTED_OPS:
        domain = (
            f" (domain '{proto_node.domain}')" if proto_node.domain not in DEFAULT_DOMAINS else ""
        )
        raise UnsupportedModelError(
            f"unsupported operator {op_type}{domain} in layer {position} ('{name}'); "
            f"Maxwell's runtime runs {', '.join(sorted(SUPPORTED_OPS))}"
        )
    inputs = list(proto_node.input)
    while inputs and inputs[-1] == "":  # absent optional inputs at the end (Gemm's C)
        inputs.pop()
    low, high = ARITY[op_type]
    if not low <= len(inputs) <= high or "" in inputs:
        raise ModelFormatError(
            f"not a valid model: layer {position} ({op_type} '{name}') has {len(inputs)} inputs"
        )
    if len(proto_node.output) != 1:
        raise UnsupportedModelError(
            f"unsupported model: layer {position} ({op_type} '{name}') has "
            f"{len(proto_node.output)} outputs; Maxwell's runtime takes one per layer"
        )
    attributes: dict[str, int | float] = {}
    for attribute in proto_node.attribute:
        if attribute.type == onnx.AttributeProto.INT:
            attributes[attribute.name] = int(attribute.i)
        elif attribute.type == onnx.AttributeProto.FLOAT:
            attributes[attribute.name] = float(attribute.f)
        else:
            raise UnsupportedModelError(
                f"unsupported model: layer {position} ({op_type} '{name}') has attribute "
                f"'{attribute.name}' of a kind Maxwell's runtime does not read"
            )
    return Node(
        index=position,
        name=name,
        op_type=op_type,
        inputs=tuple(inputs),
        output=proto_node.output[0],
        attributes=attributes,
    )
