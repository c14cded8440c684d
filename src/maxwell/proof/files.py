"""The proof package's file boundary: reading models and tensors, writing outputs.

Everything here turns `OSError` and parse failures into the package's errors (exit status 2 in
the CLI), naming the file; the cores above never open a file.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import IO

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
    return _float32(array, f"{role} {path}", str(path))


def tensor_from_bytes(data: bytes, role: str, name: str) -> Tensor:
    """A float32 array from the bytes of a `.npy` file named `name` (in errors)."""
    try:
        array = read_npy(io.BytesIO(data), len(data))
    except (ValueError, EOFError, OSError) as exc:
        raise TensorFileError(f"{role} {name}: not a .npy array ({exc})", path=name) from exc
    return _float32(array, f"{role} {name}", name)


def read_npy(handle: IO[bytes], size: int) -> np.ndarray:
    """The array of a `.npy` file of `size` bytes open in `handle`, checked before anything is
    allocated: a header whose shape needs more bytes than the file holds is refused (numpy's
    own reader would allocate what the header says first). `ValueError` for anything else than
    one plain array (no pickled objects)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f".npy version {version} is not supported")
    if dtype.hasobject:
        raise ValueError("holds Python objects, not numbers")
    needed = math.prod(shape) * dtype.itemsize
    if needed > size:
        raise ValueError(f"its header says {needed} bytes of data, the file has {size} in all")
    data = handle.read(needed)
    if len(data) != needed:
        raise EOFError(f"{len(data)} bytes of data, not {needed}")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _float32(array: object, what: str, path: str) -> Tensor:
    if not isinstance(array, np.ndarray):
        close = getattr(array, "close", None)
        if close is not None:
            close()
        raise TensorFileError(f"{what}: an .npz archive, not one .npy array", path=path)
    if array.dtype != np.float32:
        raise TensorFileError(
            f"{what}: {array.dtype}, not float32 (save it with .astype(numpy.float32))", path=path
        )
    return np.asarray(array, dtype=np.float32)


def write_tensor(path: Path, tensor: Tensor) -> None:
    """Write `tensor` to exactly `path` (numpy's `save` would append `.npy` to a bare name)."""
    with path.open("wb") as handle:
        np.save(handle, tensor, allow_pickle=False)
