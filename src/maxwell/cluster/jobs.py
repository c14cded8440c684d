"""Jobs placed by price across a Ray cluster (issue 13, 2): `submit` picks the node, moves the
money, and runs the command there as a Maxwell agent through a Ray task pinned to that node.

A Ray node that belongs to a Maxwell node carries the label `maxwell-node` (the node's id) and
runs its workers with `MAXWELL_STATE` set to that node's state directory (`maxwell cluster up`
starts Ray so; the tests' `ray.cluster_utils.Cluster` nodes too): a task pinned there finds its
daemon's socket and admin token.

`submit(spec, home=client)`:

1. ranks the nodes by the placement rule (`placement.rank`) over what the home node's gossip
   verified (`GET /cluster/members`), keeping those Ray knows and that are alive;
2. asks the best one, through an actor pinned to it (hard affinity), whether its daemon
   answers; a node that does not (gone, or its daemon down) is passed over for the next, at
   most `MAX_TRIES` nodes in all. The home node is not asked: its daemon has just answered
   (step 1);
3. sends the job's funds from the home node (`POST /transfers`: the payer is the caller's
   account, or the treasury for the admin) and starts the job's task there: it spawns the agent
   on the voucher (`POST /transfers/in`), waits for it to end, settles what is left
   (`POST /transfers/{job}/settle`) and returns the outcome with the runner's voucher. When the
   best node is the home node itself, no money crosses: the caller spawns the agent there as
   any spawn (`POST /agents`), and the pinned task only waits for it to end;
4. `JobHandle.result()` waits for that, and takes what was left back home
   (`POST /transfers/back`).

Ray's own memory monitor and usage statistics stay off (`RAY_ENV`); Maxwell decides who dies.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from maxwell.client import Client, ClientError
from maxwell.cluster.placement import Demand, Offer, PlacementError, offers, rank
from maxwell.errors import MaxwellError
from maxwell.node.facade import AgentState
from maxwell.node.paths import ADMIN_TOKEN_FILE, SOCKET_NAME

log = logging.getLogger(__name__)

LABEL: Final = "maxwell-node"
STATE_ENV: Final = "MAXWELL_STATE"
PYTHON_ENV: Final = "MAXWELL_AGENT_PYTHON"
CALL_MODULE: Final = "maxwell.cluster.call"
MAX_TRIES: Final = 3
RAY_ENV: Final = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}
_POLL_S: Final = 0.2
_ENDED: Final = (AgentState.DEAD.value, AgentState.EXITED.value)


class JobError(MaxwellError):
    """A job that could not be placed or run; the message says why."""


@dataclass(frozen=True)
class JobSpec:
    """What to run and what it may spend: `fund` $J, at most `bid` $J per J, `demand` cores.
    With `call` (a pickled Python call, `maxwell.ray`), the node runs it with its agents'
    Python instead of `argv` (`python -m maxwell.cluster.call`, the call as its payload)."""

    argv: tuple[str, ...]
    fund: float
    bid: float
    demand: float = 1.0
    name: str | None = None
    call: bytes | None = None


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended on its node: its agent's state (dead: apoptosis or killed; exited; or
    declined: it could not start there, and all of its funds came back), exit code, the energy
    it was billed for and what it paid, and what came back home."""

    job: str
    node: str
    agent: str | None  # None: the node declined the job (its command would not start there)
    state: str  # exited, dead, or declined
    exit_code: int | None
    energy_j: float
    paid_j: float
    returned_j: float


_REMOTE: dict[Callable[..., Any], Any] = {}


def _remote(function: Callable[..., Any]) -> Any:
    """`function` as a Ray task of no CPU and no retry, made once (Ray exports a remote
    function to the cluster when first called: a new one each time costs a round trip)."""
    if function not in _REMOTE:
        import ray

        _REMOTE[function] = ray.remote(num_cpus=0, max_retries=0)(function)
    return _REMOTE[function]


