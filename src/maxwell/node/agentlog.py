"""An agent's output, read back (`maxwell logs`, `GET /agents/{id}/log`).

The daemon sends each agent's standard output and error to `<state>/agents/<id>.log`
(`maxwell.node.paths`), a file of the daemon's own in a directory of its own: the agent writes
into it through the descriptor it was given and can neither replace nor link it. It is read
here by offset, at most `MAX_LOG_CHUNK` bytes a call, so a client follows it by asking from
where it stopped and an agent that writes gigabytes costs each call no more than a chunk. The
file is opened without following links and must be a regular file. It is kept until the agent
is retired with its directory (`maxwell.node.retention`).
"""

from __future__ import annotations

import os
import stat
from typing import Final

from maxwell.node.facade import AgentInfo, NodeError
from maxwell.node.paths import StatePaths

MAX_LOG_CHUNK: Final = 1 << 20  # bytes one call reads at most


class NoLogError(NodeError):
    """The agent has no output kept (never written, or retired with the agent)."""

    status = 404


def read_log(paths: StatePaths, agent: AgentInfo, offset: int, limit: int) -> bytes:
    """At most `limit` bytes (capped at `MAX_LOG_CHUNK`) of `agent`'s output from `offset`;
    empty at or past its end."""
    if offset < 0 or limit < 0:
        raise NodeError(f"offset and limit are bytes, not negative: {offset}, {limit}")
    try:
        fd = os.open(paths.agent_log(agent.id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoLogError(f"agent {agent.id} has no output kept") from None
    except OSError as exc:
        raise NodeError(f"agent {agent.id}'s output: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NodeError(f"agent {agent.id}'s output is not a regular file")
        return os.pread(fd, min(limit, MAX_LOG_CHUNK), offset)
    finally:
        os.close(fd)
