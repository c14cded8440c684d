"""Key files of a cluster (issue 12, 3): node and authority keys, and node certificates.

`generate` writes an ed25519 private key at PATH (PKCS#8 PEM, mode 0600, never over an existing
file) and its public key at PATH.pub (SubjectPublicKeyInfo PEM, 0644). `sign_node` writes, at the
node key's PATH.cert, the authority's certificate for that node's public key under its node id
(`maxwell.gossip.trust.NodeCertificate`, msgpack). Loading refuses a private key that others may
read, and anything that is not the kind of key asked for.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from maxwell.errors import MaxwellError
from maxwell.gossip.agent import decode_encrypt_key
from maxwell.gossip.record import RecordError, check_node_id
from maxwell.gossip.trust import Admission, NodeCertificate, certify, raw_public

MAX_KEY_FILE = 4096  # bytes: a PEM ed25519 key is about 120


class KeyFileError(MaxwellError):
    """A key or certificate file that cannot be written or used; the message says which and why."""


def public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def certificate_path(path: Path) -> Path:
    return path.with_name(path.name + ".cert")


def generate(path: Path) -> Ed25519PrivateKey:
    """A new key at `path` (0600) and its public half at `path`.pub; refuses to overwrite."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    _write_new(path, private, 0o600)
    try:
        _write_new(public_path(path), public, 0o644)
    except KeyFileError:
        path.unlink()  # all or nothing
        raise
    return key


def sign_node(authority: Path, node_key: Path, node: str) -> NodeCertificate:
    """The authority's certificate for the node key at `node_key`, under id `node`, written at
    `node_key`.cert (replacing an earlier one: a node may be renamed or re-signed)."""
    try:
        check_node_id(node)
    except RecordError as exc:
        raise KeyFileError(
            f"--name: {exc.detail} (with a record, it must fit in Serf's 512 bytes of tags)"
        ) from None
    certificate = certify(load_private(authority), node, load_private(node_key).public_key())
    target = certificate_path(node_key)
    scratch = target.with_name(target.name + ".tmp")
    scratch.unlink(missing_ok=True)
    _write_new(scratch, certificate.encode(), 0o644)
    os.replace(scratch, target)
    return certificate


def load_private(path: Path) -> Ed25519PrivateKey:
    """The ed25519 private key at `path`, which only its owner may read."""
    data = _read_secret(path)
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The ed25519 public key at `path` (an authority's `.pub`)."""
    try:
        key = load_pem_public_key(_read(path))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an ed25519 key")
    return key


def load_certificate(node_key: Path) -> NodeCertificate:
    """The certificate beside the node key at `node_key` (`sign_node` wrote it)."""
    path = certificate_path(node_key)
    try:
        return NodeCertificate.decode(_read(path))
    except RecordError as exc:
        raise KeyFileError(f"{path}: not a node certificate ({exc})") from None


def load_cluster_key(path: Path) -> str:
    """Serf's encryption key at `path`: base64 text as `serf keygen` prints it, which only its
    owner may read (an `EncryptKeyError` if it is not such a key)."""
    text = _read_secret(path).decode("ascii", errors="replace").strip()
    decode_encrypt_key(text)
    return text


@dataclass(frozen=True)
class NodeIdentity:
    """The node's key and the authority's certificate for it: who the node says it is."""

    key: Ed25519PrivateKey
    certificate: NodeCertificate

    @property
    def node(self) -> str:
        return self.certificate.node


def load_identity(node_key: Path, authority: Ed25519PublicKey) -> NodeIdentity:
    """The node's key at `node_key` and its certificate beside it, refused (`KeyFileError`)
    unless the certificate is for that key and `authority` signed it: a node that others
    would not believe does not start gossiping."""
    key = load_private(node_key)
    certificate = load_certificate(node_key)
    where = certificate_path(node_key)
    if certificate.public_key != raw_public(key.public_key()):
        raise KeyFileError(f"{where}: certifies another key than {node_key}'s")
    try:
        Admission(authority=authority).admit(certificate)
    except RecordError:
        raise KeyFileError(f"{where}: not signed by the --authority key") from None
    return NodeIdentity(key, certificate)


@dataclass(frozen=True)
class ClusterKeyFiles:
    """A cluster's key files in `root` (the demo's, the tests' and the benchmark's): an authority
    (`authority`, its public half `authority_public`), a Serf encryption key (`cluster_key`, as
    `serf keygen` prints it) and a key per node certified by the authority (`node_key`)."""

    root: Path

    @property
    def authority(self) -> Path:
        return self.root / "authority"

    @property
    def authority_public(self) -> Path:
        return public_path(self.authority)

    @property
    def cluster_key(self) -> Path:
        return self.root / "cluster.key"

    def node_key(self, node: str) -> Path:
        return self.root / f"{node}.key"

    @classmethod
    def write(cls, root: Path, nodes: Sequence[str]) -> Self:
        """New keys for a cluster of `nodes` (`root` is made private if it is new)."""
        files = cls(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        generate(files.authority)
        fd = os.open(files.cluster_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as cluster_key:
            cluster_key.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        for node in nodes:
            files.add(node)
        return files

    def add(self, node: str, *, authority: Path | None = None) -> Path:
        """A key for `node`, certified by `authority` (default: the cluster's)."""
        generate(self.node_key(node))
        sign_node(authority or self.authority, self.node_key(node), node)
        return self.node_key(node)


def _read_secret(path: Path) -> bytes:
    data = _read(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: mode {mode:o}: a secret key is for its owner's eyes only")
    return data


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        data = handle.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: larger than a key file ({MAX_KEY_FILE} bytes)")
    return data


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
    except FileExistsError:
        raise KeyFileError(f"{path}: exists; a key is never written over") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # whatever the umask said
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
