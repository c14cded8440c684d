"""`maxwell bench gossip`: how fast a signed distress record reaches every node, beside Serf's own
user events, and what a node's gossip costs.

Each run starts N real nodes, each a process of its own (`maxwell.gossip.lossy_node`: its own
`serf agent` and a `GossipNode` attached to it, with a synthetic node snapshot), keys signed by
an authority made for the run. As root, every node is in a network namespace of its own on a
bridge (`maxwell.gossip.lossy.LossyNetwork`), so each node's bytes are its veth's counters, and
a run can lose a share of the packets; without root, the nodes share loopback (no byte counts, no
loss run). The runs: N = 10 and N = 30 without loss, and N = 10 with 10 % loss (`--quick`: N = 4
alone, two repetitions).

Once every node verifies every other, the run waits until every agent has gossiped what start-up
queued (Serf's `stats`: its event and query queues empty). At start-up each node introduces
itself with one certificate query, gossiped to the whole cluster, and Serf packs queries into a
gossip packet before any user event: a distress event measured while they drain would wait
behind them (at 30 nodes some 50 to 60 messages, drained in seconds). `converged_s`,
`queued_at_start` and `settled_s` say how it went.
Then each repetition picks another node and

1. turns it hot (2 °C of headroom): its distress record is published at once as a
   `maxwell-distress` event and as its tags; the latency at each other node is when that node
   first believed a distressed record of the episode (whichever way it came: `TimedView`)
   minus when the episode's first record was made (`distress_event_ms`: as an event only);
2. beside it, the same node sends a plain Serf user event, `bench-ping`, as soon as the distress
   event has gone to its agent (a millisecond or so later, so in the same gossip round: the
   gossip's 200 ms rounds, which dominate both latencies, do not count against either); its
   latency at each other node is the receipt's Unix time minus the send's (the namespaces share
   the kernel's clock). `paired_extra_ms` is the distress's latency minus the ping's, node by
   node. The ping carries a few bytes (its id); `--ping-bytes N` pads it to N bytes, so that it
   weighs what a distress record does (about 170 bytes): a gossip packet carries what fits in
   the room that membership updates and queries leave, and a small event fits where a big one
   waits for the next round;
3. cools it and waits until it has published a record out of distress (a spacing after the hot
   one, `publish.spacing_s`), so that no node re-sends distress while the next is measured.

Per run: p50 and p99 over the other nodes and the repetitions of both latencies, in ms (and how
many never arrived: `missed`), and their ratio (`overhead_ratio` = maxwell p50 / serf p50; the
target is at most 1.2); CPU (cores) and RSS (MB) per node, the node's process and its serf
together, from /proc over the repetitions; bytes each node sent per second (its veth's transmit
counter) over the same window. Records refused by reason at start-up (`rejected_at_start`) and
during the repetitions (`rejected_honest`: the target is none). Last, one node sends a distress
record naming another but signed with its own key: every node must refuse it (`forged_refused`),
none may believe it (`forged_accepted`, the target 0). `gossip_errors`: what the nodes' gossip
logged as errors (each ends the node's Serf session for 2 s), commonest first.

The pure part (percentiles, latencies from the reports, the report's shape) is at the top and is
what the tests exercise; everything below `# --- the machine ---` starts processes and reads
clocks. Every node process, serf agent and namespace is removed, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from maxwell.bench._harness import report
from maxwell.errors import MaxwellError, UsageError
from maxwell.gossip.lossy import Loopback, LossyNetwork, NodePlace, lossy_obstacle
from maxwell.gossip.lossy_node import COOL_HEADROOM_C, FORGED_SEQ
from maxwell.gossip.node_processes import (
    KeyFiles,
    NodeProcess,
    NodeReports,
    running_nodes,
    until,
)
from maxwell.gossip.publish import spacing_s

TARGET_OVERHEAD_RATIO: Final = 1.2
MAX_PING_BYTES: Final = 400  # Serf caps an event's name and payload together at 512 bytes
QUEUE_SETTLED: Final = 1  # messages an agent may have waiting when the cluster is quiet
SETTLE_WITHIN_S: Final = 300.0
HOT_NODE_LEFT_DISTRESS_S: Final = 10.0  # beyond the spacing, to see a node's cool record out


@dataclass(frozen=True)
class RunSpec:
    nodes: int
    loss_percent: int
    repetitions: int
    ping_bytes: int = 0  # the ping's payload padded to this many bytes (0: its id alone)


FULL_RUNS: Final = (RunSpec(10, 0, 10), RunSpec(30, 0, 6), RunSpec(10, 10, 10))
QUICK_RUNS: Final = (RunSpec(4, 0, 2),)


# --- the pure part ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`th percentile of `values`, interpolated between ranks (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_ms(latencies_s: Sequence[float | None]) -> dict[str, Any]:
    """p50 and p99 in ms of latencies in seconds (None: never arrived), how many arrived, and
    how many never did."""
    arrived = [latency for latency in latencies_s if latency is not None]

    def ms(q: float) -> float | None:
        value = percentile(arrived, q)
        return None if value is None else round(value * 1000.0, 1)

    missed = len(latencies_s) - len(arrived)
    return {"p50": ms(50), "p99": ms(99), "samples": len(arrived), "missed": missed}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def ping_latencies(
    ping_id: str, sender: NodeReports, others: Sequence[NodeReports]
) -> list[float | None]:
    """Each other node's receipt of ping `ping_id` minus its send (None: it never came)."""
    sent = sender.sent.get(ping_id)
    if sent is None:
        return [None] * len(others)
    arrivals = [other.pings.get(ping_id) for other in others]
    return [None if at is None else max(at - sent, 0.0) for at in arrivals]


