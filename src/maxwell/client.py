"""`maxwell.client`: the SDK an agent (and the `maxwell` CLI) uses to talk to its node's daemon.

An agent started by `maxwell spawn` finds its daemon in its environment (`MAXWELL_SOCKET`) and
its identity in a file only its user may read, named there (`MAXWELL_AGENT_TOKEN_FILE`; a token
set in `MAXWELL_AGENT_TOKEN` wins), so `Client()` needs no arguments::

    from maxwell.client import Client

    with Client() as node:
        print(node.price().spot, node.balance())
        node.bid(0.8, demand=2.0)  # my limit price, $J per J, for 2 cores
        node.report_usage(work=42)  # my own claim: CPU time so far, 42 units of work

To stop working cleanly when money runs low, check a `budget` at safe points; `check()` raises
`BudgetExhausted` once the balance seen by a background poll falls below the threshold, and the
`with` block swallows it, so the code after the block runs (save state, say goodbye)::

    with Client() as node, node.budget(threshold_j=2.0, poll_s=1.0) as budget:
        for batch in batches:
            budget.check()  # or: if budget.exhausted: break
            process(batch)
    save_results()

Money is in $J floats here (1 $J buys 1 J at spot price 1); the node keeps integer µ$J.
Errors: `ClientError` (`.status` is the HTTP status, `.message` the node's one line), and its
subclass `NodeUnreachableError` (`.status` is None) when there is no daemon to talk to.
"""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
import os
import resource
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from urllib.parse import quote

from maxwell.cgroups import V1Group, V2Group, WorkloadGroup
from maxwell.cgroups.layout import CgroupLayout, read_layout
from maxwell.errors import MaxwellError
from maxwell.node.facade import (
    AgentInfo,
    AgentState,
    AuditResult,
    ClusterMembers,
    ClusterPrices,
    Event,
    JobInfo,
    NodeStatus,
    PriceInfo,
    Principal,
    ProofResult,
    SpawnResult,
    TakenInput,
    TransferReceipt,
    TransfersReport,
    UserAccount,
)
from maxwell.node.wire import (
    AgentList,
    ArrivalRequest,
    BidRequest,
    EventList,
    FundRequest,
    JobList,
    JobRequest,
    ProofRequest,
    ReportRequest,
    SpawnRequest,
    TransferRequest,
    VoucherRequest,
    from_json,
    status_from_json,
    to_json_bytes,
)
from maxwell.transport import NodeConnection, UnreachableError

__all__ = [
    "BudgetExhausted",
    "BudgetWatch",
    "Client",
    "ClientError",
    "NodeUnreachableError",
    "SelfMeter",
    "budget",
    "process_tree_cpu_s",
]

SOCKET_ENV = "MAXWELL_SOCKET"
AGENT_TOKEN_ENV = "MAXWELL_AGENT_TOKEN"
AGENT_TOKEN_FILE_ENV = "MAXWELL_AGENT_TOKEN_FILE"  # where the daemon leaves an agent's token
MAX_TOKEN_BYTES = 256


def agent_token() -> str | None:
    """This agent's token: `$MAXWELL_AGENT_TOKEN`, else the file `$MAXWELL_AGENT_TOKEN_FILE`
    names (the daemon's way: a token in the environment leaks to every child and crash report);
    None if neither is set. A file that cannot be read is a `ClientError` saying why."""
    token = os.environ.get(AGENT_TOKEN_ENV)
    if token:
        return token
    path = os.environ.get(AGENT_TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            return file.read(MAX_TOKEN_BYTES).decode("ascii").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"cannot read the agent's token from {path}: {exc}") from exc


# Set to 1 by the daemon for an agent that runs in a cgroup of its own (`SelfMeter` reads it).
OWN_CGROUP_ENV = "MAXWELL_AGENT_CGROUP"
AGENT_DIR_ENV = "MAXWELL_AGENT_DIR"  # the agent's own directory, where it leaves its proofs


