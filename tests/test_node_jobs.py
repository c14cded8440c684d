"""Posted work (`maxwell.node.jobs`): a job's inputs escrow their bounties, agents of its model
take inputs under a lease, and each input pays once, to whoever proves it first."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fake_node import TestClient
from helpers import AGENTS_AS_DAEMON, LOCAL, maxwell
from maxwell.economy.ledger import TREASURY, job_account
from maxwell.node.api import create_app, serve
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import NodeError, NoInputLeftError, UnknownJobError
from maxwell.node.jobs import JOB_LEASE_S
from maxwell.proof.files import write_tensor
from maxwell.samples.useful import make_weights, mlp_onnx
from maxwell.units import Money
from test_node_bounty import TOKENS, WIDTH, model_path, post, prove, seeded_input

J = 1_000_000
__all__ = ["model_path"]  # a fixture of test_node_bounty's, used here


class Wall:
    """A wall clock the test moves (leases are kept in wall time: they outlive a restart)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def daemon(tmp_path: Path, wall: Wall) -> Iterator[NodeDaemon]:
    node = NodeDaemon(
        NodeConfig(
            dynamic_uids=AGENTS_AS_DAEMON, state_dir=tmp_path / "state", tick_s=0.1, cgroup="none"
        ),
        wall=wall,
    )
    try:
        yield node
    finally:
        node.shutdown(kill_agents=True)


def _prover(daemon: NodeDaemon, model_path: Path) -> str:
    return daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0, model=str(model_path)).agent


