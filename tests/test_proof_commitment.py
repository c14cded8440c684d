"""Tensor digests and the Merkle commitment (RFC 6962's tree hash)."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from maxwell.proof.commitment import (
    canonical_bytes,
    leaf_hash,
    merkle_root,
    node_hash,
    tensor_digest,
)

digests = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40)


def test_the_empty_tree_and_a_single_leaf_follow_rfc_6962() -> None:
    assert merkle_root([]) == hashlib.sha256(b"").digest()
    leaf = bytes(range(32))
    assert merkle_root([leaf]) == hashlib.sha256(b"\x00" + leaf).digest()


def test_five_leaves_split_at_four_as_rfc_6962_says() -> None:
    leaves = [bytes([i]) * 32 for i in range(5)]
    hashed = [leaf_hash(leaf) for leaf in leaves]
    left = node_hash(node_hash(hashed[0], hashed[1]), node_hash(hashed[2], hashed[3]))
    assert merkle_root(leaves) == node_hash(left, hashed[4])


@given(digests, st.data())
def test_changing_any_leaf_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(leaves) - 1))
    replacement = data.draw(
        st.binary(min_size=32, max_size=32).filter(lambda b: b != leaves[position])
    )
    changed = [*leaves[:position], replacement, *leaves[position + 1 :]]
    assert merkle_root(changed) != merkle_root(leaves)


@given(digests, st.binary(min_size=32, max_size=32))
def test_adding_or_dropping_a_leaf_changes_the_root(leaves: list[bytes], extra: bytes) -> None:
    assert merkle_root([*leaves, extra]) != merkle_root(leaves)
    if len(leaves) > 1:
        assert merkle_root(leaves[:-1]) != merkle_root(leaves)


@given(digests.filter(lambda leaves: len(set(leaves)) > 1), st.data())
def test_reordering_leaves_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    i, j = data.draw(
        st.tuples(st.integers(0, len(leaves) - 1), st.integers(0, len(leaves) - 1)).filter(
            lambda pair: leaves[pair[0]] != leaves[pair[1]]
        )
    )
    swapped = list(leaves)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert merkle_root(swapped) != merkle_root(leaves)


def test_the_digest_covers_dtype_and_shape_not_just_the_bytes() -> None:
    values = np.arange(12, dtype=np.float32)
    assert tensor_digest(values) != tensor_digest(values.reshape(3, 4))
    assert tensor_digest(values.reshape(3, 4)) != tensor_digest(values.reshape(4, 3))
    assert tensor_digest(values) != tensor_digest(values.view(np.int32))
    assert tensor_digest(values) == hashlib.sha256(canonical_bytes(values)).digest()


def test_the_digest_ignores_memory_layout_and_byte_order() -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert tensor_digest(np.asfortranarray(values)) == tensor_digest(values)
    assert tensor_digest(values.astype(">f4")) == tensor_digest(values)
    assert tensor_digest(values.T.copy().T) == tensor_digest(values)


@given(
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64),
    st.data(),
)
def test_any_single_bit_flip_changes_the_digest(values: list[float], data: st.DataObject) -> None:
    tensor = np.array(values, dtype=np.float32)
    bits = tensor.view(np.uint32).copy()
    position = data.draw(st.integers(0, len(values) - 1))
    bits[position] ^= np.uint32(1 << data.draw(st.integers(0, 31)))
    assert tensor_digest(bits.view(np.float32)) != tensor_digest(tensor)


def test_zero_size_and_scalar_tensors_have_digests() -> None:
    assert tensor_digest(np.zeros((0, 3), np.float32)) != tensor_digest(
        np.zeros((3, 0), np.float32)
    )
    assert len(tensor_digest(np.array(1.5, np.float32))) == 32
