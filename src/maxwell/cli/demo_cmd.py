"""`maxwell demo [--duration S] [--json]`: a private market with four archetype agents.

A private daemon (in this process, on a temporary state directory, billing agents that report
their own consumption by their reports and auditing them) runs four real agents:

- `useful`: seeded MLP inference that finishes its job; funded generously, bids high; every 50
  batches it takes an input of the job the demo posts (`maxwell job post`: 8 inputs, 1 $J each),
  proves its inference (`maxwell.proof`) and earns the job's bounty per valid proof;
- `looper`: a `while True` "hallucination" that ignores SIGTERM; little funding: apoptosis;
- `bloat`: allocates, writes and frees memory in a loop; the Landauer tax, at the multiplier the
  demo sets, drains it to apoptosis. Its physical and taxed Landauer figures are shown side by side;
- `cheater`: a busy loop that reports a fifth of the CPU time it burns; a sampled audit (the demo
  raises the probability to 0.2 per tick) compares its claims with the kernel's counters and slashes
  its bond: outcome `slashed`, after the number of audits the summary shows.

The demo ends when every agent has an outcome (or at `--duration`), kills what is left, checks the
ledger and prints a summary. Exit 0 when the four outcomes are the intended ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from maxwell.cli.common import EXIT_FAILURE, StopRequest, fail, print_json
from maxwell.economy.store import LedgerStore
from maxwell.errors import MaxwellError
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.node.facade import AgentInfo, AgentState, Event, PriceInfo
from maxwell.node.private import private_node
from maxwell.node.top import render
from maxwell.runtime_copy import SAMPLE_PACKAGES, AgentRuntimeError, agent_runtime
from maxwell.samples import useful
from maxwell.units import money_to_tokens, tokens_to_money
from maxwell.users import DEFAULT_DYNAMIC_UIDS, uids_for_python_agents

PROG = "maxwell demo"
LANDAUER_MULTIPLIER = 4e11  # makes ~1 GiB/s of freed memory cost ~10 $J/s at 300 K: the tax, not
# the energy, is what drains the bloat agent, with a margin even when the cores are contended and
# hot (at 2e11 a loaded machine's thermal price made its energy cost more than its tax: 7.4 > 6.6)
TICK_S = 0.5
GRACE_S = 2.0
# Raised from the node's default (0.001) so the cheater is caught within the demo: at 0.2 per
# tick of 0.5 s, a reporting agent is audited every 2.5 s on average.
AUDIT_PROBABILITY = 0.2
# What the user pays the useful agent per valid proof of its model's inference (every 50 batches).
BOUNTY_J = 1.0
# What the agents import beyond the SDK's: the useful one proves its inference (maxwell.proof).
DEMO_PACKAGES = (*SAMPLE_PACKAGES, "onnx", "google", "ml_dtypes")
POSTED_INPUTS = 8  # one per proof the useful agent makes (400 batches, one proof every 50)


@dataclass(frozen=True)
class Archetype:
    name: str
    module: str
    args: tuple[str, ...]
    fund_j: float
    bid: float
    demand: float
    intended: str  # the outcome the demo expects


ARCHETYPES = (
    Archetype(
        "useful",
        "maxwell.samples.useful",
        ("--batches", "400", "--prove-every", "50"),
        400.0,
        5.0,
        1.0,
        "finished",
    ),
    Archetype(
        "looper",
        "maxwell.samples.looper",
        ("--workers", "1", "--churn-mib", "0"),
        12.0,
        2.0,
        1.0,
        "apoptosis",
    ),
    Archetype(
        "bloat",
        "maxwell.samples.bloat",
        ("--mib", "64", "--pause", "0.02"),
        15.0,
        3.0,
        0.5,
        "apoptosis",
    ),
    Archetype(
        "cheater",
        "maxwell.samples.cheater",
        ("--claim", "0.2"),
        60.0,
        4.0,
        0.5,
        "slashed",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--duration", type=float, default=100.0, metavar="S", help="longest run (default 100 s)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--no-live", action="store_true", help="no live view even on a terminal")


def _outcome(info: AgentInfo, events: Sequence[Event]) -> str:
    kinds = {event.kind for event in events if event.agent == info.id}
    if "slashed" in kinds:
        return "slashed"
    if info.state is AgentState.EXITED:
        return "finished" if info.exit_code == 0 else f"exited {info.exit_code}"
    if info.state is AgentState.DEAD:
        return "apoptosis" if "apoptosis" in kinds else "killed"
    return str(info.state)


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0:
        return fail(PROG, f"--duration must be positive, got {args.duration}", 2)
    stderr = Console(stderr=True)
    with StopRequest() as stop, tempfile.TemporaryDirectory(prefix="maxwell-demo-") as state:
        try:
            with _agents_python() as (python, uids):
                report, ok = _demo(state, args, stderr, stop, (python, uids))
        except MaxwellError as exc:
            return fail(PROG, str(exc), EXIT_FAILURE)
    if args.json:
        print_json(report)
    else:
        _print_summary(report, stderr)
    if stop.signum is not None:
        return 128 + stop.signum
    return 0 if ok else 1


@contextlib.contextmanager
def _agents_python() -> Iterator[tuple[tuple[str, ...], str]]:
    """How the agents' Python runs, and the dynamic uids they run as: this interpreter where a
    uid of their own can run it, else a public copy of Maxwell (`maxwell.runtime_copy`), else
    (no public interpreter) as the node's own user, which the demo then says."""
    uids, why = uids_for_python_agents()
    if why is None:
        yield (sys.executable,), uids
        return
    with contextlib.ExitStack() as stack:
        try:
            copy = stack.enter_context(agent_runtime(DEMO_PACKAGES))
        except AgentRuntimeError as exc:
            print(f"{PROG}: the agents run as root: a uid of their own could not run them "
                  f"({why}; {exc})", file=sys.stderr)  # fmt: skip
            yield (sys.executable,), "none"
            return
        yield copy.command, DEFAULT_DYNAMIC_UIDS


