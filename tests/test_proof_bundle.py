"""The proof file: what `write_proof` writes `read_proof` reads back; anything else is refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from maxwell.proof.bundle import HEADER_MEMBER, make_proof, read_proof, write_proof
from maxwell.proof.errors import ProofFormatError
from maxwell.proof.runtime import run
from test_proof_models import build


@pytest.fixture
def proof_file(tmp_path: Path) -> Path:
    _, model, x = build("gemm_mlp_small")
    path = tmp_path / "p.proof"
    write_proof(path, make_proof(model, run(model, x)))
    return path


def rewrite(path: Path, change: dict[str, bytes | None]) -> None:
    """Copy the archive at `path` with members replaced (bytes), dropped (None) or added."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for name, data in change.items():
        if data is None:
            members.pop(name, None)
        else:
            members[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def header(path: Path) -> dict[str, object]:
    with zipfile.ZipFile(path) as archive:
        loaded: dict[str, object] = json.loads(archive.read(HEADER_MEMBER))
    return loaded


def test_a_written_proof_reads_back_identical(tmp_path: Path) -> None:
    _, model, x = build("flatten")
    proof = make_proof(model, run(model, x))
    path = tmp_path / "p.proof"
    write_proof(path, proof)
    again = read_proof(path)
    assert again.merkle_root == proof.merkle_root and again.layers == proof.layers
    assert again.leaf_digests == proof.leaf_digests
    for mine, theirs in zip(proof.activations, again.activations, strict=True):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)


def test_the_header_is_documented_json(proof_file: Path) -> None:
    data = header(proof_file)
    assert data["format"] == "maxwell-proof" and data["version"] == 1 and data["hash"] == "sha256"
    assert {"model_sha256", "input_sha256", "output_sha256", "merkle_root"} <= set(data)
    leaves = data["leaves"]
    assert isinstance(leaves, list) and leaves[0]["tensor"] == "x"
    assert leaves[1]["member"] == "activations/0001.npy" and leaves[1]["dtype"] == "float32"


def test_a_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(ProofFormatError, match="no such file"):
        read_proof(tmp_path / "absent.proof")


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.proof"
    path.write_text("{}")
    with pytest.raises(ProofFormatError, match="not a zip archive"):
        read_proof(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({HEADER_MEMBER: None}, "no proof.json"),
        ({HEADER_MEMBER: b"{not json"}, "not JSON"),
        ({HEADER_MEMBER: b"[]"}, "not a JSON object"),
        ({"activations/0002.npy": None}, "missing"),
        ({"activations/0002.npy": b"garbage"}, "not a .npy array"),
    ],
)
def test_broken_archives_are_refused(
    proof_file: Path, change: dict[str, bytes | None], message: str
) -> None:
    rewrite(proof_file, change)
    with pytest.raises(ProofFormatError, match=message):
        read_proof(proof_file)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h.update(format="other"), "not a Maxwell proof"),
        (lambda h: h.update(version=2), "unsupported proof version"),
        (lambda h: h.update(merkle_root="xyz"), "64 lowercase hex"),
        (lambda h: h["leaves"].pop(), "leaves for"),
        (lambda h: h["layers"][0].update(layer=7), "numbered 7"),
        (lambda h: h["leaves"][1].update(shape=[1, 2]), "header says"),
        (lambda h: h["leaves"][1].update(member="../../etc/passwd"), "names member"),
    ],
)
def test_malformed_headers_are_refused(proof_file: Path, edit: object, message: str) -> None:
    data = header(proof_file)
    edit(data)  # type: ignore[operator]
    rewrite(proof_file, {HEADER_MEMBER: json.dumps(data).encode()})
    with pytest.raises(ProofFormatError, match=message):
        read_proof(proof_file)


def test_pickled_and_non_float32_members_are_refused(proof_file: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rewrite(proof_file, {"activations/0001.npy": buffer.getvalue()})
    with pytest.raises(ProofFormatError, match=r"not a \.npy array"):
        read_proof(proof_file)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 16), np.float64))
    rewrite(proof_file, {"activations/0001.npy": buffer.getvalue()})
    with pytest.raises(ProofFormatError, match="must be float32"):
        read_proof(proof_file)
