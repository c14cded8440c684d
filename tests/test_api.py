"""The node's HTTP API against an in-memory node: authorisation, validation, error bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, TestClient
from helpers import LOCAL
from maxwell.errors import UsageError
from maxwell.node.api import create_app, parse_listen
from maxwell.node.facade import AgentState
from maxwell.node.wire import to_json
from maxwell.units import Money


@pytest.fixture
def node() -> FakeNode:
    fake = FakeNode()
    fake.spawn(["sleep", "100"], fund=Money(10_000_000), bid=0.5, name="alpha")
    fake.spawn(["sleep", "100"], fund=Money(10_000_000), bid=0.5, name="beta")
    return fake


@pytest.fixture
def http(node: FakeNode) -> Iterator[TestClient]:
    app = create_app(node, metrics=lambda: b"# TYPE maxwell_up gauge\nmaxwell_up 1\n")
    with TestClient(app, base_url=LOCAL) as client:
        yield client


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def tokens(node: FakeNode) -> dict[str, str | None]:
    return {
        "admin": ADMIN_TOKEN,
        "self": node.token_of("a1"),
        "other": node.token_of("a2"),
        "bad": "not-a-token",
        "none": None,
    }


SPAWN = {"argv": ["sleep", "5"], "fund": 1.5, "bid": 0.25, "demand": 2.0, "name": "gamma"}

# endpoint -> expected status for (admin, agent a1 itself, agent a2, bad token, no token);
# every target is agent a1.
MATRIX: list[tuple[str, str, dict[str, Any] | None, tuple[int, int, int, int, int]]] = [
    ("GET", "/price", None, (200, 200, 200, 401, 401)),
    ("GET", "/whoami", None, (200, 200, 200, 401, 401)),
    ("GET", "/agents", None, (200, 200, 200, 401, 401)),
    ("GET", "/agents/a1", None, (200, 200, 403, 401, 401)),
    ("POST", "/agents/a1/bid", {"price": 0.75}, (200, 200, 403, 401, 401)),
    ("POST", "/agents/a1/report", {"cpu_s": 1.0}, (403, 200, 403, 401, 401)),
    ("POST", "/agents/a1/fund", {"amount": 2.0}, (200, 403, 403, 401, 401)),
    ("POST", "/agents/a1/audit", None, (200, 403, 403, 401, 401)),
    (
        "POST",
        "/agents/a1/proofs",
        {"input": "x.npy", "output": "y.npy", "proof": "p.mxp"},
        (403, 400, 403, 401, 401),  # a1 may submit, but the fake node pays no bounty
    ),
    ("POST", "/agents/a1/kill", None, (200, 403, 403, 401, 401)),
    ("POST", "/agents", SPAWN, (201, 403, 403, 401, 401)),
    ("GET", "/events", None, (200, 403, 403, 401, 401)),
    ("GET", "/status", None, (200, 403, 403, 401, 401)),
    ("GET", "/metrics", None, (200, 200, 200, 200, 200)),
]
WHO = ("admin", "self", "other", "bad", "none")


@pytest.mark.parametrize(
    ("method", "path", "body", "who", "expected"),
    [
        pytest.param(method, path, body, who, statuses[i], id=f"{method} {path} as {who}")
        for method, path, body, statuses in MATRIX
        for i, who in enumerate(WHO)
    ],
)
def test_authorisation_matrix(
    http: TestClient,
    node: FakeNode,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    who: str,
    expected: int,
) -> None:
    before = node.snapshot()
    response = http.request(method, path, json=body, headers=auth(tokens(node)[who]))
    assert response.status_code == expected, response.text
    if expected >= 400:
        error = response.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error
        assert node.snapshot() == before  # a refusal changes nothing
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    node.check_invariants()


def test_an_agent_cannot_probe_for_other_agents(http: TestClient, node: FakeNode) -> None:
    """Another agent's id and a made-up one are refused alike: no existence oracle."""
    headers = auth(node.token_of("a1"))
    for path in ("/agents/a2", "/agents/nope"):
        response = http.get(path, headers=headers)
        assert response.status_code == 403
        assert response.json() == {"error": "an agent token may read only its own agent"}


def test_an_agent_lists_only_itself(http: TestClient, node: FakeNode) -> None:
    mine = http.get("/agents", headers=auth(node.token_of("a2"))).json()
    assert [agent["id"] for agent in mine["agents"]] == ["a2"]
    every = http.get("/agents", headers=auth(ADMIN_TOKEN)).json()
    assert [agent["id"] for agent in every["agents"]] == ["a1", "a2"]


