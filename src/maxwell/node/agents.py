"""The node's agents as the daemon holds them: one live record each, in one shared registry.

Rules:

- An `AgentRecord` is the daemon's live view of one agent, ended or not; its durable part is its
  row in the node's tables (`maxwell.node.state`), which the other parts write. Records change
  only under the daemon's one lock: the parts that change them are called under it.
- The `AgentRegistry` is the only place the records live, by id (in the order they were made or
  loaded) and by the hash of their token. The daemon makes one and passes it to each part that
  needs it; no part keeps a copy, a base class or a module global of its own.
- An agent is live while it runs, is throttled or is frozen (`LIVE`); a live agent that has
  `finished` has ended and waits for the tick that bills its last interval.
- `CountedGroup` remembers the absolute counters the meter has accounted up to: billing reaches
  them, never beyond, so a restart bills from the recorded ones exactly once.
- The read model (`agent_info`) shows an agent's balance as the ledger's less what it has
  accrued and not yet settled (`settled_balance`, `AgentRegistry.available`).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from maxwell.audit.manifest import CodeManifest
from maxwell.audit.policy import Usage
from maxwell.cgroups import WorkloadGroup
from maxwell.cgroups.base import GroupStats
from maxwell.economy.ledger import LedgerError, agent_account
from maxwell.economy.store import LedgerStore
from maxwell.node.facade import (
    AgentGoneError,
    AgentInfo,
    AgentState,
    Report,
    UnknownAgentError,
)
from maxwell.node.policy.settlement import Accrual
from maxwell.node.state import AgentRow, ReportRow
from maxwell.node.supervisor import AgentProcess
from maxwell.node.tick import AgentTickInput
from maxwell.proof import Model, VerifierKey
from maxwell.units import Money
from maxwell.users import dynamic_uid

LIVE = (AgentState.RUNNING, AgentState.THROTTLED, AgentState.FROZEN)


class CountedGroup:
    """A group as the meter sees it, remembering the counters the meter has accounted up to.

    The meter attributes CPU from `cpu_ns()` readings (and the baseline from the first
    `stats()`), memory freed from `stats()`; these are the absolute values billing has reached.
    """

    def __init__(self, group: WorkloadGroup) -> None:
        self.group = group
        self.cpu_ns_seen: int | None = None
        self.freed_seen = 0

    def cpu_ns(self) -> int:
        value = self.group.cpu_ns()
        if self.cpu_ns_seen is None or value > self.cpu_ns_seen:
            self.cpu_ns_seen = value
        return value

    def stats(self) -> GroupStats:
        stats = self.group.stats()
        if self.cpu_ns_seen is None:
            self.cpu_ns_seen = stats.cpu_ns  # the baseline; later stats() CPU is not attributed
        self.freed_seen = max(self.freed_seen, stats.memory_freed_bytes)
        return stats

    def pids(self) -> list[int]:
        return self.group.pids()


@dataclass
class AgentRecord:
    """The daemon's live view of one agent (the row is its durable part)."""

    id: str
    name: str
    argv: tuple[str, ...]
    user: str | None
    token_hash: str
    created_at: float
    cgroup: Mapping[str, object]
    state: AgentState
    bid: float
    demand: float
    bid_seq: int
    pid: int | None
    group: WorkloadGroup | None = None
    counted: CountedGroup | None = None
    popen: AgentProcess | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    energy_uj: int = 0
    cpu_ns: int = 0  # absolute group counter billed up to
    freed_bytes: int = 0  # absolute group counter billed up to
    freed_metered: int = 0  # the meter's running total, to take per-tick deltas
    rewritten_metered: int = 0  # the erasure meter's running total (bytes re-written), likewise
    cores: float = 0.0
    power_w: float = 0.0
    burn_per_s: float = 0.0
    insolvent_since: float | None = None
    price: float = 0.0  # $J per J its last clearing set for the interval now metered (0: spot)
    paid: int = 0
    landauer: int = 0
    last_quota: float | None = None
    last_weight: int | None = None
    finished: bool = False  # ended: bill its last interval at the next tick, then remove its group
    # Settlement (`maxwell.node.policy.settlement`): bills accrued since the ledger last took
    # them, when that was (wall time), whether an event wants the next tick to settle it, and the
    # row fields last written (a tick writes only what changed).
    accrual: Accrual = field(default_factory=Accrual)
    settled_at: float = 0.0  # monotonic
    settle_next: bool = False
    written: dict[str, object] = field(default_factory=dict)
    tick_input: AgentTickInput | None = None  # as the last tick saw it (reused while unchanged)
    reported: ReportRow | None = None  # its latest self-report
    unreported_s: float = 0.0  # seconds it has run since then (its lease: `maxwell.node.claims`)
    arrival: Usage | None = None  # the counters when it arrived: what the next claim must cover
    # Optimistic billing (`maxwell.node.claims`): the bond posted in stake:<id>, the claim billed
    # up to, what the reports under-billed against the meter since the last audit (µ$J).
    bond: int = 0
    claim_billed: Usage | None = None
    shadow: int = 0
    audits: int = 0
    slashed: int = 0
    unbonded_said: bool = False
    manifest: CodeManifest | None = None  # the code it declared at spawn, if any
    # Proofs of inference: the model the user pays `bounty` µ$J per valid proof for, and the
    # verifier's secret for it (never leaves the daemon).
    bounty: int = 0
    model: Model | None = None
    model_key: VerifierKey | None = None
    model_key_at: float = 0.0  # when the key was made (monotonic): `maxwell.node.bounties`
    proofs: int = 0
    bounties: int = 0

    @functools.cached_property
    def account(self) -> str:
        """Its ledger account (`agent:<id>`)."""
        return agent_account(self.id)


