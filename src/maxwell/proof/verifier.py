"""Check a proof of inference without re-running the model. Pure (randomness is injected).

The order of the checks, each stopping at the first failure:

1. The proof is for this model file (`model_sha256`) and lists exactly the model's layers.
2. The commitment: every activation's digest is the one listed, and the Merkle root over the
   digests is the committed root.
3. The ends of the chain: leaf 0 is X (the proof is for this input) and the graph output's leaf
   is Y. The chain in between holds by construction: a layer's inputs are looked up by tensor
   name among the committed outputs of the layers that produce them (or the model's weights), so
   each layer is checked against what its producers committed, never against a private copy.
4. Only then are the secret random vectors drawn (from `rng`, or a `VerifierKey` made from it
   after the proof was read), and every layer is checked in order: Gemm and MatMul with
   Freivalds (`freivalds`), the others by recomputation (`elementwise`), each against its
   calibrated tolerance (`tolerance`).

A `Verdict` names the first failing layer: `layer 0 (input 'x')` for X, `layer n (Op 'name')`
for layer n.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from maxwell.proof import ops
from maxwell.proof.bundle import LayerRecord, Proof
from maxwell.proof.commitment import merkle_root, tensor_digest
from maxwell.proof.elementwise import elementwise_statistic
from maxwell.proof.freivalds import (
    BiasTerms,
    SecretProjection,
    bias_terms,
    draw_vectors,
    freivalds_statistic,
    project_weight,
)
from maxwell.proof.graph import MATMUL_OPS, Model, Node, Tensor
from maxwell.proof.tolerance import DEFAULT_TOLERANCE, Tolerance

DEFAULT_ROUNDS = 4  # of ALPHABET's vectors: at most 4^-4 = 2^-8 per layer (see `freivalds`)


@dataclass(frozen=True)
class LayerRef:
    """A layer as a verdict names it; layer 0 is the input X."""

    index: int
    name: str
    op: str

    @classmethod
    def of(cls, node: Node) -> LayerRef:
        return cls(node.index, node.name, node.op_type)

    def label(self) -> str:
        return f"layer {self.index} ({self.op} '{self.name}')"


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    failed_layer: LayerRef | None
    layers_checked: int
    rounds: int
    tolerance: Tolerance
    # The largest normalised discrepancy (z) of each layer checked, by layer number.
    statistics: Mapping[int, float] = field(default_factory=dict)
    # How far a failed random-vector check missed (`discrepancy z x float32 rounding > ...`):
    # derived from the secret vectors, so never shown to whoever submitted the proof.
    detail: str = ""

    def message(self) -> str:
        """One line: `valid: ...` or `invalid: layer 3 (Gemm 'fc2'): reason: detail`."""
        if self.valid:
            return f"valid: {self.reason}"
        where = f"{self.failed_layer.label()}: " if self.failed_layer is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"invalid: {where}{self.reason}{detail}"

    def public_message(self) -> str:
        """`message()` without the detail: what a submitter may learn (a node's verdict tells
        the prover that a layer failed, never by how much, which would leak the secret)."""
        if self.valid:
            return self.message()
        where = f"{self.failed_layer.label()}: " if self.failed_layer is not None else ""
        return f"invalid: {where}{self.reason}"

    def as_json(self) -> dict[str, object]:
        failed = self.failed_layer
        return {
            "valid": self.valid,
            "failed_layer": None
            if failed is None
            else {"index": failed.index, "name": failed.name, "op": failed.op},
            "reason": self.reason,
            "detail": self.detail,
            "layers_checked": self.layers_checked,
            "rounds": self.rounds,
            "tolerance": self.tolerance.as_json(),
            "max_z": {str(layer): round(z, 3) for layer, z in self.statistics.items()},
        }


@dataclass(frozen=True)
class VerifierKey:
    """The verifier's secret for one model: random vectors and weight products per matmul layer.

    Making it costs one pass over the weights (O(KN b) per layer for a bank of b vectors); a
    verifier that checks many proofs of the same model may keep it, as long as the vectors never
    leave the verifier. Layers whose B is an activation (not a weight) draw their vectors during
    the check.

    A key with a bank larger than its rounds (`bank`) checks each proof with `rounds` vectors
    drawn afresh from the bank (`draw`): what a passing forgery taught about the vectors it met
    says little about those the next proof meets. An error that two units cancel passes a
    fresh draw with the floor's 4^-rounds, however many proofs passed before, unless the two
    units agree on all `bank` vectors (4^-bank). With `bank == rounds` every proof meets the same
    vectors: once a forgery passes, it passes every time.
    """

    rounds: int
    layers: Mapping[int, SecretProjection]
    bank: int = 0  # vectors held per layer (0: `rounds`)

    def draw(self, rng: np.random.Generator) -> VerifierKey:
        """The key one proof is checked with: `rounds` of the bank's vectors, drawn at random."""
        if self.bank <= self.rounds:
            return self
        chosen = np.sort(rng.choice(self.bank, size=self.rounds, replace=False))
        layers = {index: _columns(secret, chosen) for index, secret in self.layers.items()}
        return VerifierKey(rounds=self.rounds, layers=layers, bank=self.rounds)


