"""A useful workload: batched inference of a small multilayer perceptron, then it exits.

Weights and inputs come from a seeded generator, so every run does the same work and prints the
same checksum; the job is a fixed number of batches, so it finishes when it is given the cores.
Run by a daemon, it reports its own CPU time honestly (and the batches done as its work).

    python -m maxwell.samples.useful [--batches N] [--width W] [--tokens T] [--seed S]
"""

from __future__ import annotations

import argparse
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maxwell-useful", description=__doc__)
    parser.add_argument("--batches", type=int, default=200, help="batches to infer (200)")
    parser.add_argument("--width", type=int, default=512, help="hidden width (512)")
    parser.add_argument("--tokens", type=int, default=64, help="rows per batch (64)")
    parser.add_argument("--layers", type=int, default=4, help="layers (4)")
    parser.add_argument("--seed", type=int, default=7, help="seed of weights and inputs (7)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    scale = 1.0 / np.sqrt(args.width)
    weights = [
        rng.standard_normal((args.width, args.width)).astype(np.float32) * scale
        for _ in range(args.layers)
    ]
    checksum = 0.0
    reporter = Reporter()  # honest: claims what it used, with the batches done as its work
    try:
        for index in range(args.batches):
            batch = rng.standard_normal((args.tokens, args.width)).astype(np.float32)
            checksum += float(infer(weights, batch)[:, 0].sum())
            reporter.maybe(work=index + 1)
            if (index + 1) % 50 == 0:
                print(f"useful: {index + 1}/{args.batches} batches", flush=True)
    finally:
        reporter.close()
    print(f"useful: done, checksum {checksum:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
