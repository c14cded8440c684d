"""`maxwell infer` and `maxwell verify`: exit statuses, one-line errors, --json, and honest runs
under another BLAS thread count (as subprocesses, so the environment variable takes effect)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from maxwell.cli.main import main
from maxwell.proof.bundle import make_proof, write_proof
from maxwell.proof.runtime import run
from test_proof_models import build, make_onnx, mlp_gemm, save

VERDICT_KEYS = {"valid", "failed_layer", "reason", "layers_checked", "rounds", "tolerance"}


class Files:
    """A model, an input, and where infer writes Y and the proof, all under tmp_path."""

    def __init__(self, root: Path, name: str = "gemm_mlp_wide") -> None:
        proto, self.model, self.x = build(name)
        self.model_path = save(proto, root / "model.onnx")
        self.input = root / "x.npy"
        np.save(self.input, self.x)
        self.output = root / "y.npy"
        self.proof = root / "run.proof"

    def args(self, command: str, *extra: str) -> list[str]:
        return [
            command,
            "--model", str(self.model_path),
            "--input", str(self.input),
            "--output", str(self.output),
            "--proof", str(self.proof),
            *extra,
        ]  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_infer_then_verify_is_valid(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(files.args("infer")) == 0
    assert "merkle root" in one_line(capsys.readouterr().out)
    np.testing.assert_array_equal(np.load(files.output), run(files.model, files.x)[-1])
    assert main(files.args("verify")) == 0
    out = capsys.readouterr()
    assert one_line(out.out).startswith("maxwell verify: valid: 4 layers checked") and not out.err


def test_verify_json_has_the_promised_shape(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(files.args("infer", "--json")) == 0
    inferred = json.loads(capsys.readouterr().out)
    assert inferred["layers"] == 4 and len(inferred["merkle_root"]) == 64
    assert main(files.args("verify", "--json", "--rounds", "3")) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert set(verdict) >= VERDICT_KEYS
    assert verdict["valid"] is True and verdict["failed_layer"] is None
    assert verdict["layers_checked"] == 4 and verdict["rounds"] == 3
    assert set(verdict["tolerance"]) == {"freivalds", "elementwise", "screen"}


def test_a_changed_output_exits_1_naming_the_layer(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(files.args("infer")) == 0
    y = np.load(files.output)
    y[0, 0] *= np.float32(1.001)
    np.save(files.output, y)
    capsys.readouterr()
    assert main(files.args("verify")) == 1
    out = capsys.readouterr()
    assert one_line(out.err) == (
        "maxwell verify: invalid: layer 4 (Softmax 'prob'): "
        "the output Y does not match the committed output"
    )
    assert main(files.args("verify", "--json")) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False
    assert verdict["failed_layer"] == {"index": 4, "name": "prob", "op": "Softmax"}


def test_a_tampered_activation_exits_1_with_freivalds_named(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    activations = run(files.model, files.x)
    activations[3] = activations[3] * np.float32(1.001)  # fc2's output
    write_proof(files.proof, make_proof(files.model, activations))
    np.save(files.output, activations[-1])
    assert main(files.args("verify")) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("maxwell verify: invalid: layer 3 (Gemm 'fc2'): Freivalds check failed")


def test_a_proof_for_another_input_exits_1_at_layer_0(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(files.args("infer")) == 0
    np.save(files.input, files.x + np.float32(1))
    assert main(files.args("verify")) == 1
    assert "layer 0 (input 'x'): the proof is for another input" in capsys.readouterr().err


def exits_2(args: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    capsys.readouterr()
    assert main(args) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"maxwell {args[0]}: error: ") and message in err, err


@pytest.mark.parametrize("command", ["infer", "verify"])
def test_a_missing_model_exits_2(
    files: Files, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    files.model_path.unlink()
    exits_2(files.args(command), capsys, "no such file")


@pytest.mark.parametrize("command", ["infer", "verify"])
def test_a_file_that_is_not_onnx_exits_2(
    files: Files, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    files.model_path.write_text("this is not a model\n")
    exits_2(files.args(command), capsys, "not an ONNX model")


def test_an_unsupported_operator_exits_2(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = [helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky")]
    files.model_path.write_bytes(make_onnx(nodes, {}, ["n", 64], ["n", 64]).SerializeToString())
    exits_2(files.args("infer"), capsys, "unsupported operator LeakyRelu in layer 1 ('leaky')")


def test_a_bad_proof_exits_2(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(files.args("infer")) == 0
    files.proof.write_bytes(b"PK\x03\x04 not really")
    exits_2(files.args("verify"), capsys, "not a Maxwell proof")
    files.proof.unlink()
    exits_2(files.args("verify"), capsys, "no such file")


def test_unusable_tensors_exit_2(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(files.input, files.x.astype(np.float64))
    exits_2(files.args("infer"), capsys, "float64, not float32")
    np.save(files.input, np.zeros((2, 5), np.float32))
    exits_2(files.args("infer"), capsys, "layer 1 (Gemm 'fc1') cannot take")
    files.input.write_text("nope")
    exits_2(files.args("infer"), capsys, "not a .npy array")
    np.save(files.input, files.x)
    assert main(files.args("infer")) == 0
    files.output.unlink()
    exits_2(files.args("verify"), capsys, "output")


@pytest.mark.parametrize("rounds", ["0", "65", "many"])
def test_bad_rounds_are_a_usage_error(
    files: Files, capsys: pytest.CaptureFixture[str], rounds: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(files.args("verify", "--rounds", rounds))
    assert exit_info.value.code == 2
    assert "--rounds" in one_line(capsys.readouterr().err)


def test_infer_cannot_write_exits_125(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    files.proof = files.output.parent / "missing-dir" / "run.proof"
    assert main(files.args("infer")) == 125
    assert "cannot write" in one_line(capsys.readouterr().err)


def maxwell(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maxwell.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_honest_runs_with_one_and_with_many_blas_threads_both_verify(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    model_path = save(mlp_gemm(rng, 256, 512, 16), tmp_path / "wide.onnx")
    onnx.checker.check_model(str(model_path))
    x = tmp_path / "x.npy"
    np.save(x, rng.standard_normal((96, 256)).astype(np.float32))
    outputs = []
    for threads in ("1", None):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        if threads is not None:
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = threads
        label = threads or "default"
        common = ["--model", str(model_path), "--input", str(x)]
        common += ["--output", str(tmp_path / f"y-{label}.npy")]
        common += ["--proof", str(tmp_path / f"{label}.proof")]
        inferred = maxwell(["infer", *common], env)
        assert inferred.returncode == 0, inferred.stderr
        outputs.append(np.load(tmp_path / f"y-{label}.npy"))
        # Each proof is checked by a verifier with the other thread count.
        other = dict(env, OPENBLAS_NUM_THREADS="2" if threads else "1")
        verified = maxwell(["verify", *common, "--json"], other)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["valid"] is True
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-7)
