"""Proof of inference: run a float32 ONNX model, commit to every activation, check it cheaply.

A map of the package (pure cores first; only `files` and `bundle`'s read/write touch files):

- `graph`: an ONNX model as a `Model` of numbered layers over named tensors, checked on load.
- `ops`: what each operator computes, for any float dtype.
- `runtime`: Maxwell's numpy runtime; `run` returns every activation (X first), with the matrix
  product injected.
- `commitment`: canonical tensor digests and the RFC 6962 Merkle root over them.
- `bundle`: the proof file (a zip: `proof.json` header + one `.npy` per activation).
- `freivalds`, `elementwise`: the per-layer checks and their normalised discrepancies.
- `tolerance`: the calibrated bounds; `calibration` reruns the honest runs behind them.
- `verifier`: `verify(model, x, y, proof, rng=...)` -> `Verdict`, naming the first bad layer.
- `files`: reading models and `.npy` tensors, with errors that name the file.
- `errors`: what makes an input unusable (exit status 2), as opposed to an invalid proof.
- `zk` (optional, EZKL, not imported here): a zk-SNARK proof of a tiny model, for comparison.
"""

from maxwell.proof.bundle import Proof, make_proof, read_proof, write_proof
from maxwell.proof.errors import (
    InputShapeError,
    ModelFormatError,
    ProofFormatError,
    ProofInputError,
    TensorFileError,
    UnsupportedModelError,
)
from maxwell.proof.graph import Model, Node, model_from_bytes
from maxwell.proof.runtime import run
from maxwell.proof.tolerance import DEFAULT_TOLERANCE, Tolerance
from maxwell.proof.verifier import DEFAULT_ROUNDS, Verdict, VerifierKey, make_key, verify

__all__ = [
    "DEFAULT_ROUNDS",
    "DEFAULT_TOLERANCE",
    "InputShapeError",
    "Model",
    "ModelFormatError",
    "Node",
    "Proof",
    "ProofFormatError",
    "ProofInputError",
    "TensorFileError",
    "Tolerance",
    "UnsupportedModelError",
    "Verdict",
    "VerifierKey",
    "make_key",
    "make_proof",
    "model_from_bytes",
    "read_proof",
    "run",
    "verify",
    "write_proof",
]