def distress_latencies(
    hot: str,
    since: float,
    everyone: Sequence[NodeReports],
    others: Sequence[NodeReports],
    *,
    events_only: bool = False,
) -> list[float | None]:
    """The episode of `hot`'s distress that began after `since` (Unix time): each other node's
    first verification of any of its records (in its tags or as an event; `events_only`: as an
    event) minus when the episode's first record was made (the earliest `made_at` any node saw,
    the hot node's own copy included); None for a node that verified none."""

    def episode(reports: NodeReports, events: bool) -> list[dict[str, Any]]:
        records = reports.distress if events else [*reports.distress, *reports.believed]
        return [d for d in records if d["node"] == hot and d["made_at"] >= since]

    made = [d["made_at"] for reports in everyone for d in episode(reports, False)]
    if not made:
        return [None] * len(others)
    start = min(made)
    firsts = [min((d["seen_at"] for d in episode(r, events_only)), default=None) for r in others]
    return [None if seen is None else max(seen - start, 0.0) for seen in firsts]


def rejected_between(
    before: Sequence[Mapping[str, int]], after: Sequence[Mapping[str, int]]
) -> dict[str, int]:
    """Records the nodes refused between two readings of their counts, by reason."""
    total: dict[str, int] = {}
    for earlier, later in zip(before, after, strict=True):
        for reason, count in later.items():
            total[reason] = total.get(reason, 0) + count - earlier.get(reason, 0)
    return {reason: count for reason, count in sorted(total.items()) if count}


def paired_extra(distress: Sequence[float | None], pings: Sequence[float | None]) -> list[float]:
    """At each node that got both, how much later the distress record came than the ping sent
    beside it."""
    return [d - p for d, p in zip(distress, pings, strict=True) if d is not None and p is not None]


_VARYING = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d|\d+\.\d+\.\d+\.\d+:\d+|\(pid \d+\)")


def gossip_errors(logs: Sequence[str], names: Sequence[str], top: int = 5) -> dict[str, int]:
    """The errors the nodes' gossip logged (`maxwell.gossip.node`), each message with its node,
    addresses and times taken out, and how often, commonest first."""
    counts: dict[str, int] = {}
    for text in logs:
        for line in text.splitlines():
            if " ERROR maxwell.gossip.node: " not in line:
                continue
            message = _VARYING.sub("_", line.split(" ERROR maxwell.gossip.node: ", 1)[1])
            for name in names:
                message = message.replace(name, "NODE")
            counts[message] = counts.get(message, 0) + 1
    commonest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(commonest[:top])


@dataclass(frozen=True)
class Usage:
    """What the nodes used over a window: CPU seconds and RSS kB (each node's process and
    serf), bytes each sent and received (None where not counted)."""

    wall_s: float
    cpu_s: Sequence[float]
    rss_kb: Sequence[int]
    sent: Sequence[int] | None
    received: Sequence[int] | None

    def report(self) -> dict[str, float | None]:
        def per_node_per_s(counts: Sequence[int] | None) -> float | None:
            if counts is None or not counts or self.wall_s <= 0:
                return None
            return round(sum(counts) / len(counts) / self.wall_s, 1)

        nodes = max(len(self.cpu_s), 1)
        return {
            "cpu_per_node": round(sum(self.cpu_s) / nodes / self.wall_s, 4)
            if self.wall_s > 0 else None,
            "rss_mb_per_node": round(sum(self.rss_kb) / nodes / 1024.0, 1),
            "bytes_per_node_per_s": per_node_per_s(self.sent),
            "bytes_in_per_node_per_s": per_node_per_s(self.received),
            "window_s": round(self.wall_s, 1),
        }  # fmt: skip


