"""The SDK (`maxwell.client`) over a real Unix socket and loopback TCP, against the fake node;
`serve()`'s socket handling; the budget context manager."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from helpers import wait_until
from maxwell.client import (
    BudgetExhausted,
    Client,
    ClientError,
    NodeUnreachableError,
    SelfMeter,
    agent_token,
    budget,
    process_tree_cpu_s,
)
from maxwell.errors import UsageError
from maxwell.node.api import ApiServer, create_app, serve
from maxwell.node.facade import AgentState, Report, Role
from maxwell.units import Money


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def server(node: FakeNode) -> Iterator[ApiServer]:
    with serving(node) as running:
        yield running


@pytest.fixture
def admin(server: ApiServer) -> Iterator[Client]:
    with Client(socket=server.socket_path, token=ADMIN_TOKEN) as client:
        yield client


def test_the_sdk_drives_the_node_over_a_unix_socket(
    server: ApiServer, admin: Client, node: FakeNode
) -> None:
    spawned = admin.spawn(["python3", "-c", "pass"], fund=2.5, bid=0.5, name="worker")
    assert spawned.name == "worker" and spawned.pid > 0
    assert node.agent(spawned.agent).balance == 2_500_000
    assert admin.fund(spawned.agent, 0.5).balance == 3_000_000
    assert [info.id for info in admin.agents()] == [spawned.agent]
    with Client(socket=server.socket_path, token=spawned.token) as agent:
        assert agent.whoami().role is Role.AGENT
        assert agent.my_id() == spawned.agent
        assert agent.balance() == 3.0
        assert agent.price().spot == 1.0
        mine = agent.bid(0.9, demand=2.0)
        assert (mine.bid, mine.demand) == (0.9, 2.0)
        assert agent.me() == node.agent(spawned.agent)  # the JSON round trip loses nothing
        with pytest.raises(ClientError) as refused:
            agent.fund(spawned.agent, 1.0)
        assert refused.value.status == 403
        assert refused.value.message == "only the admin token may fund agents"
        claimed = agent.report(0.01, memory_freed_bytes=4096, work=10)
        assert claimed.reported == Report(0.01, 4096, 10)
        assert node.agent(spawned.agent).reported == Report(0.01, 4096, 10)
        with pytest.raises(ClientError) as fell:
            agent.report(0.0)
        assert fell.value.status == 400 and "cumulative" in fell.value.message
        with pytest.raises(ClientError) as not_yours:
            admin.report(2.0)  # the admin token belongs to no agent
        assert "admin token" in not_yours.value.message
        own = agent.report_usage(work=11)  # this test process's own CPU time, > 0.01 s by now
        assert own.reported is not None and own.reported.work == 11
        assert 0.01 < own.reported.cpu_s <= process_tree_cpu_s()
    killed = admin.kill(spawned.agent)
    assert killed.state is AgentState.DEAD
    kinds = ["funded", "spawned", "funded", "bid", "killed"]  # a spawn funds, then starts
    assert [event.kind for event in admin.events()] == kinds
    assert [event.seq for event in admin.events(after=3)] == [4, 5]
    node.check_invariants()


def test_the_socket_is_0666_and_removed_on_stop(node: FakeNode) -> None:
    # Every local user may connect (agents run as users of their own); each request is
    # authorised by its peer's credentials or its token (tests/adversarial/test_peer_credentials).
    with serving(node) as running:
        assert running.socket_path is not None
        path = running.socket_path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert not os.path.exists(path)


def test_loopback_tcp_next_to_the_socket(node: FakeNode) -> None:
    with serving(node, listen="127.0.0.1:0") as running:
        assert running.tcp_address is not None
        url = f"http://{running.tcp_address.host}:{running.tcp_address.port}"
        with Client(base_url=url, token=ADMIN_TOKEN) as client:
            assert client.price().grid == 0.8


def test_a_stale_socket_is_replaced_and_a_live_one_refused(node: FakeNode, tmp_path: Path) -> None:
    path = f"/tmp/mxw-stale-{os.getpid()}.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what SIGKILL leaves behind
    app = create_app(node)
    first = serve(app, socket_path=path, listen=None)
    try:
        with pytest.raises(UsageError, match="another daemon is listening"):
            serve(app, socket_path=path, listen=None)
        with Client(socket=path, token=ADMIN_TOKEN) as client:
            assert client.agents() == []
    finally:
        first.stop()
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(UsageError, match="not a socket"):
        serve(app, socket_path=str(regular), listen=None)


def test_serve_refuses_non_loopback(node: FakeNode) -> None:
    with pytest.raises(UsageError, match="non-loopback"):
        serve(create_app(node), socket_path=None, listen="0.0.0.0:0")
    with pytest.raises(UsageError, match="Unix socket or a loopback"):
        serve(create_app(node), socket_path=None, listen=None)


def test_stop_lets_a_request_in_flight_finish(node: FakeNode) -> None:
    """The daemon's SIGTERM path: `stop()` while a request is being served."""
    entered, release = threading.Event(), threading.Event()
    original = node.price

    def slow_price():  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(5)
        return original()

    node.price = slow_price  # type: ignore[method-assign]
    results: list[float] = []
    with serving(node) as running:
        path = running.socket_path
        assert path is not None
        client = Client(socket=path, token=ADMIN_TOKEN)
        thread = threading.Thread(target=lambda: results.append(client.price().spot))
        thread.start()
        assert entered.wait(5)
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        wait_until(lambda: refuses_connections(path), what="stop() to close the listener")
        release.set()
        stopper.join(10)
        thread.join(10)
        client.close()
    assert results == [1.0]


