"""The proof package's file boundary: reading models and tensors, writing outputs.

Everything here turns `OSError` and parse failures into the package's errors (exit status 2 in
the CLI), naming the file; the cores above never open a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maxwell.proof.errors import ModelFormatError, TensorFileError
from maxwell.proof.graph import Model, Tensor, model_from_bytes


def read_model(path: Path) -> Model:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFormatError(f"model {path}: no such file", path=str(path)) from exc
    except OSError as exc:
        raise ModelFormatError(
            f"model {path}: cannot read: {exc.strerror}", path=str(path)
        ) from exc
    try:
        return model_from_bytes(data)
    except ModelFormatError as exc:
        raise type(exc)(f"model {path}: {exc}", path=str(path)) from exc


def read_tensor(path: Path, role: str) -> Tensor:
    """A float32 array from a `.npy` file; `role` ("input", "output") names it in errors."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise TensorFileError(f"{role} {path}: no such file", path=str(path)) from exc
    except IsADirectoryError as exc:
        raise TensorFileError(f"{role} {path}: is a directory", path=str(path)) from exc
    except OSError as exc:
        raise TensorFileError(
            f"{role} {path}: cannot read: {exc.strerror}", path=str(path)
        ) from exc
    except (ValueError, EOFError) as exc:
        raise TensorFileError(f"{role} {path}: not a .npy array", path=str(path)) from exc
    if not isinstance(array, np.ndarray):
        array.close()
        raise TensorFileError(f"{role} {path}: an .npz archive, not one .npy array", path=str(path))
    if array.dtype != np.float32:
        raise TensorFileError(
            f"{role} {path}: {array.dtype}, not float32 (save it with .astype(numpy.float32))",
            path=str(path),
        )
    return np.asarray(array, dtype=np.float32)


def write_tensor(path: Path, tensor: Tensor) -> None:
    """Write `tensor` to exactly `path` (numpy's `save` would append `.npy` to a bare name)."""
    with path.open("wb") as handle:
        np.save(handle, tensor, allow_pickle=False)