FIGURES: Final = (
    "serf_event_ms", "maxwell_distress_ms", "overhead_ratio", "cpu_per_node", "rss_mb_per_node",
    "bytes_per_node_per_s",
)  # fmt: skip


def run_entry(
    spec: RunSpec,
    *,
    network: str,
    serf: Sequence[float | None],
    maxwell: Sequence[float | None],
    maxwell_events: Sequence[float | None],
    extra_s: Sequence[float],
    usage: Usage,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """One run's report (see the module)."""
    serf_ms, maxwell_ms = latency_ms(serf), latency_ms(maxwell)
    paired = latency_ms(extra_s)
    return {
        "nodes": spec.nodes,
        "loss": spec.loss_percent / 100.0,
        "network": network,
        "repetitions": spec.repetitions,
        "serf_event_ms": serf_ms,
        "maxwell_distress_ms": maxwell_ms,
        "overhead_ratio": ratio(maxwell_ms["p50"], serf_ms["p50"]),
        "paired_extra_ms": {"p50": paired["p50"], "p99": paired["p99"]},
        "distress_event_ms": latency_ms(maxwell_events),
        **usage.report(),
        **extra,
    }


def skipped_entry(spec: RunSpec, reason: str, *, why: str = "skipped") -> dict[str, Any]:
    """A run that could not be made here (`why` "skipped") or failed ("error"): its figures
    null, and why."""
    return {
        "nodes": spec.nodes, "loss": spec.loss_percent / 100.0, why: reason,
        **dict.fromkeys(FIGURES),
    }  # fmt: skip


def build_report(runs: Sequence[Mapping[str, Any]], *, root: bool) -> dict[str, Any]:
    """Every run's entry, and whether the targets were met by the runs that ran."""
    measured = [run for run in runs if "skipped" not in run and "error" not in run]

    def met_by(run: Mapping[str, Any]) -> bool:
        overhead = run["overhead_ratio"]
        reached = run["maxwell_distress_ms"]["missed"] == 0
        fast = overhead is not None and overhead <= TARGET_OVERHEAD_RATIO
        return reached and fast and run.get("forged_accepted") == 0

    met = all(map(met_by, measured)) if measured else None
    return {
        "runs": list(runs),
        "target": {"overhead_ratio_max": TARGET_OVERHEAD_RATIO, "forged_accepted": 0, "missed": 0},
        "met": met,
        "host": {"cpus": os.cpu_count(), "root": root},
    }


# --- the machine ------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rpartition(")")[2].split()


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = _proc_stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int | None) -> int:
    """The resident set of process `pid`, kB (0 once it is gone)."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


class _Window:
    """CPU and bytes of every node from its start to `end`."""

    def __init__(self, nodes: Sequence[NodeProcess], place: NodePlace) -> None:
        self._nodes, self._place = nodes, place
        self._pids = [(node.pid, node.snapshot().serf_pid) for node in nodes]
        self._started = time.monotonic()
        self._cpu = self._cpu_now()
        self._bytes = self._bytes_now()

    def _cpu_now(self) -> list[float]:
        return [cpu_s(pid) + cpu_s(serf) for pid, serf in self._pids]

    def _bytes_now(self) -> list[tuple[int, int]] | None:
        if not self._place.counts_bytes:
            return None
        counts = [self._place.link_bytes(i) for i in range(len(self._nodes))]
        return [count for count in counts if count is not None]

    def end(self) -> Usage:
        wall = time.monotonic() - self._started
        cpu = [after - before for after, before in zip(self._cpu_now(), self._cpu, strict=True)]
        rss = [rss_kb(pid) + rss_kb(serf) for pid, serf in self._pids]
        now, then = self._bytes_now(), self._bytes
        if now is None or then is None:
            return Usage(wall, cpu, rss, None, None)
        received = [a[0] - b[0] for a, b in zip(now, then, strict=True)]
        sent = [a[1] - b[1] for a, b in zip(now, then, strict=True)]
        return Usage(wall, cpu, rss, sent, received)


@dataclass
class _Tally:
    pings: list[float | None] = field(default_factory=list)
    distress: list[float | None] = field(default_factory=list)  # by tags or event
    events: list[float | None] = field(default_factory=list)  # as events only
    extra: list[float] = field(default_factory=list)


class _Run:
    """One run's nodes, driven through the repetitions (see the module)."""

    def __init__(self, spec: RunSpec, nodes: list[NodeProcess], say: Callable[[str], None]) -> None:
        self.spec, self.nodes, self.say = spec, nodes, say
        self.wait_s = 10.0 + spec.nodes  # for a ping or a distress to reach every node
        self.tally = _Tally()

    def reports(self) -> list[NodeReports]:
        return [node.snapshot() for node in self.nodes]

    def converge(self) -> float:
        """Seconds until every node verifies every node; a `MaxwellError` past the deadline."""
        started, within = time.monotonic(), 60.0 + 4.0 * self.spec.nodes
        total = self.spec.nodes
        if not until(lambda: all(r.verified() == total for r in self.reports()), within, 0.2):
            counts = sorted(r.verified() for r in self.reports())
            raise MaxwellError(f"not every node verified all {total} within {within:g} s: {counts}")
        return time.monotonic() - started

    def queue_depths(self) -> list[int]:
        """Each agent's messages waiting to be gossiped, events and queries."""
        asked = time.time()
        for node in self.nodes:
            node.send("queues")
        until(lambda: all(r.queues.get("at", 0.0) >= asked for r in self.reports()), 10.0)
        return [r.queues.get("events", 0) + r.queues.get("queries", 0) for r in self.reports()]

    def settle(self) -> dict[str, Any]:
        """Wait until every agent has gossiped what start-up queued (chiefly the certificate
        queries, which Serf sends before any event); how long that took and how deep it was."""
        started, deepest = time.monotonic(), max(self.queue_depths())
        while (depth := max(self.queue_depths())) > QUEUE_SETTLED:
            if time.monotonic() - started > SETTLE_WITHIN_S:
                self.say(f"queues still {depth} deep after {SETTLE_WITHIN_S:g} s: measuring")
                break
            time.sleep(2.0)
        return {
            "queued_at_start": deepest, "settled_s": round(time.monotonic() - started, 1),
            "settled": depth <= QUEUE_SETTLED,
        }  # fmt: skip

    def repetition(self, r: int) -> None:
        """Node r turns hot, a ping beside its distress; then it cools (see the module)."""
        k = r % self.spec.nodes
        hot, ping_id = self.nodes[k], f"ping-{r}"
        others = [i for i in range(self.spec.nodes) if i != k]
        since = time.time()
        hot.send("hot", ping=ping_id, pad=max(self.spec.ping_bytes - len(ping_id), 0))

        def arrived(reports: list[NodeReports]) -> bool:
            return ping_id in reports[k].sent and all(
                ping_id in reports[i].pings
                and any(
                    d["node"] == hot.name and d["made_at"] >= since
                    for d in [*reports[i].distress, *reports[i].believed]
                )
                for i in others
            )

        until(lambda: arrived(self.reports()), self.wait_s)
        reports = self.reports()
        listeners = [reports[i] for i in others]
        pings = ping_latencies(ping_id, reports[k], listeners)
        distress = distress_latencies(hot.name, since, reports, listeners)
        self.tally.events += distress_latencies(
            hot.name, since, reports, listeners, events_only=True
        )
        self.tally.pings += pings
        self.tally.distress += distress
        self.tally.extra += paired_extra(distress, pings)
        hot.send("cool")
        cooled_within = spacing_s(self.spec.nodes) * 1.1 + HOT_NODE_LEFT_DISTRESS_S
        if not until(lambda: hot.snapshot().state.get("headroom_c") == COOL_HEADROOM_C,
                     cooled_within):  # fmt: skip
            self.say(f"{hot.name} did not publish its cool record within {cooled_within:.0f} s")

    def forgery(self) -> dict[str, int]:
        """One forged distress record; how many nodes refused it and how many believed it."""
        victim = self.nodes[1 % self.spec.nodes].name
        self.nodes[0].send("forge", node=victim)

        def refused(reports: NodeReports) -> bool:
            return int(reports.state.get("rejected", {}).get("forged", 0)) >= 1

        until(lambda: all(refused(r) for r in self.reports()), self.wait_s)
        reports = self.reports()
        believed = [
            r for r in reports
            if any(d["node"] == victim and d["seq"] == FORGED_SEQ
                   for d in [*r.distress, *r.believed])
        ]  # fmt: skip
        return {
            "forged_sent": 1,
            "forged_refused": sum(refused(r) for r in reports),
            "forged_accepted": len(believed),
        }


