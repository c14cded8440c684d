"""`NodeConfig`: every setting of the node daemon, in one frozen value, validated once.

The CLI builds it from flags and the TOML `[daemon]` table (`from_sources`: a flag wins over the
file, the file over the default); the demo, the benchmarks and the tests build it directly. A
bad value is a `NodeConfigError` (a `UsageError`: the CLI's exit status 2) naming the setting by
its config key, whichever way it came in. Nothing here touches the machine: the state directory is
created and locked by the daemon, the cgroup kind honoured by `CgroupManager`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from maxwell.economy.mechanisms import MECHANISM_NAMES
from maxwell.economy.price import GridPrice, parse_grid
from maxwell.errors import UsageError
from maxwell.gossip.config import GossipConfig
from maxwell.node.facade import MIN_MEMORY_MAX
from maxwell.node.paths import DEFAULT_STATE_DIR, StatePaths
from maxwell.node.tick import DERATE_BELOW_HEADROOM_C, MIN_CAPACITY_FRACTION
from maxwell.sensors.model import ModelConfig
from maxwell.users import DEFAULT_DYNAMIC_UIDS, UidRange, UidRangeError

DEFAULT_MEMORY_MAX = 4 << 30  # an agent's memory limit unless its spawn sets one
CGROUP_KINDS = ("auto", "v1", "v2", "none")  # "none": process trees, no limits (tests, no root)
BILLING_MODES = ("metered", "optimistic")
ERASURE_METERS = ("none", "soft-dirty")  # "soft-dirty": pages re-written, from the kernel
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, NUL included
DEFAULT_AUDIT_PROBABILITY = 0.001


class NodeConfigError(UsageError):
    """A daemon setting that cannot be used; the message names its config key."""


# The [daemon] table's keys: each a field of `NodeConfig` (state is `state_dir`, socket is
# `socket_path`; the power model has a table of its own, [model]).
_TOML_KEYS = {"state": "state_dir", "socket": "socket_path"}
_NOT_IN_TOML = ("model", "active_w_per_core", "gossip")


@dataclass(frozen=True)
class NodeConfig:
    """The daemon's settings (see `maxwell daemon --help` for what each one does)."""

    state_dir: Path = Path(DEFAULT_STATE_DIR)
    socket_path: str | None = None  # None: <state>/maxwell.sock
    listen: str | None = None  # HOST:PORT on loopback, beside the socket
    tick_s: float = 1.0
    mechanism: str = "uniform"
    cgroup: str = "auto"
    billing: str = "metered"
    erasure: str = "none"  # "soft-dirty": bill pages re-written too (`maxwell.meter.erasure`)
    audit_probability: float = DEFAULT_AUDIT_PROBABILITY
    report_lease_s: float = 3.0  # optimistic billing: a bonded agent reports at least this often
    grace_s: float = 5.0  # frozen while insolvent this long, then killed
    landauer_multiplier: float = 1.0
    capacity_cores: float | None = None  # None: the CPUs of the machine
    derate_below_c: float = DERATE_BELOW_HEADROOM_C
    min_capacity_fraction: float = MIN_CAPACITY_FRACTION
    dynamic_uids: str = DEFAULT_DYNAMIC_UIDS  # a root daemon's agents' uids; "none": its own
    pids_max: int | None = 256  # per agent; None: no limit
    memory_max: int | None = DEFAULT_MEMORY_MAX  # bytes per agent; None: no limit
    memory_interval_s: float = 1.0  # how often memory counters are read
    settlement_s: float = 1.0  # the ledger takes an agent's accrued bills at most this often
    retention_s: float = 86_400.0  # an ended agent is reclaimed this long after it ended
    proof_key_max_age_s: float = 3_600.0  # a verifier key is replaced at least this often
    proof_rejection_fee: float | None = None  # $J per rejected proof; None: the agent's bounty
    log_level: str = "info"
    log_format: str = "text"
    grid: str | None = None  # the grid price (`maxwell.economy.price.parse_grid`); None: 1.0
    grid_poll_s: float = 60.0  # an http(s) grid feed is asked this often
    grid_timeout_s: float = 5.0  # and waited for at most this long each time
    model: ModelConfig | None = field(default=None, compare=False)  # the power model
    gossip: GossipConfig | None = field(default=None, compare=False)  # heat gossip; None: off
    active_w_per_core: float | None = None  # None: the power model's (max - idle) per vCPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        _check_choices(self)
        _check_numbers(self)
        if self.socket_path is not None and len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise NodeConfigError(
                f"--socket {self.socket_path}: longer than {MAX_SOCKET_PATH} bytes"
            )

    def grid_price(self) -> GridPrice | None:
        """The grid price `grid` names (None: the default, a constant 1.0 $J per J)."""
        if self.grid is None:
            return None
        try:
            return parse_grid(self.grid, poll_s=self.grid_poll_s, timeout_s=self.grid_timeout_s)
        except UsageError as exc:
            raise NodeConfigError(str(exc)) from exc

    @property
    def uid_range(self) -> UidRange | None:
        """The uids agents that name no user run as (None: the daemon's own)."""
        try:
            return UidRange.parse(self.dynamic_uids)
        except UidRangeError as exc:
            raise NodeConfigError(f"--dynamic-uids: {exc}") from exc

    @property
    def paths(self) -> StatePaths:
        return StatePaths(self.state_dir)

    @property
    def socket(self) -> str:
        """The API's Unix socket (what agents get as MAXWELL_SOCKET)."""
        return self.socket_path if self.socket_path is not None else str(self.paths.socket)

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, object],
        config: Mapping[str, object],
        gossip: Mapping[str, object] | None = None,
    ) -> NodeConfig:
        """From flags (keyed as the [daemon] table; None: not given) over the TOML config;
        `gossip`: the gossip flags, over its [gossip] table (`GossipConfig.from_sources`)."""
        section = daemon_table(config)
        values: dict[str, object] = {}
        for key in {*section, *flags}:
            value = flags.get(key)
            if value is None:
                value = section.get(key)
            if value is not None:
                values[_TOML_KEYS.get(key, key)] = value
        model = config.get("model", {})
        if not isinstance(model, dict):
            raise NodeConfigError("config: [model] must be a table")
        if model:
            values["model"] = ModelConfig.from_mapping(model)
        table = config.get("gossip", {})
        if not isinstance(table, dict):
            raise NodeConfigError("config: [gossip] must be a table")
        values["gossip"] = GossipConfig.from_sources(gossip or {}, table)
        _check_types(values)
        return cls(**values)  # type: ignore[arg-type]  # each value's type checked just above


