"""The optional zk path (`maxwell.proof.zk`, `maxwell bench zk`): EZKL proofs of a tiny MLP.

The whole module skips without EZKL (the `[zk]` extra). One proof of an 8-8-4 MLP (a 2^10-row
circuit, about 2 s on 2 cores) is made once per module and shared; the tamper cases rewrite its
files. Everything runs offline: the SRS comes from `gen_srs`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "ezkl", reason="EZKL is not installed: pip install 'maxwell[zk]' (optional heavy path)"
)

from maxwell.bench.zk import forward, tiny_mlp
from maxwell.cli.main import main
from maxwell.errors import MaxwellError
from maxwell.proof.errors import ModelFormatError
from maxwell.proof.zk import (
    ZkArtifacts,
    ZkClaimError,
    ZkError,
    ZkResult,
    ZkUnavailableError,
    load_ezkl,
    prove_model,
    verify_proof,
    with_flipped_byte,
    with_public_values,
)

WIDTHS = (8, 8, 4)
MISSING = "EZKL is not installed: pip install 'maxwell[zk]'"


@pytest.fixture(scope="module")
def proved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ZkResult, np.ndarray]:
    """One honest proof, and the float32 output of the same model and input."""
    rng = np.random.default_rng(7)
    model_bytes, weights = tiny_mlp(rng, WIDTHS)
    x = rng.standard_normal((1, WIDTHS[0])).astype(np.float32)
    scratch = tmp_path_factory.mktemp("zk")
    model = scratch / "mlp.onnx"
    model.write_bytes(model_bytes)
    return prove_model(model, x, scratch / "work"), forward(weights, x)


def test_an_honest_proof_verifies(proved: tuple[ZkResult, np.ndarray]) -> None:
    result, float_y = proved
    assert result.verified
    assert result.logrows <= 11  # the small decomposition keeps the circuit at 2^10-2^11 rows
    assert result.proof_bytes > 0 and result.vk_bytes > 0 and result.srs_bytes > 0
    assert result.pk_bytes < 20_000_000
    assert result.prove_s > 0 and result.setup_s > 0 and result.verify_s > 0
    assert len(result.outputs) == WIDTHS[2]
    # The proved output is the model's, to fixed point at 2^-13 (plus float rounding).
    assert np.max(np.abs(np.array(result.outputs) - float_y)) < 1e-2
    assert verify_proof(result.artifacts).valid
    verdict = verify_proof(result.artifacts, x=result.inputs, y=result.outputs)
    assert verdict.valid, verdict.reason


def test_an_output_one_step_off_is_rejected(proved: tuple[ZkResult, np.ndarray]) -> None:
    result, _ = proved
    claimed = np.array(result.outputs)
    claimed[-1] += 2.0**-result.output_scale
    verdict = verify_proof(result.artifacts, y=claimed)
    assert not verdict.valid
    assert verdict.reason.startswith("rejected")


def test_another_input_is_rejected(proved: tuple[ZkResult, np.ndarray]) -> None:
    result, _ = proved
    claimed = np.array(result.inputs)
    claimed[0] += 0.25
    assert not verify_proof(result.artifacts, x=claimed, y=result.outputs).valid


def test_a_changed_proof_byte_is_rejected(proved: tuple[ZkResult, np.ndarray]) -> None:
    result, _ = proved
    document = json.loads(result.artifacts.proof.read_text())
    tampered = with_flipped_byte(document, len(document["proof"]) - 7)
    assert sum(a != b for a, b in zip(tampered["proof"], document["proof"], strict=True)) == 1
    path = result.artifacts.workdir / "tampered.proof.json"
    path.write_text(json.dumps(tampered))
    assert not verify_proof(result.artifacts, proof=path).valid


def test_a_claim_that_does_not_fit_is_a_claim_error(proved: tuple[ZkResult, np.ndarray]) -> None:
    result, _ = proved
    with pytest.raises(ZkClaimError, match="3 values; the proof has 4"):
        verify_proof(result.artifacts, y=[0.0, 0.0, 0.0])
    document = json.loads(result.artifacts.proof.read_text())
    with pytest.raises(ZkClaimError, match="the claim has 1"):
        with_public_values(document, ["00"])


def test_no_input_to_claim_when_it_is_private(
    proved: tuple[ZkResult, np.ndarray], tmp_path: Path
) -> None:
    result, _ = proved
    files = result.artifacts
    private = ZkArtifacts(tmp_path, files.srs)
    settings = json.loads(files.settings.read_text())
    settings["run_args"]["input_visibility"] = "Private"
    private.settings.write_text(json.dumps(settings))
    shutil.copy(files.vk, private.vk)
    shutil.copy(files.proof, private.proof)
    with pytest.raises(ZkClaimError, match="private"):
        verify_proof(private, x=result.inputs)


def test_a_failed_step_is_named(tmp_path: Path) -> None:
    not_onnx = tmp_path / "model.onnx.txt"
    not_onnx.write_text("not a model")
    with pytest.raises(ZkError) as caught:
        prove_model(not_onnx, np.zeros((1, 4), np.float32), tmp_path / "work")
    assert caught.value.step == "gen_settings"
    assert str(caught.value).startswith("EZKL gen_settings failed")
    with pytest.raises(ZkError, match="no such file"):
        verify_proof(ZkArtifacts.in_dir(tmp_path / "nothing"))
    with pytest.raises(ModelFormatError, match="No such file"):
        prove_model(tmp_path / "absent.onnx", np.zeros((1, 4), np.float32), tmp_path / "work")


def test_without_ezkl_the_error_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ezkl", None)  # what `import ezkl` sees when it is absent
    with pytest.raises(ZkUnavailableError) as caught:
        load_ezkl()
    assert str(caught.value) == MISSING
    assert isinstance(caught.value, MaxwellError)
    with pytest.raises(ZkUnavailableError):
        prove_model(tmp_path / "model.onnx", np.zeros(1), tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before touching anything


def test_bench_without_ezkl_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ezkl", None)
    assert main(["bench", "zk", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"maxwell bench zk: error: {MISSING}\n"


def test_bench_quick_prints_both_paths_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "zk", "--json", "--quick"]) == 0
    report = json.loads(capsys.readouterr().out)
    zk = report["zk"]
    promised = {"model", "setup_s", "prove_s", "verify_s", "proof_bytes", "pk_bytes", "vk_bytes"}
    assert promised | {"logrows", "verified"} <= set(zk)
    assert zk["verified"] and zk["tampered_output_rejected"] and zk["flipped_byte_rejected"]
    assert zk["model"]["layers"] == "Gemm 16->16, Relu, Gemm 16->8"
    assert report["zk_ezkl_default_decomposition"] is None  # --quick skips it
    freivalds = report["freivalds"]
    assert freivalds["verified"] and freivalds["tampered_output_rejected"]
    assert freivalds["proof_bytes"] > 0 and freivalds["verify_s"] > 0
    assert "note" not in report
