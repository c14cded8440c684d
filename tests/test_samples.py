"""The sample workloads do what the demonstrations rely on."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from maxwell.samples.useful import infer


def test_inference_gives_probability_rows() -> None:
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3)]
    batch = rng.standard_normal((4, 8)).astype(np.float32)
    probabilities = infer(weights, batch)
    assert probabilities.shape == (4, 8)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()


def test_useful_finishes_with_a_deterministic_checksum() -> None:
    command = [sys.executable, "-m", "maxwell.samples.useful", "--batches", "5", "--width", "64"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    second = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert "done, checksum" in first.stdout
    assert first.stdout == second.stdout


def test_bloat_runs_until_stopped() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "maxwell.samples.bloat", "--mib", "4", "--pause", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "bloat:" in process.stdout.readline()
        assert process.poll() is None  # still going: it never ends by itself
    finally:
        process.kill()
        process.communicate()
