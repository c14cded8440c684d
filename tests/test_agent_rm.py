"""Every ended agent says why it ended, and `maxwell rm` forgets one (issue 15, 5).

On a real daemon (process trees, no root needed): an agent that dies of apoptosis, one killed on
request and one whose command exits 3 each carry their reason (`AgentInfo.ended`), in `ps -a`
and through a restart; `rm` refuses a live agent, forgets an ended one from the agents and the
API, keeps its ledger history and its balance in its account (`ledger verify` passes), and
works at once after `kill`. The same through the API's `DELETE /agents/{id}`, the SDK and the
CLI, against the real daemon and the fake node, with who may do it."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from helpers import maxwell, wait_until
from maxwell import __version__
from maxwell.client import Client, ClientError
from maxwell.economy.ledger import agent_account
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentLiveError, AgentState, UnknownAgentError
from maxwell.units import Money

J = 1_000_000  # µ$J in 1 $J


@pytest.fixture
def root() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="mxw-rm-", dir="/tmp"))
    made.chmod(0o711)  # a root daemon's agents, uids of their own, pass through it
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _daemon(root: Path) -> NodeDaemon:
    return NodeDaemon(NodeConfig(state_dir=root / "state", tick_s=0.1, cgroup="none", grace_s=0.3))


def _ended(node: NodeDaemon, agent: str) -> str | None:
    node.tick_once()
    return node.agent(agent).ended


def test_each_ended_agent_says_why_and_rm_forgets_it_keeping_its_money(root: Path) -> None:
    node = _daemon(root)
    try:
        poor = node.spawn(["sh", "-c", "while :; do :; done"], fund=Money(1), bid=1.0, name="poor")
        three = node.spawn(["sh", "-c", "exit 3"], fund=Money(5 * J), bid=1.0, name="three")
        victim = node.spawn(["sleep", "100"], fund=Money(5 * J), bid=1.0, name="victim")
        alive = node.spawn(["sleep", "100"], fund=Money(5 * J), bid=1.0, name="alive")
        assert node.agent(alive.agent).ended is None
        with pytest.raises(AgentLiveError, match="is running: kill it first"):
            node.remove(alive.agent)
        node.kill(victim.agent)
        assert node.agent(victim.agent).ended == "killed"
        removed = node.remove(victim.agent)  # at once: its last interval billed first
        assert (removed.id, removed.state, removed.ended) == (
            victim.agent,
            AgentState.DEAD,
            "killed",
        )
        assert victim.agent not in {info.id for info in node.agents()}
        with pytest.raises(UnknownAgentError):
            node.agent(victim.agent)
        with pytest.raises(UnknownAgentError):
            node.remove(victim.agent)
        kept = node.ledger().balance(agent_account(victim.agent))
        assert kept == removed.balance and 0 < kept <= 5 * J  # what its bills left, kept
        wait_until(lambda: _ended(node, three.agent) == "exited 3", what="exit 3 said")
        wait_until(lambda: _ended(node, poor.agent) == "apoptosis", what="apoptosis said")
        assert node.agent(poor.agent).state is AgentState.DEAD
        assert node.ledger().verify().ok
    finally:
        node.shutdown(kill_agents=True)
    again = _daemon(root)  # the reasons come back from the rows and the journal
    try:
        ended = {info.name: info.ended for info in again.agents()}
        assert ended == {"poor": "apoptosis", "three": "exited 3", "alive": "killed"}
        held = again.ledger().balance(agent_account(three.agent))  # 5 $J less its bills
        assert 0 < held <= 5 * J
        again.remove(three.agent)
        assert {info.name for info in again.agents()} == {"poor", "alive"}
        assert again.ledger().verify().ok
        assert again.ledger().balance(agent_account(three.agent)) == held  # kept, not moved
    finally:
        again.shutdown()


def test_rm_through_the_api_the_sdk_and_the_cli_of_a_real_daemon(root: Path) -> None:
    node = _daemon(root)
    server = serve(create_app(node), socket_path=str(root / "api.sock"), listen=None)
    connection = ["--socket", str(root / "api.sock"), "--token", node.admin_token]
    try:
        worker = node.spawn(["sleep", "100"], fund=Money(2 * J), bid=1.0, name="worker")
        other = node.spawn(["sleep", "100"], fund=Money(J), bid=1.0, name="other")
        refused = maxwell("rm", *connection, "worker")
        assert refused.returncode == 1
        assert f"agent {worker.agent} is running: kill it first" in refused.stderr
        with Client(socket=str(root / "api.sock"), token=worker.token) as itself:
            with pytest.raises(ClientError) as caught:
                itself.remove(worker.agent)
            assert caught.value.status == 403  # an agent's token may not forget anyone
        assert maxwell("kill", *connection, "worker").returncode == 0
        forgotten = maxwell("rm", *connection, "worker", "--json")
        assert forgotten.returncode == 0, forgotten.stderr
        said = json.loads(forgotten.stdout)
        assert (said["id"], said["ended"], said["balance"]) == (worker.agent, "killed", 2.0)
        assert said["version"] == __version__
        listed = json.loads(maxwell("ps", *connection, "-a", "--json").stdout)
        assert [agent["id"] for agent in listed["agents"]] == [other.agent]
        with Client(socket=str(root / "api.sock"), token=node.admin_token) as admin:
            admin.kill(other.agent)
            assert admin.remove(other.agent).ended == "killed"
            assert admin.agents() == []
            with pytest.raises(ClientError) as caught:
                admin.remove(other.agent)
            assert caught.value.status == 404
        verified = maxwell("ledger", "verify", "--state", str(root / "state"))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        server.stop()
        node.shutdown(kill_agents=True)


def test_ps_a_shows_why_each_agent_ended_and_rm_on_the_fake_node() -> None:
    fake = FakeNode()
    with serving(fake) as server:
        assert server.socket_path is not None
        connection = ["--socket", server.socket_path, "--token", ADMIN_TOKEN]
        ids = {
            name: fake.spawn(["true"], fund=Money(J), bid=1.0, name=name).agent
            for name in ("runs", "starved", "cheat", "done", "stopped")
        }
        fake.end(ids["starved"], "apoptosis")
        fake.end(ids["cheat"], "slashed")
        fake.end(ids["done"], "exited 0")
        fake.kill(ids["stopped"])
        table = maxwell("ps", *connection, "-a").stdout
        rows = [
            line.split()
            for line in table.splitlines()
            if line.split()[:1] in ([i] for i in ids.values())
        ]
        states = {row[1]: row[2] for row in rows}
        assert states == {
            "runs": "running", "starved": "apoptosis", "cheat": "slashed", "done": "exited",
            "stopped": "killed",
        }  # fmt: skip
        assert "exited 0" in next(line for line in table.splitlines() if " done " in line)
        assert maxwell("rm", *connection, "runs").returncode == 1
        for name in ("starved", "cheat", "done", "stopped"):
            gone = maxwell("rm", *connection, name)
            assert gone.returncode == 0, gone.stderr
            assert gone.stdout.startswith(f"{ids[name]} ({name}): ") and "forgotten" in gone.stdout
        left = json.loads(maxwell("ps", *connection, "-a", "--json").stdout)
        assert [agent["id"] for agent in left["agents"]] == [ids["runs"]]
        unknown = maxwell("rm", *connection, "nobody")
        assert unknown.returncode == 1 and "no agent 'nobody'" in unknown.stderr
