"""The cluster's Prometheus metrics (issue 12, 5): what a node believes about its gossip cluster,
rendered from one `ClusterView` reading per scrape, after the node's own (`maxwell.node.metrics`)
on the same `/metrics` page. Pure given the view: a fresh registry per call."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from maxwell.gossip.trust import REJECTIONS
from maxwell.gossip.view import ClusterView

CLUSTER_METRIC_NAMES = (
    "maxwell_gossip_rejected_total",
    "maxwell_gossip_distress_events_total",
    "maxwell_cluster_members",
    "maxwell_cluster_node_price_joule_tokens_per_joule",
    "maxwell_cluster_node_headroom_celsius",
    "maxwell_cluster_node_free_cores",
)


class _ClusterCollector(Collector):
    def __init__(self, view: ClusterView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view
        rejected = CounterMetricFamily(
            "maxwell_gossip_rejected", "Records and certificates refused, by reason.",
            labels=["reason"],
        )  # fmt: skip
        counts = view.rejected()
        for reason in REJECTIONS:
            rejected.add_metric([reason], counts.get(reason, 0))
        yield rejected
        yield CounterMetricFamily(
            "maxwell_gossip_distress_events", "maxwell-distress events received, believed or not.",
            value=view.distress_events,
        )  # fmt: skip
        members = view.members().members
        by_status = Counter((m.status, "true" if m.verified else "false") for m in members)
        family = GaugeMetricFamily(
            "maxwell_cluster_members", "Members of the gossip cluster, by Serf status and whether "
            "a fresh signed record verifies them.", labels=["status", "verified"],
        )  # fmt: skip
        for (status, verified), count in sorted(by_status.items()):
            family.add_metric([status, verified], count)
        yield family
        yield from _node_families(view)


def _node_families(view: ClusterView) -> Iterator[Metric]:
    verified = [m for m in view.members().members if m.verified]
    price = GaugeMetricFamily(
        "maxwell_cluster_node_price_joule_tokens_per_joule",
        "Each verified node's spot price, coupled, from its signed record.", labels=["node"],
    )  # fmt: skip
    headroom = GaugeMetricFamily(
        "maxwell_cluster_node_headroom_celsius",
        "Each verified node's headroom to its throttle point.", labels=["node"],
    )  # fmt: skip
    free = GaugeMetricFamily(
        "maxwell_cluster_node_free_cores", "Each verified node's cores no live agent asks for.",
        labels=["node"],
    )  # fmt: skip
    for member in verified:
        price.add_metric([member.node], member.price or 0.0)
        headroom.add_metric([member.node], member.headroom_c or 0.0)
        free.add_metric([member.node], member.free_cores or 0.0)
    yield from (price, headroom, free)


def render_cluster_metrics(view: ClusterView) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ClusterCollector(view))
    return generate_latest(registry)
