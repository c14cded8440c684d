"""A useful workload: batched inference of a small multilayer perceptron, then it exits.

Weights and inputs come from a seeded generator, so every run does the same work and prints the
same checksum; the job is a fixed number of batches, so it finishes when it is given the cores.
Run by a daemon, it reports its own CPU time honestly (and the batches done as its work).

With `--prove-every N --job JOB` (run by a daemon where JOB is a posted job of its model, which
`--export-model` writes), it runs its batches through Maxwell's proof runtime instead and,
every N batches, takes an input of the job (the node writes it into its directory,
`MAXWELL_AGENT_DIR`), infers it, leaves the proof there and submits it: each valid proof earns
the job's bounty. `--export-inputs DIR --count K` writes K inputs for such a job.

    python -m maxwell.samples.useful [--batches N] [--width W] [--tokens T] [--seed S]
                                     [--prove-every N --job JOB]
    python -m maxwell.samples.useful --export-model MODEL.onnx [--width W] [--tokens T] ...
    python -m maxwell.samples.useful --export-inputs DIR --count K [--width W] [--tokens T] ...
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from maxwell.samples._reporting import Reporter


def infer(weights: list[np.ndarray], batch: np.ndarray) -> np.ndarray:
    """ReLU layers, then a softmax over the last layer's outputs."""
    activation = batch
    for layer in weights[:-1]:
        activation = np.maximum(activation @ layer, 0.0)
    logits = activation @ weights[-1]
    logits -= logits.max(axis=1, keepdims=True)
    probabilities: np.ndarray = np.exp(logits)
    normalised: np.ndarray = probabilities / probabilities.sum(axis=1, keepdims=True)
    return normalised


def make_weights(width: int, layers: int, rng: np.random.Generator) -> list[np.ndarray]:
    scale = 1.0 / np.sqrt(width)
    return [
        (rng.standard_normal((width, width)).astype(np.float32) * scale).astype(np.float32)
        for _ in range(layers)
    ]


def mlp_onnx(weights: list[np.ndarray], tokens: int) -> bytes:
    """What `infer` computes, as an ONNX model: MatMul and Relu per layer, MatMul, Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    previous = "x"
    for index, _layer in enumerate(weights):
        nodes.append(
            helper.make_node("MatMul", [previous, f"w{index}"], [f"h{index}"], name=f"fc{index}")
        )
        previous = f"h{index}"
        if index < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [previous], [f"a{index}"], name=f"relu{index}"))
            previous = f"a{index}"
    nodes.append(helper.make_node("Softmax", [previous], ["y"], name="softmax", axis=-1))
    width = weights[0].shape[0]
    graph = helper.make_graph(
        nodes,
        "maxwell-useful",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [tokens, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [tokens, width])],
        [numpy_helper.from_array(layer, f"w{i}") for i, layer in enumerate(weights)],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    data: bytes = proto.SerializeToString()
    return data


class Prover:
    """Runs batches through Maxwell's proof runtime; every `every` batches it also proves the
    inference of an input it takes from the posted `job`, and submits the proof."""

    def __init__(self, model_bytes: bytes, every: int, job: str, reporter: Reporter) -> None:
        from maxwell.proof import model_from_bytes

        self.model = model_from_bytes(model_bytes)
        self.every = every
        self.job = job
        self.reporter = reporter
        self.directory = Path(os.environ.get("MAXWELL_AGENT_DIR", "."))
        self.paid = 0

    def infer(self, index: int, batch: np.ndarray) -> np.ndarray:
        from maxwell.proof import run

        output = run(self.model, batch)[self.model.output_layer.index]
        if (index + 1) % self.every == 0:
            self._prove_posted()
        return np.asarray(output)

    def _prove_posted(self) -> None:
        """Take an input of the job, infer it, leave the proof and submit it."""
        from maxwell.proof import make_proof, run, write_proof
        from maxwell.proof.files import read_tensor, write_tensor

        taken = self.reporter.take_input(self.job)
        if taken is None:
            return
        activations = run(self.model, read_tensor(self.directory / taken.input, "input"))
        write_tensor(self.directory / "y.npy", activations[self.model.output_layer.index])
        write_proof(self.directory / "proof.mxp", make_proof(self.model, activations))
        result = self.reporter.submit_proof(taken.input, "y.npy", "proof.mxp")
        if result is not None and result.valid:
            self.paid += 1


def export_inputs(
    directory: Path, count: int, tokens: int, width: int, rng: np.random.Generator
) -> None:
    """`count` batches of inputs, as a job of them is posted (`maxwell job post --inputs`)."""
    from maxwell.proof.files import write_tensor

    directory.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        batch = rng.standard_normal((tokens, width)).astype(np.float32)
        write_tensor(directory / f"{n:04d}.npy", batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-useful", description=__doc__)
    parser.add_argument("--batches", type=int, default=200, help="batches to infer (200)")
    parser.add_argument("--width", type=int, default=512, help="hidden width (512)")
    parser.add_argument("--tokens", type=int, default=64, help="rows per batch (64)")
    parser.add_argument("--layers", type=int, default=4, help="layers (4)")
    parser.add_argument("--seed", type=int, default=7, help="seed of weights and inputs (7)")
    parser.add_argument(
        "--prove-every", type=int, default=0, metavar="N",
        help="every N batches, prove an input of --job",
    )  # fmt: skip
    parser.add_argument("--job", metavar="JOB", help="the posted job whose inputs it proves")
    parser.add_argument(
        "--export-model", metavar="PATH", help="write the model as ONNX to PATH and exit"
    )
    parser.add_argument(
        "--export-inputs", metavar="DIR", help="write --count inputs as .npy files and exit"
    )
    parser.add_argument("--count", type=int, default=8, help="inputs to export (8)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    weights = make_weights(args.width, args.layers, rng)
    if args.export_model:
        Path(args.export_model).write_bytes(mlp_onnx(weights, args.tokens))
        return 0
    if args.export_inputs:
        export_inputs(Path(args.export_inputs), args.count, args.tokens, args.width, rng)
        return 0
    checksum = 0.0
    reporter = Reporter()  # honest: claims what it used, with the batches done as its work
    prover = (
        Prover(mlp_onnx(weights, args.tokens), args.prove_every, args.job, reporter)
        if args.prove_every > 0 and args.job
        else None
    )
    try:
        for index in range(args.batches):
            batch = rng.standard_normal((args.tokens, args.width)).astype(np.float32)
            output = prover.infer(index, batch) if prover else infer(weights, batch)
            checksum += float(output[:, 0].sum())
            reporter.maybe(work=index + 1)
            if (index + 1) % 50 == 0:
                print(f"useful: {index + 1}/{args.batches} batches", flush=True)
    finally:
        reporter.close()
    proved = f", {prover.paid} proofs paid" if prover else ""
    print(f"useful: done, checksum {checksum:.6f}{proved}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
