"""The node's resting agents: idle agents a tick does no work for while the market stands.

Most agents on a node are idle most of the time, and a tick that walks every one of them to
find that nothing changed costs the node a core's tenth at 1,000 agents. The ticker keeps those
a plan left out as quiet (`maxwell.node.tick`: `is_quiet`, `Resting`) apart, with the input
they were last planned on, and hands them to `plan_tick` as they are. A tick then reads their
counters and nothing else about them.

Rules:

- An agent rests only after a tick that committed left it out of the plan as quiet and changed
  nothing of it, with nothing accrued and nothing to settle: its input is then exactly what the
  next tick would build for it, and stays so until something changes it.
- Anything that may change a resting agent wakes it first: a bid stored, a call that changes
  it (spawn, fund, report, audit, proof, kill: the daemon's `_changing`), CPU or memory the
  meter saw it use, an exit, its ledger balance moving (an audit's slash, a settlement), a tick
  that settles everyone, a tick that failed, a tick of another length (quiet depends on it), a
  market that moved (the plan then plans it). Waking is always safe: a woken agent is planned
  as any other.
- Under optimistic billing, or with a bond, an agent's claims move its bills: every tick keeps
  it (`Undo`), so it never rests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from maxwell.economy.ledger import moved_agents
from maxwell.node.agents import AgentRecord, AgentRegistry
from maxwell.node.tick import NO_RESTING, AgentTickInput, Resting, TickPlan, is_quiet
from maxwell.units import Money


def unchanged_input(last: AgentTickInput, agent: AgentRecord, balance: Money) -> bool:
    """Whether `last`, an input with nothing to bill, is the agent as it stands now."""
    return (
        last.energy_uj == 0
        and last.bytes_freed == 0
        and last.bytes_rewritten == 0
        and last.balance == balance
        and last.state is agent.state
        and last.bid == agent.bid
        and last.demand == agent.demand
        and last.bid_seq == agent.bid_seq
        and last.burn_per_s == agent.burn_per_s
        and last.insolvent_since_s == agent.insolvent_since
        and last.price == agent.price
    )


class RestingAgents:
    """Which agents rest, on which input (see the module)."""

    def __init__(self) -> None:
        self._inputs: dict[str, AgentTickInput] = {}
        self._snapshot: Resting | None = NO_RESTING  # None: to be made again
        self._tick_s: float | None = None
        self._balances: Mapping[str, Money] = {}
        # Tests set it: each tick then checks that every resting agent is as it rested
        # (`check`), which costs the walk resting saves.
        self.verifying = False

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._inputs

    def __len__(self) -> int:
        return len(self._inputs)

    @property
    def inputs(self) -> Mapping[str, AgentTickInput]:
        return self._inputs

    def rest(self, agents: Iterable[AgentTickInput], tick_s: float) -> None:
        """These agents rest from now on, on these inputs, vouched quiet at `tick_s`."""
        if tick_s != self._tick_s:
            self.wake_all()
            self._tick_s = tick_s
        for agent in agents:
            self._inputs[agent.agent] = agent
            self._snapshot = None

    def rest_left_out(
        self,
        inputs: Sequence[AgentTickInput],
        plan: TickPlan,
        changed: Mapping[str, object],
        registry: AgentRegistry,
        tick_s: float,
    ) -> None:
        """After a committed tick of `tick_s`: the agents its plan left out as quiet, that it did
        not change (`changed`: the views it kept to roll back), with nothing accrued or to
        settle, rest from now on."""
        if plan.standing is None:  # another mechanism: everyone is planned every tick
            return
        self.rest(
            (
                agent
                for agent in inputs
                if agent.agent not in plan.agents
                and agent.agent not in changed
                and registry[agent.agent].accrual.empty
                and not registry[agent.agent].settle_next
            ),
            tick_s,
        )

    def wake(self, agent_ids: Iterable[str]) -> None:
        inputs = self._inputs
        if not inputs:
            return
        for agent_id in agent_ids:
            if inputs.pop(agent_id, None) is not None:
                self._snapshot = None

    def wake_all(self) -> None:
        if self._inputs:
            self._inputs, self._snapshot = {}, NO_RESTING

    def wake_moved(self, balances: Mapping[str, Money]) -> None:
        """Wake the agents whose ledger balance differs from the one seen last time."""
        seen, self._balances = self._balances, balances
        if not self._inputs or balances is seen or balances == seen:
            return
        self.wake(moved_agents(seen, balances))

    def resting(self, tick_s: float) -> Resting:
        """The resting agents for a tick of `tick_s` (none, all woken, at another length)."""
        if tick_s != self._tick_s:
            self.wake_all()
            self._tick_s = tick_s
        if self._snapshot is None:
            self._snapshot = Resting.of(self._inputs.values())
        return self._snapshot

    def awake(self, registry: AgentRegistry) -> list[AgentRecord]:
        """The agents that do not rest, in the registry's order."""
        resting = self._inputs
        return [agent for agent in registry if agent.id not in resting]

    def check(self, registry: AgentRegistry, balances: Mapping[str, Money], tick_s: float) -> None:
        """Raise `AssertionError` for any resting agent whose input is not the one a tick would
        make for it now, or that is not quiet: what the wake rules must prevent (for tests)."""
        wrong = []
        for agent_id, last in self._inputs.items():
            agent = registry[agent_id]
            balance = balances.get(agent.account, Money(0))
            if not (
                unchanged_input(last, agent, balance)
                and is_quiet(last, tick_s)
                and agent.accrual.empty
                and not agent.finished
                and agent.group is not None
            ):
                wrong.append(agent_id)
        assert not wrong, f"resting agents changed without waking: {wrong}"