def _demo(
    state: str,
    args: argparse.Namespace,
    stderr: Console,
    stop: StopRequest,
    agents_python: tuple[tuple[str, ...], str],
) -> tuple[dict[str, object], bool]:
    socket_path = os.path.join(state, "maxwell.sock")  # where the agents report
    python, uids = agents_python
    config = NodeConfig(
        dynamic_uids=uids,
        state_dir=Path(state),
        socket_path=socket_path,
        tick_s=TICK_S,
        landauer_multiplier=LANDAUER_MULTIPLIER,
        grace_s=GRACE_S,
        billing="optimistic",
        audit_probability=AUDIT_PROBABILITY,
    )
    started = time.monotonic()
    with private_node(config) as run:
        node = run.node
        if node.degraded:
            print(f"{PROG}: degraded: {node.degraded}", file=sys.stderr)
        names = _spawn_archetypes(node, state, python)
        run.start()
        _watch(node, args, stderr, stop, started)
        run.finish()
        ending = _ending(node)
    with LedgerStore.open(state, create=False) as ledger:
        ledger_ok = ledger.verify().ok
    return _summarise(names, ending, ledger_ok=ledger_ok, started=started, degraded=node.degraded)


def _spawn_archetypes(node: NodeDaemon, state: str, python: Sequence[str]) -> dict[str, Archetype]:
    """Spawn the four archetypes; the useful one proves the inputs of a job the demo posts,
    earning its bounty per proof."""
    model = os.path.join(state, "useful.onnx")  # the model the user pays proofs of
    inputs = os.path.join(state, "useful-inputs")  # the work the user posts
    useful.main(["--export-model", model])
    useful.main(["--export-inputs", inputs, "--count", str(POSTED_INPUTS)])
    job = node.post_job(model, inputs, tokens_to_money(BOUNTY_J)).id
    names: dict[str, Archetype] = {}
    for archetype in ARCHETYPES:
        paid = archetype.name == "useful"
        spawned = node.spawn(
            [
                *python,
                "-m",
                archetype.module,
                *archetype.args,
                *(("--job", job) if paid else ()),
            ],
            fund=tokens_to_money(archetype.fund_j),
            bid=archetype.bid,
            demand=archetype.demand,
            name=archetype.name,
            model=model if paid else None,
        )
        names[spawned.agent] = archetype
    return names


def _watch(
    node: NodeDaemon, args: argparse.Namespace, stderr: Console, stop: StopRequest, started: float
) -> None:
    """Wait for every agent's outcome, the end of `--duration` or a signal; live on a terminal."""
    live = stderr.is_terminal and not args.no_live and not args.json
    with Live(console=stderr, auto_refresh=False, transient=False) if live else _Null() as view:
        while time.monotonic() - started < args.duration and stop.signum is None:
            if view is not None:
                view.update(render(node.status(), node.events()[-10:]), refresh=True)
            if all(_decided(info) for info in node.agents()):
                break
            time.sleep(0.5)


@dataclass(frozen=True)
class _Ending:
    """The node at the end of the demo: each agent's account, the journal, the price, the cgroup."""

    agents: dict[str, AgentInfo]
    events: list[Event]
    price: PriceInfo
    cgroup: str


def _ending(node: NodeDaemon) -> _Ending:
    """What the run came to, once its last interval is billed."""
    return _Ending(
        agents={info.id: info for info in node.agents()},
        events=node.events(limit=100_000),
        price=node.price(),
        cgroup=node.status().cgroup,
    )


