"""`maxwell spawn/ps/fund/bid/kill/events/price` as real subprocesses against a served fake node,
and `maxwell daemon`'s flags and its run loop (with the fake node in place of `NodeDaemon`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from helpers import last_json, maxwell, wait_until
from maxwell import __version__
from maxwell.cli import daemon_cmd
from maxwell.errors import UsageError
from maxwell.node.api import ApiServer
from maxwell.node.facade import Report
from maxwell.node.wire import to_json
from maxwell.units import Money

TESTS = Path(__file__).resolve().parent
AGENT_KEYS = {"id", "name", "state", "balance", "bid", "demand", "share", "power_w", "energy_j"}


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def server(node: FakeNode) -> Iterator[ApiServer]:
    with serving(node) as running:
        yield running


@pytest.fixture
def connection(server: ApiServer) -> list[str]:
    assert server.socket_path is not None
    return ["--socket", server.socket_path, "--token", ADMIN_TOKEN]


def one_line_error(stderr: str, prog: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"maxwell {prog}: error: "), stderr
    return lines[0]


def test_spawn_prints_the_id_or_json(connection: list[str], node: FakeNode) -> None:
    plain = maxwell("spawn", *connection, "--fund", "50J", "--bid", "0.5", "--", "sleep", "9")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "a1"
    assert node.agent("a1").balance == 50_000_000  # 50 J of budget = 50 $J
    result = maxwell(
        "spawn", *connection, "--fund", "2kJ", "--bid", "1.5", "--demand", "2",
        "--name", "big", "--json", "--", "python3", "-c", "pass",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spawned = last_json(result.stdout)
    assert set(spawned) == {"agent", "name", "pid", "token", "version"}
    info = node.agent(spawned["agent"])
    assert (info.name, info.balance, info.bid, info.demand) == ("big", 2_000_000_000, 1.5, 2.0)
    node.check_invariants()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--fund", "10J", "--bid", "1"], "no command given"),
        (["--fund", "10 parsecs", "--bid", "1", "--", "true"], "unknown energy unit"),
        (["--fund=-5J", "--bid", "1", "--", "true"], "cannot read energy"),
        (["--fund", "10J", "--bid", "nan", "--", "true"], "invalid price"),
        (["--fund", "10J", "--bid", "1", "--demand", "0", "--", "true"], "invalid positive"),
        (["--bid", "1", "--", "true"], "--fund"),
    ],
)
def test_spawn_usage_errors(
    connection: list[str], node: FakeNode, args: list[str], says: str
) -> None:
    before = node.snapshot()
    result = maxwell("spawn", *connection, *args)
    assert result.returncode == 2
    assert says in one_line_error(result.stderr, "spawn")
    assert node.snapshot() == before


def test_ps_fund_bid_kill(connection: list[str], node: FakeNode) -> None:
    spawned = node.spawn(["sleep", "9"], fund=Money(1_000_000), bid=0.5, name="sleeper")
    listed = maxwell("ps", *connection, "--json")
    assert listed.returncode == 0, listed.stderr
    agents = last_json(listed.stdout)["agents"]
    assert [agent["id"] for agent in agents] == [spawned.agent]
    assert set(agents[0]) >= AGENT_KEYS and "pid" in agents[0]
    table = maxwell("ps", *connection)
    assert "sleeper" in table.stdout and "running" in table.stdout

    funded = maxwell("fund", *connection, spawned.agent, "1kJ", "--json")
    assert funded.returncode == 0, funded.stderr
    assert last_json(funded.stdout)["balance"] == 1001.0

    bid = maxwell("bid", *connection, spawned.agent, "0.75", "--demand", "3")
    assert bid.returncode == 0, bid.stderr
    assert "bid 0.75 $J/J for 3 cores" in bid.stdout
    assert (node.agent(spawned.agent).bid, node.agent(spawned.agent).demand) == (0.75, 3.0)

    killed = maxwell("kill", *connection, spawned.agent)
    assert killed.returncode == 0 and "dead" in killed.stdout
    again = maxwell("kill", *connection, spawned.agent)
    assert again.returncode == 1
    assert "the node refused: agent a1 is dead" in one_line_error(again.stderr, "kill")
    node.check_invariants()


def test_an_agent_token_is_refused_what_it_may_not_do(server: ApiServer, node: FakeNode) -> None:
    mine = node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
    other = node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
    assert server.socket_path is not None
    as_agent = ["--socket", server.socket_path, "--token", mine.token]
    own = maxwell("bid", *as_agent, mine.agent, "0.9")
    assert own.returncode == 0, own.stderr
    for args in (["bid", other.agent, "0.9"], ["fund", mine.agent, "1J"], ["kill", mine.agent]):
        before = node.snapshot()
        refused = maxwell(*args[:1], *as_agent, *args[1:])
        assert refused.returncode == 1
        assert "the node refused: " in one_line_error(refused.stderr, args[0])
        assert node.snapshot() == before
    listed = last_json(maxwell("ps", *as_agent, "--json").stdout)
    assert [agent["id"] for agent in listed["agents"]] == [mine.agent]


def test_report_with_the_agent_token_from_the_environment(
    server: ApiServer, node: FakeNode
) -> None:
    mine = node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
    assert server.socket_path is not None
    env = {
        **os.environ,
        "MAXWELL_SOCKET": server.socket_path,
        "MAXWELL_AGENT_TOKEN": mine.token,
    }
    env.pop("MAXWELL_TOKEN", None)
    done = maxwell(
        "report", "--cpu", "1.5", "--memory-freed", "4096", "--work", "7", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reported"] == {
        "cpu_s": 1.5,
        "memory_freed_bytes": 4096,
        "work": 7,
    }
    before = node.snapshot()
    fell = maxwell("report", "--cpu", "1.0", env=env)
    assert fell.returncode == 1
    assert "cumulative" in one_line_error(fell.stderr, "report")
    bad = maxwell("report", "--cpu", "-1", env=env)
    assert bad.returncode == 2 and "--cpu" in one_line_error(bad.stderr, "report")
    assert node.snapshot() == before


def test_audit_prints_the_verdict_and_fails_a_liar(connection: list[str], node: FakeNode) -> None:
    honest = node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
    liar = node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
    node.liars.add(liar.agent)
    node.report(honest.agent, Report(0.5))  # an audit checks reports once there is one
    passed = maxwell("audit", *connection, honest.agent)
    assert passed.returncode == 0, passed.stderr
    assert "audit 1 passed (checked: reports)" in passed.stdout
    assert "75.0% libpython3.11.so.1.0" in passed.stdout
    failed = maxwell("audit", *connection, liar.agent, "--json")
    assert failed.returncode == 3, failed.stderr
    result = json.loads(failed.stdout)
    assert result["honest"] is False and result["agent"] == liar.agent
    assert result["findings"] == ["claimed 1.000 s of CPU, the kernel counted 9.000 s"]
    missing = maxwell("audit", *connection, "zz")
    assert missing.returncode == 1 and "no agent" in one_line_error(missing.stderr, "audit")


def test_price(connection: list[str], node: FakeNode) -> None:
    as_json = maxwell("price", *connection, "--json")
    assert as_json.returncode == 0
    assert last_json(as_json.stdout) == to_json(node.price()) | {"version": __version__}
    human = maxwell("price", *connection)
    for words in ("spot", "grid", "thermal factor", "clearing", "55.0 °C", "headroom", "modelled"):
        assert words in human.stdout


def test_events_json_lines(connection: list[str], node: FakeNode) -> None:
    node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
    node.fund("a1", Money(5))
    result = maxwell("events", *connection, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(event["seq"], event["kind"]) for event in events] == [
        (1, "funded"),  # a spawn funds, then starts
        (2, "spawned"),
        (3, "funded"),
    ]
    human = maxwell("events", *connection, "--after", "2")
    assert "funded" in human.stdout and "spawned" not in human.stdout


def test_events_follow_until_interrupted(connection: list[str], node: FakeNode) -> None:
    command = [sys.executable, "-m", "maxwell.cli.main", "events", *connection, "--json"]
    with subprocess.Popen(
        [*command, "--follow", "--poll", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        try:
            node.spawn(["sleep"], fund=Money(1_000_000), bid=0.5)
            assert follower.stdout is not None
            assert json.loads(follower.stdout.readline())["kind"] == "funded"
            assert json.loads(follower.stdout.readline())["kind"] == "spawned"
            node.bid("a1", 2.0)
            assert json.loads(follower.stdout.readline())["kind"] == "bid"
            follower.send_signal(signal.SIGINT)
            assert follower.wait(10) == 0
        finally:
            if follower.poll() is None:
                follower.kill()


def test_state_dir_gives_the_socket_and_the_admin_token(node: FakeNode, tmp_path: Path) -> None:
    from maxwell.node.api import create_app, serve

    state = Path(f"/tmp/mxw-state-{os.getpid()}")
    state.mkdir()
    try:
        (state / "admin.token").write_text(ADMIN_TOKEN + "\n")
        server = serve(create_app(node), socket_path=str(state / "maxwell.sock"), listen=None)
        try:
            result = maxwell("ps", "--state", str(state), "--json")
            assert result.returncode == 0, result.stderr
            assert last_json(result.stdout) == {"agents": [], "version": __version__}
        finally:
            server.stop()
        (state / "admin.token").unlink()
        missing = maxwell("ps", "--state", str(state))  # the daemon is gone, its socket stays
        assert missing.returncode == 125
        assert one_line_error(missing.stderr, "ps") == (
            f"maxwell ps: error: no daemon at {state}: "
            f"start it with 'maxwell daemon --state {state}'"
        )
    finally:
        for path in state.iterdir():
            path.unlink()
        state.rmdir()


def test_finding_no_daemon(connection: list[str], node: FakeNode) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAXWELL_")}
    if not any(Path(p).exists() for p in ("/run/maxwell/maxwell.sock", "/var/lib/maxwell")):
        nowhere = maxwell("ps", "--token", "t", env=env)  # the default layout: nothing there
        assert nowhere.returncode == 125
        assert one_line_error(nowhere.stderr, "ps") == (
            "maxwell ps: error: no daemon at /var/lib/maxwell: "
            "start it with 'maxwell daemon --state /var/lib/maxwell'"
        )
    elsewhere = maxwell("ps", env={**env, "MAXWELL_STATE": "/nonexistent/state"})
    assert "no daemon at /nonexistent/state: start it" in one_line_error(elsewhere.stderr, "ps")
    gone = maxwell("price", "--socket", "/nonexistent/maxwell.sock", "--token", "t")
    assert gone.returncode == 125
    assert one_line_error(gone.stderr, "price").endswith("no daemon at /nonexistent/maxwell.sock")
    bad_token = maxwell("price", connection[0], connection[1], "--token", "wrong")
    assert bad_token.returncode == 1
    assert "unknown token" in one_line_error(bad_token.stderr, "price")
    via_env = maxwell("price", "--json", env={**env, "MAXWELL_SOCKET": connection[1],
                                              "MAXWELL_TOKEN": ADMIN_TOKEN})  # fmt: skip
    assert via_env.returncode == 0, via_env.stderr


# --- maxwell daemon ------------------------------------------------------------------------------


def daemon_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="maxwell daemon")
    daemon_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_daemon_takes_the_state_and_socket_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAXWELL_STATE", "/srv/maxwell")
    monkeypatch.setenv("MAXWELL_SOCKET", "/run/m/m.sock")
    options = daemon_cmd.options_from(daemon_args())
    assert (options.state_dir, options.socket_path) == (Path("/srv/maxwell"), "/run/m/m.sock")
    named = daemon_cmd.options_from(daemon_args("--state", "/srv/other"))
    assert named.state_dir == Path("/srv/other")  # a named directory brings its own socket,
    assert named.socket_path == "/srv/other/maxwell.sock"  # never the environment's
    flags = daemon_cmd.options_from(daemon_args("--state", "/a", "--socket", "/a/s.sock"))
    assert (flags.state_dir, flags.socket_path) == (Path("/a"), "/a/s.sock")


def test_daemon_defaults_and_flags() -> None:
    options = daemon_cmd.options_from(daemon_args())
    assert options.state_dir == Path("/var/lib/maxwell")
    assert options.socket_path == "/var/lib/maxwell/maxwell.sock"
    assert (options.listen, options.tick_s, options.mechanism) == (None, 1.0, "uniform")
    options = daemon_cmd.options_from(
        daemon_args("--state", "/srv/m", "--listen", "127.0.0.1:0", "--tick", "0.1",
                    "--mechanism", "kelly")
    )  # fmt: skip
    assert options.socket_path == "/srv/m/maxwell.sock"
    assert (options.listen, options.tick_s, options.mechanism) == ("127.0.0.1:0", 0.1, "kelly")
    assert (options.billing, options.audit_probability) == ("metered", 0.001)
    options = daemon_cmd.options_from(
        daemon_args("--billing", "optimistic", "--audit-probability", "0.05")
    )
    assert (options.billing, options.audit_probability) == ("optimistic", 0.05)


def test_daemon_config_file_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        textwrap.dedent("""\
            [daemon]
            state = "/srv/node"
            socket = "/run/maxwell.sock"
            tick_s = 0.5
            mechanism = "vcg"
            grace_s = 2
        """)
    )
    options = daemon_cmd.options_from(daemon_args("--config", str(config)))
    assert (options.state_dir, options.socket_path) == (Path("/srv/node"), "/run/maxwell.sock")
    assert (options.tick_s, options.mechanism) == (0.5, "vcg")
    options = daemon_cmd.options_from(daemon_args("--config", str(config), "--tick", "2"))
    assert options.tick_s == 2.0


def test_the_example_config_makes_a_daemon(tmp_path: Path) -> None:
    example = TESTS.parent / "examples" / "maxwell.toml"
    state = tmp_path / "state"
    options = daemon_cmd.options_from(daemon_args("--config", str(example), "--state", str(state)))
    assert (options.tick_s, options.mechanism) == (1.0, "uniform")
    _node, daemon = daemon_cmd._make_node(options)
    try:
        config = daemon.config
        assert config.derate_below_c == 10.0 and config.min_capacity_fraction == 0.25
        assert config.grace_s == 5.0
    finally:
        daemon.shutdown(kill_agents=True)


@pytest.mark.parametrize(
    ("argv", "config", "says"),
    [
        (["--tick", "0"], None, "--tick must be a positive"),
        (["--tick", "nan"], None, "--tick must be a positive"),
        (["--mechanism", "barter"], None, "unknown, use one of"),
        (["--listen", "0.0.0.0:80"], None, "non-loopback"),
        (["--socket", "/tmp/" + "x" * 120], None, "longer than 107 bytes"),
        ([], "[daemon]\ntick = 1\n", "unknown key [daemon] tick"),
        (["--audit-probability", "1.5"], None, "--audit-probability must be between 0 and 1"),
        ([], "[daemon]\naudit_probability = 'often'\n", "audit_probability must be a number"),
        ([], "[daemon]\nbilling = 'honour'\n", "--billing 'honour': unknown"),
        ([], "[daemon]\ntick_s = 'fast'\n", "tick_s must be a number"),
        ([], "daemon = 3\n", "[daemon] must be a table"),
        ([], "[daemon\n", "not valid TOML"),
    ],
)
def test_daemon_usage_errors(
    tmp_path: Path, argv: list[str], config: str | None, says: str
) -> None:
    if config is not None:
        path = tmp_path / "node.toml"
        path.write_text(config)
        argv = [*argv, "--config", str(path)]
    with pytest.raises(UsageError) as caught:
        daemon_cmd.options_from(daemon_args(*argv))
    assert says in str(caught.value)
    result = maxwell("daemon", "--state", str(tmp_path / "state"), *argv)
    assert result.returncode == 2
    assert says in one_line_error(result.stderr, "daemon")


# The daemon command with the fake node in place of NodeDaemon: flags, API, ticks, SIGTERM.
FAKE_DAEMON = """
import sys, threading
from pathlib import Path
from fake_node import FakeNode
from maxwell.cli import daemon_cmd, main

