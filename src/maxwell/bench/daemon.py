"""`maxwell bench daemon`: the node daemon's own cost, with many idle agents in real cgroups.

What is measured (issues 4 and 9, "Measured, in a benchmark (not a test)"):

- Per agent count (100, 1,000 and 5,000; `--quick`: 100), idle agents (`sleep 3600`, spawned
  through `NodeDaemon.spawn` into real groups, funded generously, bidding above the reserve for
  an equal share of the capacity, so every one of them is metered, cleared and enforced each
  tick), at a 100 ms tick and the default settlement interval (1 s):
  - the daemon's own CPU per second of wall time and its tick duration (median, p99). The tick
    loop runs in this process, paced like `run_forever`; the agents are other processes, so this
    process's CPU (`getrusage`, every thread) over the phase is the daemon's;
  - ledger rows per agent per minute: the journal entries the phase wrote
    (`LedgerStore.entries_written`) over agents x minutes. A tick that settles every agent
    (`tick_once(settle_all=True)`), a second after spawning, comes first, so the agents'
    start-up (their exec) is not counted: the phase sees them idle, and the figure is what an
    idle agent writes (`ledger_rows_by_kind` says what any rows were);
  - database bytes per agent per hour: the growth of the state directory's SQLite files with
    their write-ahead logs over the phase, each log checkpointed (TRUNCATE) before and after, so
    the figure is what the database kept, not the log's high-water mark;
  - bid-update latency over the Unix socket while the tick loop runs: an agent process (the
    SDK, `maxwell.client.Client.bid`, with the agent's token) times its round trips to the real
    API (`maxwell.node.api.serve`) while `run_forever` ticks in a thread, for `--api-rounds`
    bids or `--seconds`, whichever ends first; then as many self-reports (`Client.report`), timed
    the same way (`report_ms_median`, `report_ms_p99`); then as many fundings of that agent by
    the admin (`Client.fund`, 1 µ$J each: `fund_ms_median`, `fund_ms_p99`). Bids and reports
    are queued and never wait for a tick; a funding moves money in the ledger, so it waits for
    the locked part of a tick under way (its plan and its one transaction), never for its
    reading of the counters.
- A busy phase: 4 agents in a CPU loop (`python -c "while True: pass"`, demand 0.25 core), at the
  default settlement interval: the ledger rows and database bytes a busy agent writes.
- The auctioneer's share: the CPU of the clearing step of each real tick
  (`maxwell.node.tick.clear_market`, wrapped with `time.thread_time`) over the CPU the market
  allocates in a tick (capacity cores x tick length), at the largest agent count, with a 1 s tick
  (target <= 0.1%) and with a 100 ms one. A market that stands (no bid, reserve, capacity or
  bidder changed) is not cleared again, so in this phase one agent's bid changes before each
  tick, in turn: every tick clears the whole book. The whole pure plan (`plan_tick`: bills,
  apoptosis, clearing, enforcement plan) is reported beside it.
- `api_bid_ms`: the bid latency measured as earlier releases did (a client thread inside this
  process, at the smallest agent count), kept so that it compares with their figure. Beside it,
  where a bid's time goes: the agent process's bids with no tick running (`bid_ms_not_ticking`:
  the HTTP round trip, no lock to wait for) and `NodeDaemon.bid` called directly
  (`bid_ms_direct`: the handler's own work, its SQLite transactions).
- `--baseline REV`: the same benchmark of an earlier revision, run in the same invocation, and
  the ratios current / baseline. REV is checked out with `git worktree add --detach` in a
  temporary directory and run by this interpreter with that tree's `src` first on `PYTHONPATH`
  (checked: `maxwell` must import from there), so it uses this environment's dependencies, which
  an older revision must accept. It is called only with the flags its `--help` lists. The
  worktree is removed whatever happens.

Limits: the daemon keeps one descriptor open per agent (its CPU counter), so 5,000 agents need
over 5,000 and some to spare: the benchmark raises its open-files limit as far as it may and
reports it (`host.open_files`), and stops spawning before it runs short. If
spawning still fails (descriptors, pids, memory), it measures the agents it has and says why
(`limit` of that agent count) rather than stopping.

The pure part (percentiles, rates, targets, ratios, turning timings into the report) is at the
top and is what the tests exercise; everything below `# --- the machine ---` spawns processes and
reads clocks. The agents are always killed and their groups removed
(`NodeDaemon.shutdown(kill_agents=True)`), also on Ctrl-C and SIGTERM; a second signal during that
clean-up waits for it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from maxwell.bench._harness import process_cpu_s, sigterm_as_interrupt
from maxwell.errors import MaxwellError

TARGET_AUCTIONEER_FRACTION_AT_1S = 0.001
AGENT_COUNTS = (100, 1000, 5000)
QUICK_AGENT_COUNTS = (100,)
TICK_S = 0.1
AUCTION_TICK_S = 1.0
IDLE_ARGV = ("sleep", "3600")
BUSY_AGENTS = 4
BUSY_DEMAND = 0.25  # cores each: 4 busy agents want one of the machine's cores
BUSY_LOOP = "while True: pass"
FUND_UJ = 10**15  # µ$J: a billion $J, so no agent ever runs short during a run
BID = 100.0  # $J per J: far above the reserve (the spot price, 1 $J/J from the constant grid)
FDS_PER_AGENT = 1  # descriptors the daemon keeps open per agent (counted on cgroup v1)
FD_RESERVE = 1024  # descriptors kept free for ticks, SQLite, the API, and killing the agents
FD_CHECK_EVERY = 50  # spawns between two counts of this process's open descriptors
SPAWN_PROGRESS_EVERY = 500
START_UP_S = 1.0  # how long the last agents spawned get to finish starting before a phase

# The targets, at a 100 ms tick on the 2-core CI machine: (figure, agent count or None
# for a figure of its own phase, at most).
TARGETS: tuple[tuple[str, int | None, float], ...] = (
    ("daemon_cpu_per_s", 1000, 0.10),
    ("tick_ms_p99", 1000, 20.0),
    ("tick_ms_p99", 5000, 100.0),
    ("idle_ledger_rows_per_agent_per_min", None, 0.0),
    ("busy_ledger_rows_per_agent_per_min", None, 60.0),
    ("bid_ms_median", 100, 1.0),
    ("bid_ms_median", 1000, 1.0),
    ("bid_ms_median", 5000, 1.0),
)
# Per agent count, the figures compared with a baseline (current / baseline).
RATIO_FIGURES = (
    "daemon_cpu_per_s",
    "tick_ms_median",
    "tick_ms_p99",
    "ledger_rows_per_agent_per_min",
    "db_bytes_per_agent_per_hour",
    "bid_ms_median",
    "bid_ms_p99",
    "report_ms_median",
    "report_ms_p99",
    "fund_ms_median",
    "fund_ms_p99",
)
# What a baseline is asked for, when its `--help` lists the flag.
BASELINE_FLAGS = ("--json", "--quick", "--seconds", "--auction-seconds", "--api-rounds")

_T = TypeVar("_T")
log = logging.getLogger(__name__)


class BaselineError(MaxwellError):
    """`--baseline REV` could not be checked out or run."""


# --- the pure part ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) of `values`, linearly interpolated; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def per_agent_rate(amount: int | None, agents: int, seconds: float, per_s: float) -> float | None:
    """`amount` (over a phase of `seconds` with `agents` agents) per agent per `per_s` seconds:
    rows per agent per minute with `per_s=60`, bytes per agent per hour with 3600."""
    if amount is None or agents <= 0 or seconds <= 0:
        return None
    return amount / agents / (seconds / per_s)


@dataclass
class TickPhase:
    """The tick loop run for a while with `agents` agents at `tick_s`."""

    agents: int
    tick_s: float
    wall_s: float = 0.0
    process_cpu_s: float = 0.0
    tick_s_each: list[float] = field(default_factory=list)  # wall duration of each tick
    clearing_cpu_s: list[float] = field(default_factory=list)  # clear_market, per tick
    plan_cpu_s: list[float] = field(default_factory=list)  # plan_tick, per tick
    requested: int | None = None  # agents asked for (None: `agents`)
    limit: str | None = None  # why fewer than `requested` were spawned
    ledger_rows: int | None = None  # journal entries written during the phase
    ledger_kinds: dict[str, int] = field(default_factory=dict)  # those entries, by kind
    db_bytes: int | None = None  # growth of the database files during the phase
    bid_s: list[float] = field(default_factory=list)  # an agent's bid round trips, ticking
    bid_error: str | None = None  # why the agent's bids stopped early, if they did
    report_s: list[float] = field(default_factory=list)  # its report round trips, ticking
    fund_s: list[float] = field(default_factory=list)  # the admin funding it, ticking
    spawn_s: float | None = None  # wall time to spawn the agents
    tick_failures: int = 0  # ticks that raised (the loop goes on, as `run_forever` does)
    tick_error: str | None = None  # the last one's error

    def report(self) -> dict[str, object]:
        return {
            "n": self.agents,
            "tick_s": self.tick_s,
            "ticks": len(self.tick_s_each),
            "wall_s": round(self.wall_s, 3),
            "daemon_cpu_per_s": (
                round(self.process_cpu_s / self.wall_s, 6) if self.wall_s > 0 else None
            ),
            "tick_ms_median": _ms(percentile(self.tick_s_each, 50)),
            "tick_ms_p99": _ms(percentile(self.tick_s_each, 99)),
            "requested": self.agents if self.requested is None else self.requested,
            "limit": self.limit,
            "ledger_rows": self.ledger_rows,
            "ledger_rows_by_kind": dict(sorted(self.ledger_kinds.items())),
            "ledger_rows_per_agent_per_min": _rounded(self.rows_per_agent_per_min(), 3),
            "db_bytes_per_agent_per_hour": _rounded(
                per_agent_rate(self.db_bytes, self.agents, self.wall_s, 3600.0), 1
            ),
            "bid_n": len(self.bid_s),
            "bid_ms_median": _ms(percentile(self.bid_s, 50)),
            "bid_ms_p99": _ms(percentile(self.bid_s, 99)),
            "bid_error": self.bid_error,
            "report_n": len(self.report_s),
            "report_ms_median": _ms(percentile(self.report_s, 50)),
            "report_ms_p99": _ms(percentile(self.report_s, 99)),
            "fund_n": len(self.fund_s),
            "fund_ms_median": _ms(percentile(self.fund_s, 50)),
            "fund_ms_p99": _ms(percentile(self.fund_s, 99)),
            "spawn_s": _rounded(self.spawn_s, 1),
            "tick_failures": self.tick_failures,
            "tick_error": self.tick_error,
        }

    def rows_per_agent_per_min(self) -> float | None:
        return per_agent_rate(self.ledger_rows, self.agents, self.wall_s, 60.0)


def descriptors_short(
    limit: int | None, open_now: int, per_agent: float, batch: int = FD_CHECK_EVERY
) -> bool:
    """Whether `batch` more agents, at `per_agent` descriptors each, would leave fewer than
    `FD_RESERVE` of the open-files `limit` (None: unlimited): spawning stops before that, so the
    ticks and the clean-up always have descriptors to work with."""
    if limit is None:
        return False
    return open_now + batch * per_agent > limit - FD_RESERVE


def idle_rows_per_agent_per_min(phases: Sequence[TickPhase]) -> float | None:
    """Ledger rows per agent per minute over every idle phase: all rows over all agent-minutes."""
    measured = [p for p in phases if p.ledger_rows is not None and p.agents > 0 and p.wall_s > 0]
    if not measured:
        return None
    rows = sum(p.ledger_rows or 0 for p in measured)
    return rows / sum(p.agents * p.wall_s / 60.0 for p in measured)


def auctioneer_fraction(
    clearing_cpu_s: float | None, capacity_cores: float, tick_s: float
) -> float | None:
    """The clearing's CPU per tick over the CPU the market allocates per tick."""
    if clearing_cpu_s is None or capacity_cores <= 0 or tick_s <= 0:
        return None
    return clearing_cpu_s / (capacity_cores * tick_s)


