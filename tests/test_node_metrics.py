"""The node's Prometheus metrics: values, names, and what promtool and a real Prometheus say."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from maxwell.node.facade import AgentInfo, AgentState, NodeStatus, PriceInfo
from maxwell.node.metrics import CONTENT_TYPE, METRIC_NAMES, render_metrics
from maxwell.node.tickstats import TickRecorder, TickStats
from maxwell.units import Money

# Debian's `prometheus` package ships both binaries (`apt-get install prometheus`).
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus"


def _agent(
    agent_id: str = "a1",
    name: str = "useful",
    state: AgentState = AgentState.RUNNING,
    **overrides: object,
) -> AgentInfo:
    fields: dict[str, object] = {
        "balance": Money(12_500_000),
        "bid": 2.0,
        "demand": 2.0,
        "share": 1.25,
        "power_w": 7.5,
        "energy_uj": 3_250_000,
        "paid": Money(4_000_000),
        "landauer": Money(250_000),
        "pid": 4242,
    }
    fields.update(overrides)
    return AgentInfo(id=agent_id, name=name, state=state, **fields)  # type: ignore[arg-type]


def _price(**overrides: object) -> PriceInfo:
    fields: dict[str, object] = {
        "spot": 1.5,
        "grid": 1.0,
        "thermal_factor": 1.5,
        "temperature_c": 62.5,
        "headroom_c": 17.5,
        "measured": False,
        "energy_source": "model",
        "temperature_source": "model",
    }
    fields.update(overrides)
    return PriceInfo(**fields)  # type: ignore[arg-type]


def _status(
    agents: list[AgentInfo] | None = None,
    price: PriceInfo | None = None,
    tick_stats: TickStats | None = None,
    event_counts: dict[str, int] | None = None,
    node_cores: float | None = None,
) -> NodeStatus:
    return NodeStatus(
        price=price or _price(),
        agents=[_agent()] if agents is None else agents,
        tick_s=1.0,
        last_tick_duration_s=0.0042,
        ticks=17,
        mechanism="uniform",
        cgroup="v2",
        tick_stats=tick_stats,
        event_counts=event_counts,
        node_cores=node_cores,
    )


def _tick_stats() -> TickStats:
    """Four committed ticks (2 ms, 4 ms, 4 ms, 30 s) and two failures."""
    recorder = TickRecorder()
    for duration_s in (0.002, 0.004, 0.004, 30.0):
        recorder.record_tick(duration_s)
    recorder.record_failure(OSError("disk full"), at=1_700_000_000.0)
    recorder.record_failure(RuntimeError("ledger locked"), at=1_700_000_060.0)
    return recorder.snapshot(ledger_rows=1234)


def _samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def _value(text: bytes, metric: str, /, **labels: str) -> float:
    return _samples(text)[(metric, frozenset(labels.items()))]


def test_agent_metrics_carry_the_snapshot_in_base_units() -> None:
    text = render_metrics(_status())
    agent = {"agent": "a1", "name": "useful"}
    assert _value(text, "maxwell_agent_energy_joules_total", **agent) == 3.25
    assert _value(text, "maxwell_agent_paid_joule_tokens_total", **agent) == 4.0
    assert _value(text, "maxwell_agent_landauer_joule_tokens_total", **agent) == 0.25
    assert _value(text, "maxwell_agent_balance_joule_tokens", **agent) == 12.5
    assert _value(text, "maxwell_agent_bid_joule_tokens_per_joule", **agent) == 2.0
    assert _value(text, "maxwell_agent_demand_cores", **agent) == 2.0
    assert _value(text, "maxwell_agent_share_cores", **agent) == 1.25
    assert _value(text, "maxwell_agent_power_watts", **agent) == 7.5


def test_node_metrics_carry_price_temperature_and_tick() -> None:
    text = render_metrics(_status())
    assert _value(text, "maxwell_spot_price_joule_tokens_per_joule") == 1.5
    assert _value(text, "maxwell_grid_price_joule_tokens_per_joule") == 1.0
    assert _value(text, "maxwell_thermal_factor") == 1.5
    assert _value(text, "maxwell_temperature_celsius", source="model", measured="false") == 62.5
    assert _value(text, "maxwell_headroom_celsius") == 17.5
    assert _value(text, "maxwell_energy_measured", source="model") == 0.0
    assert _value(text, "maxwell_tick_duration_seconds") == 0.0042
    assert _value(text, "maxwell_tick_interval_seconds") == 1.0
    assert _value(text, "maxwell_ticks_total") == 17.0
    assert _value(text, "maxwell_node_info", mechanism="uniform", cgroup="v2") == 1.0


def test_tick_stats_give_a_histogram_failures_and_ledger_rows() -> None:
    text = render_metrics(_status(tick_stats=_tick_stats()))
    buckets = {
        labels["le"]: value
        for (name, label_set), value in _samples(text).items()
        if name == "maxwell_tick_duration_seconds_bucket"
        for labels in [dict(label_set)]
    }
    # Cumulative: everything at or below each bound; +Inf holds every tick.
    assert buckets["0.001"] == 0.0
    assert buckets["0.0025"] == 1.0
    assert buckets["0.005"] == 3.0
    assert buckets["10.0"] == 3.0
    assert buckets["+Inf"] == 4.0
    assert len(buckets) == 14
    assert _value(text, "maxwell_tick_duration_seconds_count") == 4.0
    assert _value(text, "maxwell_tick_duration_seconds_sum") == 30.01
    assert _value(text, "maxwell_tick_failures_total") == 2.0
    assert _value(text, "maxwell_ledger_rows_total") == 1234.0
    assert _value(text, "maxwell_last_tick_duration_seconds") == 0.0042


def test_without_tick_stats_the_duration_stays_the_last_ticks_gauge() -> None:
    text = render_metrics(_status())
    assert _value(text, "maxwell_tick_duration_seconds") == 0.0042
    assert _value(text, "maxwell_last_tick_duration_seconds") == 0.0042
    names = {name for name, _ in _samples(text)}
    assert "maxwell_tick_failures_total" not in names
    assert "maxwell_ledger_rows_total" not in names
    assert "maxwell_tick_duration_seconds_bucket" not in names


def test_measured_sensors_say_so() -> None:
    price = _price(measured=True, energy_source="rapl", temperature_source="hwmon")
    text = render_metrics(_status(price=price))
    assert _value(text, "maxwell_energy_measured", source="rapl") == 1.0
    assert _value(text, "maxwell_temperature_celsius", source="hwmon", measured="true") == 62.5


def test_agent_state_is_a_state_set_with_one_current_state() -> None:
    agents = [
        _agent("a1", "useful", AgentState.THROTTLED),
        _agent("a2", "looper", AgentState.DEAD),
        _agent("a3", "bloat", AgentState.DEAD),
    ]
    text = render_metrics(_status(agents=agents))
    for agent in agents:
        states = {
            state: _value(
                text, "maxwell_agent_state", agent=agent.id, name=agent.name, state=str(state)
            )
            for state in AgentState
        }
        assert states == {state: float(state is agent.state) for state in AgentState}
    counts = {state: _value(text, "maxwell_agents", state=str(state)) for state in AgentState}
    assert counts[AgentState.DEAD] == 2.0
    assert counts[AgentState.THROTTLED] == 1.0
    assert sum(counts.values()) == len(agents)


def test_types_and_help_lines() -> None:
    text = render_metrics(
        _status(tick_stats=_tick_stats(), event_counts={"apoptosis": 0}, node_cores=8.0)
    )
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    counters = {name for name, family in families.items() if family.type == "counter"}
    # The parser names a counter family without its `_total` suffix.
    assert counters == {
        "maxwell_agent_energy_joules",
        "maxwell_agent_paid_joule_tokens",
        "maxwell_agent_landauer_joule_tokens",
        "maxwell_ticks",
        "maxwell_tick_failures",
        "maxwell_ledger_rows",
        "maxwell_events",
    }
    histograms = {name for name, family in families.items() if family.type == "histogram"}
    assert histograms == {"maxwell_tick_duration_seconds"}
    assert all(family.type in {"counter", "gauge", "histogram"} for family in families.values())
    assert all(family.documentation for family in families.values())
    exposed = {name + "_total" if name in counters else name for name in families}
    assert exposed == set(METRIC_NAMES)


def test_event_counts_are_one_counter_by_kind_and_absent_when_not_kept() -> None:
    counts = {"apoptosis": 2, "audited": 5, "slashed": 0}
    text = render_metrics(_status(event_counts=counts))
    assert {kind: _value(text, "maxwell_events_total", kind=kind) for kind in counts} == counts
    names = {sample_name for sample_name, _ in _samples(render_metrics(_status()))}
    assert "maxwell_events_total" not in names
    assert "maxwell_node_cores" not in names  # a snapshot that does not know them


def test_node_cores_are_what_the_snapshot_says() -> None:
    assert _value(render_metrics(_status(node_cores=6.0)), "maxwell_node_cores") == 6.0


def test_rendering_is_a_pure_function_of_the_snapshot() -> None:
    status = _status()
    assert render_metrics(status) == render_metrics(status)


def test_awkward_label_values_are_escaped() -> None:
    name = 'we"ird\\name\nwith {braces}, commas="x"'
    text = render_metrics(_status(agents=[_agent("a-1", name)]))
    assert _value(text, "maxwell_agent_power_watts", agent="a-1", name=name) == 7.5


def test_no_agents_still_renders_every_node_family() -> None:
    text = render_metrics(_status(agents=[]))
    names = {sample_name for sample_name, _ in _samples(text)}
    assert "maxwell_agent_energy_joules_total" not in names
    assert "maxwell_spot_price_joule_tokens_per_joule" in names
    assert _value(text, "maxwell_agents", state="running") == 0.0


def test_non_finite_readings_render() -> None:
    price = _price(spot=math.nan, headroom_c=math.inf)
    text = render_metrics(_status(price=price))
    assert math.isnan(_value(text, "maxwell_spot_price_joule_tokens_per_joule"))
    assert _value(text, "maxwell_headroom_celsius") == math.inf


def test_content_type_is_the_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


_PROMTOOL_CASES = {
    "one agent": _status(),
    "no agents": _status(agents=[]),
    "tick stats": _status(tick_stats=_tick_stats()),
    "event counts": _status(
        event_counts={"apoptosis": 1, "audited": 0, "slashed": 3}, node_cores=4.0
    ),
    "tick stats, no tick yet": _status(tick_stats=TickRecorder().snapshot(ledger_rows=0)),
    "every state, awkward names": _status(
        agents=[
            _agent(f"a{i}", f'agent "{state}"\\\n', state) for i, state in enumerate(AgentState)
        ],
        price=_price(spot=math.nan, headroom_c=-math.inf, measured=True, energy_source="rapl"),
    ),
}


@pytest.mark.skipif(PROMTOOL is None, reason=f"promtool not installed ({INSTALL_HINT})")
@pytest.mark.parametrize("case", list(_PROMTOOL_CASES))
def test_promtool_check_metrics_finds_no_problem(case: str) -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=render_metrics(_PROMTOOL_CASES[case]),
        capture_output=True,
        timeout=30,
        check=False,
    )
    # promtool exits 0 even for lint problems, printing them: both must be clean.
    assert checked.returncode == 0, checked.stderr.decode()
    assert checked.stdout.decode() == ""
    assert checked.stderr.decode() == ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def metrics_endpoint() -> Iterator[str]:
    """`/metrics` on loopback, served by a plain HTTP server from `render_metrics`."""
    body = render_metrics(_status())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.skipif(PROMETHEUS is None, reason=f"prometheus not installed ({INSTALL_HINT})")
def test_a_real_prometheus_scrapes_the_metrics(metrics_endpoint: str, tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: maxwell\n"
        f"    static_configs:\n      - targets: ['{metrics_endpoint}']\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        query = 'maxwell_agent_energy_joules_total{agent="a1"}'
        result: list[object] = []
        deadline = time.monotonic() + 60
        while not result and time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.5)  # already a poll with a deadline: Prometheus scrapes once a second
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
                )
            except httpx.TransportError:
                continue  # not listening yet
            if answer.status_code == 200:
                result = answer.json()["data"]["result"]
        assert result, (
            "Prometheus never scraped the metrics: " + (tmp_path / "prometheus.log").read_text()
        )
        (series,) = result
        assert isinstance(series, dict)
        assert series["metric"]["name"] == "useful"
        assert float(series["value"][1]) == 3.25
        targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        (target,) = targets["data"]["activeTargets"]
        assert target["health"] == "up", target
        assert target["lastError"] == ""
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