def daemon_table(config: Mapping[str, object]) -> Mapping[str, object]:
    """The config's [daemon] table, refusing keys that are not settings."""
    section = config.get("daemon", {})
    if not isinstance(section, dict):
        raise NodeConfigError("config: [daemon] must be a table")
    known = {_toml_key(f.name) for f in fields(NodeConfig) if f.name not in _NOT_IN_TOML}
    unknown = sorted(set(section) - known)
    if unknown:
        raise NodeConfigError(f"config: unknown key [daemon] {unknown[0]}")
    return section


def _toml_key(name: str) -> str:
    return {field_name: key for key, field_name in _TOML_KEYS.items()}.get(name, name)


_FLAGS = {
    "socket_path": "--socket", "listen": "--listen", "tick_s": "--tick",
    "mechanism": "--mechanism", "cgroup": "--cgroup", "billing": "--billing",
    "audit_probability": "--audit-probability", "log_level": "--log-level",
    "log_format": "--log-format", "grid": "--grid", "erasure": "--erasure",
    "dynamic_uids": "--dynamic-uids",
}  # fmt: skip


def _label(name: str) -> str:
    """How an error names a setting: its flag where it has one, else its [daemon] key."""
    return _FLAGS.get(name, f"[daemon] {_toml_key(name)}")