def _rounded(value: float | None, digits: int = 8) -> float | None:
    return None if value is None else round(value, digits)


def check_targets(report: Mapping[str, Any]) -> list[dict[str, object]]:
    """Each of the issue's `TARGETS` against the report: measured (None: not measured), at how
    many agents (`measured_agents`: fewer than asked where a limit stopped the spawning), met
    (None: not measured, or measured at fewer agents than the target names)."""
    by_count = {row.get("requested", row["n"]): row for row in report.get("agents", [])}
    checked: list[dict[str, object]] = []
    for figure, agents, most in TARGETS:
        row = report if agents is None else by_count.get(agents, {})
        measured, measured_agents = row.get(figure), row.get("n") if agents is not None else None
        met = None if not isinstance(measured, int | float) else measured <= most
        if agents is not None and isinstance(measured_agents, int) and measured_agents < agents:
            met = None
        checked.append(
            {"figure": figure, "agents": agents, "max": most, "measured": measured,
             "measured_agents": measured_agents, "met": met}
        )  # fmt: skip
    return checked


def build_report(
    phases: Sequence[TickPhase],
    *,
    auction: TickPhase | None,
    capacity_cores: float,
    api_bid_s: Sequence[float],
    host: Mapping[str, object],
    busy: TickPhase | None = None,
    api_bid_idle_s: Sequence[float] = (),
    direct_bid_s: Sequence[float] = (),
) -> dict[str, Any]:
    """The benchmark's JSON: per agent count, the busy agents, the auctioneer's share, the API's
    latency, the targets.

    The auctioneer's share uses the median clearing CPU of the `auction` phase (the largest agent
    count, 1 s tick) over capacity x 1 s and capacity x 100 ms: the clearing's cost does not
    depend on the tick's length, only what it is divided by does.
    """
    clearing = percentile(auction.clearing_cpu_s, 50) if auction is not None else None
    plan = percentile(auction.plan_cpu_s, 50) if auction is not None else None
    fraction_1s = auctioneer_fraction(clearing, capacity_cores, 1.0)
    fraction_100ms = auctioneer_fraction(clearing, capacity_cores, 0.1)
    report: dict[str, Any] = {
        "agents": [phase.report() for phase in phases],
        "auctioneer_fraction": {"1s": _rounded(fraction_1s), "100ms": _rounded(fraction_100ms)},
        "auctioneer": {
            "agents": auction.agents if auction is not None else None,
            "ticks": len(auction.clearing_cpu_s) if auction is not None else 0,
            "capacity_cores": capacity_cores,
            "clearing_us_median": _rounded(None if clearing is None else clearing * 1e6, 1),
            "clearing_us_p99": _rounded(
                None if auction is None else _scaled(percentile(auction.clearing_cpu_s, 99)), 1
            ),
            "plan_tick_us_median": _rounded(None if plan is None else plan * 1e6, 1),
            "plan_tick_fraction_1s": _rounded(auctioneer_fraction(plan, capacity_cores, 1.0)),
        },
        "api_bid_ms": {
            "n": len(api_bid_s),
            "median": _ms(percentile(api_bid_s, 50)),
            "p99": _ms(percentile(api_bid_s, 99)),
        },
        # Where a bid's time goes, at the smallest count: an agent process's bids while no tick
        # runs (the round trip, no lock to wait for), and `NodeDaemon.bid` called directly.
        "bid_ms_not_ticking": _latency(api_bid_idle_s),
        "bid_ms_direct": _latency(direct_bid_s),
        "idle_ledger_rows_per_agent_per_min": _rounded(idle_rows_per_agent_per_min(phases), 3),
        "busy_ledger_rows_per_agent_per_min": _rounded(
            None if busy is None else busy.rows_per_agent_per_min(), 3
        ),
        "busy": None if busy is None else {**busy.report(), "demand": BUSY_DEMAND},
        "target": {
            "auctioneer_fraction_1s_max": TARGET_AUCTIONEER_FRACTION_AT_1S,
            "agents": max((phase.agents for phase in phases), default=0),
            "met": None if fraction_1s is None else fraction_1s <= TARGET_AUCTIONEER_FRACTION_AT_1S,
        },
        "host": dict(host),
    }
    report["targets"] = check_targets(report)
    return report


