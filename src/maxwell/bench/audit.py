"""`maxwell bench audit`: what an instruction-pointer audit costs the agent and the auditor.

What is measured, on real busy processes this benchmark starts and kills, one at a time so
that they do not compete with each other for the machine's cores:

- `python_loop`: `while True: pass`, one thread.
- `numpy_matmul`: a 384x384 float64 matmul in a loop, the main thread plus OpenBLAS's workers
  (one per core by default).
- `python_threads`: four Python threads spinning (taking turns at the GIL) and a main thread
  waiting on stdin: five threads, mostly contending.

Per workload, after its `CodeManifest.from_process` (timed: a spawn-time cost), `rounds` audits
spaced by `gap` (an auditor idle between audits, as in production, where caches are cold): each
is `sample_threads(pid)` (read the maps, stop each thread, read its pointer and code page,
detach) plus `check` against the manifest.

- `ip_sample`: the pause of each stopped thread (from just before PTRACE_INTERRUPT to just after
  PTRACE_DETACH returns: an upper bound), median and p99 over every sample of every workload,
  and per workload with its module histogram.
- `auditor_cpu`: the auditor's CPU (`time.thread_time_ns`, the auditing thread only) and wall
  time of one whole audit, median per workload; extrapolated to `AUDIT_PROBABILITY` (0.1%) per
  agent per tick with `AGENTS` (1,000) agents at a `TICK_S` (100 ms) tick, as a fraction of the
  CPU the node allocates: the cores this process may run on (2 on the reference machine; the
  report says how many). The headline takes the most expensive workload. Kernel work on the
  tracee's side (being descheduled and woken) is charged to the tracee, not counted here.
  `agent_stall_fraction`: the share of its own time an agent loses to audit pauses at that rate.

- `honest_audits` (`maxwell.bench.honest`): honest families of real processes, each audited
  after every tick under a real daemon: how many audits slash an honest agent (10 x 100 = 1,000
  audits; `--quick`: 2 x 10).
- `erasure_meter` (`maxwell.bench.erasure`): what one sample of the soft-dirty erasure meter
  costs per MB of writable memory (64, 256 and 1,024 MB, a tenth dirty; `--quick`: 64), on
  recorded fake pagemap files where the kernel has no soft-dirty bits.

The pure part (statistics, the report, the table) is at the top; below `# --- the machine ---`
processes are started and clocks read. More sections (a detection experiment) are added by
computing them in `run_audit_bench` and passing them to `build_report`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from maxwell.audit.experiment import cheater_profit, detection_curve, silent_cheater_profit
from maxwell.audit.ipsample import IpSample, check, module_histogram, sample_threads
from maxwell.audit.manifest import CodeManifest
from maxwell.audit.policy import DEFAULT_AUDIT_PROBABILITY
from maxwell.bench._harness import report
from maxwell.bench.erasure import measure_cost
from maxwell.bench.honest import honest_audits
from maxwell.errors import ProcessError
from maxwell.node.config import NodeConfig

AUDIT_PROBABILITY = 0.001  # per agent per tick
AGENTS = 1_000
TICK_S = 0.1
ROUNDS_FULL, ROUNDS_QUICK = 400, 40
GAP_S_FULL, GAP_S_QUICK = 0.01, 0.004
HISTOGRAM_TOP = 4
HONEST_FULL, HONEST_QUICK = (10, 100), (2, 10)  # honest families, audits of each

WORKLOADS: dict[str, str] = {
    "python_loop": "print('ready', flush=True)\nwhile True: pass\n",
    "numpy_matmul": (
        "import numpy as np\n"
        "a = np.random.default_rng(0).random((384, 384))\n"
        "a @ a\n"
        "print('ready', flush=True)\n"
        "while True: a @ a\n"
    ),
    "python_threads": (
        "import sys, threading\n"
        "def spin():\n"
        "    while True: pass\n"
        "for _ in range(4): threading.Thread(target=spin, daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
    ),
}


# --- the pure part ----------------------------------------------------------------------------


@dataclass
class WorkloadRun:
    """What auditing one workload produced: every sample, and each audit's cost."""

    name: str
    threads: int
    manifest_wall_ns: int
    manifest_cpu_ns: int
    manifest_pages: int
    manifest_json_bytes: int
    samples: list[IpSample] = field(default_factory=list)
    audit_wall_ns: list[int] = field(default_factory=list)
    audit_cpu_ns: list[int] = field(default_factory=list)
    audits_failed: int = 0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty sequence (`fraction` in [0, 1])."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return float(ordered[rank - 1])