def test_spawn_returns_the_agent_and_its_token(http: TestClient, node: FakeNode) -> None:
    response = http.post("/agents", json=SPAWN, headers=auth(ADMIN_TOKEN))
    assert response.status_code == 201
    result = response.json()
    assert set(result) == {"agent", "name", "pid", "token"}
    assert result["name"] == "gamma"
    info = node.agent(result["agent"])
    assert info.balance == 1_500_000  # $J on the wire, integer µ$J inside
    assert (info.bid, info.demand) == (0.25, 2.0)
    whoami = http.get("/whoami", headers=auth(result["token"])).json()
    assert whoami == {"role": "agent", "agent": result["agent"], "uid": None}


def test_fund_converts_dollars_joule_exactly(http: TestClient, node: FakeNode) -> None:
    response = http.post("/agents/a1/fund", json={"amount": 0.1}, headers=auth(ADMIN_TOKEN))
    assert response.status_code == 200
    assert response.json()["balance"] == 10.1
    assert node.agent("a1").balance == 10_100_000
    node.check_invariants()


def test_bid_by_the_agent_itself(http: TestClient, node: FakeNode) -> None:
    response = http.post(
        "/agents/a1/bid", json={"price": 1.25, "demand": 3}, headers=auth(node.token_of("a1"))
    )
    assert response.status_code == 200
    assert (response.json()["bid"], response.json()["demand"]) == (1.25, 3.0)
    kept = http.post("/agents/a1/bid", json={"price": 0}, headers=auth(node.token_of("a1")))
    assert (kept.json()["bid"], kept.json()["demand"]) == (0.0, 3.0)


MALFORMED: list[tuple[str, str, bytes | dict[str, Any] | None, str]] = [
    ("POST", "/agents/a1/fund", b'{"amount": NaN}', "amount"),
    ("POST", "/agents/a1/fund", b'{"amount": Infinity}', "amount"),
    ("POST", "/agents/a1/fund", {"amount": -1}, "greater than or equal to 0.000001"),
    ("POST", "/agents/a1/fund", {"amount": 0}, "greater than or equal to 0.000001"),
    ("POST", "/agents/a1/fund", {"amount": 1e13}, "less than or equal"),
    ("POST", "/agents/a1/fund", {"amount": 1e-9}, "greater than or equal to 0.000001"),
    ("POST", "/agents/a1/fund", {"amount": "10"}, "valid number"),
    ("POST", "/agents/a1/fund", {"amount": True}, "valid number"),
    ("POST", "/agents/a1/fund", {}, "body.amount: Field required"),
    ("POST", "/agents/a1/fund", {"amount": 1, "extra": 2}, "body.extra"),
    ("POST", "/agents/a1/fund", b"{not json", "JSON"),
    ("POST", "/agents/a1/fund", b"[1, 2]", "body"),
    ("POST", "/agents/a1/fund", None, "body"),
    ("POST", "/agents/a1/bid", {"price": -0.5}, "body.price"),
    ("POST", "/agents/a1/bid", b'{"price": NaN}', "body.price"),
    ("POST", "/agents/a1/bid", {"price": 1, "demand": 0}, "body.demand"),
    ("POST", "/agents/a1/bid", {"price": 1, "demand": -2}, "body.demand"),
    ("POST", "/agents/a1/report", {"cpu_s": -1}, "body.cpu_s"),
    ("POST", "/agents/a1/report", b'{"cpu_s": Infinity}', "body.cpu_s"),
    ("POST", "/agents/a1/report", {"cpu_s": 1, "memory_freed_bytes": 1.5}, "body.memory_freed"),
    ("POST", "/agents/a1/report", {"cpu_s": 1, "work": -1}, "body.work"),
    ("POST", "/agents/a1/report", {"cpu_s": 1, "tokens": 3}, "body.tokens"),
    ("POST", "/agents", {**SPAWN, "argv": []}, "body.argv"),
    ("POST", "/agents", {**SPAWN, "argv": [""]}, "body.argv.0"),
    ("POST", "/agents", {**SPAWN, "argv": "sleep 5"}, "body.argv"),
    ("POST", "/agents", {**SPAWN, "fund": -3}, "body.fund"),
    ("POST", "/agents", {**SPAWN, "bid": "NaN"}, "body.bid"),
    ("POST", "/agents", {**SPAWN, "name": ""}, "body.name"),
    ("GET", "/events?after=-1", None, "query.after"),
    ("GET", "/events?limit=0", None, "query.limit"),
    ("GET", "/events?limit=lots", None, "query.limit"),
    ("GET", f"/events?after={2**64}", None, "query.after"),
    ("GET", "/events?afer=3", None, "query.afer: unknown parameter"),
    ("GET", "/price?x=1", None, "query.x: unknown parameter"),
]