class ClientError(MaxwellError):
    """The node refused a request (`status` 4xx), failed (5xx) or could not be reached (None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})" if status is not None else message)
        self.message = message
        self.status = status


class NodeUnreachableError(ClientError):
    """No daemon answers at the socket or address (not running, wrong path, no permission)."""


class BudgetExhausted(MaxwellError):
    """Raised by `BudgetWatch.check()` once the balance is below the threshold."""


class Client:
    """A connection to one node's API.

    `socket`: the daemon's Unix socket (default `$MAXWELL_SOCKET`); or `base_url`
    (`http://127.0.0.1:PORT`) for the loopback TCP listener. `token`: the admin's or an
    agent's (default: `agent_token()`).
    """

    def __init__(
        self,
        socket: str | None = None,
        token: str | None = None,
        base_url: str | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        if base_url is None:
            socket = socket if socket is not None else os.environ.get(SOCKET_ENV)
            if not socket:
                raise NodeUnreachableError(
                    f"no daemon socket: pass socket= (--socket) or set {SOCKET_ENV}"
                )
        self.socket = socket
        self.base_url = base_url
        self.token = token if token is not None else agent_token()
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = NodeConnection(
            socket_path=socket if base_url is None else None,
            base_url=base_url,
            headers=headers,
            timeout_s=timeout_s,
        )
        self._me: str | None = None
        self._self_meter: SelfMeter | None = None
        self._node_saw_freed = 0  # memory freed, as the node last answered (`report_usage`)

    def _where(self) -> str:
        return self.base_url or f"socket {self.socket}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: object | None = None,
        params: Mapping[str, int] | None = None,
    ) -> bytes:
        """The answer's JSON text (for `from_json`); `body` is one of the wire's request types,
        sent without its absent optional fields."""
        json = None if body is None else to_json_bytes(body, exclude_none=True)
        try:
            response = self._http.request(method, path, json=json, params=params)
        except UnreachableError as exc:
            raise NodeUnreachableError(
                f"cannot reach the daemon at {self._where()}: {exc}"
            ) from exc
        if 200 <= response.status < 300:
            return response.body
        try:
            error = jsonlib.loads(response.body)
        except ValueError:
            error = None
        message = error.get("error") if isinstance(error, dict) else None
        if not isinstance(message, str):
            message = response.reason or "error"
        raise ClientError(message, response.status)

    # --- anyone with a token --------------------------------------------------------------------

    def price(self) -> PriceInfo:
        """The spot price and what it is made of."""
        return from_json(PriceInfo, self._request("GET", "/price"))

    def cluster_members(self) -> ClusterMembers:
        """The gossip cluster's members as the node believes them (404 without gossip)."""
        return from_json(ClusterMembers, self._request("GET", "/cluster/members"))

    def cluster_prices(self) -> ClusterPrices:
        """Every verified node's price, cheapest first, and the cheapest with room."""
        return from_json(ClusterPrices, self._request("GET", "/cluster/price"))

    def status(self) -> NodeStatus:
        """A snapshot of the whole node: price, agents, tick figures (admin)."""
        return status_from_json(self._request("GET", "/status"))

    def whoami(self) -> Principal:
        return from_json(Principal, self._request("GET", "/whoami"))

    def my_id(self) -> str:
        """This agent's id (an agent token only)."""
        if self._me is None:
            principal = self.whoami()
            if principal.agent is None:
                raise ClientError("this is the admin token: it belongs to no agent")
            self._me = principal.agent
        return self._me

    def me(self) -> AgentInfo:
        """This agent's own account and state."""
        return self.agent(self.my_id())

    def balance(self) -> float:
        """This agent's balance, in $J."""
        return self.me().balance / 1e6

    def bid(
        self, price: float, demand: float | None = None, *, agent: str | None = None
    ) -> AgentInfo:
        """Set the limit price ($J per J) and optionally the cores asked for; `agent` is for the
        admin (an agent bids for itself)."""
        target = agent if agent is not None else self.my_id()
        path = f"/agents/{_quote(target)}/bid"
        return from_json(AgentInfo, self._request("POST", path, body=BidRequest(price, demand)))

    def report(
        self, cpu_s: float, memory_freed_bytes: int = 0, work: int | None = None
    ) -> AgentInfo:
        """Claim what this agent has consumed since it was spawned: CPU seconds of its whole
        process tree, bytes of memory freed, and units of useful work done. Cumulative (a later
        report may never claim less); the node checks claims against the kernel's counters."""
        body = ReportRequest(cpu_s, memory_freed_bytes, work)
        path = f"/agents/{_quote(self.my_id())}/report"
        return from_json(AgentInfo, self._request("POST", path, body=body))

    def report_usage(self, work: int | None = None) -> AgentInfo:
        """Report what this process has used, as `SelfMeter` reads it: its CPU time and that of
        the children it has waited for, and the memory its cgroup freed. This is what an honest
        agent that is a single process tree claims.

        Memory freed is claimed as the larger of what the self-meter read and what the node's
        answer to the previous report showed it had counted. On cgroup v2 the kernel keeps no
        count of freed memory, only the node's lower bound of it (drops of `memory.current`
        between its readings), which depends on when it reads: an agent reading at other
        moments sees other drops, and would claim less than the node's figure without knowing
        it. Each claim must cover what the counters were when the previous one arrived, and the
        answer to that one shows them, so a claim that includes them always does."""
        if self._self_meter is None:
            self._self_meter = SelfMeter()
        cpu_s, freed = self._self_meter.usage()
        answer = self.report(cpu_s, max(freed, self._node_saw_freed), work=work)
        self._node_saw_freed = max(self._node_saw_freed, answer.memory_freed_bytes)
        return answer

    def agent(self, agent: str) -> AgentInfo:
        return from_json(AgentInfo, self._request("GET", f"/agents/{_quote(agent)}"))

    def result(self, agent: str) -> bytes:
        """What the ended agent left in its result file (`$MAXWELL_AGENT_RESULT`)."""
        return self._request("GET", f"/agents/{_quote(agent)}/result")

    def log(self, agent: str, offset: int = 0, limit: int | None = None) -> bytes:
        """Up to `limit` bytes (the node's chunk, 1 MiB, by default) of the agent's output from
        byte `offset`; empty at its end."""
        params = {"offset": offset} if limit is None else {"offset": offset, "limit": limit}
        return self._request("GET", f"/agents/{_quote(agent)}/log", params=params)

    # --- the admin token ------------------------------------------------------------------------

    def spawn(
        self,
        argv: Sequence[str],
        *,
        fund: float,
        bid: float,
        demand: float = 1.0,
        name: str | None = None,
        user: str | None = None,
        code: Sequence[str] | None = None,
        bounty: float | None = None,
        model: str | None = None,
        memory: int | None = None,
        pids: int | None = None,
        payload: bytes | None = None,
    ) -> SpawnResult:
        """Start `argv` as an agent funded with `fund` $J from the treasury; `code` declares the
        binaries and libraries (or directories of them) it runs, for audits to check; `bounty`
        $J is paid per valid proof of inference of `model` (a path on the node) it submits;
        `memory` (bytes) and `pids` limit its group (None: the node's defaults); `payload` is
        handed to it in a file of its own (`$MAXWELL_AGENT_PAYLOAD`, at most 1 MiB)."""
        body = SpawnRequest(
            argv=list(argv), fund=fund, bid=bid, demand=demand, name=name, user=user,
            code=list(code) if code else None, bounty=bounty, model=model, memory=memory,
            pids=pids, payload=_base64(payload),
        )  # fmt: skip
        return from_json(SpawnResult, self._request("POST", "/agents", body=body))

    def fund(self, agent: str, amount: float, *, key: str | None = None) -> AgentInfo:
        """Move `amount` $J from the treasury to `agent`. With an idempotency `key` (8 to 64 of
        `A-Za-z0-9._-`), sending the same funding again funds it once: retry with the same key
        when an answer was lost."""
        path = f"/agents/{_quote(agent)}/fund"
        body = FundRequest(amount, key)
        return from_json(AgentInfo, self._request("POST", path, body=body))

    def user_account(self, uid: int | None = None) -> UserAccount:
        """A local user's account (`user:<uid>`): the caller's own when `uid` is None (a local
        user on the socket, no token), any user's for the admin."""
        if uid is None:
            uid = self.whoami().uid
            if uid is None:
                raise ClientError("only a local user on the socket has an account of its own", 400)
        return from_json(UserAccount, self._request("GET", f"/users/{int(uid)}"))

    def fund_user(self, uid: int, amount: float, *, key: str | None = None) -> UserAccount:
        """Move `amount` $J from the treasury to local user `uid`'s account (admin), from which
        the agents it spawns are funded; with `key`, a retry funds once."""
        body = FundRequest(amount, key)
        return from_json(UserAccount, self._request("POST", f"/users/{int(uid)}/fund", body=body))

    def submit_proof(self, input: str, output: str, proof: str) -> ProofResult:
        """Submit a proof of inference this agent left in its directory (`MAXWELL_AGENT_DIR`),
        the files named relative to it; a valid proof of a posted job's input earns the job's
        bounty (`take_input`)."""
        body = ProofRequest(input, output, proof)
        path = f"/agents/{_quote(self.my_id())}/proofs"
        return from_json(ProofResult, self._request("POST", path, body=body))

    def audit(self, agent: str) -> AuditResult:
        """Audit `agent` now (admin): reports against counters, threads against its code."""
        return from_json(AuditResult, self._request("POST", f"/agents/{_quote(agent)}/audit"))

    def kill(self, agent: str) -> AgentInfo:
        return from_json(AgentInfo, self._request("POST", f"/agents/{_quote(agent)}/kill"))

    def remove(self, agent: str) -> AgentInfo:
        """Forget an ended agent (`maxwell rm`): its last state; refused (409) while it runs."""
        return from_json(AgentInfo, self._request("DELETE", f"/agents/{_quote(agent)}"))

    def agents(self) -> list[AgentInfo]:
        """Every agent (admin), or only this agent (an agent token)."""
        return list(from_json(AgentList, self._request("GET", "/agents")).agents)

    def events(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """Events with a sequence number above `after`, oldest first."""
        page = self._request("GET", "/events", params={"after": after, "limit": limit})
        return list(from_json(EventList, page).events)

    # --- posted work ----------------------------------------------------------------------------

    def post_job(self, model: str, inputs: str, bounty: float) -> JobInfo:
        """Post a job (admin): the inputs in directory `inputs` (paths on the node), each paying
        `bounty` $J for its first valid proof of `model`, escrowed from the treasury now."""
        body = JobRequest(model, inputs, bounty)
        return from_json(JobInfo, self._request("POST", "/jobs", body=body))

    def jobs(self) -> list[JobInfo]:
        return list(from_json(JobList, self._request("GET", "/jobs")).jobs)

    def job(self, job: str) -> JobInfo:
        return from_json(JobInfo, self._request("GET", f"/jobs/{_quote(job)}"))

    def take_input(self, job: str) -> TakenInput:
        """Lease an input of `job` for this agent: the node writes it into this agent's
        directory as `TakenInput.input`, to run the model on and prove."""
        return from_json(TakenInput, self._request("POST", f"/jobs/{_quote(job)}/take"))

    # --- money across nodes (`maxwell.node.transfers`) -------------------------------------------

    def send_transfer(self, job: str, to: str, fund: float) -> TransferReceipt:
        """Send `fund` $J for `job` to node `to`: this node's voucher for them."""
        body = TransferRequest(job=job, to=to, fund=fund)
        return from_json(TransferReceipt, self._request("POST", "/transfers", body=body))

    def arrive(
        self, voucher: str, argv: Sequence[str], *, bid: float, demand: float = 1.0,
        name: str | None = None, payload: bytes | None = None,
    ) -> SpawnResult:  # fmt: skip
        """Run a job another node sent, funded by its voucher (admin)."""
        body = ArrivalRequest(
            voucher=voucher, argv=list(argv), bid=bid, demand=demand, name=name,
            payload=_base64(payload),
        )  # fmt: skip
        return from_json(SpawnResult, self._request("POST", "/transfers/in", body=body))

    def decline(self, voucher: str) -> TransferReceipt:
        """A job this node received and cannot run: all of its funds back (admin)."""
        body = VoucherRequest(voucher=voucher)
        return from_json(TransferReceipt, self._request("POST", "/transfers/decline", body=body))

    def settle(self, job: str) -> TransferReceipt:
        """What is left of an ended job, back toward its home node: this node's voucher."""
        return from_json(TransferReceipt, self._request("POST", f"/transfers/{_quote(job)}/settle"))

    def take_back(self, voucher: str) -> TransferReceipt:
        """A runner's voucher for what was left of a job: back to the job's payer (admin)."""
        body = VoucherRequest(voucher=voucher)
        return from_json(TransferReceipt, self._request("POST", "/transfers/back", body=body))

    def transfers(self) -> TransfersReport:
        return from_json(TransfersReport, self._request("GET", "/transfers"))

    # --- stopping cleanly -----------------------------------------------------------------------

    @contextlib.contextmanager
    def budget(self, threshold_j: float, *, poll_s: float = 1.0) -> Iterator[BudgetWatch]:
        """Watch this agent's balance; see the module's docstring for the pattern."""
        watch = BudgetWatch(self._clone(), threshold_j, poll_s)
        try:
            watch.start()
            yield watch
        except BudgetExhausted:
            pass  # the agent stopped its own work: that is the clean way out
        finally:
            watch.stop()

    def _clone(self) -> Client:
        """A second connection (the budget's poller thread must not share one)."""
        clone = Client(self.socket, self.token, self.base_url, timeout_s=self.timeout_s)
        clone._me = self._me
        return clone

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class BudgetWatch:
    """A background poll of an agent's balance; `exhausted` turns True below the threshold.

    It also turns True when the node no longer knows the agent or its token (killed); a daemon
    that cannot be reached for a moment does not exhaust the budget (`last_error` says why).
    """

    def __init__(self, client: Client, threshold_j: float, poll_s: float) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        self.threshold_j = threshold_j
        self.poll_s = poll_s
        self.balance_j: float | None = None
        self.reason: str | None = None
        self.last_error: ClientError | None = None
        self._client = client
        self._exhausted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maxwell-budget", daemon=True)

    @property
    def exhausted(self) -> bool:
        return self._exhausted.is_set()

    def check(self) -> None:
        """Raise `BudgetExhausted` if the balance has fallen below the threshold."""
        if self._exhausted.is_set():
            raise BudgetExhausted(self.reason or "budget exhausted")

    def poll(self) -> None:
        """Read the balance now (the thread does this every `poll_s`)."""
        try:
            me = self._client.me()
        except NodeUnreachableError as exc:
            self.last_error = exc
            return
        except ClientError as exc:
            self.last_error = exc
            if exc.status is not None and 400 <= exc.status < 500:
                self._exhaust(f"the node no longer serves this agent: {exc.message}")
            return
        self.balance_j = me.balance / 1e6
        if me.state in (AgentState.DEAD, AgentState.EXITED):
            self._exhaust(f"the agent is {me.state}")
        elif self.balance_j < self.threshold_j:
            self._exhaust(f"balance {self.balance_j:.6g} $J is below {self.threshold_j:.6g} $J")

    def _exhaust(self, reason: str) -> None:
        if not self._exhausted.is_set():
            self.reason = reason
            self._exhausted.set()

    def start(self) -> None:
        self.poll()  # a budget already spent is exhausted before the first piece of work
        if self.last_error is not None and not self.exhausted:
            raise self.last_error
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s) and not self._exhausted.is_set():
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._client.close()