def _measured(run: _Run, place: NodePlace) -> dict[str, Any]:
    """The run's entry once its nodes are ready: converge, settle, repeat, forge."""
    spec, say = run.spec, run.say
    say(f"{spec.nodes} nodes ready, {spec.loss_percent} % loss; waiting for verification")
    converged = run.converge()
    say(f"every node verifies all {spec.nodes} after {converged:.0f} s; settling")
    settled = run.settle()
    before = [dict(r.state.get("rejected", {})) for r in run.reports()]
    window = _Window(run.nodes, place)
    for r in range(spec.repetitions):
        run.repetition(r)
        say(f"repetition {r + 1} of {spec.repetitions} done")
    usage = window.end()
    after = [dict(r.state.get("rejected", {})) for r in run.reports()]
    extra: dict[str, Any] = {
        "ping_payload_bytes": max(spec.ping_bytes, len("ping-0")),
        "converged_s": round(converged, 1), **settled,
        "rejected_at_start": rejected_between([{}] * len(before), before),
        "rejected_honest": rejected_between(before, after), **run.forgery(),
    }  # fmt: skip
    if not place.counts_bytes:
        extra["bytes_skipped"] = f"loopback, no link of a node's own to count: {lossy_obstacle()}"
    tally = run.tally
    return run_entry(
        spec, network="namespaces" if place.counts_bytes else "loopback",
        serf=tally.pings, maxwell=tally.distress, maxwell_events=tally.events,
        extra_s=tally.extra, usage=usage, extra=extra,
    )  # fmt: skip


