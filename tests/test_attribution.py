from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwell.meter import attribute

ENERGY = st.integers(min_value=0, max_value=10**12)
CPU_NS = st.integers(min_value=0, max_value=10**12)


def test_active_energy_split_by_cpu_time_and_idle_to_house() -> None:
    result = attribute(
        total_uj=10_000_000,
        idle_uj=2_000_000,
        node_busy_ns=4_000_000_000,
        workload_cpu_ns={"a": 2_000_000_000, "b": 1_000_000_000},
    )
    # Active 8 J: a used half the node's busy time, b a quarter; the OS's quarter is house.
    assert result.workloads_uj == {"a": 4_000_000, "b": 2_000_000}
    assert result.house_uj == 2_000_000 + 2_000_000
    assert result.total_uj == 10_000_000


def test_workloads_exceeding_node_busy_time_are_never_attributed_twice() -> None:
    result = attribute(
        total_uj=1_000, idle_uj=0, node_busy_ns=100, workload_cpu_ns={"a": 150, "b": 50}
    )
    assert result.workloads_uj == {"a": 750, "b": 250}
    assert result.house_uj == 0


def test_idle_node_gives_everything_to_house() -> None:
    result = attribute(total_uj=500, idle_uj=500, node_busy_ns=0, workload_cpu_ns={"a": 0})
    assert result.workloads_uj == {"a": 0}
    assert result.house_uj == 500


def test_idle_larger_than_total_is_clamped() -> None:
    result = attribute(total_uj=100, idle_uj=400, node_busy_ns=10, workload_cpu_ns={"a": 10})
    assert result.workloads_uj == {"a": 0}
    assert result.house_uj == 100


def test_negative_deltas_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        attribute(total_uj=-1, idle_uj=0, node_busy_ns=0, workload_cpu_ns={})
    with pytest.raises(ValueError, match="non-negative"):
        attribute(total_uj=1, idle_uj=0, node_busy_ns=0, workload_cpu_ns={"a": -5})


@given(
    total=ENERGY,
    idle=ENERGY,
    node_busy=CPU_NS,
    cpu=st.dictionaries(st.text(min_size=1, max_size=8), CPU_NS, max_size=20),
)
def test_attributed_plus_house_equals_total(
    total: int, idle: int, node_busy: int, cpu: dict[str, int]
) -> None:
    result = attribute(total_uj=total, idle_uj=idle, node_busy_ns=node_busy, workload_cpu_ns=cpu)
    assert sum(result.workloads_uj.values()) + result.house_uj == total
    assert result.house_uj >= min(idle, total)
    assert all(share >= 0 for share in result.workloads_uj.values())
    assert set(result.workloads_uj) == set(cpu)


@given(
    total=ENERGY,
    node_busy=st.integers(min_value=1, max_value=10**12),
    cpu_a=CPU_NS,
    cpu_b=CPU_NS,
)
def test_more_cpu_time_never_means_less_energy(
    total: int, node_busy: int, cpu_a: int, cpu_b: int
) -> None:
    result = attribute(
        total_uj=total, idle_uj=0, node_busy_ns=node_busy, workload_cpu_ns={"a": cpu_a, "b": cpu_b}
    )
    if cpu_a >= cpu_b:
        assert result.workloads_uj["a"] >= result.workloads_uj["b"]