_TEXT = ("state_dir", "socket_path", "listen", "mechanism", "cgroup", "billing", "log_level",
         "log_format", "grid", "erasure", "dynamic_uids")  # fmt: skip
_INTEGER = ("pids_max", "memory_max")


def _check_types(values: Mapping[str, object]) -> None:
    """Values from a TOML file have whatever type the file gave them: check before building."""
    for name, value in values.items():
        if name in ("model", "gossip"):
            continue
        key = _toml_key(name)
        if name in _TEXT and not isinstance(value, str | os.PathLike):
            raise NodeConfigError(f"config: [daemon] {key} must be a string")
        if name in _INTEGER and (isinstance(value, bool) or not isinstance(value, int)):
            raise NodeConfigError(f"config: [daemon] {key} must be an integer")
        if (
            name not in _TEXT
            and name not in _INTEGER
            and (isinstance(value, bool) or not isinstance(value, int | float))
        ):
            raise NodeConfigError(f"config: [daemon] {key} must be a number")


def _check_choices(config: NodeConfig) -> None:
    choices = {
        "mechanism": MECHANISM_NAMES,
        "cgroup": CGROUP_KINDS,
        "billing": BILLING_MODES,
        "erasure": ERASURE_METERS,
        "log_level": LOG_LEVELS,
        "log_format": LOG_FORMATS,
    }
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            known = ", ".join(allowed)
            raise NodeConfigError(f"{_label(name)} {value!r}: unknown, use one of {known}")
    if config.listen is not None:
        from maxwell.node.api import parse_listen  # the API owns what it may bind

        parse_listen(config.listen)
    if config.grid is not None:
        config.grid_price()  # a spec that does not parse fails here, before anything is made
    _ = config.uid_range  # likewise a range of uids


def _check_numbers(config: NodeConfig) -> None:
    def finite(name: str, value: float, low: float, *, above: bool = False) -> None:
        ok = math.isfinite(value) and (value > low if above else value >= low)
        if not ok:
            bound = f"above {low:g}" if above else f"{low:g} or more"
            raise NodeConfigError(f"{_label(name)} must be a finite number {bound}, got {value!r}")

    if not (math.isfinite(config.tick_s) and config.tick_s > 0):
        raise NodeConfigError(f"--tick must be a positive number of seconds, got {config.tick_s}")
    finite("grace_s", config.grace_s, 0.0)
    finite("landauer_multiplier", config.landauer_multiplier, 0.0)
    finite("derate_below_c", config.derate_below_c, 0.0, above=True)
    finite("memory_interval_s", config.memory_interval_s, 0.0, above=True)
    finite("settlement_s", config.settlement_s, 0.0)
    finite("report_lease_s", config.report_lease_s, 0.0, above=True)
    finite("retention_s", config.retention_s, 0.0)
    finite("proof_key_max_age_s", config.proof_key_max_age_s, 0.0, above=True)
    finite("grid_poll_s", config.grid_poll_s, 0.0, above=True)
    finite("grid_timeout_s", config.grid_timeout_s, 0.0, above=True)
    if config.proof_rejection_fee is not None:
        finite("proof_rejection_fee", config.proof_rejection_fee, 0.0)
    if config.capacity_cores is not None:
        finite("capacity_cores", config.capacity_cores, 0.0, above=True)
    if config.active_w_per_core is not None:
        finite("active_w_per_core", config.active_w_per_core, 0.0)
    fractions = {
        "audit_probability": config.audit_probability,
        "min_capacity_fraction": config.min_capacity_fraction,
    }
    for name, value in fractions.items():
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise NodeConfigError(f"{_label(name)} must be between 0 and 1, got {value!r}")
    if config.pids_max is not None and config.pids_max < 1:
        raise NodeConfigError(f"[daemon] pids_max must be 1 or more, got {config.pids_max!r}")
    if config.memory_max is not None and config.memory_max < MIN_MEMORY_MAX:
        raise NodeConfigError(
            f"[daemon] memory_max must be {MIN_MEMORY_MAX} bytes or more, got {config.memory_max!r}"
        )
