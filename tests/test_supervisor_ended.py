"""Which agents' processes ended: one question to the kernel a tick (`ended_children`), the
answer kept while the agent is live (`AgentProcesses.exited`), and a fallback that polls each
process when a child that is not an agent's waits to be reaped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from helpers import process_state, wait_until
from maxwell.node.supervisor import ended_children, ended_each

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def wait_for_zombie(pid: int) -> None:
    """Until `pid` has exited and waits to be reaped (state Z)."""
    wait_until(lambda: process_state(pid) == "Z", what=f"process {pid} to exit")


@pytest.fixture
def children() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started = {name: subprocess.Popen(SLEEP) for name in ("a", "b", "c")}
    yield started
    for process in started.values():
        process.kill()
        process.wait()


def test_only_the_children_that_ended_are_named_and_reaped(
    children: dict[str, subprocess.Popen[bytes]],
) -> None:
    assert ended_children(children) == []
    children["b"].kill()
    wait_for_zombie(children["b"].pid)
    assert ended_children(children) == ["b"]
    assert children["b"].returncode == -9  # reaped by its poll
    assert children["a"].returncode is None and children["c"].returncode is None
    assert ended_children(children) == []  # reaped: the kernel names it no more


def test_a_child_that_is_not_an_agents_makes_it_poll_each(
    children: dict[str, subprocess.Popen[bytes]],
) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for_zombie(stranger.pid)
        children["c"].kill()
        wait_for_zombie(children["c"].pid)
        assert ended_children(children) == ["c"]
        assert stranger.returncode is None  # not reaped: it is not ours
        assert process_state(stranger.pid) == "Z"
    finally:
        stranger.wait()


def test_ended_each_polls_every_process(children: dict[str, subprocess.Popen[bytes]]) -> None:
    children["a"].kill()
    wait_for_zombie(children["a"].pid)
    assert ended_each(children) == ["a"]
    assert ended_each(children) == ["a"]  # its status, again


def test_no_children_at_all() -> None:
    assert ended_children({}) == []
