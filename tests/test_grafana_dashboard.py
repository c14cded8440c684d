"""contrib/grafana/maxwell.json: a Grafana dashboard whose shape is checked here, and whose every
PromQL expression is run through a real Prometheus that scrapes real daemons (with real agents: a
busy looper, one starved into apoptosis, one audit passed and one failed), and must return data.

With serf installed, the daemons gossip (two nodes), so that the cluster panels have data too;
without it, the cluster test says why it skips and the others run on one plain daemon."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gossip_support import SERF, ClusterKeys, Daemon, node_prefix, serfs_named
from helpers import maxwell, pids_with_tag, wait_until
from maxwell.gossip.metrics import CLUSTER_METRIC_NAMES
from maxwell.node.metrics import METRIC_NAMES

TESTS = Path(__file__).resolve().parent
DASHBOARD = TESTS.parent / "contrib" / "grafana" / "maxwell.json"
PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = "prometheus is not installed (apt-get install --no-install-recommends prometheus)"
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
GRID_COLUMNS = 24
# What Grafana puts for its variables when it runs a query (a scrape is every second here).
RATE_INTERVAL, INTERVAL, RANGE = "30s", "5s", "5m"


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows and those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every query: the panels' targets and the query variables'."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable ${variable['name']}", variable["definition"]))
    return found


def _metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label values and legends are not expressions)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bmaxwell_[a-zA-Z0-9_:]*", without_strings))


def _exported(name: str) -> bool:
    if name in METRIC_NAMES or name in CLUSTER_METRIC_NAMES:
        return True
    base, _, _ = name.rpartition("_")
    return name.endswith(HISTOGRAM_SUFFIXES) and base == "maxwell_tick_duration_seconds"


def _promql_regex(text: str) -> str:
    """`text` as a regex matching only itself, in a PromQL string (as Grafana writes `$var`)."""
    return re.escape(text).replace("\\", "\\\\")


def _substituted(expr: str, instance: str) -> str:
    """`expr` as Grafana sends it: its variables replaced, `$instance` by a regex of one node."""
    for variable, value in (
        ("$__rate_interval", RATE_INTERVAL),
        ("$__interval", INTERVAL),
        ("$__range", RANGE),
        ("$instance", _promql_regex(instance)),
    ):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the test does not know in {expr}"
    return expr


# --- (a) the dashboard's shape --------------------------------------------------------------


def test_the_dashboard_imports_anywhere_with_a_datasource_and_an_instance_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] == "Maxwell" and dashboard["uid"]
    assert dashboard["schemaVersion"] >= 39  # Grafana 10 and later
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert instance["definition"] == "label_values(maxwell_node_info, instance)"


def test_every_panel_has_the_datasource_a_target_and_its_own_id() -> None:
    panels = _panels(_dashboard())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"ids repeat: {sorted(ids)}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']!r} has no target"
        assert panel.get("description"), f"{panel['title']!r} does not say what it shows"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()


def test_panels_fit_the_grid_and_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(_dashboard()):
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0, panel["title"]
        assert x + w <= GRID_COLUMNS, f"{panel['title']!r} runs off the grid"
        for cell in ((col, row) for col in range(x, x + w) for row in range(y, y + h)):
            assert cell not in taken, f"{panel['title']!r} overlaps {taken[cell]!r}"
            taken[cell] = panel["title"]


def test_every_metric_the_dashboard_reads_is_exported_and_each_topic_has_a_panel() -> None:
    queries = _queries(_dashboard())
    read = {name for _, expr in queries for name in _metric_names(expr)}
    assert read, "no metric names found"
    unknown = {name for name in read if not _exported(name)}
    assert not unknown, f"the daemon exports no {sorted(unknown)}"
    topics = {
        "price": "maxwell_spot_price_joule_tokens_per_joule",
        "temperature": "maxwell_temperature_celsius",
        "capacity": "maxwell_capacity_cores",
        "the machine's cores": "maxwell_node_cores",
        "energy per agent": "maxwell_agent_energy_joules_total",
        "apoptosis and audits": "maxwell_events_total",
        "tick duration": "maxwell_tick_duration_seconds_bucket",
        "tick failures": "maxwell_tick_failures_total",
        "ledger growth": "maxwell_ledger_rows_total",
        "the cluster": "maxwell_cluster_members",
        "peers' prices": "maxwell_cluster_node_price_joule_tokens_per_joule",
        "distress": "maxwell_gossip_distress_events_total",
    }
    assert {topic for topic, name in topics.items() if name not in read} == set()
    for _, expr in queries:
        _substituted(expr, "127.0.0.1:9")  # every variable it uses is one Grafana fills in


def test_the_metric_name_parser_reads_names_not_labels() -> None:
    expr = 'sum by (kind) (rate(maxwell_events_total{kind="maxwell_x"}[1m])) / maxwell_ticks_total'
    assert _metric_names(expr) == {"maxwell_events_total", "maxwell_ticks_total"}
    assert not _exported("maxwell_no_such_thing")
    assert _exported("maxwell_tick_duration_seconds_bucket")


# --- (b) for real: daemons, agents, Prometheus ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        assert isinstance(port, int)
        return port


@dataclass
class Market:
    """What the fixture started: the daemons' state directories and listeners, Prometheus."""

    states: list[Path]
    listeners: list[str]
    prometheus: str  # http://127.0.0.1:PORT
    gossip: bool
    agents: dict[str, str] = field(default_factory=dict)  # name -> id

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        assert answer.status_code == 200, f"{expr}: {answer.status_code} {answer.text}"
        body = answer.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result = body["data"]["result"]
        assert isinstance(result, list)
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return max((float(series["value"][1]) for series in result), default=float("nan"))


