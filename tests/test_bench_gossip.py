"""`maxwell bench gossip`: percentiles, latencies from the nodes' reports, the report's shape,
and one quick run through the CLI (in namespaces as root, on loopback otherwise). No timing is
asserted."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from gossip_support import needs_serf
from helpers import last_json, maxwell
from maxwell.bench import gossip
from maxwell.gossip.node_processes import NodeReports

RUN_KEYS = {
    "nodes", "loss", "serf_event_ms", "maxwell_distress_ms", "overhead_ratio", "cpu_per_node",
    "rss_mb_per_node", "bytes_per_node_per_s",
}  # fmt: skip


def test_percentiles_interpolate_between_ranks() -> None:
    assert gossip.percentile([], 50) is None
    assert gossip.percentile([3.0], 99) == 3.0
    assert gossip.percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert gossip.percentile([float(i) for i in range(101)], 99) == pytest.approx(99.0)
    assert gossip.percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_latencies_in_ms_count_what_never_arrived() -> None:
    summary = gossip.latency_ms([0.1, None, 0.3, 0.2])
    assert summary == {"p50": 200.0, "p99": pytest.approx(298.0), "samples": 3, "missed": 1}
    assert gossip.latency_ms([None]) == {"p50": None, "p99": None, "samples": 0, "missed": 1}
    assert gossip.ratio(120.0, 100.0) == 1.2
    assert gossip.ratio(None, 100.0) is None and gossip.ratio(1.0, 0.0) is None


def _records(seen: Sequence[tuple[str, float, float]]) -> list[dict[str, object]]:
    return [{"node": n, "seq": 1, "made_at": m, "seen_at": s} for n, m, s in seen]


def _reports(
    distress: Sequence[tuple[str, float, float]] = (),
    pings: dict[str, float] | None = None,
    sent: dict[str, float] | None = None,
    believed: Sequence[tuple[str, float, float]] = (),
) -> NodeReports:
    return NodeReports(
        distress=_records(distress), believed=_records(believed), pings=pings or {},
        sent=sent or {},
    )  # fmt: skip


def test_a_ping_s_latency_is_each_receipt_minus_its_send() -> None:
    sender = _reports(sent={"p": 100.0})
    others = [_reports(pings={"p": 100.25}), _reports(), _reports(pings={"p": 100.1})]
    latencies = gossip.ping_latencies("p", sender, others)
    assert latencies == [pytest.approx(0.25), None, pytest.approx(0.1)]
    assert gossip.ping_latencies("unsent", sender, others) == [None, None, None]


def test_distress_latency_runs_from_the_episode_s_first_record_to_each_first_verification() -> None:
    hot = _reports(distress=[("h", 50.0, 50.001)])
    # b missed the first record and verified the re-sent one (made at 55): it counts from 50.
    a = _reports(distress=[("h", 40.0, 40.1), ("h", 50.0, 50.2), ("h", 55.0, 55.1)])
    b = _reports(distress=[("h", 55.0, 55.3)])
    c = _reports(distress=[("x", 50.0, 50.1)])
    everyone = [hot, a, b, c]
    latencies = gossip.distress_latencies("h", 45.0, everyone, [a, b, c])
    assert latencies == [pytest.approx(0.2), pytest.approx(5.3), None]
    assert gossip.distress_latencies("h", 60.0, everyone, [a, b]) == [None, None]
    extra = gossip.paired_extra(latencies, [0.15, None, 0.1])
    assert extra == [pytest.approx(0.05)]


def test_a_record_believed_from_the_tags_counts_unless_events_alone_are_asked_for() -> None:
    hot = _reports(distress=[("h", 50.0, 50.001)])
    # a's tags brought the record at 50.1; its event copy came at 50.4, or (b) never.
    a = _reports(distress=[("h", 50.0, 50.4)], believed=[("h", 50.0, 50.1)])
    b = _reports(believed=[("h", 50.0, 50.3)])
    both = gossip.distress_latencies("h", 45.0, [hot, a, b], [a, b])
    events = gossip.distress_latencies("h", 45.0, [hot, a, b], [a, b], events_only=True)
    assert both == [pytest.approx(0.1), pytest.approx(0.3)]
    assert events == [pytest.approx(0.4), None]


def test_refusals_are_counted_between_two_readings_by_reason() -> None:
    before = [{"not-admitted": 3}, {}]
    after = [{"not-admitted": 3, "forged": 1}, {"replayed": 2}]
    assert gossip.rejected_between(before, after) == {"forged": 1, "replayed": 2}
    assert gossip.rejected_between(before, before) == {}


def test_gossip_errors_are_counted_with_what_varies_taken_out() -> None:
    logs = [
        "n-1 ERROR maxwell.gossip.node: gossip: serf agent at 127.0.0.1:4001 refused `tags`: x\n"
        "n-1 WARNING maxwell.gossip.agent: serf n-1: 2026/01/02 03:04:05 [WARN] noise\n",
        "n-2 ERROR maxwell.gossip.node: gossip: serf agent at 127.0.0.1:4002 refused `tags`: x\n"
        "n-2 ERROR maxwell.gossip.node: cannot ask n-1 for its certificate: late\n",
    ]
    assert gossip.gossip_errors(logs, ["n-1", "n-2"]) == {
        "gossip: serf agent at _ refused `tags`: x": 2,
        "cannot ask NODE for its certificate: late": 1,
    }


def test_usage_is_per_node_and_per_second() -> None:
    usage = gossip.Usage(
        wall_s=10.0, cpu_s=[0.5, 1.5], rss_kb=[51200, 40960], sent=[1000, 3000], received=None
    )
    assert usage.report() == {
        "cpu_per_node": 0.1, "rss_mb_per_node": 45.0, "bytes_per_node_per_s": 200.0,
        "bytes_in_per_node_per_s": None, "window_s": 10.0,
    }  # fmt: skip


def test_the_report_has_the_promised_shape_and_says_whether_targets_were_met() -> None:
    spec = gossip.RunSpec(nodes=3, loss_percent=10, repetitions=1)
    usage = gossip.Usage(wall_s=1.0, cpu_s=[0.1] * 3, rss_kb=[1024] * 3, sent=None, received=None)
    entry = gossip.run_entry(
        spec, network="loopback", serf=[0.1, 0.1], maxwell=[0.11, 0.11],
        maxwell_events=[0.11, None], extra_s=[0.01], usage=usage, extra={"forged_accepted": 0},
    )  # fmt: skip
    assert set(entry) >= RUN_KEYS and entry["loss"] == 0.1
    assert entry["overhead_ratio"] == 1.1 and entry["bytes_per_node_per_s"] is None
    assert set(entry["serf_event_ms"]) >= {"p50", "p99"}
    skipped = gossip.skipped_entry(spec, "needs root")
    assert set(skipped) >= RUN_KEYS and skipped["skipped"] == "needs root"
    assert skipped["overhead_ratio"] is None
    report = gossip.build_report([entry, skipped], root=False)
    assert list(report["runs"]) == [entry, skipped] and report["met"] is True
    assert entry["distress_event_ms"]["missed"] == 1
    slow = {**entry, "overhead_ratio": 1.5}
    assert gossip.build_report([slow], root=False)["met"] is False
    lost = {**entry, "maxwell_distress_ms": {**entry["maxwell_distress_ms"], "missed": 1}}
    assert gossip.build_report([lost], root=False)["met"] is False
    failed = gossip.skipped_entry(spec, "not every node verified", why="error")
    assert gossip.build_report([entry, failed], root=False)["met"] is True
    assert gossip.build_report([skipped], root=False)["met"] is None
    assert gossip.QUICK_RUNS[0].nodes == 4
    assert [(r.nodes, r.loss_percent) for r in gossip.FULL_RUNS] == [(10, 0), (30, 0), (10, 10)]


@needs_serf
def test_a_quick_run_through_the_cli_prints_the_promised_json() -> None:
    done = maxwell("bench", "gossip", "--json", "--quick", timeout=180)
    assert done.returncode == 0, done.stderr
    report = last_json(done.stdout)
    [run] = report["runs"]
    assert set(run) >= RUN_KEYS, run
    assert run["nodes"] == 4 and run["loss"] == 0.0
    for latency in ("serf_event_ms", "maxwell_distress_ms"):
        assert run[latency]["samples"] == 6 and run[latency]["missed"] == 0  # 2 x 3 listeners
        assert 0 <= run[latency]["p50"] <= run[latency]["p99"]
    assert run["overhead_ratio"] > 0
    assert run["cpu_per_node"] > 0 and run["rss_mb_per_node"] > 10
    assert run["rejected_honest"] == {}
    assert run["forged_refused"] == 4 and run["forged_accepted"] == 0
    assert run["settled"] is True and isinstance(run["gossip_errors"], dict)
    if os.geteuid() == 0:
        assert run["network"] == "namespaces" and run["bytes_per_node_per_s"] > 0
    else:
        assert run["network"] == "loopback" and run["bytes_per_node_per_s"] is None
        assert "loopback" in run["bytes_skipped"]
    assert report["target"] == {"overhead_ratio_max": 1.2, "forged_accepted": 0, "missed": 0}