def agent_from_row(row: AgentRow, paid: Mapping[tuple[str, str], int], bond: int) -> AgentRecord:
    """An agent as its row and the journal's totals (`journal_totals`) left it."""
    return AgentRecord(
        id=row.id, name=row.name, argv=row.argv, user=row.user,
        token_hash=row.token_hash, created_at=row.created_at, cgroup=row.cgroup,
        state=AgentState(row.state), bid=row.bid, demand=row.demand,
        bid_seq=row.bid_seq, pid=row.pid, exit_code=row.exit_code,
        ended_at=row.ended_at, energy_uj=row.energy_uj, cpu_ns=row.cpu_ns,
        freed_bytes=row.freed_bytes, cores=row.cores, burn_per_s=row.burn_per_s,
        insolvent_since=row.insolvent_since,
        paid=paid.get((row.id, "grid"), 0), landauer=paid.get((row.id, "landauer"), 0),
        bond=bond,
        audits=paid.get((row.id, "audits"), 0),
        slashed=paid.get((row.id, "slashed"), 0),
        proofs=paid.get((row.id, "proofs"), 0),
        bounties=paid.get((row.id, "bounty"), 0),
    )  # fmt: skip


def agent_row(agent: AgentRecord) -> AgentRow:
    """The row a spawned agent starts with."""
    return AgentRow(
        id=agent.id, name=agent.name, argv=agent.argv, user=agent.user, pid=agent.pid,
        cgroup=agent.cgroup, token_hash=agent.token_hash, state=str(agent.state),
        bid=agent.bid, demand=agent.demand, bid_seq=agent.bid_seq,
        created_at=agent.created_at,
    )  # fmt: skip


def cgroup_dirs(record: Mapping[str, object]) -> list[str]:
    """The cgroup directories of a group, from its record (`Supervisor.record`)."""
    if record.get("kind") == "v1":
        dirs = record.get("dirs")
        unified = record.get("unified")
        found = [str(d) for d in dirs.values()] if isinstance(dirs, dict) else []
        return found + ([unified] if isinstance(unified, str) else [])
    path = record.get("path")
    return [path] if isinstance(path, str) else []