def _us(nanoseconds: float) -> float:
    return round(nanoseconds / 1e3, 2)


def _median_p99(values: Sequence[float], name: str) -> dict[str, object]:
    return {
        f"{name}_us_median": _us(statistics.median(values)) if values else None,
        f"{name}_us_p99": _us(percentile(values, 0.99)) if values else None,
    }


def _pause_summary(samples: Sequence[IpSample]) -> dict[str, object]:
    return {
        **_median_p99([s.pause_ns for s in samples], "pause"),
        "samples": len(samples),
        "threads": len({(s.pid, s.tid) for s in samples}),
    }


def ip_sample_report(runs: Sequence[WorkloadRun], *, gap_s: float) -> dict[str, object]:
    """Pauses over every sample of every workload, then per workload with its histogram."""
    every = [s for run in runs for s in run.samples]
    by_workload: dict[str, object] = {}
    for run in runs:
        histogram = module_histogram(run.samples)
        by_workload[run.name] = {
            **_pause_summary(run.samples),
            "histogram": {
                module: round(share, 4) for module, share in list(histogram.items())[:HISTOGRAM_TOP]
            },
        }
    return {
        **_pause_summary(every),
        "threads": sum(run.threads for run in runs),
        "gap_ms": gap_s * 1e3,
        "by_workload": by_workload,
    }


def auditor_fraction(audit_cpu_ns: float, cores: int) -> float:
    """The auditor's CPU per second at the production audit rate, over the node's CPU."""
    audits_per_s = AUDIT_PROBABILITY * AGENTS / TICK_S
    return audits_per_s * audit_cpu_ns / 1e9 / cores


def agent_stall_fraction(pause_ns_per_audit: float) -> float:
    """The share of an agent's time spent stopped by audits at probability p per tick."""
    return AUDIT_PROBABILITY / TICK_S * pause_ns_per_audit / 1e9


def auditor_cpu_report(runs: Sequence[WorkloadRun], *, cores: int) -> dict[str, object]:
    by_workload: dict[str, dict[str, object]] = {}
    worst_cpu_ns = 0.0
    for run in runs:
        cpu_ns = statistics.median(run.audit_cpu_ns) if run.audit_cpu_ns else 0.0
        wall_ns = statistics.median(run.audit_wall_ns) if run.audit_wall_ns else 0.0
        rounds = max(1, len(run.audit_cpu_ns))
        pause_per_audit = sum(s.pause_ns for s in run.samples) / rounds
        worst_cpu_ns = max(worst_cpu_ns, cpu_ns)
        by_workload[run.name] = {
            "threads": run.threads,
            "audit_cpu_us_median": _us(cpu_ns),
            "audit_wall_us_median": _us(wall_ns),
            "audits": len(run.audit_cpu_ns),
            "audits_failed": run.audits_failed,
            "fraction_of_node_cpu": auditor_fraction(cpu_ns, cores),
            "agent_stall_fraction": agent_stall_fraction(pause_per_audit),
            "manifest_build_ms": round(run.manifest_wall_ns / 1e6, 2),
            "manifest_build_cpu_ms": round(run.manifest_cpu_ns / 1e6, 2),
            "manifest_pages": run.manifest_pages,
            "manifest_json_bytes": run.manifest_json_bytes,
        }
    return {
        "audit_cpu_us": _us(worst_cpu_ns),
        "fraction_of_node_cpu": auditor_fraction(worst_cpu_ns, cores),
        "audits_per_s": AUDIT_PROBABILITY * AGENTS / TICK_S,
        "audit_probability": AUDIT_PROBABILITY,
        "agents": AGENTS,
        "tick_s": TICK_S,
        "node_cores": cores,
        "node_cores_source": f"the {cores} cores this process may run on (sched_getaffinity)",
        "headline": "the most expensive workload's median audit",
        "by_workload": by_workload,
    }


