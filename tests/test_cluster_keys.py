"""`maxwell cluster keygen|sign-node` and the key files under them (issue 12, 3): keys written
once and privately, certificates the daemon's trust admits, bad files refused in one line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from helpers import maxwell
from maxwell.gossip.keys import (
    KeyFileError,
    load_certificate,
    load_private,
    load_public,
)
from maxwell.gossip.trust import Admission, Verifier, raw_public


def test_keygen_writes_a_private_key_and_its_public_half_once(tmp_path: Path) -> None:
    key = tmp_path / "authority"
    made = maxwell("cluster", "keygen", "--out", str(key), "--json")
    assert made.returncode == 0, made.stderr
    said = json.loads(made.stdout)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "authority.pub").stat().st_mode) == 0o644
    public = load_public(tmp_path / "authority.pub")
    assert (
        raw_public(public).hex()
        == said["public_hex"]
        == raw_public(load_private(key).public_key()).hex()
    )
    before = key.read_bytes()
    again = maxwell("cluster", "keygen", "--out", str(key))
    assert again.returncode == 2
    assert (
        again.stderr.strip()
        == f"maxwell cluster keygen: error: {key}: exists; a key is never written over"
    )
    assert key.read_bytes() == before


def test_a_signed_node_is_admitted_by_the_authority_and_no_other(tmp_path: Path) -> None:
    authority, node, other = tmp_path / "authority", tmp_path / "node", tmp_path / "other"
    for path in (authority, node, other):
        assert maxwell("cluster", "keygen", "--out", str(path)).returncode == 0
    signed = maxwell(
        "cluster", "sign-node", "--authority", str(authority), "--node", str(node),
        "--name", "n1", "--json",
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["certificate"] == str(tmp_path / "node.cert")
    certificate = load_certificate(node).encode()
    trusting = Verifier(Admission(authority=load_public(tmp_path / "authority.pub")))
    assert trusting.learn("n1", certificate)
    assert not trusting.learn("n2", certificate)  # under another name: an impostor
    stranger = Verifier(Admission(authority=load_public(tmp_path / "other.pub")))
    assert not stranger.learn("n1", certificate)


def test_key_files_others_may_read_or_that_are_not_keys_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "node"
    assert maxwell("cluster", "keygen", "--out", str(key)).returncode == 0
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="owner's eyes only"):
        load_private(key)
    key.chmod(0o600)
    (tmp_path / "junk").write_text("not a key")
    (tmp_path / "junk").chmod(0o600)
    (tmp_path / "link").symlink_to(key)
    for bad, why in ((tmp_path / "junk", "not a PEM private key"), (tmp_path / "link", "")):
        refused = maxwell(
            "cluster", "sign-node", "--authority", str(bad), "--node", str(key), "--name", "n1"
        )
        assert refused.returncode == 2 and why in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "node.cert").exists()
    with pytest.raises(KeyFileError, match="not an ed25519"):
        load_public(_rsa_public(tmp_path))


def _rsa_public(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path = tmp_path / "rsa.pub"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def test_a_node_id_too_long_for_serfs_tags_is_refused_when_signing(tmp_path: Path) -> None:
    authority, node = tmp_path / "authority", tmp_path / "node"
    for path in (authority, node):
        assert maxwell("cluster", "keygen", "--out", str(path)).returncode == 0
    said = maxwell(
        "cluster", "sign-node", "--authority", str(authority), "--node", str(node),
        "--name", "n" * 49,
    )  # fmt: skip
    assert said.returncode == 2
    assert "1-48 printable bytes" in said.stderr and "Serf's 512 bytes of tags" in said.stderr
    assert not (tmp_path / "node.cert").exists()