def _columns(secret: SecretProjection, chosen: NDArray[np.int64]) -> SecretProjection:
    bias = secret.bias
    if bias is not None:
        bias = BiasTerms(bias.projection[..., chosen], bias.row_norms)
    return SecretProjection(secret.vectors[:, chosen], secret.weight_projection[..., chosen], bias)


def make_key(
    model: Model, rounds: int, rng: np.random.Generator, *, bank: int | None = None
) -> VerifierKey:
    """A secret key for `model`: `rounds` vectors per proof, drawn from a bank of `bank` (at
    least `rounds`; None: exactly `rounds`, the same for every proof)."""
    held = rounds if bank is None else max(bank, rounds)
    layers: dict[int, SecretProjection] = {}
    for node in model.nodes:
        if node.op_type not in MATMUL_OPS or node.inputs[1] not in model.initializers:
            continue
        weight = model.initializers[node.inputs[1]]
        if node.op_type == "Gemm":
            if weight.ndim != 2:
                continue  # the check reports the shape error
            weight = weight.T if node.int_attribute("transB", 0) else weight
        elif weight.ndim == 1:
            weight = weight[:, np.newaxis]
        vectors = draw_vectors(rng, weight.shape[-1], held)
        bias: BiasTerms | None = None
        if node.op_type == "Gemm" and len(node.inputs) == 3:
            c = model.initializers.get(node.inputs[2])
            if c is not None and (c.ndim <= 1 or c.shape[0] == 1):
                beta = node.float_attribute("beta", 1.0)
                bias = bias_terms(c, beta, weight.shape[-1], vectors)
        layers[node.index] = SecretProjection(vectors, project_weight(weight, vectors), bias)
    return VerifierKey(rounds=rounds, layers=layers, bank=held)


