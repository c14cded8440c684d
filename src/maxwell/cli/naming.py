"""How a client command names an agent: its whole id, its name, or a prefix of its id that
only one agent has (as docker and git accept), resolved against the agents the caller may see.
What names no agent is passed on as it was, for the node to answer (404) as before."""

from __future__ import annotations

from collections.abc import Sequence

from maxwell.errors import UsageError
from maxwell.node.facade import AgentInfo


class AmbiguousAgentError(UsageError):
    """The text names more than one agent."""


def resolve_agent(text: str, agents: Sequence[AgentInfo]) -> str:
    """The id of the one agent `text` names (see the module)."""
    if any(agent.id == text for agent in agents):
        return text
    for matches in (
        [agent for agent in agents if agent.name == text],
        [agent for agent in agents if agent.id.startswith(text)] if text else [],
    ):
        if len(matches) == 1:
            return matches[0].id
        if len(matches) > 1:
            listed = ", ".join(f"{agent.id} ({agent.name}, {agent.state})" for agent in matches)
            raise AmbiguousAgentError(f"{text!r} names {len(matches)} agents: {listed}; "
                                      "give its whole id")  # fmt: skip
    return text