def _latency(seconds: Sequence[float]) -> dict[str, object]:
    return {
        "n": len(seconds),
        "median": _ms(percentile(seconds, 50)),
        "p99": _ms(percentile(seconds, 99)),
    }


def _scaled(value: float | None) -> float | None:
    return None if value is None else value * 1e6


def ratio(current: object, baseline: object) -> float | None:
    """current / baseline, rounded; None unless both are numbers and the baseline is not 0."""
    numbers = (int, float)
    if isinstance(current, bool) or isinstance(baseline, bool):
        return None
    if not isinstance(current, numbers) or not isinstance(baseline, numbers) or baseline == 0:
        return None
    return round(current / baseline, 3)


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """Ratios current / baseline (below 1: the current revision is cheaper or faster), per agent
    count both measured, for the API's latency, and for the auctioneer where both measured it
    at the same agent count. A figure the baseline does not report has no ratio (None)."""
    baseline_rows = {row.get("requested", row.get("n")): row for row in baseline.get("agents", [])}
    per_count = []
    for row in current.get("agents", []):
        base = baseline_rows.get(row.get("requested", row.get("n")))
        if base is not None:
            figures = {figure: ratio(row.get(figure), base.get(figure)) for figure in RATIO_FIGURES}
            per_count.append({"n": row.get("requested", row.get("n")), **figures})
    api, base_api = current.get("api_bid_ms", {}), baseline.get("api_bid_ms", {})
    auction, base_auction = current.get("auctioneer", {}), baseline.get("auctioneer", {})
    same_auction = auction.get("agents") is not None and auction.get("agents") == base_auction.get(
        "agents"
    )
    return {
        "meaning": "current / baseline: below 1 is cheaper or faster",
        "agents": per_count,
        "api_bid_ms": {key: ratio(api.get(key), base_api.get(key)) for key in ("median", "p99")},
        "auctioneer_fraction_1s": (
            ratio(
                current.get("auctioneer_fraction", {}).get("1s"),
                baseline.get("auctioneer_fraction", {}).get("1s"),
            )
            if same_auction
            else None
        ),
    }