def verify(
    model: Model,
    x: Tensor,
    y: Tensor,
    proof: Proof,
    *,
    rng: np.random.Generator,
    rounds: int = DEFAULT_ROUNDS,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    key: VerifierKey | None = None,
) -> Verdict:
    """Is `proof` a proof that `model` maps `x` to `y`? See the module docstring for the order."""
    if key is not None:
        rounds = key.rounds

    def invalid(
        reason: str,
        layer: LayerRef | None,
        checked: int = 0,
        stats: Mapping[int, float] | None = None,
        detail: str = "",
    ) -> Verdict:
        return Verdict(False, reason, layer, checked, rounds, tolerance, dict(stats or {}), detail)

    if proof.model_sha256 != model.sha256:
        return invalid(
            f"the proof is for another model (sha256 {proof.model_sha256[:16]}..., "
            f"this file is {model.sha256[:16]}...)",
            None,
        )
    mismatch = (
        _structure_mismatch(model, proof)
        or _commitment_mismatch(model, proof)
        or _ends_mismatch(model, proof, x, y)
    )
    if mismatch is not None:
        return invalid(mismatch[1], mismatch[0])

    # The commitment is read and checked: only now are the secret vectors drawn.
    secret_key = key.draw(rng) if key is not None else make_key(model, rounds, rng)
    statistics, failure = _check_layers(model, proof, secret_key, rng, rounds, tolerance)
    if failure is not None:
        node, reason, detail = failure
        return invalid(reason, LayerRef.of(node), node.index - 1, statistics, detail)
    return Verdict(
        True,
        f"{len(model.nodes)} layers checked ({_summary(model, rounds)})",
        None,
        len(model.nodes),
        rounds,
        tolerance,
        statistics,
    )


def _input_ref(model: Model) -> LayerRef:
    return LayerRef(0, model.input_name, "input")


def _commitment_mismatch(model: Model, proof: Proof) -> tuple[LayerRef | None, str] | None:
    """Step 2: every activation hashes to its listed digest, and the digests to the root."""
    digests = [tensor_digest(activation) for activation in proof.activations]
    for leaf, (digest, listed) in enumerate(zip(digests, proof.leaf_digests, strict=True)):
        if digest.hex() != listed:
            where = _input_ref(model) if leaf == 0 else LayerRef.of(model.nodes[leaf - 1])
            return where, "the activation does not match its committed sha256"
    if merkle_root(digests).hex() != proof.merkle_root:
        return None, "the Merkle root does not match the committed leaves"
    return None


def _ends_mismatch(
    model: Model, proof: Proof, x: Tensor, y: Tensor
) -> tuple[LayerRef | None, str] | None:
    """Step 3: leaf 0 is this X, and the graph output's leaf is this Y."""
    x_digest = tensor_digest(x).hex()
    if x_digest != proof.input_sha256 or x_digest != proof.leaf_digests[0]:
        return _input_ref(model), "the proof is for another input (its X does not match)"
    output_node = model.output_layer
    y_digest = tensor_digest(y).hex()
    if y_digest != proof.output_sha256 or y_digest != proof.leaf_digests[output_node.index]:
        return LayerRef.of(output_node), "the output Y does not match the committed output"
    return None


def _check_layers(
    model: Model,
    proof: Proof,
    secret_key: VerifierKey,
    rng: np.random.Generator,
    rounds: int,
    tolerance: Tolerance,
) -> tuple[dict[int, float], tuple[Node, str, str] | None]:
    """Step 4: each layer in order against its producers' committed outputs. Returns each
    checked layer's z and, if one fails, that layer, why and by how much (no later layer is
    checked)."""
    tensors: dict[str, NDArray[np.float32]] = {
        model.input_name: proof.activations[0],
        **model.initializers,
    }
    statistics: dict[int, float] = {}
    for node in model.nodes:
        inputs = [tensors[name] for name in node.inputs]
        output = proof.activations[node.index]
        if node.op_type in MATMUL_OPS:
            secret = secret_key.layers.get(node.index)
            z = _matmul_z(node, inputs, output, secret, rng, rounds, tolerance)
            bound, what = tolerance.freivalds, "Freivalds check failed"
        else:
            try:
                z = elementwise_statistic(node, inputs, output, model.opset)
            except ops.ShapeError:
                z = float("inf")
            bound, what = tolerance.elementwise, "recomputation differs"
        statistics[node.index] = z
        if not z <= bound:
            if not np.isfinite(z):  # no secret in it: the submitter may know
                return statistics, (node, f"{what}: shapes do not fit or values are not finite", "")
            return statistics, (
                node, what, f"discrepancy {z:.4g} x float32 rounding > tolerance {bound:g}"
            )  # fmt: skip
        tensors[node.output] = output
    return statistics, None


