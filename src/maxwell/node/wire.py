"""The facade's value types on the wire: the JSON the API serves, read back into values.

`AgentInfo.to_json()`, `PriceInfo.to_json()` and `Event.to_json()` write; the readers here check
every field's type and raise `ValueError` naming the field, so a client never builds a value from
a malformed answer. `status_to_json` is the shape of the API's `/status`.
"""

from __future__ import annotations

from collections.abc import Mapping

from maxwell.node.facade import (
    AgentInfo,
    AgentState,
    AuditResult,
    Event,
    NodeStatus,
    PriceInfo,
    ProofResult,
    Report,
)
from maxwell.node.tickstats import TickStats
from maxwell.units import Money, tokens_to_money


def _float(obj: Mapping[str, object], key: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key!r} must be a number, got {value!r}")
    return float(value)


def _int(obj: Mapping[str, object], key: str) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an integer, got {value!r}")
    return value


def _optional_int(obj: Mapping[str, object], key: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key)


def _optional_float(obj: Mapping[str, object], key: str) -> float | None:
    return None if obj.get(key) is None else _float(obj, key)


def _optional_str(obj: Mapping[str, object], key: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key)


def _str(obj: Mapping[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {value!r}")
    return value


def _mapping(obj: object, what: str) -> Mapping[str, object]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def report_from_json(obj: object) -> Report:
    """The inverse of `Report.to_json`."""
    report = _mapping(obj, "a report")
    return Report(
        cpu_s=_float(report, "cpu_s"),
        memory_freed_bytes=_int(report, "memory_freed_bytes"),
        work=_optional_int(report, "work"),
    )


def agent_from_json(obj: object) -> AgentInfo:
    """The inverse of `AgentInfo.to_json` (money and energy round to the nearest micro-unit).
    The measured counters and the report are read when present (older nodes lack them)."""
    agent = _mapping(obj, "an agent")
    reported = agent.get("reported")
    return AgentInfo(
        id=_str(agent, "id"),
        name=_str(agent, "name"),
        state=AgentState(_str(agent, "state")),
        balance=tokens_to_money(_float(agent, "balance")),
        bid=_float(agent, "bid"),
        demand=_float(agent, "demand"),
        share=_float(agent, "share"),
        power_w=_float(agent, "power_w"),
        energy_uj=round(_float(agent, "energy_j") * 1e6),
        paid=tokens_to_money(_float(agent, "paid_j")),
        landauer=tokens_to_money(_float(agent, "landauer_j")),
        pid=_optional_int(agent, "pid"),
        exit_code=_optional_int(agent, "exit_code"),
        cpu_s=_float(agent, "cpu_s") if "cpu_s" in agent else 0.0,
        memory_freed_bytes=(
            _int(agent, "memory_freed_bytes") if "memory_freed_bytes" in agent else 0
        ),
        reported=None if reported is None else report_from_json(reported),
        billing=_str(agent, "billing") if "billing" in agent else "metered",
        bond=tokens_to_money(_float(agent, "bond")) if "bond" in agent else Money(0),
        audits=_int(agent, "audits") if "audits" in agent else 0,
        slashed=tokens_to_money(_float(agent, "slashed")) if "slashed" in agent else Money(0),
        proofs=_int(agent, "proofs") if "proofs" in agent else 0,
        bounties=tokens_to_money(_float(agent, "bounties")) if "bounties" in agent else Money(0),
    )


def audit_from_json(obj: object) -> AuditResult:
    """The inverse of `AuditResult.to_json`."""
    audit = _mapping(obj, "an audit")
    honest = audit["honest"]
    if not isinstance(honest, bool):
        raise ValueError(f"'honest' must be a boolean, got {honest!r}")

    def strings(key: str) -> tuple[str, ...]:
        values = audit[key]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{key!r} must be a list of strings, got {values!r}")
        return tuple(values)

    modules = _mapping(audit.get("modules", {}), "an audit's modules")
    return AuditResult(
        agent=_str(audit, "agent"),
        honest=honest,
        findings=strings("findings"),
        checked=strings("checked"),
        audits=_int(audit, "audits"),
        probability=_float(audit, "probability"),
        slashed=tokens_to_money(_float(audit, "slashed")),
        modules={name: _float(modules, name) for name in modules},
        samples=_int(audit, "samples") if "samples" in audit else 0,
        pause_us=None if audit.get("pause_us") is None else _float(audit, "pause_us"),
    )


def proof_result_from_json(obj: object) -> ProofResult:
    """The inverse of `ProofResult.to_json`."""
    result = _mapping(obj, "a proof result")
    valid = result["valid"]
    if not isinstance(valid, bool):
        raise ValueError(f"'valid' must be a boolean, got {valid!r}")
    return ProofResult(
        agent=_str(result, "agent"),
        valid=valid,
        reason=_str(result, "reason"),
        bounty=tokens_to_money(_float(result, "bounty")),
        proofs=_int(result, "proofs"),
    )


def price_from_json(obj: object) -> PriceInfo:
    """The inverse of `PriceInfo.to_json`."""
    price = _mapping(obj, "a price")
    measured = price["measured"]
    if not isinstance(measured, bool):
        raise ValueError(f"'measured' must be a boolean, got {measured!r}")
    return PriceInfo(
        spot=_float(price, "spot"),
        grid=_float(price, "grid"),
        thermal_factor=_float(price, "thermal_factor"),
        temperature_c=_float(price, "temperature_c"),
        headroom_c=_float(price, "headroom_c"),
        measured=measured,
        energy_source=_str(price, "energy_source"),
        temperature_source=_str(price, "temperature_source"),
    )


def event_from_json(obj: object) -> Event:
    """The inverse of `Event.to_json`."""
    event = _mapping(obj, "an event")
    agent = event.get("agent")
    if agent is not None and not isinstance(agent, str):
        raise ValueError(f"'agent' must be a string or null, got {agent!r}")
    return Event(
        seq=_int(event, "seq"),
        at=_float(event, "at"),
        kind=_str(event, "kind"),
        agent=agent,
        detail=dict(_mapping(event.get("detail", {}), "an event's detail")),
    )


def _tick_stats_to_json(stats: TickStats | None) -> dict[str, object]:
    """The tick figures `/status` carries at its top level: null (and 0) without stats."""
    if stats is None:
        return {
            "tick_failures": 0,
            "last_error": None,
            "last_error_at": None,
            "tick_ms_median": None,
            "tick_ms_p99": None,
            "ledger_rows": 0,
        }
    return {
        "tick_failures": stats.failures,
        "last_error": stats.last_error,
        "last_error_at": stats.last_error_at,
        "tick_ms_median": stats.median_ms,
        "tick_ms_p99": stats.p99_ms,
        "ledger_rows": stats.ledger_rows,
    }


def _tick_stats_from_json(status: Mapping[str, object]) -> TickStats | None:
    """The inverse of `_tick_stats_to_json`, without the histogram (the wire carries none) and
    with the node's tick count; None when the node keeps no stats (or predates them)."""
    median_ms = _optional_float(status, "tick_ms_median")
    if median_ms is None:
        return None
    return TickStats(
        ticks=_int(status, "ticks") if "ticks" in status else 0,
        failures=_int(status, "tick_failures"),
        last_error=_optional_str(status, "last_error"),
        last_error_at=_optional_float(status, "last_error_at"),
        duration_bounds_s=(),
        duration_counts=(),
        duration_sum_s=0.0,
        median_ms=median_ms,
        p99_ms=_float(status, "tick_ms_p99"),
        ledger_rows=_int(status, "ledger_rows"),
    )


def status_to_json(status: NodeStatus) -> dict[str, object]:
    """The JSON shape `status_from_json` reads (the facade's types have no `to_json` for it)."""
    return {
        "price": status.price.to_json(),
        "agents": [agent.to_json() for agent in status.agents],
        "tick_s": status.tick_s,
        "last_tick_duration_s": status.last_tick_duration_s,
        "ticks": status.ticks,
        "mechanism": status.mechanism,
        "cgroup": status.cgroup,
        "capacity_cores": status.capacity_cores,
        **_tick_stats_to_json(status.tick_stats),
    }


def status_from_json(obj: object) -> NodeStatus:
    """A `NodeStatus` from `{"price": {...}, "agents": [...], "tick_s", "last_tick_duration_s",
    "ticks", "mechanism", "cgroup", "capacity_cores", tick figures}`; the last six default to
    "unknown" values when absent, so a client can build one from `/price` and `/agents` alone.
    `tick_stats` is None unless `tick_ms_median` is a number (see `_tick_stats_from_json`)."""
    status = _mapping(obj, "a node status")
    agents = status["agents"]
    if not isinstance(agents, list):
        raise ValueError(f"'agents' must be a list, got {type(agents).__name__}")
    return NodeStatus(
        price=price_from_json(status["price"]),
        agents=[agent_from_json(agent) for agent in agents],
        tick_s=_float(status, "tick_s") if "tick_s" in status else 0.0,
        last_tick_duration_s=(
            _float(status, "last_tick_duration_s") if "last_tick_duration_s" in status else 0.0
        ),
        ticks=_int(status, "ticks") if "ticks" in status else 0,
        mechanism=_str(status, "mechanism") if "mechanism" in status else "unknown",
        cgroup=_str(status, "cgroup") if "cgroup" in status else "unknown",
        capacity_cores=_float(status, "capacity_cores") if "capacity_cores" in status else 0.0,
        tick_stats=_tick_stats_from_json(status),
    )