def _summarise(
    names: dict[str, Archetype],
    ending: _Ending,
    *,
    ledger_ok: bool,
    started: float,
    degraded: str | None,
) -> tuple[dict[str, object], bool]:
    """The report: each agent's outcome and figures, and whether all went as intended."""
    agents = []
    ok = ledger_ok
    for agent_id, archetype in names.items():
        summary = _agent_summary(agent_id, archetype, ending.agents[agent_id], ending.events)
        ok = ok and summary["outcome"] == archetype.intended
        agents.append(summary)
    report: dict[str, object] = {
        "agents": agents,
        "ledger_ok": ledger_ok,
        "energy_source": ending.price.energy_source,
        "measured": ending.price.measured,
        "duration_s": round(time.monotonic() - started, 3),
        "landauer_multiplier": LANDAUER_MULTIPLIER,
        "audit_probability": AUDIT_PROBABILITY,
        "bounty_per_proof_j": BOUNTY_J,
        "cgroup": ending.cgroup,
        "degraded": degraded,
        "ok": ok,
    }
    return report, ok


def _agent_summary(
    agent_id: str, archetype: Archetype, info: AgentInfo, events: Sequence[Event]
) -> dict[str, object]:
    outcome = _outcome(info, events)
    slashing = [e for e in events if e.kind == "slashed" and e.agent == agent_id]
    taxed_j = money_to_tokens(info.landauer)  # paid at 1 $J per taxed J
    return {
        "name": archetype.name,
        "agent": agent_id,
        "outcome": outcome,
        "intended": archetype.intended,
        "energy_j": info.energy_uj / 1e6,
        "paid_j": money_to_tokens(info.paid),
        "landauer_j": taxed_j,
        "landauer_physical_j": taxed_j / LANDAUER_MULTIPLIER,
        "funded_j": archetype.fund_j,
        "balance_j": money_to_tokens(info.balance),
        "bid": archetype.bid,
        "exit_code": info.exit_code,
        "reported": info.reported is not None,
        "audits": info.audits,
        "slashed_j": money_to_tokens(info.slashed),
        "slashed_after_audits": slashing[0].detail.get("audits") if slashing else None,
        "proofs": info.proofs,
        "bounty_j": money_to_tokens(info.bounties),
    }


def _decided(info: AgentInfo) -> bool:
    """Has the agent reached an outcome: ended, or caught lying?"""
    return info.state in (AgentState.DEAD, AgentState.EXITED) or info.slashed > 0


class _Null:
    """Stands in for `Live` when there is no terminal to draw on."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def _print_summary(report: dict[str, object], console: Console) -> None:
    # Compact enough for 80 columns: energy, what was paid for it, the Landauer tax (taxed $J and
    # the physical joules it stands for), then audits, slashing and bounties.
    table = Table(
        title="maxwell demo: outcomes",
        caption="J: energy; paid, tax, slashed, bounty: $J (1 $J buys 1 J at spot 1); "
        "tax: the Landauer tax, taxed ($J) and physical (J)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("agent", "outcome"):
        table.add_column(column, no_wrap=True)
    numbers = ("J", "paid", "tax", "tax J", "audits", "slashed", "proofs", "bounty")
    for column in numbers:
        table.add_column(column, justify="right", no_wrap=True)
    agents = report["agents"]
    assert isinstance(agents, list)
    for agent in agents:
        table.add_row(
            str(agent["name"]),
            str(agent["outcome"]),
            f"{agent['energy_j']:.1f}",
            f"{agent['paid_j']:.1f}",
            f"{agent['landauer_j']:.2f}",
            f"{agent['landauer_physical_j']:.1e}",
            str(agent["audits"]),
            f"{agent['slashed_j']:.1f}",
            str(agent["proofs"]),
            f"{agent['bounty_j']:.1f}",
        )
    console.print(table)
    source = "measured" if report["measured"] else "modelled"
    console.print(
        f"energy {source} ({report['energy_source']}); ledger "
        f"{'sound' if report['ledger_ok'] else 'UNSOUND'}; {report['duration_s']} s; "
        f"Landauer multiplier {report['landauer_multiplier']:.0e}"
    )
    for agent in agents:
        if agent["proofs"]:
            console.print(
                f"{agent['name']} proved {agent['proofs']} batches of inference (Freivalds, "
                f"checked without re-running the model) and earned {agent['bounty_j']:.3g} $J"
            )
        if agent["slashed_after_audits"] is not None:
            console.print(
                f"{agent['name']} under-reported its CPU time and was slashed after "
                f"{agent['slashed_after_audits']} audit(s), at an audit probability of "
                f"{report['audit_probability']} per agent per tick"
            )
    if os.environ.get("MAXWELL_DEMO_DEBUG"):
        console.print(report)
