"""The hold: while ticks cannot be committed (a full disk, a broken database), no agent runs.

A tick that fails keeps what the meter attributed for the next tick to bill (`maxwell.node.ticker`),
so a passing failure loses nothing. Ticks that keep failing are another matter: the agents would
run unbilled for as long as the ledger cannot be written, and a bill that finally lands is capped
at what each agent holds. So:

- After `HOLD_AFTER_FAILURES` ticks in a row have failed, every live agent's group is frozen
  (the cgroup freezer, or SIGSTOP where there is none), outside the plan: the agents' records and
  states stay as the last committed tick left them. The cause is logged once, and stays in
  `/status` as the ticks' `last_error`.
- The first tick that commits again thaws the held agents that its plan lets run (running or
  throttled); one the plan froze stays frozen. The thaw is logged.
- Freezing or thawing a group that cannot take it is logged; the others are held all the same.
"""

from __future__ import annotations

import logging

from maxwell.cgroups import WorkloadGroup
from maxwell.errors import MaxwellError
from maxwell.node.agents import LIVE, AgentRegistry
from maxwell.node.facade import AgentState
from maxwell.node.supervisor import Supervisor
from maxwell.node.tickstats import error_line

log = logging.getLogger(__name__)
HOLD_AFTER_FAILURES = 3  # ticks in a row (a passing lock or hiccup is no reason to stop a node)
_RUNS = (AgentState.RUNNING, AgentState.THROTTLED)


class Hold:
    """Freezes every agent while ticks keep failing, and thaws them when one commits."""

    def __init__(self, supervisor: Supervisor, agents: AgentRegistry) -> None:
        self._supervisor = supervisor
        self._agents = agents
        self.failures = 0  # ticks failed in a row
        self.held: set[str] = set()

    def failed(self, error: BaseException) -> None:
        """A tick failed: after enough in a row, hold every live agent."""
        self.failures += 1
        if self.failures < HOLD_AFTER_FAILURES:
            return
        fresh = [
            agent
            for agent in self._agents
            if agent.state in LIVE and not agent.finished and agent.group is not None
            and agent.id not in self.held
        ]  # fmt: skip
        for agent in fresh:
            assert agent.group is not None
            self._freeze(agent.id, agent.group, True)
            self.held.add(agent.id)
        if fresh:
            log.error(
                "%d ticks in a row failed (%s): %d agents frozen until a tick commits again, so "
                "that none runs unbilled",
                self.failures, error_line(error), len(fresh),
            )  # fmt: skip

    def committed(self) -> None:
        """A tick committed: thaw the held agents its plan lets run."""
        self.failures = 0
        if not self.held:
            return
        thawed = 0
        for agent_id in sorted(self.held):
            agent = self._agents.agents.get(agent_id)
            if agent is not None and agent.state in _RUNS and agent.group is not None:
                self._freeze(agent_id, agent.group, False)
                thawed += 1
        log.warning("ticks commit again: %d held agents thawed", thawed)
        self.held.clear()

    def _freeze(self, agent_id: str, group: WorkloadGroup, frozen: bool) -> None:
        try:
            self._supervisor.freeze(group, frozen)
        except MaxwellError:
            log.exception("agent %s: cannot %s it", agent_id, "freeze" if frozen else "thaw")