def _plain_daemon(state: Path, listen: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
         "--cgroup", "none", "--tick", "0.2", "--listen", listen],
        cwd=TESTS, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process


def _serving(listen: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"http://{listen}/metrics", timeout=5).status_code == 200
    return False


def _spawn(state: Path, name: str, fund: str, tag: str) -> dict[str, str]:
    said = maxwell(
        "spawn", "--state", str(state), "--fund", fund, "--bid", "2", "--name", name, "--json",
        "--", "sh", "-c", f"while :; do :; done # {tag}",
    )  # fmt: skip
    assert said.returncode == 0, said.stderr
    agent = json.loads(said.stdout)
    assert isinstance(agent, dict)
    return agent


def _cpu_s(state: Path, agent: str) -> float:
    """The agent's CPU time as the node has measured it."""
    said = maxwell("ps", "--state", str(state), "--json")
    assert said.returncode == 0, said.stderr
    return float(next(a["cpu_s"] for a in json.loads(said.stdout)["agents"] if a["id"] == agent))


def _burn_more(state: Path, agent: str, cpu_s: float) -> None:
    """Wait until the agent has burnt `cpu_s` more seconds of CPU than it has now."""
    burnt = _cpu_s(state, agent)
    wait_until(lambda: _cpu_s(state, agent) >= burnt + cpu_s, what=f"{cpu_s} s more of CPU",
               timeout_s=30)  # fmt: skip


def _audit_once_honest_once_not(state: Path, agent: dict[str, str]) -> None:
    """An audit it passes, then one it fails: its second report claims far less CPU than the
    kernel counted since its first."""
    verdicts = []
    for claimed in ("0.01", "0.02"):
        said = maxwell("report", "--state", str(state), "--token", agent["token"], "--cpu", claimed)
        assert said.returncode == 0, said.stderr
        _burn_more(state, agent["agent"], 0.5)  # CPU the second report does not claim
        audit = maxwell("audit", "--state", str(state), agent["agent"], "--json")
        honest = json.loads(audit.stdout)["honest"]
        assert audit.returncode == (0 if honest else 3), audit.stderr  # 3: it failed
        verdicts.append(honest)
    assert verdicts == [True, False]


