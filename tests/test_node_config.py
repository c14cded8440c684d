"""`NodeConfig`: one frozen value with every daemon setting, validated once; the state paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from maxwell.clock import FakeClock
from maxwell.errors import UsageError
from maxwell.node.config import NodeConfig, NodeConfigError, daemon_table
from maxwell.node.daemon import NodeDaemon
from maxwell.node.paths import StatePaths
from maxwell.sensors.model import ModelConfig
from maxwell.testing import FakeSensors, FakeSupervisor


def test_defaults_are_the_documented_ones() -> None:
    config = NodeConfig()
    assert config.state_dir == Path("/var/lib/maxwell")
    assert config.socket == "/var/lib/maxwell/maxwell.sock"
    assert (config.tick_s, config.mechanism, config.cgroup) == (1.0, "uniform", "auto")
    assert (config.billing, config.audit_probability, config.grace_s) == ("metered", 0.001, 5.0)
    assert (config.log_level, config.log_format, config.pids_max) == ("info", "text", 256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tick_s = 2.0  # type: ignore[misc]


def test_flags_win_over_the_file_and_the_file_over_the_defaults() -> None:
    toml = {
        "daemon": {"state": "/srv/node", "tick_s": 0.5, "billing": "optimistic", "pids_max": 64},
        "model": {"max_w_per_vcpu": 3.0},
    }
    config = NodeConfig.from_sources({"tick_s": 2.0, "state": None}, toml)
    assert (config.state_dir, config.tick_s, config.billing) == (
        Path("/srv/node"),
        2.0,
        "optimistic",
    )
    assert config.pids_max == 64
    assert config.model == ModelConfig(max_w_per_vcpu=3.0)
    assert config.paths == StatePaths(Path("/srv/node"))


@pytest.mark.parametrize(
    ("flags", "table", "says"),
    [
        ({"tick_s": 0}, {}, "--tick must be a positive number of seconds"),
        ({"tick_s": float("inf")}, {}, "--tick must be a positive"),
        ({"cgroup": "v3"}, {}, "--cgroup 'v3': unknown, use one of auto, v1, v2, none"),
        ({"billing": "honour"}, {}, "--billing 'honour': unknown"),
        ({"log_level": "loud"}, {}, "--log-level 'loud': unknown"),
        ({"log_format": "xml"}, {}, "--log-format 'xml': unknown"),
        ({"audit_probability": 1.5}, {}, "--audit-probability must be between 0 and 1"),
        ({}, {"min_capacity_fraction": 2.0}, "[daemon] min_capacity_fraction must be between"),
        ({}, {"grace_s": -1}, "[daemon] grace_s must be a finite number 0 or more"),
        ({}, {"capacity_cores": 0}, "[daemon] capacity_cores must be a finite number above 0"),
        ({}, {"pids_max": 0}, "[daemon] pids_max must be 1 or more"),
        ({"settlement_s": -1.0}, {}, "[daemon] settlement_s must be a finite number 0 or more"),
        ({}, {"settlement_s": float("nan")}, "[daemon] settlement_s must be a finite number"),
        ({}, {"pids_max": 2.5}, "[daemon] pids_max must be an integer"),
        ({}, {"tick_s": "fast"}, "config: [daemon] tick_s must be a number"),
        ({}, {"cgroup": 2}, "config: [daemon] cgroup must be a string"),
        ({}, {"tick": 1}, "config: unknown key [daemon] tick"),
        ({"socket": "/tmp/" + "x" * 120}, {}, "--socket /tmp/x"),
        ({"listen": "0.0.0.0:80"}, {}, "non-loopback"),
        ({"grid": "-1"}, {}, "constant grid price: a price must be finite and >= 0"),
        ({}, {"grid": "07:00=cheap"}, "is not HH:MM=PRICE"),
        ({"grid": "/no/such/tariffs.csv"}, {}, "cannot read tariff file"),
        ({}, {"grid": 0.5}, "config: [daemon] grid must be a string"),
    ],
)
def test_a_bad_setting_is_one_usage_error_naming_it(
    flags: dict[str, object], table: dict[str, object], says: str
) -> None:
    with pytest.raises(NodeConfigError if not flags.get("listen") else UsageError) as caught:
        NodeConfig.from_sources(flags, {"daemon": table})
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_daemon_table_must_be_a_table_of_known_keys() -> None:
    with pytest.raises(NodeConfigError, match="must be a table"):
        daemon_table({"daemon": 3})
    assert daemon_table({}) == {}
    with pytest.raises(NodeConfigError, match="unknown key"):
        daemon_table({"daemon": {"active_w_per_core": 1.0}})  # for tests and tools only


def test_the_state_paths_are_the_documented_layout(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    assert paths.database == tmp_path / "maxwell.db"
    assert paths.admin_token == tmp_path / "admin.token"
    assert paths.socket == tmp_path / "maxwell.sock"
    assert paths.lock == tmp_path / "daemon.lock"
    assert paths.agent_log("a1") == tmp_path / "agents" / "a1.log"
    assert paths.agent_work("a1") == tmp_path / "work" / "a1"


def test_the_grid_price_is_a_constant_a_daily_schedule_or_a_csv_series(tmp_path: Path) -> None:
    assert NodeConfig(grid=None).grid_price() is None  # the default: 1.0 $J per J
    constant = NodeConfig.from_sources({"grid": "0.8"}, {}).grid_price()
    assert constant is not None and constant.at(0.0) == 0.8
    daily = NodeConfig.from_sources({}, {"daemon": {"grid": "00:00=0.1, 07:00=0.25"}})
    schedule = daily.grid_price()
    assert schedule is not None and schedule.at(8 * 3600.0) == 0.25 and schedule.at(60.0) == 0.1
    tariffs = tmp_path / "tariffs.csv"
    tariffs.write_text("time,price\n2026-01-01T00:00:00Z,0.3\n2026-01-01T12:00:00Z,0.6\n")
    series = NodeConfig.from_sources({"grid": str(tariffs)}, {}).grid_price()
    assert series is not None and series.at(1767268800.0 + 13 * 3600) == 0.6


def test_the_daemon_quotes_the_grid_price_it_is_configured_with(tmp_path: Path) -> None:
    clock, supervisor = FakeClock(), FakeSupervisor()
    config = NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, grid="0.25")
    daemon = NodeDaemon(
        config, clock=clock, sensors=FakeSensors(clock, supervisor), supervisor=supervisor
    )
    try:
        clock.advance(0.1)
        daemon.tick_once()
        price = daemon.price()
        assert price.grid == 0.25 and price.spot == pytest.approx(0.25 * price.thermal_factor)
    finally:
        daemon.shutdown(kill_agents=True)