@pytest.mark.parametrize(("method", "path", "body", "names"), MALFORMED)
def test_malformed_requests_are_422_with_one_line_and_change_nothing(
    http: TestClient,
    node: FakeNode,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None,
    names: str,
) -> None:
    before = node.snapshot()
    headers = {**auth(ADMIN_TOKEN), "Content-Type": "application/json"}
    if isinstance(body, bytes):
        response = http.request(method, path, content=body, headers=headers)
    else:
        response = http.request(method, path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert names in error
    assert "\n" not in error
    assert node.snapshot() == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("GET", "/agents/zz", None, 404, "no agent 'zz'"),
        ("POST", "/agents/zz/fund", {"amount": 1}, 404, "no agent 'zz'"),
        ("POST", "/agents/a1/fund", {"amount": 2e6}, 400, "treasury"),
        ("POST", "/agents", {**SPAWN, "user": "mallory"}, 400, "no such user"),
        ("POST", "/agents", {**SPAWN, "name": "alpha"}, 400, "already named"),
        ("GET", "/nowhere", None, 404, "no such endpoint: GET /nowhere"),
        ("PUT", "/agents/a1", None, 405, "method PUT not allowed"),
        ("DELETE", "/agents/a1", None, 409, "kill it first"),  # `maxwell rm` of a live agent
        ("DELETE", "/agents/zz", None, 404, "no agent 'zz'"),
    ],
)
def test_node_refusals_map_to_their_status(
    http: TestClient,
    node: FakeNode,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    says: str,
) -> None:
    before = node.snapshot()
    response = http.request(method, path, json=body, headers=auth(ADMIN_TOKEN))
    assert response.status_code == status
    assert says in response.json()["error"]
    assert node.snapshot() == before


def test_a_dead_agent_can_be_read_but_not_funded_or_bid_for(
    http: TestClient, node: FakeNode
) -> None:
    admin = auth(ADMIN_TOKEN)
    assert http.post("/agents/a1/kill", headers=admin).json()["state"] == "dead"
    assert node.agent("a1").state is AgentState.DEAD
    before = node.snapshot()
    assert http.post("/agents/a1/fund", json={"amount": 1}, headers=admin).status_code == 409
    bid = http.post("/agents/a1/bid", json={"price": 1}, headers=auth(node.token_of("a1")))
    assert bid.status_code == 409
    assert bid.json() == {"error": "agent a1 is dead: cannot bid"}
    assert http.post("/agents/a1/kill", headers=admin).status_code == 409
    assert node.snapshot() == before
    assert http.get("/agents/a1", headers=auth(node.token_of("a1"))).status_code == 200


def test_events_page_by_sequence_number(http: TestClient, node: FakeNode) -> None:
    admin = auth(ADMIN_TOKEN)
    http.post("/agents/a1/fund", json={"amount": 1}, headers=admin)
    every = http.get("/events", headers=admin).json()["events"]
    kinds = ["funded", "spawned", "funded", "spawned", "funded"]  # a spawn funds, then starts
    assert [event["kind"] for event in every] == kinds
    assert [event["seq"] for event in every] == [1, 2, 3, 4, 5]
    page = http.get("/events?after=1&limit=1", headers=admin).json()["events"]
    assert [event["seq"] for event in page] == [2]
    assert http.get("/events?after=5", headers=admin).json() == {"events": []}


def test_price_status_and_openapi(http: TestClient, node: FakeNode) -> None:
    price = http.get("/price", headers=auth(node.token_of("a1"))).json()
    assert price == to_json(node.price())
    status = http.get("/status", headers=auth(ADMIN_TOKEN)).json()
    assert status["ticks"] == 7 and len(status["agents"]) == 2
    document = http.get("/openapi.json").json()
    assert {"/agents", "/agents/{agent}/bid", "/events", "/price", "/metrics"} <= set(
        document["paths"]
    )
    assert "HTTPBearer" in document["components"]["securitySchemes"]


def test_metrics_are_prometheus_text(http: TestClient) -> None:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "maxwell_up 1" in response.text


def test_metrics_can_require_the_admin_token(node: FakeNode) -> None:
    app = create_app(node, metrics=lambda: b"maxwell_up 1\n", public_metrics=False)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth(node.token_of("a1"))).status_code == 403
        assert client.get("/metrics", headers=auth(ADMIN_TOKEN)).status_code == 200


def test_no_metrics_callable_is_a_404(node: FakeNode) -> None:
    with TestClient(create_app(node), base_url=LOCAL) as client:
        response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json() == {"error": "this node publishes no metrics"}


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8765", "127.0.0.1", 8765),
        ("localhost:0", "127.0.0.1", 0),
        ("127.1.2.3:80", "127.1.2.3", 80),
        ("[::1]:9000", "::1", 9000),
    ],
)
def test_listen_accepts_loopback(text: str, host: str, port: int) -> None:
    address = parse_listen(text)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0.0.0.0:8765", "non-loopback"),
        ("192.168.1.5:80", "non-loopback"),
        ("[::]:80", "non-loopback"),
        ("example.com:80", "loopback IP address"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:70000", "0..65535"),
    ],
)
def test_listen_refuses_anything_else(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_listen(text)
