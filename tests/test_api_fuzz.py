"""Fuzz the API from its own OpenAPI document (schemathesis): no request, valid or not, from any
caller, gets a 5xx; every refusal is a one-line JSON error that changed nothing; the fake node's
invariants (money conserved, no negative balance, dense event numbers) hold after each request.
"""

from __future__ import annotations

import pytest

from fake_node import ADMIN_TOKEN, FakeNode  # first: imports starlette's test client quietly
from maxwell.node.api import create_app
from maxwell.units import Money

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (after the skip, as schemathesis is)
from schemathesis.generation.meta import negated_parameters  # noqa: E402

# The node answers only to names no web page can rebind (`maxwell.node.hosts`): not "testserver".
HOST = {"Host": "localhost"}
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", create_app(FakeNode()), headers=HOST)


def seeded() -> FakeNode:
    node = FakeNode()
    node.spawn(["sleep", "100"], fund=Money(10_000_000), bid=0.5, name="alpha")
    node.spawn(["sleep", "100"], fund=Money(10_000_000), bid=0.5, name="beta")
    return node


class FreshNode:
    """What the app serves: a freshly seeded fake node for each example, behind one app (an app
    takes ~0.1 s to build, its routes' pydantic models; one per example made the fuzzing the
    slowest part of the suite)."""

    def __init__(self) -> None:
        self.node = seeded()

    def renew(self) -> FakeNode:
        self.node = seeded()
        return self.node

    def __getattr__(self, name: str) -> object:
        return getattr(self.node, name)


SERVED = FreshNode()
APP = create_app(SERVED, metrics=lambda: b"maxwell_up 1\n")  # type: ignore[arg-type]


@SCHEMA.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_crashes_the_api_or_breaks_the_node(case: object) -> None:
    node, app = SERVED.renew(), APP
    callers = {
        "admin": ADMIN_TOKEN,
        "agent": node.token_of("a1"),
        "other agent": node.token_of("a2"),
        "bad token": "nope",
        "no token": None,
    }
    targets: list[str | None] = [None]  # the generated agent id, then a real one
    if "agent" in (case.path_parameters or {}):  # type: ignore[attr-defined]
        targets.append("a1")
    for target in targets:
        if target is not None:
            case.path_parameters["agent"] = target  # type: ignore[attr-defined]
        for who, token in callers.items():
            before = node.snapshot()
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            response = case.call(app=app, headers=headers)  # type: ignore[attr-defined]
            where = f"{case.method} {case.formatted_path} as {who}"  # type: ignore[attr-defined]
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                error = response.json()["error"]
                assert isinstance(error, str) and error and "\n" not in error, where
                assert node.snapshot() == before, f"{where} was refused but changed the node"
            node.check_invariants()


@SCHEMA.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_responses_match_the_document(case: object) -> None:
    """Status codes, content types and bodies are the ones the OpenAPI document declares.

    Not checked: that every schema-valid request is accepted (`positive_data_acceptance`): the
    node refuses valid-looking requests on its own grounds (no such user, no such agent).
    """
    app = APP
    SERVED.renew()
    # A negative case that takes the Authorization header away tests the refusal of a caller
    # without a token: the admin's header would undo its mutation (and then the node rightly
    # accepts what schemathesis believes is invalid), so it is sent as generated.
    negated = negated_parameters(case.meta)  # type: ignore[attr-defined]
    unauthorised = any(name.lower() == "authorization" for name, _ in negated)
    case.call_and_validate(  # type: ignore[attr-defined]
        app=app,
        headers=HOST if unauthorised else {**HOST, "Authorization": f"Bearer {ADMIN_TOKEN}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
