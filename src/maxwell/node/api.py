"""The node's HTTP + JSON API, and the server that puts it on a Unix socket and/or loopback TCP.

Rules:
- Everything goes through the `Node` protocol (`maxwell.node.facade`); this module never touches
  the daemon's state, so a refused request cannot change anything: every check (authentication,
  authorisation, validation) happens before the one `Node` call a request makes.
- A request that may carry a body is judged on its headers before a byte of the body is read
  (`RequestGate`): a token the node knows, a `Content-Length`, at most `MAX_BODY_BYTES`.
- Authentication is `Authorization: Bearer <token>`, or, on the Unix socket, the kernel's word
  on who connected (`maxwell.node.peers`): root, the daemon's user and the `maxwell` group are
  the admin without a token; any other local user is a `Role.USER` (its own account and the
  agents it spawned, `maxwell.node.accounts`) unless its uid is an agent's dynamic one; agents
  and TCP callers show tokens. The admin may do everything; an agent
  token may read the price and the jobs, read its own account (`GET /agents/{own id}`,
  `GET /agents` lists only itself), change its own bid, report for itself (`POST /agents/{own
  id}/report`, which the admin may not do: a report is the agent's own word) and take a job's
  input for itself (`POST /jobs/{id}/take`), nothing else. A refusal for another agent
  is a 403 whether or not that agent exists, so an agent (or a local user) cannot probe for
  other agents' ids.
- Every refusal is a 4xx whose body is `{"error": "<one line>"}`; `NodeError.status` is the status
  of the node's own refusals. A 5xx is a bug (the API fuzz test asserts there are none).
- Money on the wire is a float of $J, converted once with `tokens_to_money` to integer µ$J;
  NaN, infinities, negative and absurd amounts are rejected before the node sees them.
- `GET /metrics` (Prometheus text) needs no token when `public_metrics` is true (the default): the
  API listens only on a Unix socket and loopback TCP, a scraper should not need the admin
  token, and the page holds no secret (no token, only the market's figures). With
  `public_metrics=False` it needs the admin token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import ipaddress
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from maxwell.economy.ledger import TREASURY, user_account
from maxwell.errors import MaxwellError, UsageError
from maxwell.node.accounts import owns
from maxwell.node.agentlog import MAX_LOG_CHUNK
from maxwell.node.facade import (
    NO_MONEY,
    AgentInfo,
    AuditResult,
    Cluster,
    ClusterMembers,
    ClusterPrices,
    JobInfo,
    Node,
    NodeError,
    PriceInfo,
    Principal,
    ProofResult,
    Role,
    SpawnResult,
    TakenInput,
    TransferReceipt,
    TransfersReport,
    UnknownAgentError,
    UserAccount,
)
from maxwell.node.hosts import refused_host
from maxwell.node.peers import AdminPeers, PeerProtocol, peer_of
from maxwell.node.transfers import NodeTransfers
from maxwell.node.wire import (
    MAX_PAYLOAD_BYTES,
    AgentList,
    ArrivalRequest,
    BidRequest,
    ErrorBody,
    EventList,
    FundRequest,
    JobList,
    JobRequest,
    ProofRequest,
    ReportRequest,
    SpawnRequest,
    StatusBody,
    TransferRequest,
    VoucherRequest,
    validation_message,
)
from maxwell.units import Money, tokens_to_money
from maxwell.web import add_page_routes

# The bodies' bounds are the wire's (`maxwell.node.wire`); these bound the query and the path.
MAX_SEQ = 2**63 - 1
MAX_EVENTS = 10_000
MAX_AGENT_ID = 128

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ApiError(Exception):
    """A refusal decided here (authentication, authorisation, an amount): status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the wire ---------------------------------------------------------------------------------
# The bodies and answers are `maxwell.node.wire`'s and the facade's types, defined once: each
# endpoint takes its request type and returns its answer type, which FastAPI turns into JSON and
# into the OpenAPI document.

