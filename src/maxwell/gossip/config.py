"""`GossipConfig`: how a daemon takes part in heat gossip, checked once (issue 12, 1).

Built from `maxwell daemon`'s flags over the TOML `[gossip]` table (a flag wins). Either the
daemon starts its own Serf agent (`--gossip HOST:PORT`, with `--cluster-key` and any `--join`),
or it attaches to an agent someone else runs (`--serf-rpc HOST:PORT`, its RPC token in the
environment as `SERF_RPC_AUTH`, as Serf's own CLI takes it). Both need the node's key
(`--node-key`, its certificate beside it) and the authority's public key (`--authority`). A
setting that cannot be used is a `UsageError` naming its flag; nothing here reads a key file
or touches the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from maxwell.errors import UsageError

_FLAGS = {
    "bind": "--gossip", "join": "--join", "cluster_key": "--cluster-key",
    "node_key": "--node-key", "authority": "--authority", "serf_rpc": "--serf-rpc",
}  # fmt: skip
_NUMBERS = ("refresh_s", "distress_below_c")


class GossipConfigError(UsageError):
    """A gossip setting that cannot be used; the message names its flag or [gossip] key."""


@dataclass(frozen=True)
class GossipConfig:
    """The gossip settings (see `maxwell daemon --help`)."""

    bind: str | None = None  # HOST:PORT the node's own Serf agent gossips on
    join: tuple[str, ...] = ()  # HOST:PORT of members to join through
    cluster_key: Path | None = None  # Serf's encryption key, base64 (as `serf keygen` prints it)
    node_key: Path | None = None  # the node's ed25519 key; its certificate at <node_key>.cert
    authority: Path | None = None  # the cluster authority's public key
    serf_rpc: str | None = None  # HOST:PORT of someone else's Serf agent's RPC
    refresh_s: float = 5.0  # a record goes out at least this often (`publish.Publication`)
    distress_below_c: float = 5.0  # headroom under which the node is in distress
    serf: str | None = None  # the serf executable (None: `serf` on the PATH)

    def __post_init__(self) -> None:
        if (self.bind is None) == (self.serf_rpc is None):
            raise GossipConfigError("gossip: give --gossip HOST:PORT or --serf-rpc HOST:PORT")
        for name in ("bind", "serf_rpc", *(["join"] * bool(self.join))):
            for value in _as_tuple(getattr(self, name)):
                host_port(value, _FLAGS[name])
        if self.serf_rpc is not None and (self.join or self.cluster_key is not None):
            raise GossipConfigError(
                "--serf-rpc attaches to a running agent: --join and --cluster-key are its own"
            )
        required = ["node_key", "authority"] + (["cluster_key"] if self.bind else [])
        for name in required:
            if getattr(self, name) is None:
                raise GossipConfigError(f"gossip needs {_FLAGS[name]} FILE")
        for name in _NUMBERS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise GossipConfigError(f"[gossip] {name} must be a finite number, got {value!r}")
        if self.refresh_s <= 0:
            raise GossipConfigError(f"[gossip] refresh_s must be positive, got {self.refresh_s}")

    @classmethod
    def from_sources(
        cls, flags: Mapping[str, object], table: Mapping[str, object]
    ) -> GossipConfig | None:
        """From flags (None or empty: not given) over the `[gossip]` table; None when neither
        asks for gossip."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise GossipConfigError(f"config: unknown key [gossip] {unknown[0]}")
        values = {**table, **{k: v for k, v in flags.items() if v not in (None, [], ())}}
        if values.get("bind") is None and values.get("serf_rpc") is None:
            if values:
                raise GossipConfigError("gossip: give --gossip HOST:PORT or --serf-rpc HOST:PORT")
            return None
        for name in ("cluster_key", "node_key", "authority"):
            if values.get(name) is not None:
                values[name] = Path(_text(values[name], name))
        values["join"] = tuple(_text(v, "join") for v in _as_tuple(values.get("join", ())))
        return cls(**values)  # type: ignore[arg-type]  # each checked in __post_init__


def host_port(value: object, flag: str) -> tuple[str, int]:
    """HOST:PORT as (host, port), a `GossipConfigError` naming `flag` otherwise."""
    text = _text(value, flag)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise GossipConfigError(f"{flag} {text!r}: not HOST:PORT")
    return host.strip("[]"), int(port)


def _as_tuple(value: object) -> tuple[object, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _text(value: object, name: str) -> str:
    if not isinstance(value, str | Path):
        raise GossipConfigError(f"config: [gossip] {name} must be a string")
    return str(value)
