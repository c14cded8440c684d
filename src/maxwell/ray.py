"""Ray users price their own tasks (issue 13, 2): a Python function run as a Maxwell agent on
the node where it is cheapest, under that node's market.

    import maxwell.ray

    @maxwell.ray.remote(fund=5.0, bid=2.0)
    def square(x):
        return x * x

    call = square.remote(7)  # placed by price and started: a `PricedCall`
    call.get()               # 49, once its agent has ended
    call.outcome             # where it ran, how it ended, its energy, what it paid and returned

`.remote` pickles the function, its arguments and what the function's module defines (by value,
with cloudpickle) into a job's payload (at most 1 MiB) and submits the job like `maxwell
submit` (`maxwell.cluster.jobs.submit`): the cheapest node with room that the home node's gossip
verified, funded from the home node (the treasury for its admin, a local user's account for
that user). There the node's agents' Python (`MAXWELL_AGENT_PYTHON`, `maxwell cluster up
--agent-python`) runs it as an agent of its own uid and group (`python -m
maxwell.cluster.call`). Other modules it imports must be importable there.

What the agent leaves comes back as bytes that the node never unpickles (unpickling runs code: a
root Ray worker must not run what an agent wrote); this process, which sent the call, does.
`get` returns the function's value, or raises: `CallRaised` when the function raised (the
remote traceback in its message, the exception itself as its `__cause__` where it pickles),
`CallDied` when its agent died (apoptosis: it ran out of money; or killed) or could not start
or left nothing, `CallError` for the rest.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, ParamSpec, TypeVar

import cloudpickle

from maxwell.client import Client
from maxwell.cluster.call import FAILED, RAISED, RETURNED
from maxwell.cluster.jobs import (
    STATE_ENV,
    JobError,
    JobHandle,
    JobOutcome,
    JobSpec,
    local_client,
    submit,
)
from maxwell.node.wire import MAX_PAYLOAD_BYTES

__all__ = ["CallDied", "CallError", "CallRaised", "PricedCall", "PricedFunction", "get", "remote"]

Params = ParamSpec("Params")
Value = TypeVar("Value")


class CallError(JobError):
    """A priced call that gave no value; the message says why."""


class CallRaised(CallError):
    """The function raised on its node (the remote traceback is in the message)."""


class CallDied(CallError):
    """The call's agent died (apoptosis or killed), could not start, or left nothing."""


@dataclass(frozen=True)
class CallOptions:
    """What a call may spend and where it may run (`remote`'s arguments)."""

    fund: float
    bid: float
    demand: float = 1.0
    name: str | None = None
    exclude: tuple[str, ...] = ()
    home: Client | None = field(default=None, compare=False)


def remote(
    *,
    fund: float,
    bid: float,
    demand: float = 1.0,
    name: str | None = None,
    exclude: Sequence[str] = (),
    home: Client | None = None,
) -> Callable[[Callable[Params, Value]], PricedFunction[Params, Value]]:
    """Price a function: each `.remote(...)` call runs as an agent funded with `fund` $J, at
    most `bid` $J per J, asking `demand` cores, never on a node of `exclude`; `home` is the
    node that pays (default: `$MAXWELL_STATE`'s daemon as its admin, else `$MAXWELL_SOCKET`'s)."""
    options = CallOptions(fund, bid, demand, name, tuple(exclude), home)

    def priced(function: Callable[Params, Value]) -> PricedFunction[Params, Value]:
        return PricedFunction(function, options)

    return priced


class PricedFunction(Generic[Params, Value]):
    """A function whose calls run as Maxwell agents (`remote`); called directly it refuses, as
    a Ray remote function does."""

    def __init__(self, function: Callable[Params, Value], options: CallOptions) -> None:
        self.function, self.call_options = function, options
        functools.update_wrapper(self, function)

    def __call__(self, *args: Params.args, **kwargs: Params.kwargs) -> Value:
        name = getattr(self.function, "__name__", "function")
        raise TypeError(f"a priced function runs as an agent: {name}.remote(...)")

    def options(self, **changes: Any) -> PricedFunction[Params, Value]:
        """The same function with some of `remote`'s arguments changed."""
        if "exclude" in changes:
            changes["exclude"] = tuple(changes["exclude"])
        try:
            return PricedFunction(self.function, replace(self.call_options, **changes))
        except TypeError as exc:
            raise TypeError(f"options: {exc}") from None

    def remote(self, *args: Params.args, **kwargs: Params.kwargs) -> PricedCall[Value]:
        """Place the call by price and start it; its `PricedCall`."""
        payload = _pickled(self.function, args, kwargs)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CallError(
                f"the call pickles to {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} travel "
                "to an agent (pass large data by reference: a path, a URL)"
            )
        opts = self.call_options
        name = opts.name or getattr(self.function, "__name__", None)
        spec = JobSpec(
            argv=(), fund=opts.fund, bid=opts.bid, demand=opts.demand, name=name, call=payload
        )
        return PricedCall(submit(spec, home=opts.home or _home(), exclude=opts.exclude))


class PricedCall(Generic[Value]):
    """A call placed and started: where (`node`), and its value once its agent has ended."""

    def __init__(self, handle: JobHandle) -> None:
        self.job, self.node = handle.job, handle.node
        self._handle = handle
        self.outcome: JobOutcome | None = None  # once `get` has waited for it
        self._result: bytes | None = None

    def get(self, timeout_s: float | None = None) -> Value:
        """Wait for the call's end (what was left goes back home) and return its value."""
        if self.outcome is None:
            finished = self._handle.wait(timeout_s)
            self.outcome, self._result = finished.outcome, finished.result
        value: Value = _value(self.outcome, self._result)
        return value


def get(calls: Iterable[PricedCall[Any]], timeout_s: float | None = None) -> list[Any]:
    """The values of several calls, in order (the first that gives none raises)."""
    return [call.get(timeout_s) for call in calls]


def _home() -> Client:
    if os.environ.get(STATE_ENV):
        return local_client()
    return Client()


def _pickled(function: Callable[..., Any], args: Any, kwargs: Any) -> bytes:
    """The call pickled, the function's own module by value (the node need not have it)."""
    module = sys.modules.get(function.__module__)
    by_value = (
        module is not None
        and module.__name__ not in ("__main__", "builtins")
        and module.__name__ not in cloudpickle.list_registry_pickle_by_value()
    )
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps((function, tuple(args), dict(kwargs)))
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
    return data


def _value(outcome: JobOutcome, result: bytes | None) -> Any:
    """The function's value from what its agent left, or the error that says why there is none."""
    where = f"on node {outcome.node} (agent {outcome.agent})"
    if outcome.state == "declined":
        raise CallDied(f"node {outcome.node} could not start the call; its funds came back")
    if outcome.state == "dead":
        raise CallDied(
            f"the call's agent died {where}: apoptosis (it ran out of money) or killed, after "
            f"{outcome.energy_j:.3g} J and {outcome.paid_j:.3g} $J paid"
        )
    if result is None:
        raise CallDied(f"the call's agent exited {where} with {outcome.exit_code}, leaving nothing")
    try:
        kind, value, text = cloudpickle.loads(result)
    except Exception as exc:
        raise CallError(f"the call's result {where} cannot be unpickled here: {exc!r}") from None
    if kind == RETURNED:
        return value
    if kind == RAISED:
        cause = value if isinstance(value, BaseException) else None
        raise CallRaised(f"the call raised {where}:\n{text}") from cause
    if kind == FAILED:
        raise CallError(f"the call failed {where}: {text}")
    raise CallError(f"the call's result {where} is of no known kind ({kind!r})")