def measure(spec: RunSpec, scratch: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """One run (see the module) and its entry; a run that fails half-way is an entry with its
    `error`. Either says what the nodes' gossip logged as errors (`gossip_errors`)."""
    names = [f"mxb{os.getpid()}-{spec.nodes}-{spec.loss_percent}-{i}" for i in range(spec.nodes)]
    keys = KeyFiles.write(scratch, names)
    place: LossyNetwork | Loopback = (
        LossyNetwork(spec.nodes, spec.loss_percent)
        if lossy_obstacle() is None
        else Loopback(spec.nodes)
    )
    with place, running_nodes(place, keys, names) as nodes:
        try:
            entry = _measured(_Run(spec, nodes, say), place)
        except MaxwellError as exc:
            say(f"run of {spec.nodes} nodes failed: {exc}")
            entry = skipped_entry(spec, str(exc), why="error")
        logs = [node.log_path.read_text(errors="replace") for node in nodes]
    return {**entry, "gossip_errors": gossip_errors(logs, names)}


def run_gossip_bench(
    *, quick: bool = False, ping_bytes: int = 0, say: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every run (see the module) and the report."""
    say = say or (lambda line: print(f"bench gossip: {line}", file=sys.stderr, flush=True))
    obstacle = lossy_obstacle()
    runs: list[dict[str, Any]] = []
    for plain in QUICK_RUNS if quick else FULL_RUNS:
        spec = replace(plain, ping_bytes=ping_bytes)
        if spec.loss_percent > 0 and obstacle is not None:
            runs.append(skipped_entry(spec, obstacle))
            continue
        with tempfile.TemporaryDirectory(prefix="maxwell-bench-gossip-") as scratch:
            try:
                runs.append(measure(spec, Path(scratch), say))
            except MaxwellError as exc:  # the nodes did not start
                say(f"run of {spec.nodes} nodes failed: {exc}")
                runs.append(skipped_entry(spec, str(exc), why="error"))
    return build_report(runs, root=os.geteuid() == 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick", action="store_true", help="4 nodes, 2 repetitions (default: 10, 30, 10 lossy)"
    )
    parser.add_argument(
        "--ping-bytes",
        type=int,
        default=0,
        metavar="N",
        help="pad the Serf yardstick event's payload to N bytes (a distress record is about 170;"
        " default: its id alone, a few bytes)",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.ping_bytes <= MAX_PING_BYTES:
        raise UsageError(f"--ping-bytes must be 0 to {MAX_PING_BYTES}, not {args.ping_bytes}")
    return report(
        "gossip",
        lambda: run_gossip_bench(quick=args.quick, ping_bytes=args.ping_bytes),
        as_json=args.json,
    )
