"""The wire contract, one suite for two nodes.

Every test runs twice: against `FakeNode` (the double the API, SDK and CLI tests use) and against
a real `NodeDaemon` (no cgroups, real processes, no tick loop), each served by the same API on a
Unix socket and driven through the SDK (`maxwell.client.Client`). Both must answer alike: the
same fields with the same types, the same state transitions, the same events, the same refusals
with the same statuses. A test that passes on one node only is a fake that lies or a daemon that
broke the contract; fix the fake (it is a test double) rather than the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fake_node import ADMIN_TOKEN, FakeNode
from maxwell.client import Client, ClientError
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import (
    AgentInfo,
    AgentState,
    AuditResult,
    Node,
    NotAllowedError,
    PaymentError,
    PriceInfo,
    Principal,
    Report,
    Role,
    SpawnResult,
)
from maxwell.node.tickstats import TickStats
from maxwell.node.wire import AgentList, EventList, StatusBody, from_json, to_json
from maxwell.units import Money

SLEEP = ["sleep", "30"]  # a real process on the daemon; the fake starts nothing
J = 1_000_000  # µ$J per $J


@dataclass(frozen=True)
class Served:
    """One node behind the API on a Unix socket, and the admin's token for it."""

    node: Node
    socket: str
    admin_token: str

    def client(self, token: str | None = None) -> Client:
        return Client(socket=self.socket, token=self.admin_token if token is None else token)

    def raw(self, path: str, token: str | None = None) -> httpx.Response:
        """The answer as sent, for what the SDK does not show: which fields are present."""
        headers = {"Authorization": f"Bearer {self.admin_token if token is None else token}"}
        transport = httpx.HTTPTransport(uds=self.socket)
        with httpx.Client(transport=transport, base_url="http://maxwell") as http:
            return http.get(path, headers=headers)


def _daemon(state_dir: Path) -> tuple[Node, str, Callable[[], None]]:
    daemon = NodeDaemon(NodeConfig(state_dir=state_dir, tick_s=0.1, cgroup="none"))
    return daemon, daemon.admin_token, lambda: daemon.shutdown(kill_agents=True)


def _fake(state_dir: Path) -> tuple[Node, str, Callable[[], None]]:
    return FakeNode(), ADMIN_TOKEN, lambda: None