AgentId = Annotated[str, Path(min_length=1, max_length=MAX_AGENT_ID)]
JobId = Annotated[str, Path(min_length=1, max_length=MAX_AGENT_ID)]
Uid = Annotated[int, Path(ge=0, le=2**32 - 2)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in [
        (400, "the node refused the request"),
        (401, "no token, or a token the node does not know"),
        (403, "the token may not do this"),
        (404, "no such agent or endpoint"),
        (409, "the agent is dead or exited, or a funding's key was used for another"),
        (411, "a body streamed without a Content-Length"),
        (413, "a body over MAX_BODY_BYTES"),
        (422, "a malformed request: the message names the field"),
    ]
}


# --- the app -----------------------------------------------------------------------------------


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


_MISSING_TOKEN = "missing header Authorization: Bearer <token>"
_bearer = HTTPBearer(auto_error=False, description="the admin token or an agent's token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authenticate(node: Node, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None:
        raise ApiError(401, _MISSING_TOKEN)
    found = node.authenticate(credentials.credentials)
    if found is None:
        raise ApiError(401, "unknown token")
    return found


def _peer_principal(scope: Scope, admins: AdminPeers, node: Node) -> Principal | None:
    """Who the kernel says called over the Unix socket (`peers`): the admin, a local user
    (`Node.local_user`), or None (TCP, or an agent's dynamic uid: it must show its token)."""
    peer = peer_of(scope)
    if peer is None:
        return None
    if admins.is_admin(peer):
        return Principal(Role.ADMIN)
    return node.local_user(peer.uid)


async def _caller(request: Request, credentials: Credentials) -> Principal:
    """A token's principal; without one, the kernel's word on a Unix socket peer."""
    node: Node = request.app.state.node
    if credentials is None:
        found = _peer_principal(request.scope, request.app.state.admins, node)
        if found is not None:
            return found
    return _authenticate(node, credentials)


# Module level: FastAPI resolves these annotations by name (`from __future__ import annotations`).
Caller = Annotated[Principal, Depends(_caller)]


async def _known_query(request: Request) -> None:
    """Refuse query parameters the endpoint does not take (a misspelt `?afer=` is an error)."""
    route = request.scope.get("route")
    known = (
        {param.alias for param in route.dependant.query_params}
        if isinstance(route, APIRoute)
        else set()
    )
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ApiError(422, f"query.{unknown[0]}: unknown parameter")


def _require_admin(caller: Principal, action: str) -> None:
    if caller.role is not Role.ADMIN:
        raise ApiError(403, f"only the admin token may {action}")


def _require_self(caller: Principal, agent: str, action: str, node: Node) -> None:
    """The admin, the agent's own token, or the local user who owns it (`owns`)."""
    if caller.role is Role.ADMIN:
        return
    if caller.role is Role.USER:
        _require_owner(caller, agent, action, node)
    elif caller.agent != agent:
        raise ApiError(403, f"an agent token may {action} only its own agent")


def _spawning_user(caller: Principal, body: SpawnRequest) -> int | None:
    """Whose spawn this is: None for the admin's, the uid of a local user for its own (which
    names no other user and sets no bounty: bounties are paid from the treasury)."""
    if caller.role is not Role.USER:
        _require_admin(caller, "spawn agents")
        return None
    if body.user is not None:
        raise ApiError(403, "a local user's agents run as itself: it names no other user")
    if body.bounty:
        raise ApiError(403, "only the admin sets a bounty: it is paid from the treasury")
    return caller.uid


def _payload(text: str | None) -> bytes | None:
    """A spawn's payload, base64 (the wire's pattern admits only its alphabet)."""
    if text is None:
        return None
    try:
        payload = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ApiError(422, f"payload: not base64 ({exc})") from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ApiError(422, f"payload: {len(payload)} bytes, over {MAX_PAYLOAD_BYTES}")
    return payload


def _require_owner(caller: Principal, agent: str, action: str, node: Node) -> None:
    assert caller.uid is not None
    try:
        user = node.agent(agent).user
    except UnknownAgentError:  # a 403 like any other's agent: ids cannot be probed
        user = None
    if not owns(caller.uid, user):
        raise ApiError(403, f"a local user may {action} only the agents it spawned")


# Every local user may connect (agents run as other users): a connection alone is worth nothing,
# each request is authorised by the kernel's word on its peer or by a token.
SOCKET_MODE = 0o666

# Every valid request fits: a spawn's 1,024 arguments of 4 KB are 4 MiB of JSON at most.
MAX_BODY_BYTES = 8 << 20
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestGate:
    """ASGI middleware in front of everything that parses a request. A request that calls the
    node by a name a web page could rebind to this machine is refused (403, `maxwell.node.hosts`).
    A request that may carry a body is refused from its headers alone, before a byte of its body
    is read: without a token
    the node knows or a peer the kernel vouches for on the Unix socket (an admin or a local user:
    401), streamed without a `Content-Length` (411), or longer than `MAX_BODY_BYTES` (413). So a
    stranger cannot make the daemon read, hold or parse anything."""

    def __init__(self, app: ASGIApp, node: Node, admins: AdminPeers) -> None:
        self.app, self.node, self.admins = app, node, admins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            foreign = refused_host(headers.get(b"host"))
            refusal = _error(403, foreign) if foreign is not None else None
            if refusal is None and scope["method"] not in _BODILESS:
                vouched = _peer_principal(scope, self.admins, self.node) is not None
                refusal = self._refusal(headers, vouched)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: Mapping[bytes, bytes], vouched: bool) -> JSONResponse | None:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if not token.strip() and vouched:
            pass  # the kernel vouches for an administrator or a local user on the Unix socket
        elif scheme.lower() != "bearer" or not token.strip():
            return _error(401, _MISSING_TOKEN, {"WWW-Authenticate": "Bearer"})
        elif self.node.authenticate(token.strip()) is None:
            return _error(401, "unknown token", {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is None:  # no body at all, or one streamed in chunks of unknown total
            if b"transfer-encoding" in headers:
                return _error(411, "a request body needs a Content-Length header")
            return None
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return _error(413, f"a request body may hold at most {MAX_BODY_BYTES} bytes")
        return None


def create_app(
    node: Node,
    *,
    metrics: Callable[[], bytes] | None = None,
    public_metrics: bool = True,
    admins: AdminPeers | None = None,
    cluster: Cluster | None = None,
    transfers: NodeTransfers | None = None,
) -> FastAPI:
    """The API of `node`; `metrics` renders the Prometheus page (`/metrics` is 404 without it).
    `admins`: who administers the node without a token on the Unix socket (None: this system's,
    `AdminPeers.of_this_system`). `cluster`: what the node believes of its gossip cluster
    (`/cluster/*` is 404 without it). `transfers`: the node's side of money across nodes
    (`/transfers*` is 404 without it)."""
    app = FastAPI(
        title="Maxwell node",
        summary="A thermodynamic compute market: agents, bids, funding, the spot price.",
        version="1",
        docs_url=None,  # the Swagger page loads scripts from a CDN; /openapi.json is enough
        redoc_url=None,
        responses=_ERRORS,
        dependencies=[Depends(_known_query)],
    )
    app.state.node = node
    app.state.admins = admins if admins is not None else AdminPeers.of_this_system()
    app.add_middleware(RequestGate, node=node, admins=app.state.admins)
    _add_error_handlers(app)
    # Registered in this order, which is the order of the paths in the OpenAPI document.
    _add_account_routes(app, node)
    _add_user_routes(app, node)
    _add_agent_word_routes(app, node)
    _add_admin_routes(app, node)
    _add_job_routes(app, node)
    _add_read_routes(app, node)
    _add_cluster_routes(app, cluster)
    _add_transfer_routes(app, node, transfers)
    _add_metrics_route(app, metrics, public_metrics=public_metrics)
    add_page_routes(app)  # the live page at / (maxwell.web): public, it holds no secret
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as `{"error": "<one line>"}` with its status (see the module comment)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.message, headers)

    @app.exception_handler(NodeError)
    async def _node_error(request: Request, exc: NodeError) -> JSONResponse:
        return _error(exc.status, str(exc) or type(exc).__name__)

    @app.exception_handler(UsageError)
    async def _usage_error(request: Request, exc: UsageError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            # Starlette's Allow names only the first route whose path matched; list them all.
            allowed = sorted(
                {
                    method
                    for route in request.app.routes
                    if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                    for method in route.methods or ()
                }
            )
            message = f"method {request.method} not allowed on {request.url.path}"
            return _error(405, message, {"Allow": ", ".join(allowed)})
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message, exc.headers)

    @app.exception_handler(MaxwellError)
    async def _maxwell_error(request: Request, exc: MaxwellError) -> JSONResponse:
        # The daemon failed (not the caller): a 500 that still says why in one line.
        return _error(500, f"node error: {exc}")


# The endpoints are plain `def`s: `Node` calls block (SQLite, cgroup writes), so they run in
# FastAPI's thread pool; the facade promises thread safety. The dependencies every request
# runs (`_known_query`, `_caller`), the bid and the report are `async`: `Node.authenticate`,
# `Node.bid` and `Node.report` never wait (a report reads one counter file), and a thread-pool
# hop would cost them more than their own work.


def _add_account_routes(app: FastAPI, node: Node) -> None:
    """Agents' accounts: spawn and fund them (admin), read them and bid (the admin or their own)."""

    @app.post("/agents", status_code=201, tags=["admin"])
    def spawn(body: SpawnRequest, caller: Caller) -> SpawnResult:
        """Start a command as a new agent, funded from the treasury (admin); a local user's
        runs as that user, funded from its own account."""
        owner = _spawning_user(caller, body)
        result = node.spawn(
            body.argv,
            fund=tokens_to_money(body.fund),
            bid=body.bid,
            demand=body.demand,
            name=body.name,
            user=body.user,
            code=body.code,
            bounty=tokens_to_money(body.bounty) if body.bounty is not None else NO_MONEY,
            model=body.model,
            memory=body.memory,
            pids=body.pids,
            owner=owner,
            payload=_payload(body.payload),
        )
        return result

    @app.get("/agents", tags=["accounts"])
    def list_agents(caller: Caller) -> AgentList:
        """All agents (admin), a local user's own, or only the caller's own agent (its token)."""
        if caller.role is Role.ADMIN:
            found: Sequence[AgentInfo] = node.agents()
        elif caller.uid is not None:
            found = [info for info in node.agents() if owns(caller.uid, info.user)]
        else:
            found = [node.agent(caller.agent)] if caller.agent is not None else []
        return AgentList(found)

    @app.get("/agents/{agent}", tags=["accounts"])
    def get_agent(agent: AgentId, caller: Caller) -> AgentInfo:
        """One agent's account and state."""
        _require_self(caller, agent, "read", node)
        return node.agent(agent)

    @app.post("/agents/{agent}/fund", tags=["admin"])
    def fund(agent: AgentId, body: FundRequest, caller: Caller) -> AgentInfo:
        """Move `amount` $J from the treasury to the agent (admin), or from a local user's own
        account to its own agent."""
        amount = tokens_to_money(body.amount)
        if caller.role is Role.USER:
            _require_owner(caller, agent, "fund", node)
            return node.fund(agent, amount, body.key, owner=caller.uid)
        _require_admin(caller, "fund agents")
        return node.fund(agent, amount, body.key)

    @app.post("/agents/{agent}/bid", tags=["accounts"])
    async def bid(agent: AgentId, body: BidRequest, caller: Caller) -> AgentInfo:
        """Change the agent's limit price (and, optionally, the cores it asks for)."""
        _require_self(caller, agent, "bid for", node)
        return node.bid(agent, body.price, body.demand)


def _add_user_routes(app: FastAPI, node: Node) -> None:
    """Local users' accounts (`maxwell.node.accounts`): the admin funds them from the treasury;
    each user reads its own."""

    @app.get("/users/{uid}", tags=["accounts"])
    def user_account(uid: Uid, caller: Caller) -> UserAccount:
        """A local user's account (admin, or that user on the Unix socket)."""
        if caller.role is not Role.ADMIN and caller.uid != uid:
            raise ApiError(403, "a local user may read only its own account")
        return node.user_account(uid)

    @app.post("/users/{uid}/fund", tags=["admin"])
    def fund_user(uid: Uid, body: FundRequest, caller: Caller) -> UserAccount:
        """Move `amount` $J from the treasury to a local user's account (admin)."""
        _require_admin(caller, "fund users")
        return node.fund_user(uid, tokens_to_money(body.amount), body.key)


def _add_agent_word_routes(app: FastAPI, node: Node) -> None:
    """What only the agent's own token may say: its reports and its proofs (not even the admin)."""

    @app.post("/agents/{agent}/report", tags=["accounts"])
    async def report(agent: AgentId, body: ReportRequest, caller: Caller) -> AgentInfo:
        """The agent's own claim of what it consumed since spawn (its own token only: a report
        is the agent's word, which audits check against the kernel's counters)."""
        if caller.agent != agent:
            raise ApiError(403, "only the agent's own token may report for it")
        return node.report(agent, body.claim())

    @app.post("/agents/{agent}/proofs", tags=["accounts"])
    def submit_proof(agent: AgentId, body: ProofRequest, caller: Caller) -> ProofResult:
        """Submit a proof of inference from the agent's own directory (its own token only); a
        valid proof of the model the user set earns the bounty the user set."""
        if caller.agent != agent:
            raise ApiError(403, "only the agent's own token may submit its proofs")
        return node.submit_proof(agent, body.input, body.output, body.proof)


def _add_job_routes(app: FastAPI, node: Node) -> None:
    """Posted work (`maxwell.node.jobs`): the admin posts, anyone with a token reads, an agent
    takes inputs for itself."""

    @app.post("/jobs", status_code=201, tags=["admin"])
    def post_job(body: JobRequest, caller: Caller) -> JobInfo:
        """Post a job: proofs of its inputs for its model earn `bounty` each, once (admin)."""
        _require_admin(caller, "post jobs")
        return node.post_job(body.model, body.inputs, tokens_to_money(body.bounty))

    @app.get("/jobs", tags=["market"])
    def list_jobs(caller: Caller) -> JobList:
        """Every job, oldest first (any valid token)."""
        return JobList(node.jobs())

    @app.get("/jobs/{job}", tags=["market"])
    def get_job(job: JobId, caller: Caller) -> JobInfo:
        """One job (any valid token)."""
        return node.job(job)

    @app.post("/jobs/{job}/take", tags=["accounts"])
    def take_input(job: JobId, caller: Caller) -> TakenInput:
        """Lease the calling agent an input of the job, written into its directory (an agent's
        own token only)."""
        if caller.agent is None:
            raise ApiError(403, "only an agent takes inputs, for itself")
        return node.take_input(caller.agent, job)


def _add_admin_routes(app: FastAPI, node: Node) -> None:
    """The admin acting on an agent (audit, kill, remove) and reading the event log."""

    @app.post("/agents/{agent}/audit", tags=["admin"])
    def audit(agent: AgentId, caller: Caller) -> AuditResult:
        """Audit the agent now (admin): its reports against the kernel's counters, and its
        threads' instruction pointers against its code manifest. A liar is slashed."""
        _require_admin(caller, "audit agents")
        return node.audit(agent)

    @app.post("/agents/{agent}/kill", tags=["admin"])
    def kill(agent: AgentId, caller: Caller) -> AgentInfo:
        """Kill the agent's whole process group (admin, or the local user who spawned it)."""
        if caller.role is Role.USER:
            _require_owner(caller, agent, "kill", node)
        else:
            _require_admin(caller, "kill agents")
        return node.kill(agent)

    @app.delete("/agents/{agent}", tags=["admin"])
    def remove(agent: AgentId, caller: Caller) -> AgentInfo:
        """Forget an ended agent (admin, or the local user who spawned it): it leaves the agents
        and the API; its ledger history and its account's balance stay. 409 while it runs.
        Answers with its last state."""
        if caller.role is Role.USER:
            _require_owner(caller, agent, "remove", node)
        else:
            _require_admin(caller, "remove agents")
        return node.remove(agent)

    @app.get("/events", tags=["admin"])
    def events(
        caller: Caller,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="last seq already seen")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 1000,
    ) -> EventList:
        """Events with a sequence number above `after`, oldest first (admin)."""
        _require_admin(caller, "read the event log")
        return EventList(node.events(after, limit))