def build_report(
    sections: Mapping[str, Mapping[str, object]],
    *,
    quick: bool,
    rounds: int,
    gap_s: float,
    load_average: Sequence[float],
) -> dict[str, object]:
    """The JSON report: each measured section under its key, then the setup."""
    return {
        **{name: dict(section) for name, section in sections.items()},
        "setup": {
            "quick": quick,
            "rounds_per_workload": rounds,
            "gap_between_audits_ms": gap_s * 1e3,
            "workloads": sorted(WORKLOADS),
            "pause": "PTRACE_INTERRUPT to PTRACE_DETACH returned, per thread (an upper bound)",
            "audit": "read maps, stop/read/release every thread, hash pages, check",
            "cpu_timer": "time.thread_time_ns of the auditing thread",
            # Other load competes for the cores, and pause tails are scheduling delays: say
            # how busy the machine was when the run started.
            "load_average_1_5_15m": [round(value, 2) for value in load_average],
        },
    }


def render_table(report: Mapping[str, object]) -> object:
    from rich.table import Table

    ip = report["ip_sample"]
    cpu = report["auditor_cpu"]
    assert isinstance(ip, dict) and isinstance(cpu, dict)
    table = Table(title="maxwell bench audit: instruction-pointer samples")
    for column in ("workload", "threads", "pause p50", "pause p99", "audit CPU", "top module"):
        left = column in ("workload", "top module")
        table.add_column(column, justify="left" if left else "right")
    for name, row in ip["by_workload"].items():
        costs = cpu["by_workload"][name]
        module, share = next(iter(row["histogram"].items()), ("-", 0.0))
        table.add_row(
            name,
            str(costs["threads"]),
            f"{row['pause_us_median']:.0f} µs",
            f"{row['pause_us_p99']:.0f} µs",
            f"{costs['audit_cpu_us_median']:.0f} µs",
            f"{share:.0%} {module.split('.so')[0].split('-')[0]}",
        )
    table.caption = (
        f"pause p50 {ip['pause_us_median']} µs, p99 {ip['pause_us_p99']} µs over "
        f"{ip['samples']} samples; auditor at p={cpu['audit_probability']}, "
        f"{cpu['agents']} agents, {cpu['tick_s'] * 1e3:.0f} ms tick: "
        f"{cpu['fraction_of_node_cpu']:.2e} of {cpu['node_cores']} cores"
    )
    return table


# --- the machine ------------------------------------------------------------------------------


@contextmanager
def running(code: str) -> Iterator[subprocess.Popen[str]]:
    """A Python running `code` until it prints "ready"; killed on the way out."""
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            if child.stdout.readline() != "ready\n":
                raise ProcessError(
                    f"benchmark workload did not start: {code.splitlines()[0]!r}", pid=child.pid
                )
            yield child
        finally:
            child.kill()


def audit_workload(name: str, code: str, *, rounds: int, gap_s: float) -> WorkloadRun:
    with running(code) as child:
        time.sleep(gap_s)  # let its threads reach their loops
        wall_0, cpu_0 = time.perf_counter_ns(), time.thread_time_ns()
        manifest = CodeManifest.from_process(child.pid)
        run = WorkloadRun(
            name=name,
            threads=len(os.listdir(f"/proc/{child.pid}/task")),
            manifest_wall_ns=time.perf_counter_ns() - wall_0,
            manifest_cpu_ns=time.thread_time_ns() - cpu_0,
            manifest_pages=manifest.page_count(),
            manifest_json_bytes=len(manifest.to_json()),
        )
        for _ in range(rounds):
            time.sleep(gap_s)
            wall_0, cpu_0 = time.perf_counter_ns(), time.thread_time_ns()
            samples = sample_threads(child.pid)
            verdict = check(samples, manifest)
            run.audit_cpu_ns.append(time.thread_time_ns() - cpu_0)
            run.audit_wall_ns.append(time.perf_counter_ns() - wall_0)
            run.samples.extend(samples)
            run.audits_failed += not verdict.passed
    return run


def node_cores() -> int:
    return len(os.sched_getaffinity(0))