@pytest.fixture(params=[_fake, _daemon], ids=["fake", "daemon"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    # A short directory: a socket's path must fit in 108 bytes, pytest's tmp_path may not.
    directory = Path(tempfile.mkdtemp(prefix="mxw-contract-", dir="/tmp"))
    directory.chmod(0o711)  # a root daemon's agents, uids of their own, pass through it
    node, admin_token, close = request.param(directory / "state")
    try:
        server = serve(create_app(node), socket_path=str(directory / "api.sock"), listen=None)
        try:
            yield Served(node, str(directory / "api.sock"), admin_token)
        finally:
            server.stop()
    finally:
        close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def admin(served: Served) -> Iterator[Client]:
    with served.client() as client:
        yield client


@pytest.fixture
def spawned(admin: Client) -> SpawnResult:
    return admin.spawn(SLEEP, fund=2.5, bid=0.5, demand=1.5, name="worker")


@pytest.fixture
def agent(served: Served, spawned: SpawnResult) -> Iterator[Client]:
    """The spawned agent's own connection (its token)."""
    with served.client(spawned.token) as client:
        yield client


def refusal(call: Callable[[], object]) -> ClientError:
    with pytest.raises(ClientError) as refused:
        call()
    assert refused.value.status is not None and "\n" not in refused.value.message
    return refused.value


# --- spawn, read, fund, bid, report ------------------------------------------------------------


def test_spawn_answers_the_agent_its_pid_and_its_token(
    served: Served, admin: Client, spawned: SpawnResult
) -> None:
    assert spawned.name == "worker" and spawned.agent and spawned.token
    assert isinstance(spawned.pid, int) and spawned.pid > 0
    with served.client(spawned.token) as agent:
        assert agent.whoami() == Principal(Role.AGENT, spawned.agent)
    assert admin.whoami() == Principal(Role.ADMIN, None)
    unnamed = admin.spawn(SLEEP, fund=1.0, bid=0.5)
    assert unnamed.name == unnamed.agent  # the default name is the id


def test_a_new_agent_reads_as_it_was_spawned(
    served: Served, admin: Client, spawned: SpawnResult
) -> None:
    info = admin.agent(spawned.agent)
    assert (info.id, info.name, info.state) == (spawned.agent, "worker", AgentState.RUNNING)
    assert (info.balance, info.bid, info.demand, info.pid) == (2_500_000, 0.5, 1.5, spawned.pid)
    assert (info.exit_code, info.reported, info.billing) == (None, None, "metered")
    assert (info.bond, info.audits, info.slashed, info.proofs, info.bounties) == (0, 0, 0, 0, 0)
    for figure in (info.share, info.power_w, info.cpu_s):
        assert isinstance(figure, float) and figure >= 0
    for count in (info.energy_uj, info.paid, info.landauer, info.memory_freed_bytes):
        assert isinstance(count, int) and count >= 0
    assert info == served.node.agent(spawned.agent)  # the wire loses nothing
    assert [found.id for found in admin.agents()] == [spawned.agent]


def test_funding_moves_exact_micro_joules(admin: Client, spawned: SpawnResult) -> None:
    assert admin.fund(spawned.agent, 0.1).balance == 2_600_000
    assert admin.fund(spawned.agent, 1e-6).balance == 2_600_001
    assert admin.agent(spawned.agent).balance == 2_600_001


def test_a_funding_sent_again_with_its_key_funds_once(admin: Client, spawned: SpawnResult) -> None:
    first = admin.fund(spawned.agent, 0.5, key="lost-answer-1")
    assert first.balance == 3_000_000
    assert admin.fund(spawned.agent, 0.5, key="lost-answer-1").balance == 3_000_000
    with pytest.raises(ClientError) as conflict:
        admin.fund(spawned.agent, 0.7, key="lost-answer-1")
    assert conflict.value.status == 409
    with pytest.raises(ClientError) as malformed:
        admin.fund(spawned.agent, 0.5, key="short")
    assert malformed.value.status == 422
    assert admin.agent(spawned.agent).balance == 3_000_000


def test_an_agent_bids_for_itself_and_keeps_its_demand(agent: Client, spawned: SpawnResult) -> None:
    changed = agent.bid(0.75, 3.0)
    assert (changed.id, changed.bid, changed.demand) == (spawned.agent, 0.75, 3.0)
    kept = agent.bid(0.0)
    assert (kept.bid, kept.demand) == (0.0, 3.0)
    assert agent.me() == kept


def test_reports_are_cumulative_claims(agent: Client, spawned: SpawnResult) -> None:
    first = agent.report(0.5, 4096, 3)
    assert (first.id, first.reported) == (spawned.agent, Report(0.5, 4096, 3))
    assert agent.report(0.75, 4096).reported == Report(0.75, 4096, None)  # work: optional
    for claim, says in [
        (lambda: agent.report(0.25, 4096), "cpu_s fell from 0.75 to 0.25"),
        (lambda: agent.report(1.0, 0), "memory_freed_bytes fell from 4096 to 0"),
    ]:
        fell = refusal(claim)
        assert fell.status == 400
        assert fell.message == f"reports are cumulative since spawn: {says}"
    assert agent.me().reported == Report(0.75, 4096, None)  # the refusals kept it


# --- audit, kill, events -----------------------------------------------------------------------


def test_an_audit_checks_reports_once_there_is_one(
    admin: Client, agent: Client, spawned: SpawnResult
) -> None:
    unreported = admin.audit(spawned.agent)
    assert unreported.honest and "reports" not in unreported.checked
    agent.report(0.0)  # a sleeping process: nothing to under-claim
    audit = admin.audit(spawned.agent)
    assert isinstance(audit, AuditResult)
    assert (audit.agent, audit.honest, audit.findings) == (spawned.agent, True, ())
    assert "reports" in audit.checked and audit.audits == 2 and audit.slashed == 0
    assert 0 <= audit.probability <= 1 and audit.samples >= 0
    assert audit.pause_us is None or audit.pause_us >= 0
    assert all(0 <= share <= 1 for share in audit.modules.values())
    assert admin.agent(spawned.agent).audits == 2


def test_kill_ends_the_agent_for_good(admin: Client, agent: Client, spawned: SpawnResult) -> None:
    assert admin.agent(spawned.agent).state is AgentState.RUNNING
    killed = admin.kill(spawned.agent)
    assert (killed.state, killed.share) == (AgentState.DEAD, 0.0)
    assert (killed.pid, killed.exit_code) == (spawned.pid, -signal.SIGKILL)
    before = admin.agent(spawned.agent)
    for call in (
        lambda: admin.kill(spawned.agent),
        lambda: admin.fund(spawned.agent, 1.0),
        lambda: admin.audit(spawned.agent),
        lambda: agent.bid(1.0),
        lambda: agent.report(1.0),
    ):
        gone = refusal(call)
        assert gone.status == 409 and f"agent {spawned.agent} is dead: cannot" in gone.message
    assert admin.agent(spawned.agent) == before == killed  # still readable, unchanged
    assert agent.me().state is AgentState.DEAD


def test_a_result_is_read_once_the_agent_has_ended_by_it_or_the_admin(
    served: Served, admin: Client, agent: Client, spawned: SpawnResult
) -> None:
    running = refusal(lambda: admin.result(spawned.agent))
    assert running.status == 409 and "still runs" in running.message
    admin.kill(spawned.agent)
    for reader in (admin, agent):  # a sleep leaves nothing
        none = refusal(lambda reader=reader: reader.result(spawned.agent))  # type: ignore[misc]
        assert none.status == 404 and "left no result" in none.message
    other = admin.spawn(SLEEP, fund=1.0, bid=0.5)
    with served.client(other.token) as stranger:
        assert refusal(lambda: stranger.result(spawned.agent)).status == 403
    assert refusal(lambda: admin.result("nobody-here")).status == 404


def test_events_log_what_happened_in_order(
    served: Served, admin: Client, agent: Client, spawned: SpawnResult
) -> None:
    admin.fund(spawned.agent, 1.0)
    agent.bid(0.75)
    admin.audit(spawned.agent)
    admin.kill(spawned.agent)
    events = [event for event in admin.events() if event.agent == spawned.agent]
    kinds = [event.kind for event in events]
    assert kinds == ["funded", "spawned", "funded", "bid", "audited", "killed"]
    assert all(event.detail["agent"] == spawned.agent for event in events)
    assert events[0].detail["amount"] == 2_500_000 and events[2].detail["amount"] == J
    assert (events[3].detail["price"], events[3].detail["demand"]) == (0.75, 1.5)
    seqs = [event.seq for event in events]
    assert seqs == sorted(set(seqs)) and all(isinstance(event.at, float) for event in events)
    assert [event.at for event in events] == sorted(event.at for event in events)
    later = admin.events(after=seqs[2])
    assert [event.seq for event in later] == [s for s in seqs if s > seqs[2]]
    assert [event.seq for event in admin.events(after=seqs[2], limit=1)] == [seqs[3]]
    assert admin.events(after=seqs[-1]) == []
    assert admin.events() == served.node.events()  # the wire loses nothing


# --- the market and the node -------------------------------------------------------------------


def test_the_price_is_readable_by_any_token(served: Served, admin: Client, agent: Client) -> None:
    price = agent.price()
    assert price == admin.price() == served.node.price()
    assert price.spot > 0 and price.grid > 0 and price.thermal_factor > 0
    for figure in (price.spot, price.grid, price.temperature_c, price.headroom_c):
        assert isinstance(figure, float)
    assert isinstance(price.measured, bool)
    assert price.energy_source and price.temperature_source


def test_the_status_is_a_snapshot_of_the_node(
    served: Served, admin: Client, spawned: SpawnResult
) -> None:
    status = admin.status()
    assert status.price == admin.price()
    assert [info.id for info in status.agents] == [spawned.agent]
    assert status.agents[0] == admin.agent(spawned.agent)
    assert status.tick_s > 0 and status.last_tick_duration_s >= 0 and status.ticks >= 0
    assert status.mechanism and status.cgroup in ("none", "v1", "v2")
    assert status.capacity_cores >= 0
    stats = status.tick_stats  # None: the node keeps no stats (the fake, unless told to)
    assert stats is None or isinstance(stats, TickStats)
    if stats is not None:
        assert stats.failures >= 0 and 0 <= stats.median_ms <= stats.p99_ms
        assert stats.ledger_rows >= 0 and stats.ticks == status.ticks


def test_every_answer_carries_every_field_of_its_type(served: Served, spawned: SpawnResult) -> None:
    answers: list[tuple[str, type[object], str | None]] = [
        ("/price", PriceInfo, spawned.token),
        ("/whoami", Principal, spawned.token),
        (f"/agents/{spawned.agent}", AgentInfo, spawned.token),
        ("/agents", AgentList, None),
        ("/events", EventList, None),
        ("/status", StatusBody, None),
    ]
    for path, kind, token in answers:
        response = served.raw(path, token)
        assert response.status_code == 200, (path, response.text)
        sent = response.json()
        assert sent == to_json(from_json(kind, response.content)), path


# --- refusals ----------------------------------------------------------------------------------


def test_an_unknown_agent_is_404(admin: Client) -> None:
    for call in (
        lambda: admin.agent("nope"),
        lambda: admin.fund("nope", 1.0),
        lambda: admin.bid(1.0, agent="nope"),
        lambda: admin.audit("nope"),
        lambda: admin.kill("nope"),
    ):
        unknown = refusal(call)
        assert (unknown.status, unknown.message) == (404, "no agent 'nope'")


def test_an_agent_token_may_not_act_as_the_admin(
    served: Served, admin: Client, agent: Client, spawned: SpawnResult
) -> None:
    other = admin.spawn(SLEEP, fund=1.0, bid=0.5, name="other")
    before = admin.agents()
    for call, says in [
        (lambda: agent.spawn(SLEEP, fund=1.0, bid=0.5), "only the admin token may spawn"),
        (lambda: agent.fund(spawned.agent, 1.0), "only the admin token may fund"),
        (lambda: agent.kill(spawned.agent), "only the admin token may kill"),
        (lambda: agent.audit(spawned.agent), "only the admin token may audit"),
        (lambda: agent.events(), "only the admin token may read the event log"),
        (lambda: agent.status(), "only the admin token may read the node's status"),
        (lambda: agent.agent(other.agent), "may read only its own agent"),
        (lambda: agent.agent("nope"), "may read only its own agent"),  # no existence oracle
        (lambda: agent.bid(1.0, agent=other.agent), "may bid for only its own agent"),
    ]:
        forbidden = refusal(call)
        assert forbidden.status == 403 and says in forbidden.message
    assert [info.id for info in agent.agents()] == [spawned.agent]  # it sees only itself
    assert admin.agents() == before  # the refusals changed nothing
    with served.client("not-a-token") as stranger:
        assert refusal(stranger.price).status == 401


def test_malformed_amounts_are_422_and_change_nothing(
    admin: Client, agent: Client, spawned: SpawnResult
) -> None:
    before = admin.agent(spawned.agent)
    for call, field in [
        (lambda: admin.fund(spawned.agent, -1.0), "body.amount"),
        (lambda: admin.fund(spawned.agent, 0.0), "body.amount"),
        (lambda: admin.fund(spawned.agent, 1e-9), "body.amount"),  # below one µ$J
        (lambda: admin.fund(spawned.agent, 1e13), "body.amount"),
        (lambda: agent.bid(-0.5), "body.price"),
        (lambda: agent.bid(1.0, 0.0), "body.demand"),
        (lambda: agent.report(-1.0), "body.cpu_s"),
        (lambda: admin.spawn(SLEEP, fund=-3.0, bid=0.5), "body.fund"),
        (lambda: admin.spawn([], fund=1.0, bid=0.5), "body.argv"),
    ]:
        malformed = refusal(call)
        assert malformed.status == 422 and malformed.message.startswith(field)
    assert admin.agent(spawned.agent) == before
    assert [info.id for info in admin.agents()] == [spawned.agent]


NOBODY_UID = 65534  # a local user both nodes know: "nobody"


def test_a_local_user_s_account_funds_the_agents_it_spawns(served: Served, admin: Client) -> None:
    node = served.node
    if isinstance(node, NodeDaemon) and os.geteuid() != 0:
        pytest.skip("needs root: the daemon runs a local user's agent as that user")
    assert node.local_user(NOBODY_UID) == Principal(Role.USER, uid=NOBODY_UID)
    assert node.local_user(70001) is None  # an agent's own dynamic uid: it shows its token
    empty = admin.user_account(NOBODY_UID)
    assert (empty.uid, empty.user, empty.balance) == (NOBODY_UID, "nobody", 0)
    with pytest.raises(PaymentError):  # nothing on credit
        node.spawn(SLEEP, fund=Money(2 * J), bid=1.0, owner=NOBODY_UID)
    funded = admin.fund_user(NOBODY_UID, 5, key="user-fund-1")
    again = admin.fund_user(NOBODY_UID, 5, key="user-fund-1")  # a retry: funded once
    assert funded.balance == again.balance == 5 * J
    spawned = node.spawn(SLEEP, fund=Money(2 * J), bid=1.0, owner=NOBODY_UID)
    info = admin.agent(spawned.agent)
    assert (info.user, info.balance) == ("nobody", 2 * J)
    assert node.fund(spawned.agent, Money(J), owner=NOBODY_UID).balance == 3 * J
    assert admin.user_account(NOBODY_UID).balance == 2 * J
    with pytest.raises(NotAllowedError):  # another user's agent
        node.fund(spawned.agent, Money(J), owner=NOBODY_UID - 1)
    with pytest.raises(PaymentError):
        node.fund(spawned.agent, Money(3 * J), owner=NOBODY_UID)
    assert admin.user_account(NOBODY_UID).balance == 2 * J
