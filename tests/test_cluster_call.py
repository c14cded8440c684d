"""A Python function run as a Maxwell agent, without Ray (`maxwell.cluster.call`, `maxwell.ray`):
the agent's side run as a process of its own; the submitter's side (pickling by value, reading
outcomes); and both together through a real daemon, as `maxwell.ray` runs a call at home."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

cloudpickle = pytest.importorskip("cloudpickle", reason="pip install 'maxwell[cluster]'")

from helpers import AGENTS_AS_DAEMON, wait_until  # noqa: E402
from maxwell.cluster.call import FAILED, RAISED, RETURNED  # noqa: E402
from maxwell.cluster.jobs import JobOutcome  # noqa: E402
from maxwell.node.config import NodeConfig  # noqa: E402
from maxwell.node.daemon import NodeDaemon  # noqa: E402
from maxwell.node.facade import AgentState  # noqa: E402
from maxwell.node.paths import PAYLOAD_ENV, RESULT_ENV  # noqa: E402
from maxwell.node.wire import MAX_PAYLOAD_BYTES, MAX_RESULT_BYTES  # noqa: E402
from maxwell.ray import (  # noqa: E402
    CallDied,
    CallError,
    CallRaised,
    _pickled,
    _value,
    remote,
)
from maxwell.units import Money  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "src"


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("this exception does not travel")


def add(a: int, b: int = 0) -> int:
    return a + b


def fails() -> None:
    raise ValueError("the remote function's own error")


def fails_oddly() -> None:
    raise Unpicklable("odd")


def gives_a_lock() -> Any:
    import threading

    return threading.Lock()


def gives_too_much() -> bytes:
    return b"x" * (MAX_RESULT_BYTES + 1)


def run_call(tmp_path: Path, payload: bytes | None) -> tuple[int, str, tuple[str, Any, str] | None]:
    """`python -m maxwell.cluster.call` as an agent would run it: its exit status, standard
    error and outcome. Only `src` is importable there: not this test module."""
    env = {"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"], RESULT_ENV: str(tmp_path / "out")}
    if payload is not None:
        (tmp_path / "in").write_bytes(payload)
        env[PAYLOAD_ENV] = str(tmp_path / "in")
    done = subprocess.run(
        [sys.executable, "-m", "maxwell.cluster.call"], env=env, cwd="/", capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    out = tmp_path / "out"
    left = cloudpickle.loads(out.read_bytes()) if out.exists() else None
    return done.returncode, done.stderr, left


def test_a_call_returns_its_value_from_a_module_the_agent_cannot_import(tmp_path: Path) -> None:
    status, _, outcome = run_call(tmp_path, _pickled(add, (2,), {"b": 40}))
    assert (status, outcome) == (0, (RETURNED, 42, ""))
    assert __name__ not in cloudpickle.list_registry_pickle_by_value()  # left as it was


def test_a_call_that_raises_gives_its_exception_and_traceback(tmp_path: Path) -> None:
    status, _, outcome = run_call(tmp_path, _pickled(fails, (), {}))
    assert outcome is not None and (status, outcome[0]) == (1, RAISED)
    assert isinstance(outcome[1], ValueError) and "the remote function's own error" in outcome[2]
    odd = tmp_path / "odd"
    odd.mkdir()
    status, _, outcome = run_call(odd, _pickled(fails_oddly, (), {}))
    assert outcome is not None and (status, outcome[0], outcome[1]) == (1, RAISED, None)
    assert "Unpicklable: odd" in outcome[2]


@pytest.mark.parametrize(
    ("function", "says"),
    [(gives_a_lock, "cannot be pickled"), (gives_too_much, "over the limit")],
    ids=["unpicklable", "too-large"],
)
def test_a_value_that_cannot_be_kept_is_a_failure_that_says_why(
    tmp_path: Path, function: Any, says: str
) -> None:
    status, stderr, outcome = run_call(tmp_path, _pickled(function, (), {}))
    assert outcome is not None and (status, outcome[0]) == (2, FAILED)
    assert says in outcome[2] and says in stderr


def test_a_payload_that_is_no_call_or_none_at_all_is_a_failure(tmp_path: Path) -> None:
    status, stderr, outcome = run_call(tmp_path, b"not a pickle")
    assert outcome is not None and (status, outcome[0]) == (2, FAILED)
    assert "cannot be loaded" in outcome[2]
    (tmp_path / "out").unlink()
    status, stderr, outcome = run_call(tmp_path, None)
    assert (status, outcome) == (2, None) and PAYLOAD_ENV in stderr


# --- the submitter's side -----------------------------------------------------------------


def outcome(state: str, exit_code: int | None = 0) -> JobOutcome:
    return JobOutcome(job="job-1", node="n1", agent="a1", state=state, exit_code=exit_code,
                      energy_j=1.5, paid_j=2.0, returned_j=3.0)  # fmt: skip


def test_outcomes_become_values_or_errors_that_say_why() -> None:
    assert _value(outcome("exited"), cloudpickle.dumps((RETURNED, [1, 2], ""))) == [1, 2]
    with pytest.raises(CallRaised, match="raised on node n1") as raised:
        _value(outcome("exited", 1), cloudpickle.dumps((RAISED, KeyError("k"), "Traceback: k")))
    assert isinstance(raised.value.__cause__, KeyError) and "Traceback: k" in str(raised.value)
    with pytest.raises(CallError, match=r"failed on node n1 \(agent a1\): too big"):
        _value(outcome("exited", 2), cloudpickle.dumps((FAILED, None, "too big")))
    with pytest.raises(CallDied, match="apoptosis"):
        _value(outcome("dead", -9), None)
    with pytest.raises(CallDied, match="could not start"):
        _value(outcome("declined", None), None)
    with pytest.raises(CallDied, match="leaving nothing"):
        _value(outcome("exited", 0), None)
    with pytest.raises(CallError, match="cannot be unpickled"):
        _value(outcome("exited", 0), b"garbage")


def test_a_priced_function_runs_only_remotely_and_refuses_what_cannot_travel() -> None:
    priced = remote(fund=2.0, bid=1.0)(add)
    assert priced.__name__ == "add" and priced.call_options.fund == 2.0
    with pytest.raises(TypeError, match=r"add\.remote"):
        priced(1, 2)
    cheaper = priced.options(bid=0.5, exclude=["hot"])
    assert (cheaper.call_options.bid, cheaper.call_options.exclude) == (0.5, ("hot",))
    assert priced.call_options.bid == 1.0
    with pytest.raises(TypeError, match="options"):
        priced.options(colour="red")
    with pytest.raises(CallError, match=f"at most {MAX_PAYLOAD_BYTES}"):
        priced.remote(b"x" * MAX_PAYLOAD_BYTES)  # refused before anything is placed


# --- both sides through a real daemon ---------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeDaemon]:
    # Agents as the daemon's user: this interpreter (a venv's, maybe under /root) runs them.
    config = NodeConfig(state_dir=tmp_path / "state", tick_s=0.1, cgroup="none",
                        dynamic_uids=AGENTS_AS_DAEMON)  # fmt: skip
    made = NodeDaemon(config)
    try:
        yield made
    finally:
        made.shutdown(kill_agents=True)


@pytest.mark.parametrize(
    ("function", "args", "expect"), [(add, (20, 22), 42), (fails, (), CallRaised)],
    ids=["returns", "raises"],
)  # fmt: skip
def test_a_call_runs_as_an_agent_of_a_real_daemon(
    daemon: NodeDaemon, function: Any, args: tuple[int, ...], expect: Any
) -> None:
    argv = ["env", f"PYTHONPATH={SRC}", sys.executable, "-m", "maxwell.cluster.call"]
    spawned = daemon.spawn(argv, fund=Money(10**6), bid=1.0, payload=_pickled(function, args, {}))

    def ended() -> bool:
        daemon.tick_once()
        return daemon.agent(spawned.agent).state is AgentState.EXITED

    wait_until(ended, timeout_s=60, what="the call's agent ended")
    info = daemon.agent(spawned.agent)
    done = JobOutcome(job="j", node="here", agent=spawned.agent, state=info.state.value,
                      exit_code=info.exit_code, energy_j=0, paid_j=0, returned_j=0)  # fmt: skip
    if isinstance(expect, type):
        with pytest.raises(expect):
            _value(done, daemon.result(spawned.agent))
    else:
        assert _value(done, daemon.result(spawned.agent)) == expect


def test_the_cluster_package_offers_submit_without_importing_it_for_the_node() -> None:
    """`maxwell.cluster.submit` is the issue's name for the Python API; the node, which imports
    the package's pure parts, does not pull in the jobs' module with it."""
    import subprocess as sp

    import maxwell.cluster
    from maxwell.cluster import jobs

    assert maxwell.cluster.submit is jobs.submit and maxwell.cluster.JobSpec is jobs.JobSpec
    probe = "import sys, maxwell.cluster.transfers; print('maxwell.cluster.jobs' in sys.modules)"
    said = sp.run([sys.executable, "-c", probe], env={"PYTHONPATH": str(SRC)},
                  capture_output=True, text=True, timeout=60)  # fmt: skip
    assert said.stdout.strip() == "False", said.stderr
    with pytest.raises(AttributeError):
        maxwell.cluster.nothing  # noqa: B018