def _add_read_routes(app: FastAPI, node: Node) -> None:
    """Read-only views: the price (any token), whose token it is, the node's status (admin),
    what an ended agent left (the admin, its owner or itself)."""

    @app.get("/price", tags=["market"])
    def price(caller: Caller) -> PriceInfo:
        """The spot price and what it is made of (any valid token)."""
        return node.price()

    @app.get("/whoami", tags=["accounts"])
    def whoami(caller: Caller) -> Principal:
        """Whose token this is: how an agent learns its own id."""
        return caller

    @app.get("/status", tags=["admin"])
    def status(caller: Caller) -> StatusBody:
        """A snapshot of the node: price, agents, tick figures (admin)."""
        _require_admin(caller, "read the node's status")
        return StatusBody.of(node.status())

    @app.get(
        "/agents/{agent}/result", tags=["accounts"], response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )  # fmt: skip
    def get_result(agent: AgentId, caller: Caller) -> Response:
        """The bytes the ended agent left in its result file (`$MAXWELL_AGENT_RESULT`), as it
        left them: 404 if none, 409 while it runs."""
        _require_self(caller, agent, "read the result of", node)
        return Response(node.result(agent), media_type="application/octet-stream")

    @app.get(
        "/agents/{agent}/log", tags=["accounts"], response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )  # fmt: skip
    def get_log(
        agent: AgentId,
        caller: Caller,
        offset: Annotated[int, Query(ge=0, le=2**62, description="the first byte wanted")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LOG_CHUNK)] = MAX_LOG_CHUNK,
    ) -> Response:
        """The agent's output (standard output and error) from byte `offset`, at most `limit`
        bytes; empty at its end (`maxwell logs`): the admin, its owner or itself; 404 if none."""
        _require_self(caller, agent, "read the output of", node)
        return Response(node.log(agent, offset, limit), media_type="application/octet-stream")


