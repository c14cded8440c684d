"""`maxwell bench daemon`: the node daemon's own cost, with many idle agents in real cgroups.

What is measured (issue 4, "Measured, in a benchmark"):

- The daemon's own CPU per second of wall time and its tick duration (median, p99) at a 100 ms
  tick, with 100 and 1,000 agents (`sleep 3600`, spawned through `NodeDaemon.spawn` into real
  groups, funded generously, bidding above the reserve for an equal share of the capacity, so
  every one of them is metered, billed, cleared and enforced each tick). The tick loop runs in
  this process, paced like `run_forever`; the agents are other processes, so this process's CPU
  (`getrusage`, every thread) over the phase is the daemon's.
- The auctioneer's share: the CPU of the clearing step of each real tick
  (`maxwell.node.tick.clear_market`, wrapped with `time.thread_time`) over the CPU the market
  allocates in a tick (capacity cores x tick length), at the largest agent count, with a 1 s tick
  (target <= 0.1%) and with a 100 ms one. The whole pure plan (`plan_tick`: bills, apoptosis,
  clearing, enforcement plan) is reported beside it.
- API latency of a bid update: an agent's `maxwell.client.Client.bid` round trips over the real
  API (`maxwell.node.api.serve`) on a temporary Unix socket while the tick loop runs in a thread.

The pure part (percentiles, turning timings into the report) is at the top and is what the tests
exercise; everything below `# --- the machine ---` spawns processes and reads clocks. The agents
are always killed and their groups removed (`NodeDaemon.shutdown(kill_agents=True)`), also on
Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from maxwell.bench._harness import process_cpu_s, sigterm_as_interrupt

TARGET_AUCTIONEER_FRACTION_AT_1S = 0.001
AGENT_COUNTS = (100, 1000)
QUICK_AGENT_COUNTS = (100,)
TICK_S = 0.1
AUCTION_TICK_S = 1.0
IDLE_ARGV = ("sleep", "3600")
FUND_UJ = 10**15  # µ$J: a billion $J, so no agent ever runs short during a run
BID = 100.0  # $J per J: far above the reserve (the spot price, 1 $J/J from the constant grid)

_T = TypeVar("_T")


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
        }


def auctioneer_fraction(
    clearing_cpu_s: float | None, capacity_cores: float, tick_s: float
) -> float | None:
    """The clearing's CPU per tick over the CPU the market allocates per tick."""
    if clearing_cpu_s is None or capacity_cores <= 0 or tick_s <= 0:
        return None
    return clearing_cpu_s / (capacity_cores * tick_s)


def _rounded(value: float | None, digits: int = 8) -> float | None:
    return None if value is None else round(value, digits)


def build_report(
    phases: Sequence[TickPhase],
    *,
    auction: TickPhase | None,
    capacity_cores: float,
    api_bid_s: Sequence[float],
    host: Mapping[str, object],
) -> dict[str, Any]:
    """The benchmark's JSON: per agent count, the auctioneer's share, the API's latency.

    The auctioneer's share uses the median clearing CPU of the `auction` phase (the largest agent
    count, 1 s tick) over capacity x 1 s and capacity x 100 ms: the clearing's cost does not
    depend on the tick's length, only what it is divided by does.
    """
    clearing = percentile(auction.clearing_cpu_s, 50) if auction is not None else None
    plan = percentile(auction.plan_cpu_s, 50) if auction is not None else None
    fraction_1s = auctioneer_fraction(clearing, capacity_cores, 1.0)
    fraction_100ms = auctioneer_fraction(clearing, capacity_cores, 0.1)
    return {
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
        "target": {
            "auctioneer_fraction_1s_max": TARGET_AUCTIONEER_FRACTION_AT_1S,
            "agents": max((phase.agents for phase in phases), default=0),
            "met": None if fraction_1s is None else fraction_1s <= TARGET_AUCTIONEER_FRACTION_AT_1S,
        },
        "host": dict(host),
    }


def _scaled(value: float | None) -> float | None:
    return None if value is None else value * 1e6


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


def _tick_phase(daemon: Any, agents: int, tick_s: float, seconds: float) -> TickPhase:
    """Tick like `run_forever` for `seconds`, timing each tick and its pure steps."""
    from maxwell.node import tick as ticks

    daemon.config = dataclasses.replace(daemon.config, tick_s=tick_s)
    phase = TickPhase(agents=agents, tick_s=tick_s)
    with _StepTimer(ticks, "clear_market") as clearing, _StepTimer(ticks, "plan_tick") as plan:
        wall0, cpu0 = time.monotonic(), process_cpu_s()
        deadline = wall0 + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            daemon.tick_once()
            elapsed = time.monotonic() - started
            phase.tick_s_each.append(elapsed)
            time.sleep(max(tick_s - elapsed, 0.0))
        phase.wall_s = time.monotonic() - wall0
        phase.process_cpu_s = process_cpu_s() - cpu0
    phase.clearing_cpu_s = list(clearing.samples)
    phase.plan_cpu_s = list(plan.samples)
    return phase


