"""`maxwell bench cluster [--json] [--quick]`: placement by price against Ray's own scheduler.

Three Maxwell nodes on this machine (`maxwell.cluster.local`: gossiping daemons and a Ray node
each, one CPU each), the last one hot (its modelled die 1 °C under critical: in distress, dearer
than the rest). Then, in the same run:

- **maxwell**: `jobs` short jobs (a busy loop of `busy_s` seconds, `python3 -c`) submitted at
  once through `maxwell.cluster.jobs.submit`, each placed by the placement rule and run as an
  agent on money sent from the first node;
- **ray_default**: the same busy loops as plain Ray tasks (`num_cpus=1`), placed by Ray's own
  scheduler, without Maxwell.

Per side: the hot node's share of the jobs (`hot_node_share`), what placing a job took
(`placement_ms` p50/p99: for Maxwell from the call to `submit` to the job's hand-off to its
node, `JobHandle.placement_s`: the gossip view, the placement rule, the probe of a node other
than home and the funds' transfer; for Ray, its `.remote`), the whole call (`submit_ms`: for a
job placed at home it includes the agent's spawn, which a job placed elsewhere has in its task
and Ray's tasks in their worker), jobs finished per second over the wall time from the
first submission to the last result, the peak temperature any node reported meanwhile
(`peak_c`, modelled: these nodes share one machine and have no sensors), and the energy each
job was billed (`energy_j_per_job`; None for Ray's tasks, which no meter attributes). Last,
`money_conserved`: every ledger sound and every pair of nodes reconciled
(`maxwell cluster ledger verify`). Targets (issue 13): the hot node takes at most 10 % of
Maxwell's jobs (about a third under Ray's default), placement adds at most 50 ms p50.
`--quick`: 12 jobs of 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maxwell.bench._harness import report

BUSY = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="12 jobs of 0.3 s (default: 60 of 1)")


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


class PeakWatch:
    """The highest temperature any node reports while it runs (a thread polling `/price`)."""

    def __init__(self, clients: Sequence[Any]) -> None:
        self._clients, self.peak_c = clients, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="peak-watch", daemon=True)

    def __enter__(self) -> PeakWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for client in self._clients:
                try:
                    self.peak_c = max(self.peak_c, client.price().temperature_c)
                except Exception:  # a missed sample is no result
                    continue


Started = tuple[Callable[[], Any], float | None]  # a way to wait for a job; its placement, ms


def _side(
    jobs: int, hot: str, clients: Sequence[Any], start: Callable[[], Started]
) -> dict[str, Any]:
    """Start `jobs` jobs with `start` (each gives a way to wait for the job, which answers the
    node it ran on and its outcome, and what placing it took, if not the whole call), then
    wait for them all."""
    waits: list[Callable[[], Any]] = []
    calls: list[float] = []
    placements: list[float] = []
    with PeakWatch(clients) as watch:
        began = time.monotonic()
        for _ in range(jobs):
            t = time.perf_counter()
            wait, placed_ms = start()
            calls.append((time.perf_counter() - t) * 1000)
            placements.append(calls[-1] if placed_ms is None else placed_ms)
            waits.append(wait)
        ended = [wait() for wait in waits]
        wall = time.monotonic() - began
    energies = [e for e in (getattr(o, "energy_j", None) for _, o in ended) if e is not None]
    return {
        "hot_node_share": round(sum(node == hot for node, _ in ended) / jobs, 3),
        "placement_ms": {"p50": _p(placements, 0.5), "p99": _p(placements, 0.99)},
        "submit_ms": {"p50": _p(calls, 0.5), "p99": _p(calls, 0.99)},
        "jobs_per_s": round(jobs / wall, 2),
        "peak_c": round(watch.peak_c, 1),
        "energy_j_per_job": round(statistics.mean(energies), 3) if energies else None,
    }


def run_cluster_bench(quick: bool) -> dict[str, Any]:
    import ray

    from maxwell.cli.cluster_ledger_cmd import verify
    from maxwell.cluster.jobs import JobSpec, submit
    from maxwell.cluster.local import LocalCluster

    jobs, busy_s = (12, 0.3) if quick else (60, 1.0)
    with tempfile.TemporaryDirectory(prefix="mx-bench-", dir="/tmp") as base:
        os.chmod(base, 0o711)  # the agents run as uids of their own under a root daemon
        with LocalCluster(Path(base)) as cluster:
            assert cluster.hot is not None
            clients = [cluster.client(name) for name in cluster.names]
            watched = [cluster.client(name) for name in cluster.names]  # a client per thread
            _wait_settled(clients[0], cluster.names, cluster.hot)
            spec = JobSpec(("/usr/bin/python3", "-c", BUSY.format(s=busy_s)), 1.0 + busy_s * 20,
                           2.0, 1.0)  # fmt: skip

            def maxwell_job() -> Started:
                handle = submit(spec, home=clients[0])
                wait = lambda: (handle.node, handle.result(timeout_s=600))  # noqa: E731
                return wait, handle.placement_s * 1000

            busy = ray.remote(num_cpus=1)(_busy_here)
            names = {nid: name for name, nid in _ray_ids().items()}

            def ray_job() -> Started:
                ref = busy.remote(busy_s)  # where Ray's scheduler puts it, told at the end
                return lambda: (names.get(ray.get(ref, timeout=600), "?"), None), None

            mine = _side(jobs, cluster.hot, watched, maxwell_job)
            theirs = _side(jobs, cluster.hot, watched, ray_job)
            verdict = verify([str(cluster.state(name)) for name in cluster.names])
            for client in clients + watched:
                client.close()
    return {"jobs": jobs, "busy_s": busy_s, "maxwell": mine, "ray_default": theirs,
            "money_conserved": verdict.ok}  # fmt: skip


def _busy_here(seconds: float) -> str:
    import ray

    t = time.time()
    while time.time() - t < seconds:
        pass
    return str(ray.get_runtime_context().get_node_id())


def _ray_ids() -> dict[str, str]:
    import ray

    from maxwell.cluster.jobs import ray_nodes

    return ray_nodes(ray.nodes())  # type: ignore[no-untyped-call]


def _wait_settled(home: Any, names: Sequence[str], hot: str, within_s: float = 90.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        rows = {m.node: m for m in home.cluster_members().members}
        prices = home.cluster_prices().nodes
        if all(n in rows and rows[n].verified for n in names) and prices and prices[-1].node == hot:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the nodes did not all verify each other within {within_s:g} s")


def run(args: argparse.Namespace) -> int:
    return report("cluster", lambda: run_cluster_bench(args.quick), as_json=args.json)
