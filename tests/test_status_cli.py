"""`maxwell status` and the tick figures behind it: `GET /status`, `Client.status()`, and the
command as a real subprocess against a served fake node (exit codes as `maxwell ps`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, TestClient, serving
from helpers import LOCAL, last_json, maxwell
from maxwell import __version__
from maxwell.client import Client
from maxwell.node.api import ApiServer, create_app
from maxwell.node.tickstats import TickRecorder, TickStats
from maxwell.node.wire import status_to_json
from maxwell.units import Money


def _failing_stats() -> TickStats:
    recorder = TickRecorder()
    for duration_s in (0.002, 0.004, 0.004, 0.25):
        recorder.record_tick(duration_s)
    recorder.record_failure(OSError("disk full"), at=1_700_000_000.0)
    recorder.record_failure(RuntimeError("ledger [bold]locked[/bold]"), at=1_700_000_060.0)
    return recorder.snapshot(ledger_rows=1234)


@pytest.fixture
def node() -> FakeNode:
    node = FakeNode()
    node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5, name="alpha")
    node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5, name="beta")
    node.kill("a2")
    return node


@pytest.fixture
def server(node: FakeNode) -> Iterator[ApiServer]:
    with serving(node) as running:
        yield running


@pytest.fixture
def connection(server: ApiServer) -> list[str]:
    assert server.socket_path is not None
    return ["--socket", server.socket_path, "--token", ADMIN_TOKEN]


LABELS = ("ticks", "last tick", "tick median", "tick stats", "failures", "last error",
          "ledger rows", "capacity", "mechanism", "cgroup", "spot price", "agents")  # fmt: skip


def rows(stdout: str) -> dict[str, str]:
    """The human block as {label: value}, whitespace collapsed."""
    found = {}
    for line in (line.strip() for line in stdout.splitlines()):
        label = next((label for label in LABELS if line.startswith(label + " ")), None)
        if label is not None:
            found[label] = " ".join(line[len(label) :].split())
    return found


def one_line_error(stderr: str, prog: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"maxwell {prog}: error: "), stderr
    return lines[0]


def test_get_status_carries_the_tick_figures(node: FakeNode) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(node), base_url=LOCAL) as http:
        plain = http.get("/status", headers=headers).json()
        node.tick_stats = _failing_stats()
        kept = http.get("/status", headers=headers).json()
    assert (plain["tick_failures"], plain["last_error"], plain["tick_ms_median"]) == (0, None, None)
    assert plain["ledger_rows"] == 0 and plain["ticks"] == 7 and len(plain["agents"]) == 2
    assert kept["tick_failures"] == 2
    assert kept["last_error"] == "RuntimeError: ledger [bold]locked[/bold]"
    assert kept["last_error_at"] == 1_700_000_060.0
    assert (kept["tick_ms_median"], kept["tick_ms_p99"]) == (4.0, 250.0)
    assert kept["ledger_rows"] == 1234
    assert set(kept) == set(plain)


def test_the_status_schema_declares_the_new_fields(node: FakeNode) -> None:
    with TestClient(create_app(node), base_url=LOCAL) as http:
        schema = http.get("/openapi.json").json()["components"]["schemas"]["StatusBody"]
    for field in ("tick_failures", "last_error", "last_error_at", "tick_ms_median", "ledger_rows"):
        assert field in schema["required"]
        assert schema["properties"][field]["description"]


def test_the_sdk_reads_the_tick_stats(server: ApiServer, node: FakeNode) -> None:
    with Client(socket=server.socket_path, token=ADMIN_TOKEN) as admin:
        assert admin.status().tick_stats is None
        node.tick_stats = _failing_stats()
        stats = admin.status().tick_stats
    assert stats is not None
    assert (stats.failures, stats.ledger_rows, stats.p99_ms) == (2, 1234, 250.0)
    assert stats.last_error == "RuntimeError: ledger [bold]locked[/bold]"


def test_status_json_is_the_status_endpoints_body(connection: list[str], node: FakeNode) -> None:
    node.tick_stats = _failing_stats()
    result = maxwell("status", *connection, "--json")
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout) == status_to_json(node.status()) | {"version": __version__}


def test_status_human_block(connection: list[str], node: FakeNode) -> None:
    node.tick_stats = _failing_stats()
    result = maxwell("status", *connection)
    assert result.returncode == 0, result.stderr
    block = rows(result.stdout)
    assert block["ticks"] == "7 (every 1 s)"
    assert block["last tick"] == "1 ms"
    assert block["tick median"] == "4 ms, p99 250 ms"
    assert block["failures"] == "2"
    # Printed as it is, not taken for rich markup.
    assert block["last error"].startswith("RuntimeError: ledger [bold]locked[/bold] (at ")
    assert block["ledger rows"] == "1234"
    assert (block["mechanism"], block["cgroup"]) == ("uniform", "none")
    assert block["capacity"] == "0 cores"
    assert block["spot price"] == "1 $J/J"
    assert block["agents"] == "2: 1 running, 1 dead"
    assert "tick stats" not in block


def test_status_without_failures_or_stats(connection: list[str], node: FakeNode) -> None:
    unkept = maxwell("status", *connection)
    assert unkept.returncode == 0, unkept.stderr
    block = rows(unkept.stdout)
    assert block["tick stats"] == "not kept by this node"
    assert "last error" not in block and "failures" not in block
    node.tick_stats = TickRecorder().snapshot(ledger_rows=5)
    calm = maxwell("status", *connection)
    assert calm.returncode == 0, calm.stderr
    block = rows(calm.stdout)
    assert (block["failures"], block["last error"], block["ledger rows"]) == ("0", "none", "5")
    assert block["tick median"] == "0 ms, p99 0 ms"


def test_status_errors_and_exit_codes(server: ApiServer, node: FakeNode) -> None:
    assert server.socket_path is not None
    agent = maxwell("status", "--socket", server.socket_path, "--token", node.token_of("a1"))
    assert agent.returncode == 1
    assert "the node refused: only the admin token" in one_line_error(agent.stderr, "status")
    bad_token = maxwell("status", "--socket", server.socket_path, "--token", "wrong", "--json")
    assert bad_token.returncode == 1
    assert "unknown token" in one_line_error(bad_token.stderr, "status")
    gone = maxwell("status", "--socket", "/nonexistent/maxwell.sock", "--token", "t")
    assert gone.returncode == 125
    assert one_line_error(gone.stderr, "status").endswith("no daemon at /nonexistent/maxwell.sock")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAXWELL_")}
    nowhere = maxwell("status", "--token", "t", env=env)  # the default layout: none runs here
    assert nowhere.returncode == 125
    assert "no daemon at " in one_line_error(nowhere.stderr, "status")


def test_status_help() -> None:
    result = maxwell("status", "--help")
    assert result.returncode == 0
    for words in ("--json", "--socket", "--state", "p99", "last error", "exit status"):
        assert words in " ".join(result.stdout.split())
    listed = maxwell("--help")
    assert "status" in listed.stdout and "the node's health" in listed.stdout