class AgentRegistry:
    """Every agent the node knows, by id and by the hash of its token, and the dynamic uids they
    hold (a spawn gives its agent one no other holds, without a pass over every agent)."""

    def __init__(self) -> None:
        self.agents: dict[str, AgentRecord] = {}
        self.by_token: dict[str, str] = {}
        self._dynamic_uids: Counter[int] = Counter()

    @property
    def dynamic_uids(self) -> AbstractSet[int]:
        """The dynamic uids the node's agents run as, ended agents' included (a live view)."""
        return self._dynamic_uids.keys()

    def __iter__(self) -> Iterator[AgentRecord]:
        return iter(self.agents.values())

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.agents

    def __getitem__(self, agent_id: str) -> AgentRecord:
        return self.agents[agent_id]

    def add(self, agent: AgentRecord) -> None:
        self.agents[agent.id] = agent
        self.by_token[agent.token_hash] = agent.id
        uid = dynamic_uid(agent.user or "")
        if uid is not None:
            self._dynamic_uids[uid] += 1

    def remove(self, agent_id: str) -> None:
        """Forget an agent (reclaimed: `maxwell.node.retention`); its token no longer answers."""
        agent = self.agents.pop(agent_id)
        self.by_token.pop(agent.token_hash, None)
        uid = dynamic_uid(agent.user or "")
        if uid is not None:
            self._dynamic_uids[uid] -= 1
            if self._dynamic_uids[uid] <= 0:
                del self._dynamic_uids[uid]

    def get(self, agent_id: str) -> AgentRecord:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise UnknownAgentError(f"no agent {agent_id!r}")
        return agent

    def live(self, agent_id: str, doing: str) -> AgentRecord:
        """The agent, which must be live and not ended (an `AgentGoneError` says it is not)."""
        agent = self.get(agent_id)
        if agent.state not in LIVE or agent.finished:
            raise AgentGoneError(f"agent {agent_id} is {agent.state}: cannot {doing}")
        return agent

    def available(
        self, balances: Mapping[str, Money], agents: Iterable[AgentRecord] | None = None
    ) -> dict[str, Money]:
        """The ledger's balances less what each agent has accrued and not yet settled. `agents`:
        the only ones that may have accrued something (every agent when None)."""
        available = dict(balances)
        for agent in self if agents is None else agents:
            if agent.accrual.owed:
                account = agent_account(agent.id)
                available[account] = Money(available.get(account, 0) - agent.accrual.owed)
        return available


def settled_balance(ledger: LedgerStore, agent: AgentRecord) -> Money:
    """What the agent holds once its accrued bills are settled (0 without an account)."""
    try:
        return Money(ledger.balance(agent_account(agent.id)) - agent.accrual.owed)
    except LedgerError:
        return Money(0)


def report_of(row: ReportRow) -> Report:
    return Report(cpu_s=row.cpu_ns / 1e9, memory_freed_bytes=row.freed_bytes, work=row.work)


def agent_info(agent: AgentRecord, balance: Money) -> AgentInfo:
    """The read model of one agent (the API's answer), with the balance it shows."""
    live = agent.state in LIVE
    return AgentInfo(
        id=agent.id,
        name=agent.name,
        state=agent.state,
        balance=balance,
        bid=agent.bid,
        demand=agent.demand,
        share=agent.cores if live else 0.0,
        power_w=agent.power_w if live else 0.0,
        energy_uj=agent.energy_uj,
        paid=Money(agent.paid),
        landauer=Money(agent.landauer),
        pid=agent.pid,
        exit_code=agent.exit_code,
        cpu_s=agent.cpu_ns / 1e9,
        memory_freed_bytes=agent.freed_bytes,
        reported=None if agent.reported is None else report_of(agent.reported),
        billing="reports" if agent.bond else "metered",
        bond=Money(agent.bond),
        audits=agent.audits,
        slashed=Money(agent.slashed),
        proofs=agent.proofs,
        bounties=Money(agent.bounties),
        user=agent.user,
    )
