"""`GET /agents/{id}/log` (`maxwell logs`): an agent's output is its own, or its owner's or the
admin's to read. Another agent may not read it, nor ask for more than a chunk, nor a negative
offset; a huge offset reads nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fake_node import ADMIN_TOKEN, FakeNode, serving
from maxwell.client import Client, ClientError
from maxwell.units import Money


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, str]]:
    fake = FakeNode()
    with serving(fake) as server:
        assert server.socket_path is not None
        yield fake, server.socket_path


def test_an_agent_reads_its_own_output_and_no_one_elses(node: tuple[FakeNode, str]) -> None:
    fake, socket = node
    victim = fake.spawn(["true"], fund=Money(10**6), bid=1.0, name="victim")
    thief = fake.spawn(["true"], fund=Money(10**6), bid=1.0, name="thief")
    fake.logs[victim.agent] = b"the victim's secret\n"
    with Client(socket=socket, token=victim.token) as own:
        assert own.log(victim.agent) == b"the victim's secret\n"
    with Client(socket=socket, token=thief.token) as other, pytest.raises(ClientError) as refused:
        other.log(victim.agent)
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("offset", "limit", "status"), [(-1, None, 422), (0, 0, 422), (0, (1 << 20) + 1, 422)]
)
def test_offsets_and_limits_out_of_range_are_refused(
    node: tuple[FakeNode, str], offset: int, limit: int | None, status: int
) -> None:
    fake, socket = node
    agent = fake.spawn(["true"], fund=Money(10**6), bid=1.0, name="talker").agent
    fake.logs[agent] = b"x" * 100
    with Client(socket=socket, token=ADMIN_TOKEN) as admin:
        with pytest.raises(ClientError) as refused:
            admin.log(agent, offset, limit)
        assert refused.value.status == status
        assert admin.log(agent, 2**62) == b""  # past its end: nothing, at no cost
        assert admin.log(agent, 95, 1 << 20) == b"x" * 5
