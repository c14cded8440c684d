"""The proof bundle: what `maxwell infer` writes and `maxwell verify` reads.

One file, a zip archive (stored, not compressed) holding:

- `proof.json`, the header:
  `format` ("maxwell-proof"), `version` (1), `hash` ("sha256"), `model_sha256` (of the ONNX
  file's bytes), `input_sha256` and `output_sha256` (digests of X and Y, see `commitment`),
  `merkle_root` (RFC 6962 root over the leaf digests), `input` (X's tensor name), `layers` (one
  object per layer in execution order: `layer` number from 1, `node` name, `op`, `inputs` and
  `output` tensor names), and `leaves` (one per activation in leaf order, X first: `tensor`
  name, `sha256` digest, `dtype`, `shape`, `member`).
- `activations/NNNN.npy`, one `.npy` file per leaf (read with `allow_pickle=False`).

`make_proof` and the `Proof` value are pure; `write_proof` and `read_proof` are the file boundary.
`read_proof` refuses (with `ProofFormatError`) anything that is not exactly this layout; whether
the contents are *true* is the verifier's business.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from maxwell.proof.commitment import merkle_root, tensor_digest
from maxwell.proof.errors import ProofFormatError
from maxwell.proof.files import read_npy
from maxwell.proof.graph import Model, Node, Tensor

FORMAT: Final = "maxwell-proof"
VERSION: Final = 1
HEADER_MEMBER: Final = "proof.json"
MAX_HEADER_BYTES: Final = 64 << 20
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LayerRecord:
    """What the proof says a layer was: it must match the model's node exactly."""

    layer: int
    node: str
    op: str
    inputs: tuple[str, ...]
    output: str

    @classmethod
    def of(cls, node: Node) -> LayerRecord:
        return cls(node.index, node.name, node.op_type, node.inputs, node.output)


@dataclass(frozen=True)
class Proof:
    model_sha256: str
    input_sha256: str
    output_sha256: str
    merkle_root: str
    input_name: str
    layers: tuple[LayerRecord, ...]
    leaf_tensors: tuple[str, ...]
    leaf_digests: tuple[str, ...]
    activations: tuple[Tensor, ...]


def make_proof(model: Model, activations: Sequence[Tensor]) -> Proof:
    """The proof of a run: `activations` in leaf order, as `runtime.run` returns them."""
    if len(activations) != len(model.nodes) + 1:
        raise ValueError("one activation per layer, plus X first")
    digests = [tensor_digest(activation) for activation in activations]
    output_leaf = model.output_layer.index
    return Proof(
        model_sha256=model.sha256,
        input_sha256=digests[0].hex(),
        output_sha256=digests[output_leaf].hex(),
        merkle_root=merkle_root(digests).hex(),
        input_name=model.input_name,
        layers=tuple(LayerRecord.of(node) for node in model.nodes),
        leaf_tensors=(model.input_name, *(node.output for node in model.nodes)),
        leaf_digests=tuple(digest.hex() for digest in digests),
        activations=tuple(activations),
    )


def _member(leaf: int) -> str:
    return f"activations/{leaf:04d}.npy"


def header_of(proof: Proof) -> dict[str, object]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "hash": "sha256",
        "model_sha256": proof.model_sha256,
        "input_sha256": proof.input_sha256,
        "output_sha256": proof.output_sha256,
        "merkle_root": proof.merkle_root,
        "input": proof.input_name,
        "layers": [
            {
                "layer": record.layer,
                "node": record.node,
                "op": record.op,
                "inputs": list(record.inputs),
                "output": record.output,
            }
            for record in proof.layers
        ],
        "leaves": [
            {
                "tensor": tensor,
                "sha256": digest,
                "dtype": str(activation.dtype),
                "shape": list(activation.shape),
                "member": _member(leaf),
            }
            for leaf, (tensor, digest, activation) in enumerate(
                zip(proof.leaf_tensors, proof.leaf_digests, proof.activations, strict=True)
            )
        ],
    }


def write_proof(path: Path, proof: Proof) -> None:
    """Write the bundle to `path` (replaced if it exists). `OSError` is the caller's to report."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(HEADER_MEMBER, json.dumps(header_of(proof), indent=1))
        for leaf, activation in enumerate(proof.activations):
            buffer = io.BytesIO()
            np.save(buffer, activation, allow_pickle=False)
            archive.writestr(_member(leaf), buffer.getvalue())


def read_proof(path: Path) -> Proof:
    """Read a bundle written by `write_proof`; `ProofFormatError` for anything else."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_archive(archive)
    except FileNotFoundError as exc:
        raise ProofFormatError(f"proof {path}: no such file", path=str(path)) from exc
    except IsADirectoryError as exc:
        raise ProofFormatError(f"proof {path}: is a directory", path=str(path)) from exc
    except OSError as exc:
        raise ProofFormatError(
            f"proof {path}: cannot read: {exc.strerror}", path=str(path)
        ) from exc
    except zipfile.BadZipFile as exc:
        raise ProofFormatError(f"proof {path}: not a Maxwell proof (not a zip archive)") from exc
    except ProofFormatError as exc:
        raise ProofFormatError(f"proof {path}: {exc}", path=str(path)) from exc


