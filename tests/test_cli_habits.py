"""The client commands' habits (issue 15, 5), as docker's and git's users expect: an agent is
named by its id, its name or a unique id prefix; `ps` never cuts an id and hides ended agents
unless `-a`; `maxwell logs [-f] [-n N] AGENT` prints an agent's output, from a fake node and
from a real daemon's real agent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from helpers import maxwell, wait_until
from maxwell import __version__
from maxwell.cli.naming import AmbiguousAgentError, resolve_agent
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentInfo, AgentState
from maxwell.units import Money


def info(agent: str, name: str, state: AgentState = AgentState.RUNNING) -> AgentInfo:
    return AgentInfo(agent, name, state, Money(0), 1.0, 1.0, 0.0, 0.0, 0, Money(0), Money(0), None)


AGENTS = [info("ab12cd34", "trainer"), info("ab99ff00", "server"), info("c0ffee00", "ab12cd34x")]


def test_an_agent_is_named_by_its_id_its_name_or_a_unique_prefix() -> None:
    assert resolve_agent("ab12cd34", AGENTS) == "ab12cd34"
    assert resolve_agent("server", AGENTS) == "ab99ff00"
    assert resolve_agent("ab1", AGENTS) == "ab12cd34"
    assert resolve_agent("c", AGENTS) == "c0ffee00"
    assert resolve_agent("ab12cd34x", AGENTS) == "c0ffee00"  # a name, not a prefix of an id
    assert resolve_agent("nobody", AGENTS) == "nobody"  # left for the node to answer 404
    with pytest.raises(AmbiguousAgentError, match=r"'ab' names 2 agents: ab12cd34 .*ab99ff00"):
        resolve_agent("ab", AGENTS)
    twins = [info("11111111", "job"), info("22222222", "job")]
    with pytest.raises(AmbiguousAgentError, match="'job' names 2 agents"):
        resolve_agent("job", twins)
    assert resolve_agent("", AGENTS) == ""  # no prefix of everything


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, list[str]]]:
    fake = FakeNode()
    with serving(fake) as server:
        assert server.socket_path is not None and os.path.exists(server.socket_path)
        yield fake, ["--socket", server.socket_path, "--token", ADMIN_TOKEN]


def test_ps_shows_whole_ids_at_80_columns_and_ended_agents_only_with_a(
    node: tuple[FakeNode, list[str]],
) -> None:
    fake, connection = node
    live = fake.spawn(["sleep", "9"], fund=Money(10**9), bid=123456.5, name="a-rather-long-name")
    dead = fake.spawn(["sleep", "9"], fund=Money(1), bid=1.0, name="gone")
    fake.kill(dead.agent)
    narrow = os.environ | {"COLUMNS": "80"}
    table = maxwell("ps", *connection, env=narrow)
    assert table.returncode == 0, table.stderr
    assert live.agent in table.stdout and dead.agent not in table.stdout
    assert live.agent in [line.split()[0] for line in table.stdout.splitlines()]  # whole
    assert all(len(line) <= 80 for line in table.stdout.splitlines())
    every = maxwell("ps", *connection, "-a", env=narrow)
    assert live.agent in every.stdout and dead.agent in every.stdout
    listed = maxwell("ps", *connection, "--json", "--all")
    assert {a["id"] for a in __import__("json").loads(listed.stdout)["agents"]} == {
        live.agent, dead.agent
    }  # fmt: skip
    killed = maxwell("kill", *connection, "a-rather")  # a prefix of its name is not its name
    assert killed.returncode == 1
    assert maxwell("kill", *connection, "a-rather-long-name").returncode == 0
    assert fake.agent(live.agent).state is AgentState.DEAD


def test_logs_prints_an_agents_output_its_tail_and_ends_following_an_ended_agent(
    node: tuple[FakeNode, list[str]],
) -> None:
    fake, connection = node
    agent = fake.spawn(["true"], fund=Money(10**6), bid=1.0, name="talker").agent
    fake.logs[agent] = b"".join(b"line %d\n" % i for i in range(3000))
    whole = maxwell("logs", *connection, "talker")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.encode() == fake.logs[agent]
    tail = maxwell("logs", *connection, "-n", "2", agent[:4])
    assert tail.stdout == "line 2998\nline 2999\n"
    fake.kill(agent)
    followed = maxwell("logs", *connection, "-f", "--poll", "0.05", "talker", timeout=20)
    assert followed.returncode == 0 and followed.stdout.endswith("line 2999\n")
    quiet = maxwell("spawn", *connection, "--fund", "1J", "--bid", "1", "--", "true")
    none = maxwell("logs", *connection, quiet.stdout.strip())
    assert none.returncode == 1 and "has no output kept" in none.stderr


def test_logs_json_is_one_object_per_batch_and_a_last_one_saying_why_it_ended(
    node: tuple[FakeNode, list[str]],
) -> None:
    fake, connection = node
    agent = fake.spawn(["true"], fund=Money(10**6), bid=1.0, name="speaker").agent
    text = "x" + "é" * 600_000 + "\n"  # 1.2 MB: a two-byte character cut by the 1 MiB chunks
    fake.logs[agent] = text.encode() + b"\xff\n"  # and a byte that is no UTF-8
    whole = maxwell("logs", *connection, "--json", "speaker")
    assert whole.returncode == 0, whole.stderr
    [document] = [json.loads(line) for line in whole.stdout.splitlines()]
    assert document == {
        "agent": agent, "output": text + "\ufffd\n", "offset": 1_200_004, "version": __version__
    }  # fmt: skip
    fake.end(agent, "exited 3")
    followed = maxwell("logs", *connection, "-f", "-n", "1", "--json", "--poll", "0.05", agent)
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [(line["output"], line["offset"]) for line in lines] == [
        ("\ufffd\n", 1_200_004), ("", 1_200_004)
    ]  # fmt: skip
    assert "ended" not in lines[0] and lines[1]["ended"] == "exited 3"
    quiet = fake.spawn(["true"], fund=Money(10**6), bid=1.0).agent
    fake.logs[quiet] = b""
    empty = maxwell("logs", *connection, "--json", quiet)
    assert json.loads(empty.stdout) == {
        "agent": quiet, "output": "", "offset": 0, "version": __version__
    }  # fmt: skip


def test_logs_into_a_closed_pipe_ends_quietly(node: tuple[FakeNode, list[str]]) -> None:
    fake, connection = node
    agent = fake.spawn(["true"], fund=Money(10**6), bid=1.0, name="loud").agent
    fake.logs[agent] = b"x" * 100 + b"\n" * 3_000_000  # more than a pipe holds, over chunks
    reader = subprocess.run(
        f"{sys.executable} -m maxwell.cli.main logs {' '.join(connection)} loud | head -c 10",
        shell=True, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert reader.stdout == "x" * 10
    assert reader.stderr == ""


@pytest.fixture
def daemon() -> Iterator[tuple[NodeDaemon, str]]:
    root = Path(tempfile.mkdtemp(prefix="mxw-logs-", dir="/tmp"))
    root.chmod(0o711)  # a root daemon's agents, uids of their own, pass through it
    node = NodeDaemon(NodeConfig(state_dir=root / "state", tick_s=0.1, cgroup="none"))
    server = serve(create_app(node), socket_path=str(root / "api.sock"), listen=None)
    try:
        yield node, str(root / "api.sock")
    finally:
        server.stop()
        node.shutdown(kill_agents=True)
        shutil.rmtree(root, ignore_errors=True)


def test_logs_follows_a_real_agents_output_until_it_ends(daemon: tuple[NodeDaemon, str]) -> None:
    node, socket = daemon
    script = "for i in 1 2 3; do echo step $i; sleep 0.3; done; echo done >&2"
    spawned = node.spawn(["sh", "-c", script], fund=Money(10**9), bid=1.0, name="stepper")
    connection = ["--socket", socket, "--token", node.admin_token]
    follower = subprocess.Popen(
        [sys.executable, "-m", "maxwell.cli.main", "logs", "-f", "--poll", "0.1", *connection,
         "stepper"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def ended() -> bool:
            node.tick_once()
            return node.agent(spawned.agent).state in (AgentState.EXITED, AgentState.DEAD)

        wait_until(ended, timeout_s=30, what="the agent ended")
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert out == "step 1\nstep 2\nstep 3\ndone\n"
    as_itself = maxwell("logs", "--socket", socket, "--token", spawned.token, spawned.agent)
    assert as_itself.stdout == out  # an agent reads its own output


def test_ps_lines_keep_every_column_whole_and_fold_only_a_long_name() -> None:
    from maxwell.cli.agents_cmd import PS_COLUMNS, ps_lines

    rows = [
        ("04d01f96ab", "a-rather-long-agent-name", "running", "1e+06", "123456", "1", "0.50",
         "10.0", "123456.8", "123456"),
        ("99aa", "x", "exited on signal 9", "5e-06", "1", "1", "0.00", "0.0", "0.0", "-"),
    ]  # fmt: skip
    lines = ps_lines(rows, 80)
    assert lines[0].split() == list(PS_COLUMNS)
    assert lines[1].split() == ["04d01f96ab", "a-rather", *rows[0][2:]]
    assert [line.strip() for line in lines[2:4]] == ["-long-ag", "ent-name"]  # folded, all there
    assert lines[4].split() == ["99aa", "x", "exited", "on", "signal", "9", *rows[1][3:]]
    short = ps_lines([("b80fde12", "trainer", "running", "100", "2", "1", "0.50", "10.0", "12.3",
                       "4242")], 80)  # fmt: skip
    assert len(short) == 2 and all(len(line) <= 80 for line in short)
    assert short[1].split() == ["b80fde12", "trainer", "running", "100", "2", "1", "0.50",
                                "10.0", "12.3", "4242"]  # fmt: skip