@contextlib.contextmanager
def budget(threshold_j: float, *, poll_s: float = 1.0) -> Iterator[BudgetWatch]:
    """`Client().budget(...)` for the agent this process is (from its environment)."""
    with Client() as client, client.budget(threshold_j, poll_s=poll_s) as watch:
        yield watch


class SelfMeter:
    """What an honest agent claims, read the way the node reads it, from the cgroup this process
    runs in. CPU: in the agent's own group (a daemon spawned it into one and says so in
    `MAXWELL_AGENT_CGROUP`), the CPU time of every process in it, alive or ended, reaped or not
    (v1 `cpuacct.usage`, v2 `cpu.stat`), so an agent with children is never under-claimed;
    elsewhere, this process and its reaped children (`process_tree_cpu_s`). Memory freed, as
    the group's memory controller counts it (v1: `total_pgpgout`, exact; v2: a lower bound, the
    drops of `memory.current` between this meter's readings, which `Client.report_usage` raises
    to the node's own lower bound); none without a readable one."""

    def __init__(self, procfs_root: str = "/proc", *, own_group: bool | None = None) -> None:
        """`own_group`: whether this process's cgroup is the agent's own (default: what the
        daemon says, `MAXWELL_AGENT_CGROUP=1`); a group shared with others is not claimed."""
        if own_group is None:
            own_group = os.environ.get(OWN_CGROUP_ENV) == "1"
        self._group: WorkloadGroup | None = None
        self._memory_group: WorkloadGroup | None = None
        with contextlib.suppress(MaxwellError, OSError, ValueError):
            layout = read_layout(procfs_root)
            self._memory_group = _own_group(layout, "memory", "memory.current")
            if own_group:
                self._group = _own_group(layout, "cpuacct", "cpu.stat")

    def usage(self) -> tuple[float, int]:
        """(CPU seconds, bytes freed) since this process's group (or this process) began."""
        cpu_s, freed = None, 0
        if self._group is not None:
            with contextlib.suppress(MaxwellError, OSError):
                cpu_s = self._group.cpu_ns() / 1e9
        if self._memory_group is not None:
            with contextlib.suppress(MaxwellError, OSError):
                freed = self._memory_group.stats().memory_freed_bytes
        return (process_tree_cpu_s() if cpu_s is None else cpu_s), freed


def _own_group(layout: CgroupLayout, controller: str, v2_file: str) -> WorkloadGroup | None:
    """This process's own cgroup where `controller` (v1) or `v2_file` (v2) accounts for it."""
    hierarchy = layout.v1_for(controller)
    if hierarchy is not None:
        unified = layout.v2.own_dir if layout.v2 is not None else None
        return V1Group("self", {controller: hierarchy.own_dir}, unified_dir=unified)
    if layout.v2 is not None and os.path.exists(os.path.join(layout.v2.own_dir, v2_file)):
        return V2Group("self", layout.v2.own_dir)
    return None


def process_tree_cpu_s() -> float:
    """User + system CPU seconds of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _base64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _quote(agent: str) -> str:
    """An agent id as one path segment (a `/` in it must not change the endpoint)."""
    return quote(agent, safe="")