def with_baseline(
    report: Mapping[str, Any], baseline: Mapping[str, Any], *, revision: str, commit: str
) -> dict[str, Any]:
    """`report` with the baseline's report beside it and the ratios of the two."""
    return {
        **report,
        "baseline": {"revision": revision, "commit": commit, "report": dict(baseline)},
        "ratios": compare(report, baseline),
    }


def known_flags(help_text: str, wanted: Sequence[str] = BASELINE_FLAGS) -> list[str]:
    """Which of `wanted` a benchmark's `--help` lists (an older revision may lack some)."""
    words = set(help_text.replace(",", " ").replace("[", " ").replace("]", " ").split())
    return [flag for flag in wanted if flag in words]


def baseline_argv(
    flags: Sequence[str], *, quick: bool, seconds: float, auction_seconds: float, api_rounds: int
) -> list[str]:
    """The arguments of `maxwell bench daemon` for a baseline that knows `flags`."""
    values = {
        "--seconds": seconds,
        "--auction-seconds": auction_seconds,
        "--api-rounds": api_rounds,
    }
    argv = ["bench", "daemon"]
    for flag in flags:
        if flag in values:
            argv += [flag, f"{values[flag]:g}"]
        elif flag == "--json" or (flag == "--quick" and quick):
            argv.append(flag)
    return argv


# --- the machine ------------------------------------------------------------------------------


class _StepTimer:
    """Wraps a module function so each call's CPU (`thread_time`) is recorded, then restores it."""

    def __init__(self, module: Any, name: str) -> None:
        self.module = module
        self.name = name
        self.original = getattr(module, name)
        self.samples: list[float] = []

    def __enter__(self) -> _StepTimer:
        original = self.original
        samples = self.samples

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                samples.append(time.thread_time() - started)

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.module, self.name, self.original)


