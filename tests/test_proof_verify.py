"""The verifier through its API: honest runs accepted, every tamper rejected at the right layer.

A dishonest prover here is the strongest kind the format allows: it computes whatever it likes,
then writes a self-consistent bundle (every digest and the Merkle root match its activations)
that claims the true model's hash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxwell.proof.bundle import Proof, make_proof
from maxwell.proof.calibration import HONEST_ORDERS, blocked_matmul
from maxwell.proof.commitment import tensor_digest
from maxwell.proof.freivalds import ALPHABET_RMS, UNIT_ROUNDOFF
from maxwell.proof.graph import MATMUL_OPS, Model, model_from_bytes
from maxwell.proof.ops import MatMul
from maxwell.proof.runtime import output_of, run
from maxwell.proof.tolerance import DEFAULT_TOLERANCE
from maxwell.proof.verifier import Verdict, make_key, verify
from test_proof_models import F32, ZOO, build, mlp_gemm, onnxruntime_activations

SEEDS = st.integers(0, 2**32 - 1)


def fresh_rng() -> np.random.Generator:
    """What the CLI does: a generator seeded from the OS, unknown to the prover."""
    return np.random.default_rng()


def check(model: Model, x: F32, activations: list[F32], y: F32 | None = None) -> Verdict:
    """Verify the self-consistent proof of `activations`, claiming `model`."""
    proof = dataclasses.replace(make_proof(model, activations), model_sha256=model.sha256)
    return verify(
        model, x, output_of(model, activations) if y is None else y, proof, rng=fresh_rng()
    )


def with_weights(model: Model, change: Callable[[F32], F32]) -> Model:
    """The same model with every weight matrix passed through `change` (biases kept)."""
    weights = {
        name: change(array) if array.ndim == 2 and min(array.shape) > 1 else array
        for name, array in model.initializers.items()
    }
    return dataclasses.replace(model, initializers=weights)


def int8(weights: F32) -> F32:
    scale = np.abs(weights).max() / 127
    return (np.clip(np.round(weights / scale), -127, 127) * scale).astype(np.float32)


def bf16(weights: F32) -> F32:
    """Round to bfloat16 (nearest, ties to even) and back: 8 bits of mantissa kept."""
    bits = weights.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return rounded.astype(np.uint32).view(np.float32)


def fp16_matmul(a: F32, b: F32) -> F32:
    """fp16 operands and result (fp32 accumulation, as tensor cores do)."""
    half = np.matmul(
        a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32)
    )
    return half.astype(np.float16).astype(np.float32)


def first_matmul(model: Model) -> int:
    return next(node.index for node in model.nodes if node.op_type in MATMUL_OPS)


# --- honest runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("order", sorted(HONEST_ORDERS))
def test_honest_runs_are_accepted_whatever_the_summation_order(name: str, order: str) -> None:
    _, model, x = build(name)
    verdict = check(model, x, run(model, x, matmul=HONEST_ORDERS[order]))
    assert verdict.valid, verdict.message()
    assert verdict.layers_checked == len(model.nodes) and verdict.failed_layer is None


def test_an_honest_proof_passes_again_and_again_with_fresh_vectors() -> None:
    _, model, x = build("gemm_mlp_wide")
    activations = run(model, x)
    proof = make_proof(model, activations)
    verdicts = [verify(model, x, activations[-1], proof, rng=fresh_rng()) for _ in range(20)]
    assert all(verdict.valid for verdict in verdicts)
    assert len({tuple(v.statistics.values()) for v in verdicts}) > 1  # the vectors did change


def test_an_honest_proof_from_onnxruntime_is_accepted() -> None:
    # Another runtime, another BLAS (MLAS): its products fall inside the calibrated tolerance.
    proto, model, x = build("tanh_softmax")
    activations = onnxruntime_activations(proto, model, x)
    verdict = check(model, x, activations)
    assert verdict.valid, verdict.message()


def test_a_kept_key_checks_many_proofs_of_one_model() -> None:
    _, model, _ = build("gemm_mlp_wide")
    key = make_key(model, 8, fresh_rng())
    rng = np.random.default_rng(5)
    for _ in range(5):
        x = rng.standard_normal((4, 64)).astype(np.float32)
        activations = run(model, x, matmul=blocked_matmul(16))
        proof = make_proof(model, activations)
        assert verify(model, x, activations[-1], proof, rng=fresh_rng(), key=key).valid
        tampered = [*activations]
        tampered[1] = activations[1] * np.float32(1.001)
        assert not check_with_key(model, x, tampered, key).valid


def check_with_key(model: Model, x: F32, activations: list[F32], key: object) -> Verdict:
    proof = make_proof(model, activations)
    return verify(model, x, activations[-1], proof, rng=fresh_rng(), key=key)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=SEEDS,
    d_in=st.integers(1, 24),
    hidden=st.integers(1, 48),
    d_out=st.integers(1, 12),
    tokens=st.integers(1, 9),
    order=st.sampled_from(sorted(HONEST_ORDERS)),
)
def test_honest_random_mlps_are_accepted(
    seed: int, d_in: int, hidden: int, d_out: int, tokens: int, order: str
) -> None:
    rng = np.random.default_rng(seed)
    model = model_from_bytes(mlp_gemm(rng, d_in, hidden, d_out).SerializeToString())
    x = (rng.standard_normal((tokens, d_in)) * rng.uniform(0.1, 10)).astype(np.float32)
    verdict = check(model, x, run(model, x, matmul=HONEST_ORDERS[order]))
    assert verdict.valid, verdict.message()


# --- tampering -----------------------------------------------------------------------------------


def test_a_changed_output_is_rejected_at_the_output_layer() -> None:
    _, model, x = build("gemm_mlp_small")
    activations = run(model, x)
    y = activations[-1].copy()
    y[0, 0] += np.float32(1e-3)
    verdict = check(model, x, activations, y=y)
    assert not verdict.valid
    assert verdict.failed_layer is not None and verdict.failed_layer.index == len(model.nodes)
    assert "does not match the committed output" in verdict.reason


@pytest.mark.parametrize("name", sorted(ZOO))
def test_one_activation_changed_by_a_thousandth_is_caught_at_its_layer(name: str) -> None:
    # The element is one of typical size (at least the tensor's rms): a thousandth of an element
    # far smaller than its row is below the detection floor (see the next test).
    _, model, x = build(name)
    honest = run(model, x)
    rng = np.random.default_rng(1)
    for node in model.nodes:
        activations = list(honest)
        changed = honest[node.index].copy()
        flat = changed.reshape(-1)
        typical = np.flatnonzero(np.abs(flat) >= np.sqrt(np.mean(flat.astype(np.float64) ** 2)))
        flat[rng.choice(typical)] *= np.float32(1 + 1e-3)
        activations[node.index] = changed
        verdict = check(model, x, activations)
        assert not verdict.valid, f"{node.label()} tamper accepted"
        assert verdict.failed_layer is not None and verdict.failed_layer.index == node.index


def nudging_first_product(row: int, column: int, delta: float) -> MatMul:
    """A prover that adds `delta` to one element of its first matrix product, then carries on."""
    calls = 0

    def product(a: F32, b: F32) -> F32:
        nonlocal calls
        calls += 1
        result = np.matmul(a, b)
        if calls == 1:
            result[row, column] += np.float32(delta)
        return np.asarray(result, dtype=np.float32)

    return product


@pytest.mark.parametrize("seed", range(5))
def test_the_detection_floor_is_where_tolerance_py_puts_it(seed: int) -> None:
    # One element of a matmul output moved by c x FREIVALDS_TOLERANCE u ||Y_i|| rms(r) / min |r|
    # (and the rest of the run computed from it): caught for c = 2 (the scale also holds the
    # Gemm bias's ||C_i||), within honest noise for c = 0.3, the documented cost of a calibrated
    # tolerance.
    _, model, x = build("gemm_mlp_wide", seed=seed)
    row = run(model, x)[1][seed].astype(np.float64)
    floor = DEFAULT_TOLERANCE.freivalds * UNIT_ROUNDOFF * float(np.sqrt(row @ row)) * ALPHABET_RMS
    for multiple, caught in ((2.0, True), (0.3, False)):
        activations = run(model, x, matmul=nudging_first_product(seed, seed, multiple * floor))
        verdict = check(model, x, activations)
        assert verdict.valid is not caught, (multiple, verdict.statistics)
        if caught:
            assert verdict.failed_layer is not None and verdict.failed_layer.index == 1


def test_a_changed_activation_with_a_stale_digest_is_caught_by_the_commitment() -> None:
    _, model, x = build("gemm_mlp_small")
    activations = run(model, x)
    proof = make_proof(model, activations)
    changed = list(proof.activations)
    changed[2] = changed[2] + np.float32(1.0)
    verdict = verify(
        model, x, activations[-1], dataclasses.replace(proof, activations=tuple(changed)),
        rng=fresh_rng(),
    )  # fmt: skip
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 2 and "committed sha256" in verdict.reason


def test_a_merkle_root_that_does_not_match_the_leaves_is_rejected() -> None:
    _, model, x = build("gemm_mlp_small")
    activations = run(model, x)
    proof = dataclasses.replace(make_proof(model, activations), merkle_root="ab" * 32)
    verdict = verify(model, x, activations[-1], proof, rng=fresh_rng())
    assert not verdict.valid and "Merkle root" in verdict.reason


@pytest.mark.parametrize("name", ["gemm_mlp_wide", "matmul_tanh_sigmoid_wide", "flatten"])
@pytest.mark.parametrize(
    "cheat",
    [
        pytest.param(lambda m: with_weights(m, lambda w: w[::-1].copy()), id="weights-swapped"),
        pytest.param(lambda m: with_weights(m, int8), id="int8-weights"),
        pytest.param(lambda m: with_weights(m, bf16), id="bf16-weights"),
    ],
)
def test_a_proof_made_with_other_weights_is_rejected_at_the_first_matmul(
    name: str, cheat: Callable[[Model], Model]
) -> None:
    _, model, x = build(name)
    verdict = check(model, x, run(cheat(model), x))
    assert not verdict.valid
    assert verdict.failed_layer is not None and verdict.failed_layer.index == first_matmul(model)
    assert "Freivalds check failed" in verdict.reason


def test_weights_from_another_training_run_are_rejected() -> None:
    _, model, x = build("gemm_mlp_wide", seed=0)
    _, other, _ = build("gemm_mlp_wide", seed=1)
    verdict = check(model, x, run(other, x))
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 1


@pytest.mark.parametrize("name", ["gemm_mlp_wide", "matmul_tanh_sigmoid_wide", "flatten"])
def test_fp16_arithmetic_is_rejected(name: str) -> None:
    _, model, x = build(name)
    verdict = check(model, x, run(model, x, matmul=fp16_matmul))
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == first_matmul(model)


def test_a_proof_for_another_input_is_rejected_at_layer_0() -> None:
    _, model, x = build("gemm_mlp_small")
    other = x + np.float32(0.5)
    activations = run(model, other)
    verdict = verify(model, x, activations[-1], make_proof(model, activations), rng=fresh_rng())
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 0 and "another input" in verdict.reason
    assert verdict.message().startswith("invalid: layer 0 (input 'x'): ")


def test_a_proof_for_another_input_with_x_spliced_in_fails_the_first_layer() -> None:
    _, model, x = build("gemm_mlp_wide")
    activations = run(model, x[::-1].copy())  # another input: the tokens in reverse order
    activations[0] = x
    verdict = check(model, x, activations)
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 1


def test_a_proof_for_another_model_file_is_rejected() -> None:
    _, model, x = build("gemm_mlp_small")
    activations = run(model, x)
    proof: Proof = dataclasses.replace(make_proof(model, activations), model_sha256="0" * 64)
    verdict = verify(model, x, activations[-1], proof, rng=fresh_rng())
    assert not verdict.valid and "another model" in verdict.reason


def test_a_proof_that_lists_other_layers_is_rejected() -> None:
    _, model, x = build("gemm_mlp_small")
    proof = make_proof(model, run(model, x))
    layers = list(proof.layers)
    layers[1] = dataclasses.replace(layers[1], op="Tanh")
    verdict = verify(
        model, x, proof.activations[-1], dataclasses.replace(proof, layers=tuple(layers)),
        rng=fresh_rng(),
    )  # fmt: skip
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 2


def test_an_activation_of_the_wrong_shape_is_rejected() -> None:
    _, model, x = build("gemm_mlp_small")
    activations = run(model, x)
    activations[1] = activations[1][:, :-1].copy()
    verdict = check(model, x, activations)
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 1 and "shapes" in verdict.reason


def test_nan_activations_are_rejected() -> None:
    _, model, x = build("matmul_tanh_sigmoid")
    activations = run(model, x)
    activations[2] = activations[2].copy()
    activations[2][0, 0] = np.nan
    verdict = check(model, x, activations)
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 2


@settings(max_examples=25, deadline=None)
@given(seed=SEEDS, tokens=st.integers(1, 6), relative=st.sampled_from([1e-3, -1e-3, 1e-2]))
def test_any_single_element_change_to_a_gemm_output_is_caught(
    seed: int, tokens: int, relative: float
) -> None:
    rng = np.random.default_rng(seed)
    model = model_from_bytes(mlp_gemm(rng, 16, 32, 8).SerializeToString())
    x = rng.standard_normal((tokens, 16)).astype(np.float32)
    activations = run(model, x)
    changed = activations[1].copy()
    row = int(rng.integers(tokens))
    column = int(np.argmax(np.abs(changed[row])))
    changed[row, column] *= np.float32(1 + relative)
    activations[1] = changed
    verdict = check(model, x, activations)
    assert not verdict.valid and verdict.failed_layer is not None
    assert verdict.failed_layer.index == 1
    assert tensor_digest(changed) != tensor_digest(run(model, x)[1])
