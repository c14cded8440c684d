"""Hashes of tensors and the Merkle commitment over a run's activations. Pure.

- A tensor's digest is SHA-256 of its canonical bytes: `TENSOR_DOMAIN`, the dtype as numpy's
  little-endian type string (`<f4`), a NUL, the number of dimensions and each dimension as
  unsigned 64-bit little-endian integers, then the elements in C order, little-endian. Two tensors
  share a digest only if dtype, shape and every bit of every element agree; how a `.npy` file
  happens to store them (Fortran order, header padding) does not matter.
- The commitment is the Merkle Tree Hash of RFC 6962 (section 2.1) over the digests in leaf order
  (X, then every layer's output): a leaf hashes as SHA-256(0x00 || digest), an inner node as
  SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at the largest power of two
  below n. Changing, adding, removing or reordering any leaf changes the root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

TENSOR_DOMAIN: Final = b"maxwell-tensor/1\x00"
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"


def canonical_header(tensor: NDArray[np.generic]) -> bytes:
    dtype = tensor.dtype.newbyteorder("<") if tensor.dtype.byteorder == ">" else tensor.dtype
    type_string = dtype.str.replace("|", "<").replace("=", "<")
    shape = np.asarray(tensor.shape, dtype="<u8").tobytes()
    return b"".join(
        (
            TENSOR_DOMAIN,
            type_string.encode("ascii"),
            b"\x00",
            len(tensor.shape).to_bytes(8, "little"),
            shape,
        )
    )


def canonical_bytes(tensor: NDArray[np.generic]) -> bytes:
    """The bytes a tensor's digest is taken over (see the module docstring)."""
    return canonical_header(tensor) + _little_endian_c_order(tensor).tobytes()


def tensor_digest(tensor: NDArray[np.generic]) -> bytes:
    """SHA-256 of `canonical_bytes(tensor)`, without building that copy."""
    hasher = hashlib.sha256(canonical_header(tensor))
    hasher.update(_little_endian_c_order(tensor).reshape(-1).view(np.uint8).data)
    return hasher.digest()


def _little_endian_c_order(tensor: NDArray[np.generic]) -> NDArray[np.generic]:
    dtype = tensor.dtype.newbyteorder("<") if tensor.dtype.byteorder == ">" else tensor.dtype
    return np.ascontiguousarray(tensor, dtype=dtype)


def leaf_hash(digest: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + digest).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def merkle_root(digests: Sequence[bytes]) -> bytes:
    """RFC 6962's Merkle Tree Hash over `digests` (the hash of the empty string for none)."""
    if not digests:
        return hashlib.sha256(b"").digest()
    if len(digests) == 1:
        return leaf_hash(digests[0])
    split = 1 << ((len(digests) - 1).bit_length() - 1)  # largest power of two below n
    return node_hash(merkle_root(digests[:split]), merkle_root(digests[split:]))