def _add_cluster_routes(app: FastAPI, cluster: Cluster | None) -> None:
    """The gossip cluster as this node believes it (any valid caller, as the price)."""

    def gossiping() -> Cluster:
        if cluster is None:
            raise ApiError(404, "gossip is off on this node (maxwell daemon --gossip)")
        return cluster

    @app.get("/cluster/members", tags=["cluster"])
    def cluster_members(caller: Caller) -> ClusterMembers:
        """Every member Serf knows, verified or not, with its last verified figures."""
        return gossiping().members()

    @app.get("/cluster/price", tags=["cluster"])
    def cluster_price(caller: Caller) -> ClusterPrices:
        """Every verified node's price, cheapest first, and the cheapest with room."""
        return gossiping().prices()


def _add_transfer_routes(app: FastAPI, node: Node, transfers: NodeTransfers | None) -> None:
    """Money across nodes (`maxwell.node.transfers`): the home node sends a job's funds, the
    runner spawns it on them and settles what is left, the home node takes that back."""

    def crossing() -> NodeTransfers:
        if transfers is None:
            raise ApiError(404, "no money crosses to this node: it has no cluster identity "
                           "(maxwell daemon --node-key FILE --authority FILE.pub)")  # fmt: skip
        return transfers

    @app.post("/transfers", status_code=201, tags=["cluster"])
    def send(body: TransferRequest, caller: Caller) -> TransferReceipt:
        """Send a job's funds to the node that will run it, from a local user's own account
        (or, for the admin, the treasury); the answer carries this node's voucher for them."""
        if caller.role is Role.USER:
            assert caller.uid is not None
            payer = user_account(caller.uid)
        else:
            _require_admin(caller, "send a job's funds")
            payer = TREASURY
        return crossing().send(body.job, body.to, tokens_to_money(body.fund), payer)

    @app.post("/transfers/in", status_code=201, tags=["admin"])
    def arrive(body: ArrivalRequest, caller: Caller) -> SpawnResult:
        """Run a job another node sent, as an agent funded by that node's voucher (once)."""
        _require_admin(caller, "run another node's jobs")
        transfer = crossing().received(body.voucher)
        return node.spawn(
            body.argv, fund=Money(transfer.amount), bid=body.bid, demand=body.demand,
            name=body.name, memory=body.memory, pids=body.pids, transfer=transfer,
            payload=_payload(body.payload),
        )  # fmt: skip

    @app.post("/transfers/decline", tags=["admin"])
    def decline(body: VoucherRequest, caller: Caller) -> TransferReceipt:
        """A job this node received and cannot run: all of its funds back; the voucher."""
        _require_admin(caller, "decline jobs")
        return crossing().decline(body.voucher)

    @app.post("/transfers/{job}/settle", tags=["admin"])
    def settle(job: str, caller: Caller) -> TransferReceipt:
        """Once the job's agent has ended: what is left goes back; this node's voucher for it."""
        _require_admin(caller, "settle jobs")
        return crossing().settle(job, lambda agent: node.agent(agent).state)

    @app.post("/transfers/back", tags=["admin"])
    def back(body: VoucherRequest, caller: Caller) -> TransferReceipt:
        """A runner's voucher for what was left of a job: back to the job's payer."""
        _require_admin(caller, "take money back")
        return crossing().refund(body.voucher)

    @app.get("/transfers", tags=["admin"])
    def report(caller: Caller) -> TransfersReport:
        """This node's halves of every transfer and its outbound/inbound balances."""
        _require_admin(caller, "read the transfers")
        return crossing().report()


