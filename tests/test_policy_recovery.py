"""Recovery billing: the interval a daemon was down, from the kernel's cumulative counters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maxwell.node.policy.recovery import down_interval

counters = st.integers(min_value=0, max_value=10**15)
watts = st.floats(min_value=0.0, max_value=50.0)


@given(counters, counters, counters, counters, watts)
def test_the_down_interval_is_never_negative_and_modelled_from_cpu_time(
    billed_cpu: int, billed_freed: int, now_cpu: int, now_freed: int, w: float
) -> None:
    down = down_interval(
        billed_cpu_ns=billed_cpu, billed_freed_bytes=billed_freed,
        now_cpu_ns=now_cpu, now_freed_bytes=now_freed, active_w_per_core=w,
    )  # fmt: skip
    assert down.cpu_ns == max(now_cpu - billed_cpu, 0)
    assert down.bytes_freed == max(now_freed - billed_freed, 0)
    assert down.energy_uj == round(down.cpu_ns * w / 1000) >= 0


@given(counters, counters, counters, watts)
def test_two_restarts_bill_what_one_would(start: int, step1: int, step2: int, w: float) -> None:
    """Billing up to the middle, then from the middle, covers the whole interval once (the
    energy may differ by the rounding of each part, at most 1 µJ per part)."""
    middle, end = start + step1, start + step1 + step2

    def down(a: int, b: int) -> tuple[int, int]:
        d = down_interval(billed_cpu_ns=a, billed_freed_bytes=0, now_cpu_ns=b,
                          now_freed_bytes=0, active_w_per_core=w)  # fmt: skip
        return d.cpu_ns, d.energy_uj

    whole, parts = down(start, end), (down(start, middle), down(middle, end))
    assert whole[0] == parts[0][0] + parts[1][0]
    assert abs(whole[1] - (parts[0][1] + parts[1][1])) <= 1