def proof_from_bytes(data: bytes, name: str, *, max_unpacked: int) -> Proof:
    """A bundle from the bytes of a file named `name` (in errors), refused before anything is
    unpacked when its members would unpack to more than `max_unpacked` bytes (a zip bomb)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > max_unpacked:
                raise ProofFormatError(
                    f"unpacks to {unpacked} bytes, over the limit of {max_unpacked}"
                )
            return _read_archive(archive)
    except zipfile.BadZipFile as exc:
        raise ProofFormatError(f"proof {name}: not a Maxwell proof (not a zip archive)") from exc
    except ProofFormatError as exc:
        raise ProofFormatError(f"proof {name}: {exc}", path=name) from exc


def _read_archive(archive: zipfile.ZipFile) -> Proof:
    try:
        info = archive.getinfo(HEADER_MEMBER)
    except KeyError as exc:
        raise ProofFormatError(f"not a Maxwell proof (no {HEADER_MEMBER})") from exc
    if info.file_size > MAX_HEADER_BYTES:
        raise ProofFormatError(f"{HEADER_MEMBER} is implausibly large")
    try:
        header = json.loads(archive.read(info))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProofFormatError(f"{HEADER_MEMBER} is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProofFormatError(f"{HEADER_MEMBER} is not a JSON object")
    if header.get("format") != FORMAT:
        raise ProofFormatError(f"not a Maxwell proof (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ProofFormatError(f"unsupported proof version {header.get('version')!r}")
    if header.get("hash") != "sha256":
        raise ProofFormatError(f"unsupported hash {header.get('hash')!r}")
    layers = tuple(
        _layer(entry, position) for position, entry in enumerate(_list(header, "layers"), start=1)
    )
    leaves = _list(header, "leaves")
    if len(leaves) != len(layers) + 1:
        raise ProofFormatError(
            f"{len(leaves)} leaves for {len(layers)} layers (one per layer, plus X)"
        )
    tensors: list[str] = []
    digests: list[str] = []
    activations: list[Tensor] = []
    for leaf, entry in enumerate(leaves):
        tensor, digest, activation = _leaf(archive, entry, leaf)
        tensors.append(tensor)
        digests.append(digest)
        activations.append(activation)
    return Proof(
        model_sha256=_digest(header, "model_sha256"),
        input_sha256=_digest(header, "input_sha256"),
        output_sha256=_digest(header, "output_sha256"),
        merkle_root=_digest(header, "merkle_root"),
        input_name=_string(header, "input"),
        layers=layers,
        leaf_tensors=tuple(tensors),
        leaf_digests=tuple(digests),
        activations=tuple(activations),
    )


def _layer(entry: object, position: int) -> LayerRecord:
    if not isinstance(entry, dict):
        raise ProofFormatError(f"layer {position} is not a JSON object")
    number = entry.get("layer")
    if number != position:
        raise ProofFormatError(f"layer {position} is numbered {number!r}")
    inputs = _list(entry, "inputs")
    if not all(isinstance(name, str) for name in inputs):
        raise ProofFormatError(f"layer {position}: inputs must be tensor names")
    return LayerRecord(
        layer=position,
        node=_string(entry, "node"),
        op=_string(entry, "op"),
        inputs=tuple(str(name) for name in inputs),
        output=_string(entry, "output"),
    )


def _leaf(archive: zipfile.ZipFile, entry: object, leaf: int) -> tuple[str, str, Tensor]:
    if not isinstance(entry, dict):
        raise ProofFormatError(f"leaf {leaf} is not a JSON object")
    member = _string(entry, "member")
    if member != _member(leaf):
        raise ProofFormatError(f"leaf {leaf} names member {member!r}, not {_member(leaf)!r}")
    try:
        info = archive.getinfo(member)
        with archive.open(info) as handle:
            array = read_npy(handle, info.file_size)
    except KeyError as exc:
        raise ProofFormatError(f"leaf {leaf}: member {member} is missing") from exc
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,
        zlib.error,
    ) as exc:
        # a damaged member, or one packed with a compression zipfile cannot undo
        raise ProofFormatError(f"leaf {leaf}: {member} is not a .npy array: {exc}") from exc
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if array.dtype != np.float32:
        raise ProofFormatError(f"leaf {leaf}: activations must be float32, not {array.dtype}")
    if dtype != str(array.dtype) or shape != list(array.shape):
        raise ProofFormatError(
            f"leaf {leaf}: header says {dtype} {shape}, {member} holds "
            f"{array.dtype} {list(array.shape)}"
        )
    return _string(entry, "tensor"), _digest(entry, "sha256"), np.asarray(array, np.float32)


def _list(mapping: Mapping[str, object], key: str) -> list[object]:
    value = mapping.get(key)
    if not isinstance(value, list):
        raise ProofFormatError(f"'{key}' must be a list")
    return value


def _string(mapping: Mapping[str, object], key: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str):
        raise ProofFormatError(f"'{key}' must be a string")
    return value


def _digest(mapping: Mapping[str, object], key: str) -> str:
    value = _string(mapping, key)
    if not _HEX_DIGEST.fullmatch(value):
        raise ProofFormatError(f"'{key}' must be 64 lowercase hex digits")
    return value