def _add_metrics_route(
    app: FastAPI, metrics: Callable[[], bytes] | None, *, public_metrics: bool
) -> None:
    """`GET /metrics`: the Prometheus page, public or for the admin (see the module comment)."""

    def render() -> Response:
        if metrics is None:
            raise ApiError(404, "this node publishes no metrics")
        return Response(metrics(), media_type=PROMETHEUS_CONTENT_TYPE)

    metrics_route = app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
        tags=["market"],
    )
    if public_metrics:

        @metrics_route
        def public_prometheus() -> Response:
            """Prometheus text format; no token needed."""
            return render()

    else:

        @metrics_route
        def admin_prometheus(caller: Caller) -> Response:
            """Prometheus text format (admin)."""
            _require_admin(caller, "read metrics")
            return render()


# --- serving -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int


def parse_listen(text: str) -> TcpAddress:
    """`HOST:PORT` (or `[::1]:PORT`) on a loopback address; anything else is a `UsageError`.

    The API carries admin tokens in the clear: it must never be reachable from another machine.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--listen {text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--listen {text!r}: the port must be 0..65535")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"--listen {text!r}: the host must be a loopback IP address (127.0.0.1, ::1)"
        ) from None
    if not address.is_loopback:
        raise UsageError(
            f"--listen {text!r}: refusing a non-loopback address; the API carries tokens in "
            "the clear (use 127.0.0.1 or ::1)"
        )
    return TcpAddress(str(address), port)


def _bind_unix(path: str, mode: int) -> socket.socket:
    """Bind a listening Unix socket at `path` (replacing a stale one) with file mode `mode`."""
    with contextlib.suppress(FileNotFoundError):
        existing = os.lstat(path)
        if not stat.S_ISSOCK(existing.st_mode):
            raise UsageError(f"--socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: left behind by a daemon that was killed
        else:
            raise UsageError(f"--socket {path}: another daemon is listening there")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        # Before listen(): nobody can connect yet, so the umask's mode is never exposed.
        os.chmod(path, mode)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise UsageError(f"--socket {path}: cannot listen: {exc.strerror}") from exc
    return listener


def _bind_tcp(address: TcpAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address.host, address.port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise UsageError(f"--listen {address.host}:{address.port}: cannot listen: {why}") from exc
    return listener


# The API shares its process, and so the GIL, with the tick: a thread that wants the GIL waits up
# to the switch interval (5 ms by default) for a busy tick to let it go. At 1 ms a bid's p99 at
# 1,000 agents, bidding 160 times a second, fell from 20 ms to 5 ms for about the same CPU.
API_SWITCH_INTERVAL_S = 0.001


class ApiServer:
    """uvicorn serving an app on already-bound sockets, in a thread of its own.

    The sockets are bound in the constructor, so an address in use fails there, synchronously.
    The thread never installs signal handlers (uvicorn only does so in the main thread): the
    daemon owns SIGTERM and calls `stop()`, which lets requests in flight finish.
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        socket_path: str | None,
        listen: str | None,
        socket_mode: int = SOCKET_MODE,
        log_level: str = "warning",
    ) -> None:
        if socket_path is None and listen is None:
            raise UsageError("the API needs a Unix socket or a loopback address to listen on")
        self.socket_path = socket_path
        self._sockets: list[socket.socket] = []
        try:
            if socket_path is not None:
                self._sockets.append(_bind_unix(socket_path, socket_mode))
            if listen is not None:
                self._sockets.append(_bind_tcp(parse_listen(listen)))
        except BaseException:
            self._close_sockets()
            raise
        self.tcp_address: TcpAddress | None = None
        if listen is not None:
            host, port = self._sockets[-1].getsockname()[:2]
            self.tcp_address = TcpAddress(host, port)
        config = uvicorn.Config(
            app, http=PeerProtocol, lifespan="off", log_level=log_level, access_log=False,
            timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="maxwell-api", daemon=True)
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=self._sockets))
        except BaseException as exc:  # reported by start()/stop(), not lost in a thread
            self._failure = exc

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        """Start serving; returns once the server accepts requests. The process's switch
        interval is lowered to `API_SWITCH_INTERVAL_S` for good (it is the process's)."""
        sys.setswitchinterval(min(sys.getswitchinterval(), API_SWITCH_INTERVAL_S))
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started and self._thread.is_alive() and waited < timeout_s:
            deadline.wait(0.01)
            waited += 0.01
        if not self._server.started:
            self.stop()
            raise MaxwellError(f"the API server did not start: {self._failure or 'timed out'}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, finish the requests in flight, remove the socket file."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._close_sockets()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    def _close_sockets(self) -> None:
        for listener in self._sockets:
            listener.close()

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    app: FastAPI,
    *,
    socket_path: str | None,
    listen: str | None,
    socket_mode: int = SOCKET_MODE,
    log_level: str = "warning",
) -> ApiServer:
    """Bind and start serving `app` in a background thread; `stop()` the result to shut down.

    `socket_path`: a Unix socket, mode `socket_mode` (`SOCKET_MODE`, 0666: every local user may
    connect, agents included; each request is authorised by its peer or its token).
    `listen`: `HOST:PORT` on a loopback address only (port 0 picks one: see `tcp_address`).
    """
    return ApiServer(
        app, socket_path=socket_path, listen=listen, socket_mode=socket_mode, log_level=log_level
    ).start()
