"""`maxwell infer` and `maxwell verify`: proof of inference, with no daemon.

`infer` runs a float32 ONNX model with Maxwell's numpy runtime (`maxwell.proof.runtime`) and
writes Y and a proof bundle (`maxwell.proof.bundle`). `verify` checks a proof without re-running
the model (`maxwell.proof.verifier`): hashes and the Merkle root, the chain from X to Y, then
Freivalds' check of every Gemm/MatMul with secret random vectors drawn after the proof was read, and
a recomputation of every cheap layer.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from maxwell.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, print_json

EXIT_INVALID = 1
MAX_ROUNDS = 64

DESCRIPTIONS = {
    "infer": "Run MODEL on X with Maxwell's numpy runtime; write Y and a proof of the run.",
    "verify": "Check a proof that MODEL maps X to Y, without re-running the model.",
}
EPILOGS = {
    "infer": """\
operators: Gemm, MatMul, Add, Relu, Sigmoid, Tanh, Softmax, Flatten; float32 models and inputs.
The proof is one file (a zip of proof.json and one .npy per layer's activation).

exit status: 0 done; 2 unusable input (missing file, not ONNX, unsupported operator, X of the
wrong type or shape); 125 Maxwell failed (e.g. cannot write Y or the proof).
""",
    "verify": """\
exit status: 0 valid; 1 invalid (stderr names the first failing layer); 2 unusable input
(missing file, not ONNX, unsupported operator, bad proof format).
""",
}


def _rounds(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_ROUNDS:
        raise ValueError(text)
    return value


_rounds.__name__ = f"rounds (1 to {MAX_ROUNDS})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from maxwell.proof.verifier import DEFAULT_ROUNDS

    command = parser.prog.split()[-1]
    parser.description = DESCRIPTIONS[command]
    parser.epilog = EPILOGS[command]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, metavar="MODEL.onnx", help="the ONNX model")
    parser.add_argument("--input", required=True, metavar="X.npy", help="the input (float32)")
    output_help = "where to write the output" if command == "infer" else "the claimed output"
    parser.add_argument("--output", required=True, metavar="Y.npy", help=output_help)
    proof_help = "where to write the proof" if command == "infer" else "the proof to check"
    parser.add_argument("--proof", required=True, metavar="P", help=proof_help)
    if command == "verify":
        parser.add_argument(
            "--rounds",
            type=_rounds,
            default=DEFAULT_ROUNDS,
            metavar="K",
            help=f"Freivalds rounds per matmul layer (default {DEFAULT_ROUNDS}; "
            "a wrong product passes with probability <= 4^-K in exact arithmetic)",
        )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from maxwell.proof.errors import ProofInputError

    prog = f"maxwell {args.command_name}"
    try:
        if args.command_name == "infer":
            return _infer(args)
        return _verify(args)
    except ProofInputError as exc:
        return fail(prog, str(exc), EXIT_USAGE)


def _infer(args: argparse.Namespace) -> int:
    from maxwell.proof.bundle import make_proof, write_proof
    from maxwell.proof.files import read_model, read_tensor, write_tensor
    from maxwell.proof.runtime import output_of, run

    model = read_model(Path(args.model))
    x = read_tensor(Path(args.input), "input")
    activations = run(model, x)
    y = output_of(model, activations)
    proof = make_proof(model, activations)
    output_path, proof_path = Path(args.output), Path(args.proof)
    try:
        write_tensor(output_path, y)
        write_proof(proof_path, proof)
    except OSError as exc:
        where = exc.filename or f"{output_path} or {proof_path}"
        return fail("maxwell infer", f"cannot write {where}: {exc.strerror}", EXIT_FAILURE)
    if args.json:
        print_json(
            {
                "output": args.output,
                "proof": args.proof,
                "shape": list(y.shape),
                "layers": len(model.nodes),
                "merkle_root": proof.merkle_root,
                "model_sha256": proof.model_sha256,
                "input_sha256": proof.input_sha256,
                "output_sha256": proof.output_sha256,
            }
        )
    else:
        print(
            f"wrote {args.output} {list(y.shape)} and proof {args.proof}: "
            f"{len(model.nodes)} layers, merkle root {proof.merkle_root[:16]}..."
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    import numpy as np

    from maxwell.proof.bundle import read_proof
    from maxwell.proof.files import read_model, read_tensor
    from maxwell.proof.verifier import verify

    model = read_model(Path(args.model))
    x = read_tensor(Path(args.input), "input")
    y = read_tensor(Path(args.output), "output")
    proof = read_proof(Path(args.proof))
    # The secret is drawn only now, after the commitment has been read.
    rng = np.random.default_rng(secrets.randbits(128))
    verdict = verify(model, x, y, proof, rng=rng, rounds=args.rounds)
    if args.json:
        print_json(verdict.as_json())
    elif verdict.valid:
        print(f"maxwell verify: {verdict.message()}")
    if not verdict.valid:
        print(f"maxwell verify: {verdict.message()}", file=sys.stderr)
        return EXIT_INVALID
    return 0
