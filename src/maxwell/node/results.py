"""Bytes a spawn hands its agent, and bytes the agent hands back: files of the agent's own that
the node never interprets (how `maxwell.ray` runs a Python function as an agent).

- A spawn may carry a payload (at most `MAX_PAYLOAD_BYTES`): before the command starts, the
  daemon writes it as `payload` in the agent's directory (mode 0600, the agent's uid, made
  exclusively: `intake.replace_agent_file`) and names it in the agent's environment
  (`MAXWELL_AGENT_PAYLOAD`). It is not in the command line, which every local user may read.
- The agent may leave `result` there (`MAXWELL_AGENT_RESULT` names it). Once the agent has
  ended, the admin or its owner reads it (`GET /agents/{id}/result`): a regular file of the
  agent's own with one link, at most `MAX_RESULT_BYTES`, opened without following links
  (`intake.read_agent_file`), until the agent's directory is retired with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from maxwell.node.agents import LIVE
from maxwell.node.facade import AgentInfo, NodeError
from maxwell.node.intake import IntakeError, read_agent_file, replace_agent_file
from maxwell.node.paths import PAYLOAD_ENV, PAYLOAD_FILE, RESULT_ENV, RESULT_FILE, StatePaths
from maxwell.node.wire import MAX_PAYLOAD_BYTES, MAX_RESULT_BYTES
from maxwell.users import RunAs, UnknownUserError


class ResultNotReadyError(NodeError):
    """The agent still runs: what it leaves is read once it has ended."""

    status = 409


class NoResultError(NodeError):
    """The agent left no result (or its directory has been retired)."""

    status = 404


def check_payload(payload: bytes | None) -> None:
    if payload is not None and len(payload) > MAX_PAYLOAD_BYTES:
        raise NodeError(f"a payload may hold at most {MAX_PAYLOAD_BYTES} bytes, not {len(payload)}")


def hand_over(directory: Path, payload: bytes | None, *, uid: int) -> Mapping[str, str]:
    """Write the spawn's payload (if any) in the agent's directory: the environment naming it
    and where the agent may leave its result."""
    found = {RESULT_ENV: str(directory / RESULT_FILE)}
    if payload is not None:
        replace_agent_file(directory, PAYLOAD_FILE, payload, uid=uid)
        found[PAYLOAD_ENV] = str(directory / PAYLOAD_FILE)
    return found


def read_result(paths: StatePaths, agent: AgentInfo) -> bytes:
    """What the ended `agent` left as its result (see the module)."""
    if agent.state in LIVE:
        raise ResultNotReadyError(
            f"agent {agent.id} still runs: its result is read once it has ended"
        )
    try:
        uid = os.geteuid() if agent.user is None else RunAs.parse(agent.user).uid
    except UnknownUserError:
        raise NoResultError(f"agent {agent.id}: its user {agent.user!r} is gone") from None
    directory = paths.agent_work(agent.id)
    if not directory.is_dir() or directory.is_symlink():
        raise NoResultError(f"agent {agent.id} left no result")
    try:
        return read_agent_file(directory, RESULT_FILE, uid=uid, limit=MAX_RESULT_BYTES)
    except IntakeError as exc:
        if not (directory / RESULT_FILE).exists() and not (directory / RESULT_FILE).is_symlink():
            raise NoResultError(f"agent {agent.id} left no result") from None
        raise NodeError(f"agent {agent.id}'s result: {exc}") from None