def refuses_connections(socket_path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(socket_path)
        except ConnectionRefusedError:
            return True
    return False


def test_unreachable_and_unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAXWELL_SOCKET", raising=False)
    with pytest.raises(NodeUnreachableError, match="MAXWELL_SOCKET"):
        Client()
    with Client(socket="/nonexistent/maxwell.sock", token="t") as client:
        with pytest.raises(NodeUnreachableError) as caught:
            client.price()
        assert caught.value.status is None


def test_the_environment_names_the_daemon_and_the_agent(
    server: ApiServer, node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned = node.spawn(["sleep"], fund=Money(1_000_000), bid=1.0)
    assert server.socket_path is not None
    monkeypatch.setenv("MAXWELL_SOCKET", server.socket_path)
    monkeypatch.setenv("MAXWELL_AGENT_TOKEN", spawned.token)
    with Client() as client:
        assert client.me().id == spawned.agent


# --- the budget context manager ------------------------------------------------------------------


@pytest.fixture
def agent(server: ApiServer, node: FakeNode) -> Iterator[tuple[Client, str]]:
    spawned = node.spawn(["sleep"], fund=Money(10_000_000), bid=1.0)  # 10 $J
    with Client(socket=server.socket_path, token=spawned.token) as client:
        yield client, spawned.agent


def test_budget_stops_the_work_loop_cleanly(agent: tuple[Client, str], node: FakeNode) -> None:
    client, agent_id = agent
    done: list[int] = []
    after_block = False
    with client.budget(threshold_j=4.0, poll_s=0.02) as watch:
        for step in range(10_000):
            watch.check()
            done.append(step)
            if step == 5:
                node.drain(agent_id, Money(7_000_000))  # the node bills it down to 3 $J
            time.sleep(0.005)  # a step of the agent's own work: the loop under test, not a wait
        pytest.fail("the budget never ran out")
    after_block = True  # BudgetExhausted was swallowed: the code after the block runs
    assert after_block and watch.exhausted
    assert watch.balance_j == 3.0
    assert watch.reason is not None and "below 4 $J" in watch.reason
    assert 5 < len(done) < 10_000


def test_budget_already_spent_is_exhausted_at_once(agent: tuple[Client, str]) -> None:
    client, _ = agent
    with client.budget(threshold_j=100.0, poll_s=10) as watch:
        assert watch.exhausted
        with pytest.raises(BudgetExhausted):
            watch.check()


def test_budget_ends_when_the_agent_is_killed(agent: tuple[Client, str], node: FakeNode) -> None:
    client, agent_id = agent
    with client.budget(threshold_j=1.0, poll_s=0.02) as watch:
        assert not watch.exhausted
        node.kill(agent_id)
        wait_until(lambda: watch.exhausted, interval_s=0.01, what="the watch to see the death")
    assert watch.exhausted and watch.reason == "the agent is dead"


def test_budget_lets_other_errors_through(agent: tuple[Client, str]) -> None:
    client, _ = agent
    with pytest.raises(ZeroDivisionError), client.budget(threshold_j=1.0, poll_s=10):
        _ = 1 / 0


def test_module_level_budget_reads_the_environment(
    agent: tuple[Client, str], server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = agent
    assert server.socket_path is not None and client.token is not None
    monkeypatch.setenv("MAXWELL_SOCKET", server.socket_path)
    monkeypatch.setenv("MAXWELL_AGENT_TOKEN", client.token)
    with budget(5.0, poll_s=10) as watch:
        assert watch.balance_j == 10.0 and not watch.exhausted


def test_the_self_meter_claims_a_cgroup_only_when_the_daemon_says_it_is_the_agents_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This test process's cgroup is shared with others: claiming it would claim their CPU.
    monkeypatch.delenv("MAXWELL_AGENT_CGROUP", raising=False)
    before = process_tree_cpu_s()
    claimed, _ = SelfMeter().usage()
    assert before <= claimed <= process_tree_cpu_s()
    monkeypatch.setenv("MAXWELL_AGENT_CGROUP", "1")
    own = SelfMeter()
    if own._group is None:
        pytest.skip("this process's cgroup has no readable CPU accounting")
    assert own.usage()[0] == pytest.approx(own._group.cpu_ns() / 1e9, abs=5.0)


class _NoFreeingSeen(SelfMeter):
    """A self-meter that read no drop of `memory.current` (on cgroup v2 it reads other moments
    than the node, so it may see none of the drops the node saw)."""

    def __init__(self) -> None:
        super().__init__(own_group=False)

    def usage(self) -> tuple[float, int]:
        return 0.5, 0


def test_report_usage_claims_at_least_the_memory_the_node_said_it_saw_freed(
    server: ApiServer, admin: Client, node: FakeNode
) -> None:
    spawned = admin.spawn(["python3", "-c", "pass"], fund=2.5, bid=0.5)
    seen = 3 << 20
    node.agents_by_id[spawned.agent] = dataclasses.replace(
        node.agent(spawned.agent), memory_freed_bytes=seen
    )
    with Client(socket=server.socket_path, token=spawned.token) as agent:
        agent._self_meter = _NoFreeingSeen()
        first = agent.report_usage()
        assert first.reported == Report(0.5, 0) and first.memory_freed_bytes == seen
        second = agent.report_usage()
    # The answer to the first showed what its next claim must cover: the second claims it.
    assert second.reported == Report(0.5, seen)


def test_an_agent_s_token_comes_from_its_environment_or_the_file_named_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAXWELL_AGENT_TOKEN", raising=False)
    monkeypatch.delenv("MAXWELL_AGENT_TOKEN_FILE", raising=False)
    assert agent_token() is None
    token_file = tmp_path / "agent.token"
    token_file.write_text("from-the-file\n")
    monkeypatch.setenv("MAXWELL_AGENT_TOKEN_FILE", str(token_file))
    assert agent_token() == "from-the-file"
    monkeypatch.setenv("MAXWELL_AGENT_TOKEN", "from-the-environment")
    assert agent_token() == "from-the-environment"  # set by hand, it wins
    monkeypatch.delenv("MAXWELL_AGENT_TOKEN")
    monkeypatch.setenv("MAXWELL_AGENT_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ClientError, match="cannot read the agent's token"):
        agent_token()


def test_the_agents_sdk_imports_nothing_an_agents_copy_lacks() -> None:
    # Agents import maxwell.client from a copy that holds pydantic and rich alone (conftest's
    # RUNTIME_PACKAGES): the cluster's cryptography and msgpack must not come with it.
    probe = (
        "import sys, maxwell.client; print(sorted(m for m in ('cryptography', 'msgpack', "
        "'numpy', 'ray') if m in sys.modules))"
    )
    said = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert said.returncode == 0 and said.stdout.strip() == "[]", said.stdout + said.stderr