def ray_nodes(nodes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Maxwell node id -> Ray node id, for the alive Ray nodes that carry the label (the
    records of `ray.nodes()`)."""
    found: dict[str, str] = {}
    for node in nodes:
        name = (node.get("Labels") or {}).get(LABEL)
        if node.get("Alive") and isinstance(name, str) and name:
            found.setdefault(name, str(node["NodeID"]))
    return found


def local_client() -> Client:
    """The daemon of the Maxwell node this process runs on (`MAXWELL_STATE`), as its admin."""
    state = os.environ.get(STATE_ENV)
    if not state:
        raise JobError(f"this Ray node belongs to no Maxwell node: {STATE_ENV} is not set")
    root = Path(state)
    token = (root / ADMIN_TOKEN_FILE).read_text().strip()
    return Client(socket=str(root / SOCKET_NAME), token=token)


def agent_python() -> list[str]:
    """The command that runs this node's agents' Python (`MAXWELL_AGENT_PYTHON`, split as a
    shell splits words; default: this interpreter). Its agents run as uids of their own, so
    it must be one they may run, with Maxwell and cloudpickle importable."""
    said = os.environ.get(PYTHON_ENV, "").strip()
    return shlex.split(said) if said else [sys.executable]


def answers() -> list[str] | None:
    """This node's agents' Python (`agent_python`) if its daemon answers, else None (the body
    of the probe)."""
    try:
        with local_client() as client:
            client.price()
    except (MaxwellError, OSError):
        return None
    return agent_python()


def command(spec: JobSpec, python: Sequence[str]) -> list[str]:
    """What the job's agent runs: its command, or for a call `python -m maxwell.cluster.call`."""
    return list(spec.argv) if spec.call is None else [*python, "-m", CALL_MODULE]


def run_here(voucher: str, spec: JobSpec, job: str) -> dict[str, Any]:
    """Run the job on this node's daemon on `voucher`, wait for it to end, settle it (the body
    of the job's task): the outcome, and the runner's voucher for what is left."""
    with local_client() as client:
        try:
            spawned = client.arrive(
                voucher, command(spec, agent_python()), bid=spec.bid, demand=spec.demand,
                name=spec.name or job, payload=spec.call,
            )  # fmt: skip
        except ClientError as exc:  # it cannot run here (a 409: it runs here already)
            if exc.status is None or exc.status == 409 or exc.status >= 500:
                raise
            return _declined(client.decline(voucher).voucher, exc.message)
        done = _ended(client, spawned.agent, spec.call is not None)
        done["voucher"] = client.settle(job).voucher
        return done


def _declined(voucher: str | None, why: str) -> dict[str, Any]:
    return {"agent": None, "state": "declined", "exit_code": None, "energy_j": 0.0,
            "paid_j": 0.0, "balance_j": 0.0, "voucher": voucher, "why": why,
            "result": None}  # fmt: skip


def watch_here(agent: str, call: bool = False) -> dict[str, Any]:
    """Wait for an agent of this node to end (the body of a home job's task): its outcome."""
    with local_client() as client:
        return _ended(client, agent, call)


def _ended(client: Client, agent: str, call: bool) -> dict[str, Any]:
    """The agent's outcome once it has ended; for a call, the bytes of its result as it left
    them (None if none): unpickled only by the submitter, never by this root worker."""
    while (info := client.agent(agent)).state.value not in _ENDED:
        time.sleep(_POLL_S)
    return {
        "agent": agent, "state": info.state.value, "exit_code": info.exit_code,
        "energy_j": info.energy_uj / 1e6, "paid_j": info.paid / 1e6,
        "balance_j": info.balance / 1e6, "voucher": None,
        "result": _result(client, agent) if call else None,
    }  # fmt: skip


def _result(client: Client, agent: str) -> bytes | None:
    try:
        return client.result(agent)
    except ClientError as exc:
        if exc.status != 404:
            raise
        return None


@dataclass(frozen=True)
class Finished:
    """A job's outcome, and for a call the bytes its agent left as its result (None if none)."""

    outcome: JobOutcome
    result: bytes | None


class JobHandle:
    """A submitted job: where it runs, and its outcome once it ends (`result`). `placement_s`:
    what placing it took, from the call to `submit` to its hand-off to its node (the placement
    rule, the gossip view, the probe, the funds' transfer), not the start of its process
    (a spawn at home, in `submit`; elsewhere, in the job's task)."""

    def __init__(
        self, job: str, node: str, ref: Any, home: Client, placement_s: float = 0.0
    ) -> None:
        self.job, self.node, self.placement_s = job, node, placement_s
        self._ref, self._home = ref, home

    def result(self, timeout_s: float | None = None) -> JobOutcome:
        """Wait for the job to end; take what was left back to the home node."""
        return self.wait(timeout_s).outcome

    def wait(self, timeout_s: float | None = None) -> Finished:
        """`result`, with the bytes a call's agent left."""
        import ray

        if self._ref is None:
            raise JobError(f"job {self.job} is kept by its home node: maxwell jobs shows it")
        done = ray.get(self._ref, timeout=timeout_s)
        if done["voucher"] is None:  # it ran at home: what is left stays in its account
            returned_j = float(done["balance_j"])
        else:
            returned_j = self._home.take_back(str(done["voucher"])).amount / 1e6
        outcome = JobOutcome(
            job=self.job, node=self.node, agent=done["agent"], state=done["state"],
            exit_code=done["exit_code"], energy_j=done["energy_j"], paid_j=done["paid_j"],
            returned_j=returned_j,
        )  # fmt: skip
        return Finished(outcome, done["result"])


def submit(
    spec: JobSpec,
    *,
    home: Client,
    max_tries: int = MAX_TRIES,
    keep: bool = False,
    exclude: Sequence[str] = (),
) -> JobHandle:
    """Place `spec` on the cheapest node with room (none of `exclude`) and start it there (see
    the module). With `keep`, a detached keeper on the home node starts the job's task, waits
    for its end and takes what is left back home: the job outlives the caller (its handle has
    no result)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    began = time.perf_counter()
    try:
        demand = Demand(cores=spec.demand, bid=spec.bid)
    except PlacementError as exc:
        raise JobError(str(exc)) from None
    in_ray = ray_nodes(ray.nodes())  # type: ignore[no-untyped-call]
    members = home.cluster_members()
    if keep and members.node not in in_ray:
        raise JobError(f"this node ({members.node}) is not in the Ray cluster: maxwell cluster up")
    table = [o for o in offers(members) if o.node in in_ray]
    placement = rank(table, demand, exclude=exclude)
    job = f"job-{secrets.token_hex(8)}"
    for offer in placement.ranked[:max_tries]:
        pinned = NodeAffinitySchedulingStrategy(in_ray[offer.node], soft=False)
        if offer.node == members.node:  # at home: its daemon answered just now (members)
            python = _python_at(pinned) if spec.call is not None else []
            if python is not None:
                placed = time.perf_counter() - began
                return _start_at_home(spec, job, home, offer.node, pinned, python, placed)
            continue
        if _answers_there(pinned) is None:
            continue
        keeper_at = in_ray[str(members.node)] if keep else None
        return _send_and_start(spec, job, home, offer.node, pinned, keeper_at, began)
    raise JobError(f"the job cannot be placed: {_why(placement.why_none(), table, in_ray)}")


def _start_at_home(
    spec: JobSpec, job: str, home: Client, node: str, pinned: Any, python: Sequence[str],
    placed_s: float,
) -> JobHandle:  # fmt: skip
    """No money crosses: the caller's own spawn, and a task pinned to the node that waits for
    the agent's end."""
    spawned = home.spawn(
        command(spec, python), fund=spec.fund, bid=spec.bid, demand=spec.demand,
        name=spec.name or job, payload=spec.call,
    )  # fmt: skip
    watch = _remote(watch_here)
    ref = watch.options(scheduling_strategy=pinned).remote(spawned.agent, spec.call is not None)
    return JobHandle(job, node, ref, home, placed_s)


def _send_and_start(
    spec: JobSpec, job: str, home: Client, node: str, pinned: Any, keeper_at: str | None,
    began: float,
) -> JobHandle:  # fmt: skip
    """Send the job's funds to `node` and start its task there (pinned); with `keeper_at` (the
    home node's Ray id), a keeper there starts and follows it instead of the caller."""
    import ray

    receipt = home.send_transfer(job, node, spec.fund)
    assert receipt.voucher is not None  # a sending always carries one
    if keeper_at is not None:  # started once the keeper owns the job's task
        keeper = _keeper(job, keeper_at)
        ray.get(keeper.start.remote(receipt.voucher, spec, job, pinned), timeout=60)
        return JobHandle(job, node, None, home, time.perf_counter() - began)
    task = _remote(run_here)
    ref = task.options(scheduling_strategy=pinned).remote(receipt.voucher, spec, job)
    return JobHandle(job, node, ref, home, time.perf_counter() - began)


def _keeper(job: str, home_node: str) -> Any:
    """A detached actor pinned to the home node (`_Keeper`): owned by no driver, so the job's
    task it starts outlives the command that submitted it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    pinned = NodeAffinitySchedulingStrategy(home_node, soft=False)
    actor = ray.remote(num_cpus=0, max_restarts=0)(_Keeper)
    return actor.options(
        name=f"maxwell-job:{job}", lifetime="detached", scheduling_strategy=pinned
    ).remote()


class _Keeper:
    """A job's keeper, on its home node: `start` submits the job's task (so the keeper, not the
    submitting command, owns it) and returns; a thread then waits for the job's end, takes
    what is left back home, and ends the keeper."""

    def start(self, voucher: str, spec: JobSpec, job: str, pinned: Any) -> None:
        import threading

        task = _remote(run_here)
        ref = task.options(scheduling_strategy=pinned).remote(voucher, spec, job)
        threading.Thread(target=self._follow, args=(ref,), name=f"keep {job}").start()

    def _follow(self, ref: Any) -> None:
        import ray

        try:
            done = ray.get(ref)
            with local_client() as home:
                home.take_back(str(done["voucher"]))
        except Exception:
            log.exception("the job's money stays in flight: maxwell cluster ledger verify")
        finally:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def every_node_halves() -> dict[str, list[dict[str, Any]]]:
    """Each labelled Ray node's halves of money across nodes, read by a task pinned to it from
    its daemon (`GET /transfers`); a node whose daemon does not answer is left out."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    read = _remote(node_halves)
    refs = {
        node: read.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(id_, soft=False)
        ).remote()
        for node, id_ in ray_nodes(ray.nodes()).items()  # type: ignore[no-untyped-call]
    }
    found: dict[str, list[dict[str, Any]]] = {}
    for node, ref in refs.items():
        try:
            found[node] = ray.get(ref, timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            continue
    return found


def node_halves() -> list[dict[str, Any]]:
    """This node's halves (the body of `every_node_halves`' task)."""
    with local_client() as client:
        return [asdict(half) for half in client.transfers().halves]


_PROBES: dict[tuple[str, str], Any] = {}
_PYTHONS: dict[str, list[str]] = {}  # each Ray node's agents' Python, as its probe said


class _Probe:
    """An actor pinned to a node that says whether that node's daemon answers (and what runs
    its agents' Python): a probe through a task would start a worker each time while the
    node's workers wait on jobs."""

    def answers(self) -> list[str] | None:
        return answers()


def _answers_there(pinned: Any) -> list[str] | None:
    """The agents' Python of the node `pinned` names if its daemon answers, else None (its
    probe actor made once per driver and node, dropped when it fails)."""
    import ray

    key = (ray.get_runtime_context().get_job_id(), str(pinned.node_id))
    probe: Any = _PROBES.get(key)
    if probe is None:
        actor: Any = ray.remote(num_cpus=0, max_restarts=0)(_Probe)
        probe = _PROBES[key] = actor.options(scheduling_strategy=pinned).remote()
    try:
        python = ray.get(probe.answers.remote(), timeout=30)
    except (ray.exceptions.RayError, TimeoutError):
        _PROBES.pop(key, None)
        return None
    if python is None:
        return None
    _PYTHONS[str(pinned.node_id)] = found = [str(word) for word in python]
    return found


def _python_at(pinned: Any) -> list[str] | None:
    """The agents' Python of the node `pinned` names: as its probe said once (it is set when
    the node's Ray starts), else asked now (None: it does not answer)."""
    known = _PYTHONS.get(str(pinned.node_id))
    return known if known is not None else _answers_there(pinned)


def _why(why: str, table: list[Offer], in_ray: Mapping[str, str]) -> str:
    if not in_ray:
        return f"no Ray node carries the {LABEL} label (maxwell cluster up)"
    if not table:
        return "no node the home node's gossip knows is in the Ray cluster"
    return why if why != f"{table[0].node} is the cheapest with room" else "every node refused"
