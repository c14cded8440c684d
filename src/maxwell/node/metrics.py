"""The node's Prometheus metrics: one `NodeStatus` snapshot rendered as text exposition format.

Rules: rendering is a pure function of the snapshot (a fresh `CollectorRegistry` per call, no
module-level state, no clock), so `/metrics` shows exactly what the last tick published and two
scrapes of the same snapshot are byte-identical. Names follow the Prometheus conventions: base
units as suffixes, `_total` only on counters, a HELP line on every family.

Units. Energy in `joules`, power in `watts`, temperature in `celsius`, time in `seconds`, CPU
in `cores`. Money is the $JOULE token, whose unit suffix is `joule_tokens` (1 $J, shown as a
float; the ledger's integer µ$J are converted here) so it cannot be read as energy; a price is
`joule_tokens_per_joule` ($J paid for 1 J consumed).

Every agent the snapshot lists is exported, dead and exited ones included, so their counters
stay readable until the daemon forgets them; `maxwell_agent_state` says which are still alive.

Tick health comes from the snapshot's `TickStats` when the node keeps them: failed ticks, the
ledger's rows, and `maxwell_tick_duration_seconds` as a histogram of committed ticks' durations.
A node without them still exports that name as it always did, a gauge of the last tick's
duration; `maxwell_last_tick_duration_seconds` is that gauge under a name that never changes type.
`maxwell_events_total{kind}` counts the journal's events (apoptosis, audited, slashed, ...) since
the daemon started, from the snapshot's `event_counts` when the node keeps them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from maxwell.node.facade import AgentInfo, AgentState, NodeStatus, PriceInfo
from maxwell.node.tickstats import TickStats
from maxwell.units import money_to_tokens, uj_to_joules

__all__ = ["CONTENT_TYPE", "METRIC_NAMES", "render_metrics"]

# The Content-Type `/metrics` answers with: the text format `generate_latest` writes. (The
# library's CONTENT_TYPE_LATEST now says version 1.0.0, which Prometheus before 3.0 does not know.)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

_AGENT_LABELS = ("agent", "name")

# Every family this module exports, as it appears on `# TYPE` lines (counters with `_total`).
METRIC_NAMES = (
    "maxwell_agent_energy_joules_total",
    "maxwell_agent_paid_joule_tokens_total",
    "maxwell_agent_landauer_joule_tokens_total",
    "maxwell_agent_balance_joule_tokens",
    "maxwell_agent_bid_joule_tokens_per_joule",
    "maxwell_agent_demand_cores",
    "maxwell_agent_share_cores",
    "maxwell_agent_power_watts",
    "maxwell_agent_state",
    "maxwell_agents",
    "maxwell_spot_price_joule_tokens_per_joule",
    "maxwell_grid_price_joule_tokens_per_joule",
    "maxwell_thermal_factor",
    "maxwell_price_coupling",
    "maxwell_node_power_watts",
    "maxwell_temperature_celsius",
    "maxwell_headroom_celsius",
    "maxwell_energy_measured",
    "maxwell_capacity_cores",
    "maxwell_node_cores",  # when the snapshot knows them
    "maxwell_tick_duration_seconds",  # a histogram with tick stats, else a gauge (the last tick)
    "maxwell_last_tick_duration_seconds",
    "maxwell_tick_interval_seconds",
    "maxwell_ticks_total",
    "maxwell_tick_failures_total",  # with tick stats
    "maxwell_ledger_rows_total",  # with tick stats
    "maxwell_events_total",  # with event counts
    "maxwell_node_info",
)


def _agent_counter(name: str, documentation: str) -> CounterMetricFamily:
    # prometheus_client appends `_total` to a counter's samples itself.
    return CounterMetricFamily(name, documentation, labels=_AGENT_LABELS)


def _agent_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=_AGENT_LABELS)


def _agent_families(agents: list[AgentInfo]) -> Iterator[Metric]:
    energy = _agent_counter(
        "maxwell_agent_energy_joules", "Energy attributed to the agent since it was spawned."
    )
    paid = _agent_counter(
        "maxwell_agent_paid_joule_tokens",
        "Energy bills the agent has paid to the grid, in $JOULE.",
    )
    landauer = _agent_counter(
        "maxwell_agent_landauer_joule_tokens",
        "Landauer tax the agent has paid for erased memory, in $JOULE.",
    )
    balance = _agent_gauge(
        "maxwell_agent_balance_joule_tokens", "The agent's account balance, in $JOULE."
    )
    bid = _agent_gauge(
        "maxwell_agent_bid_joule_tokens_per_joule",
        "The agent's limit price, in $JOULE per joule.",
    )
    demand = _agent_gauge("maxwell_agent_demand_cores", "CPU cores the agent asks for.")
    share = _agent_gauge(
        "maxwell_agent_share_cores", "CPU cores granted to the agent by the last clearing."
    )
    power = _agent_gauge(
        "maxwell_agent_power_watts", "Power attributed to the agent over the last tick."
    )
    state = GaugeMetricFamily(
        "maxwell_agent_state",
        "The agent's state: 1 for the current one, 0 for the others.",
        labels=(*_AGENT_LABELS, "state"),
    )
    for agent in agents:
        labels = [agent.id, agent.name]
        energy.add_metric(labels, uj_to_joules(agent.energy_uj))
        paid.add_metric(labels, money_to_tokens(agent.paid))
        landauer.add_metric(labels, money_to_tokens(agent.landauer))
        balance.add_metric(labels, money_to_tokens(agent.balance))
        bid.add_metric(labels, agent.bid)
        demand.add_metric(labels, agent.demand)
        share.add_metric(labels, agent.share)
        power.add_metric(labels, agent.power_w)
        for candidate in AgentState:
            state.add_metric([*labels, str(candidate)], 1.0 if candidate is agent.state else 0.0)
    yield from (energy, paid, landauer, balance, bid, demand, share, power, state)

    by_state = Counter(agent.state for agent in agents)
    count = GaugeMetricFamily(
        "maxwell_agents", "Agents the node knows, by state.", labels=("state",)
    )
    for candidate in AgentState:
        count.add_metric([str(candidate)], float(by_state[candidate]))
    yield count


def _price_families(price: PriceInfo) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "maxwell_spot_price_joule_tokens_per_joule",
        "Spot price of energy on this node (grid price times thermal factor times coupling).",
        value=price.spot,
    )
    yield GaugeMetricFamily(
        "maxwell_grid_price_joule_tokens_per_joule",
        "Grid price of energy, before the thermal factor.",
        value=price.grid,
    )
    yield GaugeMetricFamily(
        "maxwell_thermal_factor",
        "Multiplier the node's temperature applies to the grid price (dimensionless).",
        value=price.thermal_factor,
    )
    yield GaugeMetricFamily(
        "maxwell_price_coupling",
        "Multiplier the neighbours' heat applies to the spot price (1 without gossip).",
        value=price.coupling,
    )
    yield GaugeMetricFamily(
        "maxwell_node_power_watts", "The node's power over the last interval.", value=price.power_w
    )


def _node_families(status: NodeStatus) -> Iterator[Metric]:
    price = status.price
    yield from _price_families(price)
    measured = "true" if price.measured else "false"
    temperature = GaugeMetricFamily(
        "maxwell_temperature_celsius",
        "Temperature the price responds to; measured=false when it is modelled.",
        labels=("source", "measured"),
    )
    temperature.add_metric([price.temperature_source, measured], price.temperature_c)
    yield temperature
    yield GaugeMetricFamily(
        "maxwell_headroom_celsius",
        "Degrees left below the thermal limit.",
        value=price.headroom_c,
    )
    energy_measured = GaugeMetricFamily(
        "maxwell_energy_measured",
        "1 when energy and temperature come from hardware sensors, 0 when they are modelled.",
        labels=("source",),
    )
    energy_measured.add_metric([price.energy_source], 1.0 if price.measured else 0.0)
    yield energy_measured
    yield GaugeMetricFamily(
        "maxwell_capacity_cores",
        "Cores the last clearing sold: all of the node's, fewer when it runs out of headroom.",
        value=status.capacity_cores,
    )
    if status.node_cores is not None:
        yield GaugeMetricFamily(
            "maxwell_node_cores",
            "Cores the node has to sell when cool: its capacity_cores setting, else its CPUs.",
            value=status.node_cores,
        )
    yield from _tick_families(status)
    yield GaugeMetricFamily(
        "maxwell_tick_interval_seconds",
        "Configured interval between ticks.",
        value=status.tick_s,
    )
    yield CounterMetricFamily(
        "maxwell_ticks", "Ticks run since the daemon started.", value=status.ticks
    )
    info = GaugeMetricFamily(
        "maxwell_node_info",
        "Constant 1, labelled with the market mechanism and the cgroup layout in use.",
        labels=("mechanism", "cgroup"),
    )
    info.add_metric([status.mechanism, status.cgroup], 1.0)
    yield info


def _duration_histogram(stats: TickStats) -> HistogramMetricFamily:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    bounds = [repr(float(bound)) for bound in stats.duration_bounds_s]  # "0.0025", "1.0"
    for bound, count in zip([*bounds, "+Inf"], stats.duration_counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    return HistogramMetricFamily(
        "maxwell_tick_duration_seconds",
        "Wall time committed ticks took (sense, bill, clear, enforce).",
        buckets=buckets,
        sum_value=stats.duration_sum_s,
    )


def _tick_families(status: NodeStatus) -> Iterator[Metric]:
    stats = status.tick_stats
    if stats is not None and stats.duration_counts:
        yield _duration_histogram(stats)
    else:
        yield GaugeMetricFamily(
            "maxwell_tick_duration_seconds",
            "Wall time the last tick took (sense, bill, clear, enforce).",
            value=status.last_tick_duration_s,
        )
    yield GaugeMetricFamily(
        "maxwell_last_tick_duration_seconds",
        "Wall time the last tick took (sense, bill, clear, enforce).",
        value=status.last_tick_duration_s,
    )
    if stats is not None:
        yield CounterMetricFamily(
            "maxwell_tick_failures",
            "Ticks that raised an error since the daemon started (the last one is in /status).",
            value=stats.failures,
        )
        yield CounterMetricFamily(
            "maxwell_ledger_rows", "Rows the ledger's journal holds.", value=stats.ledger_rows
        )
    if status.event_counts is not None:
        events = CounterMetricFamily(
            "maxwell_events",
            "Events the node's journal took since the daemon started, by kind.",
            labels=("kind",),
        )
        for kind, count in status.event_counts.items():
            events.add_metric([kind], float(count))
        yield events


class _SnapshotCollector(Collector):
    def __init__(self, status: NodeStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        yield from _agent_families(list(self._status.agents))
        yield from _node_families(self._status)


def render_metrics(status: NodeStatus) -> bytes:
    """The snapshot in Prometheus text exposition format (serve with `CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(status))
    return generate_latest(registry)
