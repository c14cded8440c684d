"""Money across nodes on two real daemons (`maxwell.node.transfers`, issue 13, 3): a home node
sends a job's funds, the runner runs the job on them and settles what is left, the home node
takes it back; each node's ledger verifies and the pair reconciles to the µ$J. Refusals: a
voucher spent twice, for another node, altered, of the wrong kind, or returning more than was
sent (the attacks are in tests/adversarial/test_cross_node_money.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gossip_support import ClusterKeys
from helpers import maxwell, wait_until
from maxwell.cluster.transfers import Half, reconcile
from maxwell.gossip.keys import load_identity, load_public
from maxwell.gossip.trust import Admission
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.transfers import NodeTransfers
from maxwell.transport import NodeConnection


@dataclass
class Node:
    name: str
    daemon: NodeDaemon
    api: NodeConnection

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        encoded = json.dumps(body).encode() if body is not None else None
        answer = self.api.request(method, path, json=encoded)
        return answer.status, json.loads(answer.body or b"{}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    keys = ClusterKeys.make(tmp_path / "keys", ["home", "runner"])
    authority = load_public(keys.authority_public)
    nodes, servers = [], []
    try:
        for name in ("home", "runner"):
            daemon = NodeDaemon(NodeConfig(state_dir=tmp_path / name, tick_s=0.1, cgroup="none"))
            transfers = NodeTransfers(
                load_identity(keys.node_key(name), authority), Admission(authority=authority),
                daemon.ledger(), daemon.changing, lambda: 1_800_000_000.0,
            )  # fmt: skip
            socket_path = str(tmp_path / f"{name}.sock")
            servers.append(
                serve(create_app(daemon, transfers=transfers), socket_path=socket_path, listen=None)
            )
            admin = {"Authorization": f"Bearer {daemon.admin_token}"}
            nodes.append(Node(name, daemon, NodeConnection(socket_path=socket_path, headers=admin)))
        yield nodes[0], nodes[1]
    finally:
        for server in servers:
            server.stop()
        for node in nodes:
            node.api.close()
            node.daemon.shutdown(kill_agents=True)


def _halves(node: Node) -> tuple[dict[str, int], list[Half]]:
    status, report = node.call("GET", "/transfers")
    assert status == 200, report
    rows = report["halves"]
    assert isinstance(rows, list)
    found = [Half(r["kind"], r["job"], r["node"], r["amount_uj"], r["payer"]) for r in rows]
    balances = report["balances_uj"]
    assert isinstance(balances, dict)
    return balances, found


def _run(pair: tuple[Node, Node], job: str, fund: float) -> tuple[str, str]:
    """Send `fund` $J for `job` from home and start it on the runner: (voucher, agent)."""
    home, runner = pair
    status, sent = home.call("POST", "/transfers", {"job": job, "to": "runner", "fund": fund})
    assert status == 201, sent
    assert sent["payer"] == "treasury" and sent["amount_j"] == fund and sent["node"] == "runner"
    voucher = str(sent["voucher"])
    arrival = {"voucher": voucher, "argv": ["sleep", "60"], "bid": 5.0, "name": job}
    status, spawned = runner.call("POST", "/transfers/in", arrival)
    assert status == 201, spawned
    return voucher, str(spawned["agent"])


def test_a_job_s_money_goes_out_runs_and_what_is_left_comes_back(pair: tuple[Node, Node]) -> None:
    home, runner = pair
    voucher, agent = _run(pair, "job-1", 5.0)
    assert runner.call("GET", f"/agents/{agent}")[1]["balance"] == pytest.approx(5.0, abs=0.5)
    again = {"voucher": voucher, "argv": ["sleep", "1"], "bid": 5.0}
    status, refused = runner.call("POST", "/transfers/in", again)
    assert status == 409 and agent in str(refused["error"])  # a voucher spends once
    assert runner.call("POST", "/transfers/job-1/settle")[0] == 409  # it still runs
    assert runner.call("POST", f"/agents/{agent}/kill")[0] == 200
    wait_until(lambda: runner.call("GET", f"/agents/{agent}")[1]["state"] == "dead", what="dead")
    status, settled = runner.call("POST", "/transfers/job-1/settle")
    assert status == 200 and settled["node"] == "home", settled
    left = float(str(settled["amount_j"]))
    assert 0 < left <= 5.0
    assert runner.call("POST", "/transfers/job-1/settle")[1]["amount_j"] == left  # the same
    status, refunded = home.call("POST", "/transfers/back", {"voucher": settled["voucher"]})
    assert status == 200 and refunded["payer"] == "treasury" and refunded["amount_j"] == left
    assert home.call("POST", "/transfers/back", {"voucher": settled["voucher"]})[0] == 200
    (home_balances, at_home), (runner_balances, at_runner) = _halves(home), _halves(runner)
    report = reconcile("home", "runner", (home_balances, runner_balances), (at_home, at_runner))
    assert report.conserved and report.pending == () and report.in_flight == 0
    spent = 5_000_000 - round(left * 1e6)
    assert report.outbound == -report.inbound == spent  # what the job cost, and no more
    for node in pair:
        assert node.daemon.ledger().verify().ok
    states = [str(node.daemon.paths.root) for node in pair]
    said = maxwell("cluster", "ledger", "verify", "--state", states[0], "--state", states[1],
                   "--json")  # fmt: skip
    assert said.returncode == 0, said.stdout + said.stderr
    verdict = json.loads(said.stdout)
    assert verdict["ok"] and verdict["missing"] == [] and len(verdict["pairs"]) == 1
    assert verdict["pairs"][0] | {"pending": [], "broken": []} == {
        "home": "home", "runner": "runner", "outbound_uj": spent, "inbound_uj": -spent,
        "in_flight_uj": 0, "pending": [], "broken": [], "conserved": True,
    }  # fmt: skip
    alone = maxwell("cluster", "ledger", "verify", "--state", states[0], "--json")
    assert alone.returncode == 1 and json.loads(alone.stdout)["missing"] == ["runner"]


def test_vouchers_for_another_node_or_altered_or_of_the_wrong_kind_are_refused(
    pair: tuple[Node, Node],
) -> None:
    home, runner = pair
    status, sent = home.call("POST", "/transfers", {"job": "job-2", "to": "runner", "fund": 2.0})
    assert status == 201
    wire = bytearray(base64.b64decode(str(sent["voucher"])))
    wire[-1] ^= 1  # one bit of the signature
    cases = {
        "forged": base64.b64encode(bytes(wire)).decode(),
        "wrong-kind": str(sent["voucher"]),  # an out-voucher offered as a return
    }
    status, refused = home.call("POST", "/transfers/back", {"voucher": cases["wrong-kind"]})
    assert status == 400 and "misdirected" in str(refused["error"])  # it names the runner
    arrival = {"voucher": cases["forged"], "argv": ["sleep", "1"], "bid": 1.0}
    status, refused = runner.call("POST", "/transfers/in", arrival)
    assert status == 400 and "forged" in str(refused["error"])
    conflict = home.call("POST", "/transfers", {"job": "job-2", "to": "runner", "fund": 3.0})
    assert conflict[0] == 409, conflict
    status, again = home.call("POST", "/transfers", {"job": "job-2", "to": "runner", "fund": 2.0})
    assert status == 201 and again["amount_j"] == 2.0  # a retry: the same transfer
    assert home.daemon.ledger().balances()["outbound:runner"] == 2_000_000  # sent once


def test_a_node_without_a_cluster_identity_moves_no_money_across(tmp_path: Path) -> None:
    daemon = NodeDaemon(NodeConfig(state_dir=tmp_path / "alone", tick_s=0.1, cgroup="none"))
    socket_path = str(tmp_path / "alone.sock")
    server = serve(create_app(daemon), socket_path=socket_path, listen=None)
    try:
        admin = {"Authorization": f"Bearer {daemon.admin_token}"}
        api = NodeConnection(socket_path=socket_path, headers=admin)
        answer = api.request("GET", "/transfers")
        api.close()
        assert answer.status == 404 and b"no cluster identity" in answer.body
    finally:
        server.stop()
        daemon.shutdown(kill_agents=True)


def test_a_job_the_runner_cannot_start_is_declined_and_all_of_its_money_comes_back(
    pair: tuple[Node, Node],
) -> None:
    home, runner = pair
    status, sent = home.call("POST", "/transfers", {"job": "job-3", "to": "runner", "fund": 4.0})
    assert status == 201
    arrival = {"voucher": sent["voucher"], "argv": ["/nonexistent/command"], "bid": 1.0}
    status, refused = runner.call("POST", "/transfers/in", arrival)
    assert status == 400, refused  # nothing of the spawn is left, nor of the transfer
    status, declined = runner.call("POST", "/transfers/decline", {"voucher": sent["voucher"]})
    assert status == 200 and declined["amount_j"] == 4.0, declined
    again = runner.call("POST", "/transfers/decline", {"voucher": sent["voucher"]})
    assert again[0] == 200 and again[1]["amount_j"] == 4.0  # a retry: the same
    assert runner.call("POST", "/transfers/job-3/settle")[1]["amount_j"] == 4.0
    spawn = {"voucher": sent["voucher"], "argv": ["sleep", "1"], "bid": 1.0}
    assert runner.call("POST", "/transfers/in", spawn)[0] == 409  # declined: spent
    status, back = home.call("POST", "/transfers/back", {"voucher": declined["voucher"]})
    assert status == 200 and back["amount_j"] == 4.0
    (home_balances, at_home), (runner_balances, at_runner) = _halves(home), _halves(runner)
    report = reconcile("home", "runner", (home_balances, runner_balances), (at_home, at_runner))
    assert report.conserved and report.in_flight == 0 and report.outbound == report.inbound == 0
    for node in pair:
        assert node.daemon.ledger().verify().ok