def _summary(model: Model, rounds: int) -> str:
    matmuls = sum(node.op_type in MATMUL_OPS for node in model.nodes)
    others = len(model.nodes) - matmuls
    return f"{matmuls} by Freivalds x {rounds} rounds, {others} recomputed"


def _structure_mismatch(model: Model, proof: Proof) -> tuple[LayerRef | None, str] | None:
    if proof.input_name != model.input_name:
        return None, f"the proof's input is '{proof.input_name}', the model's '{model.input_name}'"
    if len(proof.layers) != len(model.nodes):
        return None, f"the proof has {len(proof.layers)} layers, the model {len(model.nodes)}"
    for node, record in zip(model.nodes, proof.layers, strict=True):
        if record != LayerRecord.of(node):
            return LayerRef.of(node), (
                f"the proof records {record.op} '{record.node}' "
                f"({', '.join(record.inputs)} -> {record.output}) here"
            )
    expected = (model.input_name, *(node.output for node in model.nodes))
    if proof.leaf_tensors != expected:
        return None, "the proof's leaves are not the model's tensors in execution order"
    return None


def _matmul_z(
    node: Node,
    inputs: list[NDArray[np.float32]],
    y: NDArray[np.float32],
    secret: SecretProjection | None,
    rng: np.random.Generator,
    rounds: int,
    tolerance: Tolerance,
) -> float:
    """Freivalds' z for a Gemm or MatMul layer (inf when the shapes do not fit), in float32
    where that is at most the tolerance's screen (see `freivalds`)."""
    a, b = inputs[0], inputs[1]
    if node.op_type == "Gemm":
        try:
            a_eff, b_eff = ops.gemm_operands(node, a, b)
        except ops.ShapeError:
            return float("inf")
        if y.shape != (a_eff.shape[0], b_eff.shape[1]):
            return float("inf")
        if secret is None:
            vectors = draw_vectors(rng, b_eff.shape[1], rounds)
            secret = SecretProjection(vectors, project_weight(b_eff, vectors), None)
        bias = secret.bias
        if len(inputs) == 3 and bias is None:
            beta = node.float_attribute("beta", 1.0)
            c = inputs[2]
            if np.broadcast_shapes(c.shape, y.shape) != y.shape:
                return float("inf")
            bias = bias_terms(c, beta, y.shape[1], secret.vectors)
        if secret.weight_projection.shape[0] != a_eff.shape[1]:
            return float("inf")
        return freivalds_statistic(
            y, a_eff, secret,
            alpha=node.float_attribute("alpha", 1.0), bias=bias,
            screen=tolerance.freivalds_screen(max(a_eff.shape[1], y.shape[1])),
        )  # fmt: skip
    # MatMul: numpy's matmul, with 1-D operands promoted to a row (A) or a column (B).
    a2 = a[np.newaxis, :] if a.ndim == 1 else a
    b2 = b[:, np.newaxis] if b.ndim == 1 else b
    if a2.ndim == 0 or b2.ndim == 0 or a2.shape[-1] != b2.shape[-2]:
        return float("inf")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        return float("inf")
    full = (*batch, a2.shape[-2], b2.shape[-1])
    dropped = {len(full) - 2} if a.ndim == 1 else set()
    if b.ndim == 1:
        dropped.add(len(full) - 1)
    squeezed = tuple(size for axis, size in enumerate(full) if axis not in dropped)
    if y.shape != squeezed:
        return float("inf")
    y2 = y.reshape(full)
    if secret is None:
        vectors = draw_vectors(rng, b2.shape[-1], rounds)
        secret = SecretProjection(vectors, project_weight(b2, vectors), None)
    width = max(a2.shape[-1], y2.shape[-1])
    return freivalds_statistic(y2, a2, secret, screen=tolerance.freivalds_screen(width))
