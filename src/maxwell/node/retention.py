"""Dead agents are reclaimed after a retention period; their money's history stays.

Without it every agent ever spawned stayed in memory, in `/status` and `maxwell ps`, with its log
file and work directory (after 8,385 spawns `/status` was 2.8 MB and took 0.7 s). So:

- An agent that ended (dead or exited), whose group is gone and whose bills are settled, is
  reclaimed once `retention_s` has passed since it ended: its rows in the node's tables (agent,
  bid, report, manifest, bounty, claim), its log file and its work directory go, and it leaves
  the registry and the read models. Its ledger account and every journal entry stay: `ledger
  verify` still proves its balance, and the event log still tells its story.
- The daemon sweeps at most once every `SWEEP_EVERY_S` (or every retention, if shorter), under
  its lock after a tick; a sweep with nothing to reclaim writes nothing.
- What cannot be removed from the disk is logged and left; the agent is reclaimed all the same.
- `forget` reclaims one ended agent at once, on request (`maxwell rm`, `DELETE /agents/{id}`),
  whatever the retention: refused for a live agent (kill it first) and for one whose last
  interval is not billed yet. As with a sweep, its money stays where it is: the balance left in
  `agent:<id>` is kept in the ledger (nothing moves, so nothing is paid twice or lost), and
  `maxwell ledger balances` still shows it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable

from maxwell.node.agents import LIVE, AgentRecord, AgentRegistry
from maxwell.node.config import NodeConfig
from maxwell.node.facade import AgentLiveError
from maxwell.node.store import NodeStore

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 60.0


class Retention:
    """Reclaims the agents that ended long enough ago (see the module)."""

    def __init__(
        self,
        config: NodeConfig,
        store: NodeStore,
        registry: AgentRegistry,
        forget: Iterable[Callable[[str], None]],
    ) -> None:
        self._retention_s = config.retention_s
        self._store = store
        self._agents = registry
        self._paths = config.paths
        self._forget = tuple(forget)  # the parts that keep something per agent
        self._next_s = 0.0

    def sweep(self, now: float) -> list[str]:
        """Reclaim the agents due at `now` (wall time), if a sweep is due; their ids."""
        if now < self._next_s:
            return []
        self._next_s = now + min(self._retention_s, SWEEP_EVERY_S)
        due = [agent for agent in self._agents if self._due(agent, now)]
        for agent in due:
            self._reclaim(agent)
        if due:
            log.info("reclaimed %d agents that ended over %g s ago", len(due), self._retention_s)
        return [agent.id for agent in due]

    def forget(self, agent_id: str) -> None:
        """Reclaim an ended agent now (see the module); an `AgentLiveError` says why not."""
        agent = self._agents.get(agent_id)
        if agent.state in LIVE:
            raise AgentLiveError(
                f"agent {agent_id} is {agent.state}: kill it first (maxwell kill {agent_id})"
            )
        if agent.group is not None or agent.finished or not agent.accrual.empty:
            raise AgentLiveError(
                f"agent {agent_id} has ended but its last interval is not billed yet: "
                "try again after the next tick"
            )
        self._reclaim(agent)
        log.info("agent %s forgotten on request", agent_id)

    def _due(self, agent: AgentRecord, now: float) -> bool:
        return (
            agent.state not in LIVE
            and agent.group is None
            and agent.ended_at is not None
            and agent.accrual.empty
            and now - agent.ended_at >= self._retention_s
        )

    def _reclaim(self, agent: AgentRecord) -> None:
        self._store.state.delete_agent(agent.id)
        self._agents.remove(agent.id)
        for forget in self._forget:
            forget(agent.id)
        try:
            self._paths.agent_log(agent.id).unlink(missing_ok=True)
        except OSError:
            log.exception("agent %s: cannot remove its log", agent.id)
        work = self._paths.agent_work(agent.id)
        if work.is_dir() and not work.is_symlink():
            try:
                shutil.rmtree(work)  # links inside are removed, never followed
            except OSError:
                log.exception("agent %s: cannot remove its work directory", agent.id)