class TickingFake(FakeNode):
    def __init__(self, marker):
        super().__init__()
        self.marker = marker
    def run_forever(self, stop):
        self.marker.write_text("ticking")  # once: a rewrite in a loop could be read half-done
        stop.wait()
    def shutdown(self):
        self.marker.write_text("shut down")

marker = Path(sys.argv[1])
daemon_cmd._make_node = lambda options, neighbours=None: (lambda n: (n, n))(TickingFake(marker))
sys.exit(main.main(["daemon", *sys.argv[2:]]))
"""


def test_daemon_serves_until_sigterm(tmp_path: Path) -> None:
    state = Path(f"/tmp/mxw-daemon-{os.getpid()}")
    socket_path = state / "maxwell.sock"
    marker = tmp_path / "marker"
    daemon = subprocess.Popen(
        [sys.executable, "-c", FAKE_DAEMON, str(marker), "--state", str(state), "--tick", "0.05"],
        cwd=TESTS,
        stderr=subprocess.PIPE,
        text=True,
    )

    def socket_open() -> bool:
        assert daemon.poll() is None, daemon.communicate()[1]
        return socket_path.exists()

    try:
        wait_until(socket_open, timeout_s=20, what=f"the daemon to open {socket_path}")
        price = maxwell("price", "--socket", str(socket_path), "--token", ADMIN_TOKEN, "--json")
        assert price.returncode == 0, price.stderr
        assert last_json(price.stdout)["spot"] == 1.0
        wait_until(
            lambda: marker.exists() and marker.read_text() == "ticking", what="the tick loop"
        )
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=20)
        assert daemon.returncode == 0, stderr
        assert marker.read_text() == "shut down"
        assert not socket_path.exists()
        assert (state.stat().st_mode & 0o777) == 0o700
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
        if state.exists():
            for path in state.iterdir():
                path.unlink()
            state.rmdir()