def _database_bytes(state_dir: Path) -> int:
    """The state directory's SQLite files with their write-ahead logs, in bytes, each log
    checkpointed (TRUNCATE) first: what the database keeps, not the log's high-water mark.
    Called between ticks, when the daemon holds no transaction open."""
    total = 0
    for database in sorted(state_dir.glob("*.db")):  # an OSError here: the phase says None
        with contextlib.closing(sqlite3.connect(database, timeout=10.0)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for path in (database, database.with_name(database.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
    return total


def _tick_phase(
    daemon: Any,
    agents: int,
    tick_s: float,
    seconds: float,
    state_dir: Path | None = None,
    before_tick: Callable[[], None] | None = None,
) -> TickPhase:
    """Tick like `run_forever` for `seconds`, timing each tick and its pure steps; with
    `state_dir`, count the ledger rows and database bytes the phase wrote. `before_tick` runs
    before each tick, untimed."""
    from maxwell.node import tick as ticks

    daemon.config = dataclasses.replace(daemon.config, tick_s=tick_s)
    phase = TickPhase(agents=agents, tick_s=tick_s)
    rows = daemon.ledger().entries_written()
    size = _measured_bytes(state_dir)
    with _StepTimer(ticks, "clear_market") as clearing, _StepTimer(ticks, "plan_tick") as plan:
        wall0, cpu0 = time.monotonic(), process_cpu_s()
        deadline = wall0 + seconds
        while time.monotonic() < deadline:
            if before_tick is not None:
                before_tick()
            started = time.monotonic()
            try:
                daemon.tick_once()
            except Exception as exc:  # counted and reported; the next tick retries
                phase.tick_failures += 1
                phase.tick_error = f"{type(exc).__name__}: {exc}"
            elapsed = time.monotonic() - started
            phase.tick_s_each.append(elapsed)
            time.sleep(max(tick_s - elapsed, 0.0))
        phase.wall_s = time.monotonic() - wall0
        phase.process_cpu_s = process_cpu_s() - cpu0
    phase.clearing_cpu_s = list(clearing.samples)
    phase.plan_cpu_s = list(plan.samples)
    phase.ledger_rows = daemon.ledger().entries_written() - rows
    if phase.ledger_rows:  # what they were (reading the journal costs: only when there are some)
        written = [entry.kind for entry in daemon.ledger().entries() if entry.seq > rows]
        phase.ledger_kinds = dict(Counter(written))
    size_after = _measured_bytes(state_dir)
    if size is not None and size_after is not None:
        phase.db_bytes = size_after - size
    return phase


def _measured_bytes(state_dir: Path | None) -> int | None:
    if state_dir is None:
        return None
    try:
        return _database_bytes(state_dir)
    except (OSError, sqlite3.Error):
        log.exception("cannot measure the database in %s", state_dir)
        return None


def _spawn_agents(
    daemon: Any,
    count: int,
    *,
    argv: Sequence[str],
    demand: float,
    progress: Callable[[str], None],
) -> tuple[list[tuple[str, str]], str | None]:
    """`count` agents running `argv`, each bidding for `demand` cores: their (agent id, token),
    and why spawning stopped early (a limit: descriptors, pids, memory), if it did. It stops
    before the open-files limit (`descriptors_short`): past it the daemon can neither tick nor
    kill its agents."""
    from maxwell.units import Money

    spawned: list[tuple[str, str]] = []
    fd_limit, at_start = _descriptor_limit(), _open_descriptors()
    for index in range(count):
        if index % FD_CHECK_EVERY == 0 and fd_limit is not None:
            open_now = _open_descriptors()
            per_agent = max(FDS_PER_AGENT, (open_now - at_start) / index if index else 0.0)
            if descriptors_short(fd_limit, open_now, per_agent):
                why = (
                    f"{index} of {count} agents spawned: the open-files limit ({fd_limit}) would "
                    f"leave under {FD_RESERVE} free, at {per_agent:.1f} descriptors per agent"
                )
                progress(f"spawning stopped: {why}")
                return spawned, why
        try:
            result = daemon.spawn(
                list(argv), fund=Money(FUND_UJ), bid=BID, demand=demand, name=f"bench-{index}"
            )
        except (MaxwellError, OSError) as exc:
            limit = f"{index} of {count} agents spawned, then {type(exc).__name__}: {exc}"
            progress(f"spawning stopped: {limit}")
            return spawned, limit
        spawned.append((result.agent, result.token))
        if (index + 1) % SPAWN_PROGRESS_EVERY == 0 and index + 1 < count:
            progress(f"{index + 1} agents spawned")
    return spawned, None


@contextlib.contextmanager
def _serving(daemon: Any, socket_path: str, *, ticking: bool = True) -> Iterator[None]:
    """The real API on `socket_path`, with `run_forever` ticking in a thread, for the block."""
    from maxwell.node.api import create_app, serve

    server = serve(create_app(daemon), socket_path=socket_path, listen=None)
    stop = threading.Event()
    ticker = threading.Thread(target=daemon.run_forever, args=(stop,), daemon=True)
    if ticking:
        ticker.start()
    try:
        yield
    finally:
        stop.set()
        if ticking:
            ticker.join(timeout=120)
        server.stop()


# An agent's bid updates, then (with "report") its self-reports and the admin's fundings of it
# (the admin's token in MAXWELL_ADMIN_TOKEN), each timed in the agent's own process (the SDK, its
# token in the environment) for `rounds` or `seconds`, whichever ends first; the bids run back
# to back as earlier releases timed them, the reports after them (each claiming more CPU than an
# idle agent uses, so no audit finds it short). One "KIND seconds" a line, so a run cut short
# still leaves what it timed.
_AGENT_BIDS = """
import os, sys, time
from maxwell.client import Client
rounds, seconds, price = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
calls = [("bid", lambda n: client.bid(price + (n % 10) / 10))]
if sys.argv[4:] == ["report"]:
    admin = Client(token=os.environ["MAXWELL_ADMIN_TOKEN"])
    calls.append(("report", lambda n: client.report(60.0, 0)))
    calls.append(("fund", lambda n: admin.fund(client.my_id(), 1e-6)))
with Client() as client:
    client.my_id()
    for kind, call in calls:
        deadline = time.monotonic() + seconds
        for round_ in range(rounds):
            if time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            call(round_)
            print(kind, time.perf_counter() - started, flush=True)
"""


def _bids_from_agent(
    socket_path: str,
    token: str,
    rounds: int,
    seconds: float,
    phase: TickPhase | None = None,
    admin_token: str = "",
) -> tuple[list[float], str | None]:
    """An agent process's bid round trips over the socket: latencies, and why it stopped early;
    with `phase`, as many reports and fundings (by `admin_token`) after the bids, their
    latencies added to the phase's."""
    environment = {**os.environ, "MAXWELL_SOCKET": socket_path, "MAXWELL_AGENT_TOKEN": token}
    command = [sys.executable, "-c", _AGENT_BIDS, str(rounds), str(seconds), str(BID)]
    if phase is not None:
        command.append("report")
        environment["MAXWELL_ADMIN_TOKEN"] = admin_token
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        output, errors = process.communicate(timeout=2 * seconds + 60.0)
    except subprocess.TimeoutExpired:
        process.kill()
        output, errors = process.communicate()
        errors = f"timed out after {2 * seconds + 60.0:g} s\n{errors}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    timed = [line.split() for line in output.splitlines() if line.strip()]
    latencies = [float(seconds_) for kind, seconds_ in timed if kind == "bid"]
    if phase is not None:
        phase.report_s.extend(float(seconds_) for kind, seconds_ in timed if kind == "report")
        phase.fund_s.extend(float(seconds_) for kind, seconds_ in timed if kind == "fund")
    if process.returncode == 0 and not errors.startswith("timed out"):
        return latencies, None
    said = errors.strip().splitlines()
    return latencies, said[-1] if said else f"exited with status {process.returncode}"


def _bids_in_process(token: str, socket_path: str, rounds: int) -> list[float]:
    """Bid round trips from a client thread in this process: how earlier releases measured."""
    from maxwell.client import Client

    latencies: list[float] = []
    with Client(socket=socket_path, token=token) as client:
        client.my_id()  # the connection and the identity, outside the timed calls
        for round_ in range(rounds):
            started = time.perf_counter()
            client.bid(BID + (round_ % 10) / 10)
            latencies.append(time.perf_counter() - started)
    return latencies


def _descriptor_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _open_files(agents: int) -> dict[str, object]:
    """Raise this process's open-files limit to what `agents` agents need (the daemon keeps
    `FDS_PER_AGENT` descriptors per agent): the soft limit up to the hard one, and the hard one
    too where this process may (root). What it found and what it uses go in the report."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = agents * FDS_PER_AGENT + FD_RESERVE + _open_descriptors()
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # not root: the hard limit stays
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    soft_now, hard_now = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_now != resource.RLIM_INFINITY and soft_now < wanted:
        raised = wanted if hard_now == resource.RLIM_INFINITY else min(wanted, hard_now)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard_now))
    soft_now, hard_now = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"found": [soft, hard], "used": [soft_now, hard_now], "wanted": wanted}


def _host(daemon: Any) -> dict[str, object]:
    from maxwell.procfs import read_cpu_model

    status = daemon.status()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": read_cpu_model("/proc"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cgroup": status.cgroup,
        "energy_source": status.price.energy_source,
        "capacity_cores": daemon.capacity_cores,
        "ledger_synchronous": "FULL",
        "settlement_s": daemon.config.settlement_s,
    }


@contextlib.contextmanager
def _signals_wait(what: str) -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (killing agents must not be cut short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def wait(signum: int, frame: FrameType | None) -> None:
        print(f"maxwell bench daemon: {what}; please wait", file=sys.stderr, flush=True)

    previous = {number: signal.signal(number, wait) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _with_daemon(state_dir: Path, use: Callable[[Any], _T]) -> _T:
    from maxwell.node.config import NodeConfig
    from maxwell.node.daemon import NodeDaemon
    from maxwell.users import uids_for_python_agents

    uids = uids_for_python_agents()[0]  # the bidding agent is this Python's program
    daemon = NodeDaemon(
        NodeConfig(dynamic_uids=uids, state_dir=state_dir, tick_s=TICK_S, grace_s=3600.0)
    )
    try:
        if daemon.degraded:
            from maxwell.errors import CgroupUnavailableError

            raise CgroupUnavailableError(f"the benchmark needs real cgroups: {daemon.degraded}")
        return use(daemon)
    finally:
        with _signals_wait("killing the agents and removing their groups"):
            daemon.shutdown(kill_agents=True)


@dataclass
class _Run:
    """What a run has measured so far, filled in phase by phase."""

    counts: Sequence[int]
    seconds: float
    auction_seconds: float
    api_rounds: int
    progress: Callable[[str], None]
    phases: list[TickPhase] = field(default_factory=list)
    auction: TickPhase | None = None
    busy: TickPhase | None = None
    api_bid_s: list[float] = field(default_factory=list)
    idle_bid_s: list[float] = field(default_factory=list)
    direct_bid_s: list[float] = field(default_factory=list)
    host: dict[str, object] = field(default_factory=dict)
    capacity: float = 0.0


def _settle_start_up(daemon: Any) -> None:
    """A tick that takes the counters' baselines, a pause for the last agents to finish starting
    (exec, loading), then a tick that settles every agent: a phase after it sees only what the
    agents do, not their start-up."""
    daemon.tick_once()
    time.sleep(START_UP_S)
    daemon.tick_once(settle_all=True)


def _measure_count(run: _Run, daemon: Any, count: int, state_dir: Path) -> None:
    """One agent count: spawn, tick (and the auction at the largest), bid over the socket."""
    run.capacity = daemon.capacity_cores
    run.progress(f"spawning {count} agents")
    started = time.monotonic()
    spawned, limit = _spawn_agents(
        daemon, count, argv=IDLE_ARGV, demand=run.capacity / count, progress=run.progress
    )
    spawn_s = time.monotonic() - started
    run.progress(f"spawned {len(spawned)} in {spawn_s:.1f} s; ticking")
    _settle_start_up(daemon)
    phase = _tick_phase(daemon, len(spawned), TICK_S, run.seconds, state_dir)
    phase.requested, phase.limit, phase.spawn_s = count, limit, spawn_s
    run.phases.append(phase)
    if count == max(run.counts):
        run.progress(f"auction phase: {len(spawned)} agents at a {AUCTION_TICK_S:g} s tick")
        run.auction = _tick_phase(
            daemon, len(spawned), AUCTION_TICK_S, run.auction_seconds,
            before_tick=_rebidding(daemon, [agent for agent, _ in spawned]),
        )  # fmt: skip
        daemon.config = dataclasses.replace(daemon.config, tick_s=TICK_S)
    if spawned:
        _measure_bids(run, daemon, phase, spawned[0], str(state_dir / "api.sock"))
    if not run.host:
        run.host = _host(daemon)
    run.progress("killing the agents")


def _rebidding(daemon: Any, agents: Sequence[str]) -> Callable[[], None]:
    """One agent's bid changed before each tick, in turn: a market that moves clears every tick
    (one that stands is not cleared again), so the auction phase times a real clearing."""
    turn = itertools.count()

    def rebid() -> None:
        if agents:
            index = next(turn)
            daemon.bid(agents[index % len(agents)], BID + (index % 2) / 2)

    return rebid


def _measure_bids(
    run: _Run, daemon: Any, phase: TickPhase, agent: tuple[str, str], socket_path: str
) -> None:
    """An agent's bids over the socket while the daemon ticks; at the smallest count, also from
    a client thread (as earlier releases measured), with no tick running (the round trip), and
    as direct calls of `NodeDaemon.bid` (the handler's own work, no HTTP)."""
    agent_id, token = agent
    smallest = phase.requested == min(run.counts)
    run.progress("bid updates from an agent process while the daemon ticks")
    with _serving(daemon, socket_path):
        phase.bid_s, phase.bid_error = _bids_from_agent(
            socket_path, token, run.api_rounds, run.seconds, phase, daemon.admin_token
        )
        if smallest:
            run.progress("bid updates from a client thread (as earlier releases measured)")
            run.api_bid_s.extend(_bids_in_process(token, socket_path, run.api_rounds))
    if smallest:
        run.progress("bid updates from an agent process, the daemon not ticking")
        with _serving(daemon, socket_path, ticking=False):
            run.idle_bid_s, _ = _bids_from_agent(socket_path, token, run.api_rounds, run.seconds)
        run.progress("direct calls of NodeDaemon.bid")
        for round_ in range(run.api_rounds):
            started = time.perf_counter()
            daemon.bid(agent_id, BID + (round_ % 10) / 10)
            run.direct_bid_s.append(time.perf_counter() - started)


def _measure_busy(run: _Run, daemon: Any, state_dir: Path) -> None:
    """Busy agents at the default settlement interval: the rows and bytes they write."""
    run.progress(f"busy phase: {BUSY_AGENTS} agents in a CPU loop, {BUSY_DEMAND:g} core each")
    spawned, limit = _spawn_agents(
        daemon,
        BUSY_AGENTS,
        argv=(sys.executable, "-c", BUSY_LOOP),
        demand=BUSY_DEMAND,
        progress=run.progress,
    )
    _settle_start_up(daemon)
    run.busy = _tick_phase(daemon, len(spawned), TICK_S, run.seconds, state_dir)
    run.busy.requested, run.busy.limit = BUSY_AGENTS, limit
    run.progress("killing the busy agents")


def run_daemon_bench(
    *,
    counts: Sequence[int] = AGENT_COUNTS,
    seconds: float = 10.0,
    auction_seconds: float = 10.0,
    api_rounds: int = 300,
    busy: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run every phase (see the module comment) and build the report."""
    run = _Run(counts, seconds, auction_seconds, api_rounds, progress)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_files = _open_files(max(counts, default=0))
    try:
        with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="maxwell-bench-") as tmp:
            for count in counts:
                state_dir = Path(tmp) / f"state-{count}"

                def measure(daemon: Any, count: int = count, state_dir: Path = state_dir) -> None:
                    _measure_count(run, daemon, count, state_dir)

                _with_daemon(state_dir, measure)
            if busy:
                busy_dir = Path(tmp) / "state-busy"
                _with_daemon(busy_dir, lambda daemon: _measure_busy(run, daemon, busy_dir))
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    host = {**run.host, "open_files": open_files}
    return build_report(
        run.phases,
        auction=run.auction,
        capacity_cores=run.capacity,
        api_bid_s=run.api_bid_s,
        api_bid_idle_s=run.idle_bid_s,
        direct_bid_s=run.direct_bid_s,
        host=host,
        busy=run.busy,
    )


def _git(directory: Path, *arguments: str) -> str:
    """`git -C directory ARGUMENTS`: its output; a failure is a `BaselineError` with git's words."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *arguments], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise BaselineError("--baseline needs git, which is not installed") from None
    if done.returncode != 0:
        words = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise BaselineError(f"git {' '.join(arguments)}: {words}")
    return done.stdout.strip()


def _repository() -> Path:
    """The git checkout this Maxwell runs from (else the current directory's)."""
    for directory in (Path(__file__).resolve().parent, Path.cwd()):
        with contextlib.suppress(BaselineError):
            return Path(_git(directory, "rev-parse", "--show-toplevel"))
    raise BaselineError("--baseline needs Maxwell run from a git checkout")


def _baseline_python(tree: Path) -> tuple[list[str], dict[str, str]]:
    """This interpreter with `tree`'s sources first on the path, checked to import from there."""
    source = tree / "src"
    path = os.environ.get("PYTHONPATH")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), path]))}
    done = subprocess.run(
        [sys.executable, "-c", "import maxwell; print(maxwell.__file__)"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    imported = done.stdout.strip()
    if done.returncode != 0 or not Path(imported).resolve().is_relative_to(source.resolve()):
        raise BaselineError(f"the baseline's maxwell does not import from {source}: {imported!r}")
    launcher = "import sys; from maxwell.cli.main import main; sys.exit(main())"
    return [sys.executable, "-c", launcher], environment


def _run_baseline_process(argv: list[str], environment: dict[str, str], tree: Path) -> str:
    """Run the baseline's benchmark; on Ctrl-C or SIGTERM, pass one SIGTERM on and wait for its
    own clean-up (it kills its agents) before going on unwinding."""
    process = subprocess.Popen(
        argv,
        env=environment,
        cwd=tree,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches it once, through us
    )
    try:
        output, _ = process.communicate()
    except BaseException:
        with _signals_wait("waiting for the baseline to kill its agents"):
            process.terminate()
            try:
                process.wait(timeout=600)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        raise
    if process.returncode != 0:
        raise BaselineError(f"the baseline's benchmark exited with status {process.returncode}")
    return output


def run_baseline(
    revision: str,
    *,
    quick: bool,
    seconds: float,
    auction_seconds: float,
    api_rounds: int,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[str, dict[str, Any]]:
    """`maxwell bench daemon --json` of `revision` (see the module comment): its commit and
    report. The temporary worktree is removed whatever happens."""
    repository = _repository()
    try:
        commit = _git(repository, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except BaselineError:
        raise BaselineError(f"--baseline {revision}: no such commit in {repository}") from None
    with tempfile.TemporaryDirectory(prefix="maxwell-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        _git(repository, "worktree", "add", "--detach", str(tree), commit)
        try:
            python, environment = _baseline_python(tree)
            helped = subprocess.run(
                [*python, "bench", "daemon", "--help"],
                env=environment,
                capture_output=True,
                text=True,
                check=False,
            )
            flags = known_flags(helped.stdout)
            if "--json" not in flags:
                raise BaselineError(f"{revision}: its `maxwell bench daemon` has no --json")
            argv = baseline_argv(
                flags,
                quick=quick,
                seconds=seconds,
                auction_seconds=auction_seconds,
                api_rounds=api_rounds,
            )
            progress(f"baseline {revision} ({commit[:12]}): maxwell {' '.join(argv)}")
            output = _run_baseline_process([*python, *argv], environment, tree)
        finally:
            with contextlib.suppress(BaselineError):
                _git(repository, "worktree", "remove", "--force", str(tree))
            with contextlib.suppress(BaselineError):
                _git(repository, "worktree", "prune")
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BaselineError(f"the baseline printed no JSON report: {output[-200:]!r}") from None
    progress(f"baseline {revision} done")
    return commit, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="100 agents only (default: 100, 1,000 and 5,000)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="seconds of 100 ms ticks per agent count, of busy agents, and at most of bids (10)",
    )
    parser.add_argument(
        "--auction-seconds", type=float, default=10.0, help="seconds of 1 s ticks (10)"
    )
    parser.add_argument(
        "--api-rounds", type=int, default=300, help="timed bid updates per agent count (300)"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run this git revision's benchmark (a temporary worktree) and report ratios",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.auction_seconds <= 0 or args.api_rounds < 1:
        print(
            "maxwell bench daemon: --seconds and --auction-seconds must be > 0, --api-rounds >= 1",
            file=sys.stderr,
        )
        return 2

    def progress(message: str) -> None:
        print(f"maxwell bench daemon: {message}", file=sys.stderr, flush=True)

    options = {
        "seconds": args.seconds,
        "auction_seconds": args.auction_seconds,
        "api_rounds": args.api_rounds,
    }
    try:
        with sigterm_as_interrupt():
            baseline = None
            if args.baseline:
                baseline = run_baseline(
                    args.baseline, quick=args.quick, progress=progress, **options
                )
            counts = QUICK_AGENT_COUNTS if args.quick else AGENT_COUNTS
            report = run_daemon_bench(counts=counts, progress=progress, **options)
    except KeyboardInterrupt:
        print(
            "maxwell bench daemon: interrupted; agents killed and groups removed", file=sys.stderr
        )
        return 130
    if baseline is not None:
        commit, baseline_report = baseline
        report = with_baseline(report, baseline_report, revision=args.baseline, commit=commit)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0
