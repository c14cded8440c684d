"""A Python call run as a Maxwell agent, the agent's side (`maxwell.ray`):
`python -m maxwell.cluster.call` loads the call its spawn handed it (the payload: a function,
its arguments, pickled by cloudpickle), runs it, and leaves the pickled outcome as its result
(`maxwell.node.results`), which the submitter reads once the agent has ended.

The outcome is a tuple `(kind, value, text)`: `("returned", value, "")`, `("raised", exception,
traceback)` (the exception is None when it cannot be pickled; the traceback says what it was),
or `("failed", None, why)` when the call could not be loaded or its outcome not kept. At most
`MAX_RESULT_BYTES` are kept: a larger value is a failure that says its size.

Exit status: 0 the function returned; 1 it raised; 2 the call could not be loaded or its
outcome not kept (also said on standard error, which is the agent's log).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Final

import cloudpickle

from maxwell.node.paths import PAYLOAD_ENV, RESULT_ENV
from maxwell.node.wire import MAX_RESULT_BYTES

RETURNED: Final = "returned"
RAISED: Final = "raised"
FAILED: Final = "failed"
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def main() -> int:
    payload, result = os.environ.get(PAYLOAD_ENV), os.environ.get(RESULT_ENV)
    if not payload or not result:
        print(f"maxwell.cluster.call: {PAYLOAD_ENV} and {RESULT_ENV} are unset: "
              "this runs as an agent whose spawn carried a call", file=sys.stderr)  # fmt: skip
        return 2
    try:
        with open(payload, "rb") as file:
            function, args, kwargs = cloudpickle.load(file)
    except Exception as exc:
        return _leave(result, (FAILED, None, f"the call cannot be loaded here: {exc!r}"), 2)
    try:
        value = function(*args, **kwargs)
    except Exception as exc:
        return _leave(result, (RAISED, exc, traceback.format_exc()), 1)
    return _leave(result, (RETURNED, value, ""), 0)


def _leave(path: str, outcome: tuple[str, Any, str], status: int) -> int:
    """Keep `outcome` as the agent's result (what cannot be pickled or kept, said instead)."""
    kind, _, text = outcome
    try:
        data = _failed(text) if kind == FAILED else cloudpickle.dumps(outcome)
    except Exception as exc:
        if kind == RAISED:  # the exception's kind and traceback are in its text
            data = cloudpickle.dumps((RAISED, None, text))
        else:
            data, status = _failed(f"the function's value cannot be pickled: {exc!r}"), 2
    if len(data) > MAX_RESULT_BYTES:
        why = f"the outcome pickles to {len(data)} bytes, over the limit of {MAX_RESULT_BYTES}"
        data, status = _failed(why), 2
    fd = os.open(path, _NEW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return status


def _failed(why: str) -> bytes:
    print(f"maxwell.cluster.call: {why}", file=sys.stderr)
    data: bytes = cloudpickle.dumps((FAILED, None, why))
    return data


if __name__ == "__main__":
    sys.exit(main())