def _spawn_agents(daemon: Any, count: int, capacity_cores: float) -> list[tuple[str, str]]:
    """`count` idle agents, each asking an equal share of the capacity: (agent id, token)."""
    from maxwell.units import Money

    demand = capacity_cores / count
    spawned = []
    for index in range(count):
        result = daemon.spawn(
            list(IDLE_ARGV), fund=Money(FUND_UJ), bid=BID, demand=demand, name=f"idle-{index}"
        )
        spawned.append((result.agent, result.token))
    return spawned


def _api_latency(daemon: Any, state_dir: Path, agent: str, token: str, rounds: int) -> list[float]:
    """Time an agent's bid updates over the Unix socket while the tick loop runs."""
    from maxwell.client import Client
    from maxwell.node.api import create_app, serve

    socket_path = str(state_dir / "api.sock")
    server = serve(create_app(daemon), socket_path=socket_path, listen=None)
    stop = threading.Event()
    ticker = threading.Thread(target=daemon.run_forever, args=(stop,), daemon=True)
    ticker.start()
    latencies: list[float] = []
    try:
        with Client(socket=socket_path, token=token) as client:
            client.my_id()  # the connection and the identity, outside the timed calls
            for round_ in range(rounds):
                started = time.perf_counter()
                client.bid(BID + (round_ % 10) / 10)
                latencies.append(time.perf_counter() - started)
    finally:
        stop.set()
        ticker.join(timeout=30)
        server.stop()
    return latencies


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
    }


def _with_daemon(state_dir: Path, use: Callable[[Any], _T]) -> _T:
    from maxwell.node.config import NodeConfig
    from maxwell.node.daemon import NodeDaemon

    daemon = NodeDaemon(NodeConfig(state_dir=state_dir, tick_s=TICK_S, grace_s=3600.0))
    try:
        if daemon.degraded:
            from maxwell.errors import CgroupUnavailableError

            raise CgroupUnavailableError(f"the benchmark needs real cgroups: {daemon.degraded}")
        return use(daemon)
    finally:
        daemon.shutdown(kill_agents=True)


def run_daemon_bench(
    *,
    counts: Sequence[int] = AGENT_COUNTS,
    seconds: float = 10.0,
    auction_seconds: float = 10.0,
    api_rounds: int = 300,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run every phase (see the module comment) and build the report."""
    phases: list[TickPhase] = []
    auction: TickPhase | None = None
    api_bid_s: list[float] = []
    host: dict[str, object] = {}
    capacity = 0.0
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="maxwell-bench-") as tmp:
        for count in counts:
            state_dir = Path(tmp) / f"state-{count}"

            def measure(daemon: Any, count: int = count, state_dir: Path = state_dir) -> None:
                nonlocal auction, host, capacity
                capacity = daemon.capacity_cores
                progress(f"spawning {count} agents")
                started = time.monotonic()
                spawned = _spawn_agents(daemon, count, capacity)
                progress(f"spawned in {time.monotonic() - started:.1f} s; ticking")
                daemon.tick_once()  # the first tick takes the counters' baselines
                phases.append(_tick_phase(daemon, count, TICK_S, seconds))
                if count == max(counts):
                    progress(f"auction phase: {count} agents at a {AUCTION_TICK_S:g} s tick")
                    auction = _tick_phase(daemon, count, AUCTION_TICK_S, auction_seconds)
                    daemon.config = dataclasses.replace(daemon.config, tick_s=TICK_S)
                if count == min(counts):
                    progress("API latency")
                    agent, token = spawned[0]
                    api_bid_s.extend(_api_latency(daemon, state_dir, agent, token, api_rounds))
                if not host:
                    host = _host(daemon)
                progress("killing the agents")

            _with_daemon(state_dir, measure)
    return build_report(
        phases, auction=auction, capacity_cores=capacity, api_bid_s=api_bid_s, host=host
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="100 agents only (default: 100 and 1,000)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of 100 ms ticks per agent count (10)"
    )
    parser.add_argument(
        "--auction-seconds", type=float, default=10.0, help="seconds of 1 s ticks (10)"
    )
    parser.add_argument("--api-rounds", type=int, default=300, help="timed bid updates (300)")
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

    try:
        report = run_daemon_bench(
            counts=QUICK_AGENT_COUNTS if args.quick else AGENT_COUNTS,
            seconds=args.seconds,
            auction_seconds=args.auction_seconds,
            api_rounds=args.api_rounds,
            progress=progress,
        )
    except KeyboardInterrupt:
        print(
            "maxwell bench daemon: interrupted; agents killed and groups removed", file=sys.stderr
        )
        return 130
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0