def deterrence_report(*, quick: bool) -> dict[str, Mapping[str, object]]:
    """The experiments of `maxwell.audit.experiment` (seeded, so every run prints the same):
    how soon a persistent cheater is caught against 1 - (1 - p)^N, at the node's default p, and
    a cheater's mean cumulative profit with and without the Becker bond."""
    p = DEFAULT_AUDIT_PROBABILITY
    trials = 400 if quick else 4_000
    checkpoints = [100, 693, 2_000, 4_603]
    curve = detection_curve(p, checkpoints, trials, seed=2026)
    gain = 1_000_000  # µ$J a tick: 1 $J kept by under-reporting
    ticks = [1, 10, 100, 1_000, 4_603, 10_000]
    bonded = cheater_profit(p, gain, ticks, trials, seed=2026)
    unbonded = cheater_profit(p, gain, ticks, trials, seed=2026, bonded=False)
    lease_ticks = round(NodeConfig().report_lease_s / TICK_S)
    silent = silent_cheater_profit(p, gain, lease_ticks, ticks, trials, seed=2026)
    return {
        "detection": {
            "p": p,
            "trials": trials,
            "points": [
                {"ticks": pt.ticks, "measured": pt.measured, "expected": round(pt.expected, 4)}
                for pt in curve
            ],
            "max_abs_error": round(max(abs(pt.measured - pt.expected) for pt in curve), 4),
        },
        "cheater_profit": {
            "p": p,
            "gain_per_tick_j": gain / 1e6,
            "bond_j": bonded.bond / 1e6,
            "ticks": ticks,
            "mean_profit_j": [round(value / 1e6, 3) for value in bonded.mean_profit],
            "without_bond_mean_profit_j": [round(value / 1e6, 3) for value in unbonded.mean_profit],
            "negative_from_tick": next(
                (t for t, v in zip(ticks, bonded.mean_profit, strict=True) if v < 0), None
            ),
        },
        "silent_cheater_profit": {
            "p": p,
            "gain_per_tick_j": gain / 1e6,
            "lease_ticks": lease_ticks,
            "bond_j": silent.bond / 1e6,
            "ticks": ticks,
            "mean_profit_j": [round(value / 1e6, 3) for value in silent.mean_profit],
            "negative_from_tick": next(
                (t for t, v in zip(ticks, silent.mean_profit, strict=True) if v < 0), None
            ),
        },
    }


ERASURE_SIZES_MB = (64, 256, 1024)
ERASURE_DIRTY_SHARE = 0.1


def erasure_meter_report(*, quick: bool) -> dict[str, object]:
    """The erasure meter's cost per sample, by resident size (see the module docstring)."""
    sizes = ERASURE_SIZES_MB[:1] if quick else ERASURE_SIZES_MB
    rows = [measure_cost(size, ERASURE_DIRTY_SHARE, seed=0) for size in sizes]
    return {"rows": rows, "ms_per_mb": rows[-1]["ms_per_mb"]}


def run_audit_bench(*, quick: bool = False) -> dict[str, object]:
    """Run the benchmark (see the module docstring) and return the report."""
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    gap_s = GAP_S_QUICK if quick else GAP_S_FULL
    load_average = os.getloadavg()
    runs = [
        audit_workload(name, code, rounds=rounds, gap_s=gap_s) for name, code in WORKLOADS.items()
    ]
    agents, audit_rounds = HONEST_QUICK if quick else HONEST_FULL
    sections: dict[str, Mapping[str, object]] = {
        "ip_sample": ip_sample_report(runs, gap_s=gap_s),
        "auditor_cpu": auditor_cpu_report(runs, cores=node_cores()),
        **deterrence_report(quick=quick),
        "honest_audits": honest_audits(agents=agents, rounds=audit_rounds),
        "erasure_meter": erasure_meter_report(quick=quick),
    }
    return build_report(
        sections, quick=quick, rounds=rounds, gap_s=gap_s, load_average=load_average
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quick", action="store_true", help=f"{ROUNDS_QUICK} audits per workload: seconds"
    )


def run(args: argparse.Namespace) -> int:
    return report(
        "audit", lambda: run_audit_bench(quick=args.quick), as_json=args.json, table=render_table
    )