def _start_prometheus(tmp: Path, targets: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    assert PROMETHEUS is not None
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: maxwell\n"
        f"    static_configs:\n      - targets: {json.dumps(targets)}\n"
    )
    port = _free_port()
    log = (tmp / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()  # the child holds it
    return server, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _gossiping(tmp: Path, prefix: str, started: list[tuple[Path, str, Any]]) -> None:
    """Two daemons gossiping on loopback (their serfs named `prefix`-N), joined through the
    first, each with a listener; appended to `started` as each one serves."""
    names = [f"{prefix}-{i}" for i in range(2)]
    keys = ClusterKeys.make(tmp / "keys", names)
    seed: str | None = None
    for name in names:
        listen = f"127.0.0.1:{_free_port()}"
        daemon = Daemon(keys, name, tmp / name, seed, "--listen", listen, "--tick", "0.2")
        seed = seed or daemon.bind
        started.append((daemon.state, listen, daemon.process))


@contextlib.contextmanager
def _daemons(tmp: Path) -> Iterator[list[tuple[Path, str, Any]]]:
    """(state, listener, process) of two gossiping daemons with serf, else of one plain one."""
    started: list[tuple[Path, str, Any]] = []
    prefix = node_prefix()
    try:
        if SERF is not None:
            _gossiping(tmp, prefix, started)
        else:
            listen = f"127.0.0.1:{_free_port()}"
            started.append((tmp / "node", listen, _plain_daemon(tmp / "node", listen)))
        for _, listen, process in started:
            assert process.poll() is None, process.communicate()[1]
            wait_until(functools.partial(_serving, listen), timeout_s=60, what=listen)
        yield started
    finally:
        for _, _, process in started:
            _stop(process)
        if SERF is not None:
            wait_until(lambda: serfs_named(prefix) == "", timeout_s=20, what="the serfs gone")


def _scraped_enough(market: Market) -> bool:
    """Prometheus has a minute's worth of work to show: every target up and scraped a few times
    since the agents' events, the apoptosis and both audits counted, the cluster verified."""
    instance = _promql_regex(market.listeners[0])
    wanted = [
        f'min(count_over_time(maxwell_ticks_total{{instance=~"{instance}"}}[{RATE_INTERVAL}]))',
        f'maxwell_events_total{{instance=~"{instance}", kind="apoptosis"}}',
        f'maxwell_events_total{{instance=~"{instance}", kind="audited"}}',
        f'maxwell_events_total{{instance=~"{instance}", kind="slashed"}}',
        f"min(count_over_time(up[{RATE_INTERVAL}]))",
    ]
    with contextlib.suppress(httpx.TransportError):
        counts = [market.value(expr) for expr in wanted]
        if not (counts[0] >= 5 and counts[4] >= 5 and all(c >= 1 for c in counts[1:4])):
            return False
        verified = f'maxwell_cluster_members{{instance=~"{instance}", verified="true"}}'
        return not market.gossip or market.value(verified) >= 2
    return False


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    """Real daemons, real agents on the first (busy, starving, audited twice), and Prometheus
    scraping every daemon each second, until it has seen all of it; all stopped after."""
    if PROMETHEUS is None:
        pytest.skip(NO_PROMETHEUS)
    tmp = tmp_path_factory.mktemp("grafana")
    if os.geteuid() == 0:  # a root daemon's agents run as uids of their own: they must pass
        base = tmp_path_factory.getbasetemp()
        for directory in (base.parent, base, tmp):
            directory.chmod(0o711)
    tag = f"mxgrafana-{uuid.uuid4().hex[:10]}"
    with _daemons(tmp) as started:
        states, listeners = [s for s, _, _ in started], [listen for _, listen, _ in started]
        server, url = _start_prometheus(tmp, listeners)
        market = Market(states, listeners, url, gossip=SERF is not None)
        try:
            busy = _spawn(states[0], "busy", "1000J", tag)
            starving = _spawn(states[0], "starving", "2J", tag)  # frozen, then apoptosis
            market.agents = {"busy": busy["agent"], "starving": starving["agent"]}
            _audit_once_honest_once_not(states[0], busy)

            def ready() -> bool:
                assert server.poll() is None, (tmp / "prometheus.log").read_text()
                return _scraped_enough(market)

            wait_until(ready, timeout_s=120, interval_s=0.5, what="Prometheus to see it all")
            yield market
        finally:
            _stop(server)
            for agent_id in market.agents.values():
                maxwell("kill", "--state", str(states[0]), agent_id)  # the dead one refuses
            for pid in pids_with_tag(tag):  # none, unless a kill failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert pids_with_tag(tag) == []


def _results(market: Market, cluster: bool) -> dict[str, list[dict[str, Any]]]:
    """Each of the dashboard's queries (the cluster's, or all the others) as Prometheus answers."""
    answers = {}
    for where, expr in _queries(_dashboard()):
        if where.startswith("variable"):
            continue  # `label_values` is Grafana's, not PromQL: asked of the labels API below
        if any(name in CLUSTER_METRIC_NAMES for name in _metric_names(expr)) == cluster:
            answers[f"{where}: {expr}"] = market.query(_substituted(expr, market.listeners[0]))
    return answers


@needs_prometheus
def test_every_node_query_returns_data_from_a_real_daemon(market: Market) -> None:
    answers = _results(market, cluster=False)
    assert len(answers) >= 25
    empty = [where for where, result in answers.items() if not result]
    assert not empty, "no data for:\n" + "\n".join(empty)
    instance = _promql_regex(market.listeners[0])
    # The figures move: the busy agent burns energy, ticks take time, the ledger grows.
    energy = (
        f'rate(maxwell_agent_energy_joules_total{{instance=~"{instance}", name="busy"}}'
        f"[{RATE_INTERVAL}])"
    )
    assert market.value(energy) > 0
    assert market.value(f'rate(maxwell_ledger_rows_total{{instance=~"{instance}"}}[1m])') > 0
    quantile = (
        "histogram_quantile(0.99, sum by (le) (rate("
        f'maxwell_tick_duration_seconds_bucket{{instance=~"{instance}"}}[1m])))'
    )
    assert 0 < market.value(quantile) < 10
    values = httpx.get(
        f"{market.prometheus}/api/v1/label/instance/values",
        params={"match[]": "maxwell_node_info"}, timeout=10,
    ).json()  # fmt: skip
    assert set(values["data"]) == set(market.listeners)  # the $instance variable's choices


@needs_prometheus
@pytest.mark.skipif(SERF is None, reason="serf is not installed (apt-get install serf): "
                    "the cluster panels need gossiping daemons")  # fmt: skip
def test_every_cluster_query_returns_data_from_gossiping_daemons(market: Market) -> None:
    answers = _results(market, cluster=True)
    assert len(answers) >= 5
    empty = [where for where, result in answers.items() if not result]
    assert not empty, "no data for:\n" + "\n".join(empty)
    peers = market.query(
        f'maxwell_cluster_node_price_joule_tokens_per_joule{{instance=~"{_promql_regex(market.listeners[0])}"}}'
    )
    assert {series["metric"]["node"] for series in peers} == {s.name for s in market.states}
