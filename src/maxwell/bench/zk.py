"""`maxwell bench zk`: a zk-SNARK proof of a tiny MLP with EZKL, beside Maxwell's Freivalds proof.

Needs the optional extra (`pip install 'maxwell[zk]'`); without EZKL it prints one line on
stderr and exits 2. Everything runs offline: the SRS is generated locally with `gen_srs`.

The model: `MLP` (Gemm 16 -> 16, Relu, Gemm 16 -> 8; weights normal with variance 1/fan-in,
biases 0.1 x normal, from a fixed seed), float32, one input row. What is measured (wall time,
`perf_counter`; EZKL's prover uses every core, two on the reference machine):

- `zk`: the whole pipeline of `maxwell.proof.zk.prove_model` (input public, output public,
  weights fixed in the circuit; decomposition base 128 in 4 legs), `REPEATS` times (`--quick`:
  once) in a fresh work directory each: `setup_s` (keys), `prove_s`, `verify_s`, and the other
  steps beside them, as medians; the file sizes; `logrows`. Tamper checks, each must be
  rejected: `tampered_output_rejected` (the claimed output with one element moved by one
  fixed-point step, 2^-scale) and `flipped_byte_rejected` (one byte of the SNARK changed).
  `output_max_abs_error`: the proved (fixed-point) output against the float32 one.
- `zk_ezkl_default_decomposition` (not with `--quick`): the same once with EZKL's default
  decomposition (base 16384, 2 legs): the 2^15-row circuit behind REFERENCE.md's figures.
- `freivalds`: the same model and input through `maxwell.proof`: `infer_s` (run + make_proof +
  write the bundle), `verify_s` (read the bundle + `verify` with fresh secret vectors), medians
  of `FREIVALDS_REPEATS`; `proof_bytes` (the bundle); a tampered output (the largest element
  x (1 + 1e-3)) must be rejected. If `maxwell.proof` cannot be imported, `freivalds` is null
  and `note` says why.

The pure part (the model, turning runs into the report) is at the top; the runs below
`# --- the machine ---` read the clock and write files in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from maxwell.proof.zk import (
    EZKL_DEFAULT_DECOMPOSITION,
    ZkError,
    ZkOptions,
    ZkResult,
    ZkUnavailableError,
    load_ezkl,
    prove_model,
    verify_proof,
    with_flipped_byte,
)

F32 = NDArray[np.float32]

MLP = (16, 16, 8)  # input width, hidden width, output width
REPEATS = 3
FREIVALDS_REPEATS = 200
SEED = 20_240_615
TIMED_STEPS = ("calibrate_s", "compile_s", "srs_s", "witness_s", "setup_s", "prove_s", "verify_s")


# --- the pure part ----------------------------------------------------------------------------


def tiny_mlp(rng: np.random.Generator, widths: Sequence[int] = MLP) -> tuple[bytes, dict[str, F32]]:
    """The benchmark's model as ONNX bytes (opset 17), and its weights by name."""
    from onnx import TensorProto, helper, numpy_helper

    d_in, hidden, d_out = widths
    weights = {
        "w1": (rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(np.float32),
        "b1": (0.1 * rng.standard_normal(hidden)).astype(np.float32),
        "w2": (rng.standard_normal((hidden, d_out)) / np.sqrt(hidden)).astype(np.float32),
        "b2": (0.1 * rng.standard_normal(d_out)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "maxwell-bench-zk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, d_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, d_out])],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto.SerializeToString(), weights


def forward(weights: Mapping[str, F32], x: F32) -> F32:
    hidden = np.maximum(x @ weights["w1"] + weights["b1"], 0)
    output: F32 = hidden @ weights["w2"] + weights["b2"]
    return output


def model_description(model_bytes: bytes, weights: Mapping[str, F32]) -> dict[str, object]:
    d_in, hidden, d_out = MLP
    return {
        "layers": f"Gemm {d_in}->{hidden}, Relu, Gemm {hidden}->{d_out}",
        "input_shape": [1, d_in],
        "parameters": int(sum(array.size for array in weights.values())),
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "dtype": "float32",
    }


def zk_summary(
    runs: Sequence[ZkResult], *, tampered_output_rejected: bool, flipped_byte_rejected: bool
) -> dict[str, object]:
    """One run's sizes and settings with the median of each step's time over `runs`."""
    summary = runs[0].as_json()
    for step in TIMED_STEPS:
        summary[step] = round(statistics.median(float(getattr(run, step)) for run in runs), 4)
    summary["prove_s_runs"] = [round(run.prove_s, 4) for run in runs]
    summary["verified"] = all(run.verified for run in runs)
    summary["tampered_output_rejected"] = tampered_output_rejected
    summary["flipped_byte_rejected"] = flipped_byte_rejected
    return summary


def build_report(
    model: Mapping[str, object],
    zk: Mapping[str, object],
    zk_default: Mapping[str, object] | None,
    freivalds: Mapping[str, object] | None,
    *,
    quick: bool,
    note: str | None,
) -> dict[str, object]:
    report: dict[str, object] = {
        "zk": {"model": dict(model), **zk},
        "zk_ezkl_default_decomposition": None if zk_default is None else dict(zk_default),
        "freivalds": None if freivalds is None else {"model": dict(model), **freivalds},
        "setup": {
            "quick": quick,
            "timer": "wall time (perf_counter), seconds; EZKL's prover uses every core",
            "zk_repeats": 1 if quick else REPEATS,
            "zk_statement": "input public, output public, weights fixed in the circuit",
            "srs": "generated locally with gen_srs (offline): fine for a benchmark; a real "
            "verifier must not trust an SRS the prover made",
            "freivalds_repeats": FREIVALDS_REPEATS,
            "freivalds_statement": "the verifier holds the model and draws secret vectors "
            "after reading the proof; not zero-knowledge, not publicly verifiable",
        },
    }
    if note is not None:
        report["note"] = note
    return report


# --- the machine ------------------------------------------------------------------------------


def _median_s(action: Callable[[], object], repeats: int) -> float:
    action()  # warm: imports, first touch
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))


def zk_runs(
    model: Path, x: F32, scratch: Path, *, repeats: int, options: ZkOptions, tag: str
) -> list[ZkResult]:
    return [
        prove_model(model, x, scratch / f"{tag}-{run}", options=options) for run in range(repeats)
    ]


def zk_tamper_checks(result: ZkResult) -> tuple[bool, bool]:
    """(a claim one fixed-point step off is rejected, a proof with a changed byte is rejected)."""
    step = 2.0**-result.output_scale
    claimed = np.array(result.outputs)
    claimed[0] += step
    output_verdict = verify_proof(result.artifacts, y=claimed)
    document = json.loads(result.artifacts.proof.read_text())
    flipped = result.artifacts.workdir / "flipped.proof.json"
    flipped.write_text(json.dumps(with_flipped_byte(document, len(document["proof"]) // 2)))
    byte_verdict = verify_proof(result.artifacts, proof=flipped)
    return not output_verdict.valid, not byte_verdict.valid


def freivalds_side(
    model_bytes: bytes, x: F32, scratch: Path, rng: np.random.Generator
) -> dict[str, object]:
    """The same model through `maxwell.proof` (ImportError when it is not there)."""
    from maxwell.proof.bundle import make_proof, read_proof, write_proof
    from maxwell.proof.graph import model_from_bytes
    from maxwell.proof.runtime import output_of, run
    from maxwell.proof.verifier import DEFAULT_ROUNDS, verify

    model = model_from_bytes(model_bytes)
    path = scratch / "freivalds.proof"

    def infer() -> F32:
        activations = run(model, x)
        write_proof(path, make_proof(model, activations))
        return output_of(model, activations)

    infer_s = _median_s(infer, FREIVALDS_REPEATS)
    y = infer()

    def check(claimed: F32 = y) -> bool:
        return verify(model, x, claimed, read_proof(path), rng=rng).valid

    verify_s = _median_s(check, FREIVALDS_REPEATS)
    tampered = y.copy()
    index = np.unravel_index(int(np.argmax(np.abs(y))), y.shape)
    tampered[index] *= np.float32(1 + 1e-3)
    # The tampered proof commits to the tampered output: a cheat, not a mismatched claim.
    activations = run(model, x)
    activations[model.output_layer.index] = tampered
    tampered_path = scratch / "freivalds-tampered.proof"
    write_proof(tampered_path, make_proof(model, activations))
    tampered_verdict = verify(model, x, tampered, read_proof(tampered_path), rng=rng)
    return {
        "infer_s": round(infer_s, 6),
        "verify_s": round(verify_s, 6),
        "proof_bytes": path.stat().st_size,
        "rounds": DEFAULT_ROUNDS,
        "verified": check(),
        "tampered_output_rejected": not tampered_verdict.valid,
    }


def run_zk_bench(*, quick: bool = False) -> dict[str, object]:
    """Run the benchmark (see the module docstring) and return the report."""
    load_ezkl()  # fail first, before any work, when the extra is not installed
    rng = np.random.default_rng(SEED)
    model_bytes, weights = tiny_mlp(rng)
    x = rng.standard_normal((1, MLP[0])).astype(np.float32)
    float_y = forward(weights, x)
    with tempfile.TemporaryDirectory(prefix="maxwell-bench-zk-") as name:
        scratch = Path(name)
        model = scratch / "mlp.onnx"
        model.write_bytes(model_bytes)
        runs = zk_runs(
            model, x, scratch, repeats=1 if quick else REPEATS, options=ZkOptions(), tag="zk"
        )
        output_rejected, byte_rejected = zk_tamper_checks(runs[0])
        zk = zk_summary(
            runs, tampered_output_rejected=output_rejected, flipped_byte_rejected=byte_rejected
        )
        zk["output_max_abs_error"] = float(np.max(np.abs(np.array(runs[0].outputs) - float_y)))
        zk_default = None
        if not quick:
            default_run = zk_runs(
                model, x, scratch, repeats=1, options=EZKL_DEFAULT_DECOMPOSITION, tag="default"
            )[0]
            zk_default = default_run.as_json()
        note = None
        try:
            freivalds: dict[str, object] | None = freivalds_side(model_bytes, x, scratch, rng)
        except ImportError as exc:
            freivalds = None
            note = f"maxwell.proof's Freivalds path is not available here ({exc}): zk side only"
    return build_report(
        model_description(model_bytes, weights), zk, zk_default, freivalds, quick=quick, note=note
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Prove a tiny MLP with EZKL (offline) and with Maxwell's Freivalds proof; print the "
        "costs side by side."
    )
    parser.epilog = (
        "needs the optional extra: pip install 'maxwell[zk]'. "
        "exit status: 0 done; 2 EZKL is not installed; 125 a step failed."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one zk run, no EZKL-default comparison: seconds instead of about a minute",
    )


def run(args: argparse.Namespace) -> int:
    from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, fail

    try:
        report = run_zk_bench(quick=args.quick)
    except ZkUnavailableError as exc:
        return fail("maxwell bench zk", str(exc), EXIT_USAGE)
    except ZkError as exc:
        return fail("maxwell bench zk", str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        print("maxwell bench zk: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0