def test_a_posted_job_escrows_its_bounties_and_keeps_its_inputs_private(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    treasury = daemon.ledger().balance(TREASURY)
    job = daemon.job(post(daemon, model_path, [1, 2, 3], Money(2 * J)))
    assert (job.inputs, job.paid, job.taken, job.bounty, job.escrow) == (3, 0, 0, 2 * J, 6 * J)
    assert daemon.ledger().balance(job_account(job.id)) == 6 * J
    assert daemon.ledger().balance(TREASURY) == treasury - 6 * J
    assert daemon.jobs() == [job]
    kept = sorted((tmp_path / "state" / "jobs" / job.id).iterdir())
    assert [p.name for p in kept] == ["0.npy", "1.npy", "2.npy"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    assert [e.kind for e in daemon.events() if e.kind == "job"] == []  # money, not an agent event
    assert daemon.ledger().verify().ok


@pytest.mark.parametrize(
    "what, says",
    [
        ("no directory", "No such file"),
        ("empty", "no .npy file"),
        ("repeated", "repeats an input"),
        ("not an array", "not a .npy array"),
        ("bad model", "bad.onnx"),
        ("no bounty", "bounty must be a positive integer"),
    ],
)
def test_a_job_that_cannot_be_posted_leaves_nothing(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path, what: str, says: str
) -> None:
    inputs, model, bounty = tmp_path / "inputs", model_path, Money(J)
    if what != "no directory":
        inputs.mkdir()
    if what == "repeated":
        write_tensor(inputs / "a.npy", seeded_input(1))
        write_tensor(inputs / "b.npy", seeded_input(1))
    elif what == "not an array":
        (inputs / "a.npy").write_bytes(b"\x93NUMPY garbage")
    elif what in ("bad model", "no bounty"):
        write_tensor(inputs / "a.npy", seeded_input(1))
        if what == "bad model":
            model = tmp_path / "bad.onnx"
            model.write_bytes(b"not a model")
        else:
            bounty = Money(0)
    treasury = daemon.ledger().balance(TREASURY)
    with pytest.raises(NodeError, match=says):
        daemon.post_job(str(model), str(inputs), bounty)
    assert daemon.jobs() == []
    assert not (tmp_path / "state" / "jobs").exists() or not any(
        (tmp_path / "state" / "jobs").iterdir()
    )
    assert daemon.ledger().balance(TREASURY) == treasury


def test_an_agent_takes_an_input_into_its_own_directory_under_a_lease(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path, wall: Wall
) -> None:
    job = post(daemon, model_path, [1, 2])
    first, second = _prover(daemon, model_path), _prover(daemon, model_path)
    taken = daemon.take_input(first, job)
    assert (taken.n, taken.input, taken.lease_s) == (0, f"job-{job}-0.npy", JOB_LEASE_S)
    copy = tmp_path / "state" / "work" / first / taken.input
    assert copy.read_bytes() == (tmp_path / "state" / "jobs" / job / "0.npy").read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and copy.stat().st_uid == os.getuid()
    assert daemon.take_input(first, job) == taken  # one lease per agent: the same input again
    assert daemon.take_input(second, job).n == 1
    assert daemon.job(job).taken == 2
    third = _prover(daemon, model_path)
    with pytest.raises(NoInputLeftError, match="paid or leased"):
        daemon.take_input(third, job)
    wall.now += JOB_LEASE_S + 1  # the leases run out: the inputs go to whoever asks
    assert daemon.take_input(third, job).n == 0
    with pytest.raises(UnknownJobError):
        daemon.take_input(third, "nosuchjob")


def test_only_an_agent_of_the_job_s_model_takes_its_inputs(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    job = post(daemon, model_path, [1])
    plain = daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0).agent
    other_model = tmp_path / "other.onnx"
    other_model.write_bytes(mlp_onnx(make_weights(WIDTH, 2, np.random.default_rng(2)), TOKENS))
    other = daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0, model=str(other_model)).agent
    for agent in (plain, other):
        with pytest.raises(NodeError, match="for another model"):
            daemon.take_input(agent, job)
    assert daemon.job(job).taken == 0


def test_each_input_pays_once_to_whoever_proves_it_first(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    job = post(daemon, model_path, [1], Money(3 * J))
    first, second = _prover(daemon, model_path), _prover(daemon, model_path)
    for agent in (first, second):
        prove(model_path, tmp_path / "state" / "work" / agent, seed=1)
    assert daemon.submit_proof(second, "x.npy", "y.npy", "proof.mxp").bounty == 3 * J
    with pytest.raises(NodeError, match="paid for already"):
        daemon.submit_proof(first, "x.npy", "y.npy", "proof.mxp")
    found = daemon.job(job)
    assert (found.paid, found.escrow) == (1, 0)
    assert daemon.ledger().balance(job_account(job)) == 0
    bounties = [e for e in daemon.events() if e.kind == "bounty"]
    assert [(e.agent, e.detail["job"], e.detail["input"]) for e in bounties] == [(second, job, 0)]
    with pytest.raises(NoInputLeftError):
        daemon.take_input(first, job)
    assert daemon.ledger().verify().ok


def test_maxwell_job_post_ls_and_show(tmp_path: Path, model_path: Path) -> None:
    """The CLI against a real daemon process, as a user runs it."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for seed in (1, 2):
        write_tensor(inputs / f"{seed}.npy", seeded_input(seed))
    state = tmp_path / "state"
    daemon = NodeDaemon(
        NodeConfig(dynamic_uids=AGENTS_AS_DAEMON, state_dir=state, tick_s=0.1, cgroup="none")
    )
    server = serve(create_app(daemon), socket_path=str(state / "maxwell.sock"), listen=None)
    try:
        posted = maxwell(
            "job", "post", "--state", str(state), "--model", str(model_path),
            "--inputs", str(inputs), "--bounty", "2J", "--json",
        )  # fmt: skip
        assert posted.returncode == 0, posted.stderr
        job = json.loads(posted.stdout)
        assert (job["inputs"], job["bounty"], job["escrow"]) == (2, 2.0, 4.0)
        listed = maxwell("job", "ls", "--state", str(state))
        assert listed.returncode == 0 and job["id"] in listed.stdout
        shown = maxwell("job", "show", "--state", str(state), job["id"])
        assert shown.returncode == 0
        assert shown.stdout.startswith(f"{job['id']}: 2 inputs of mlp.onnx, 2 $J each; 0 paid")
        missing = maxwell("job", "show", "--state", str(state), "nosuchjob")
        assert missing.returncode == 1 and "no job 'nosuchjob'" in missing.stderr
    finally:
        server.stop()
        daemon.shutdown(kill_agents=True)


def test_over_the_api_only_the_admin_posts_and_only_an_agent_takes_for_itself(
    daemon: NodeDaemon, model_path: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "posted"
    inputs.mkdir()
    write_tensor(inputs / "1.npy", seeded_input(1))
    agent = daemon.spawn(["sleep", "30"], fund=Money(J), bid=1.0, model=str(model_path))
    body = {"model": str(model_path), "inputs": str(inputs), "bounty": 1.0}
    admin = {"Authorization": f"Bearer {daemon.admin_token}"}
    mine = {"Authorization": f"Bearer {agent.token}"}
    with TestClient(create_app(daemon), base_url=LOCAL) as api:
        refused = api.post("/jobs", json=body, headers=mine)  # an agent minting a job for itself
        assert refused.status_code == 403 and daemon.jobs() == []
        assert api.post("/jobs", json={**body, "bounty": -1.0}, headers=admin).status_code == 422
        assert api.post("/jobs", json=body).status_code == 401
        job = api.post("/jobs", json=body, headers=admin).json()["id"]
        assert api.get("/jobs", headers=mine).json()["jobs"][0]["id"] == job
        assert api.post(f"/jobs/{job}/take", headers=admin).status_code == 403
        assert api.post("/jobs/..%2F..%2Fetc/take", headers=mine).status_code == 404
        taken = api.post(f"/jobs/{job}/take", headers=mine)
        assert taken.status_code == 200 and taken.json()["input"] == f"job-{job}-0.npy"
    assert daemon.job(job).taken == 1
