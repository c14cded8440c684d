"""The audit policy (pure): Becker bonds, audit draws, verdicts on claims."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from maxwell.audit.policy import (
    CPU_TOLERANCE,
    MEMORY_TOLERANCE,
    Usage,
    becker_bond,
    detection_probability,
    deterred,
    draw_audits,
    judge,
)
from maxwell.units import Money

probabilities = st.floats(1e-4, 1.0)


@given(gain=st.integers(0, 10**12), p=probabilities, q=probabilities)
@example(gain=62027264, p=0.0001, q=0.0001)  # float rounding once left it 6 µ$J short
def test_the_bond_deters_and_is_the_smallest_that_does(gain: int, p: float, q: float) -> None:
    bond = becker_bond(Money(gain), p, q)
    assert deterred(bond, gain, p, q)
    if bond > 0 and gain * (1 - p * q) / (p * q) > 1:  # away from the rounding floor
        assert not deterred(bond - max(bond // 10**9, 2), gain, p, q)


def test_the_reference_figure_at_p_one_in_a_thousand() -> None:
    assert becker_bond(Money(1_000), 0.001) == 999_000  # F >= 999 G
    assert detection_probability(0.001, 693) == pytest.approx(0.5, abs=1e-3)
    assert detection_probability(0.001, 4603) == pytest.approx(0.99, abs=1e-3)
    with pytest.raises(ValueError, match="probabilities"):
        becker_bond(Money(1), 0.0)
    with pytest.raises(ValueError, match="gain"):
        becker_bond(Money(-1), 0.5)


def test_audits_are_drawn_with_the_probability_asked_for() -> None:
    rng = random.Random(7)
    agents = [f"a{i}" for i in range(1000)]
    drawn = sum(len(draw_audits(agents, 0.01, rng)) for _ in range(100))
    assert 800 <= drawn <= 1200  # 1,000 expected; 6 standard deviations either side
    assert draw_audits(agents, 0.0, rng) == []
    assert draw_audits(agents, 1.0, rng) == agents
    with pytest.raises(ValueError, match="probability"):
        draw_audits(agents, 1.5, rng)


def test_an_honest_claim_passes_and_a_short_one_fails_naming_why() -> None:
    measured = Usage(cpu_ns=10_000_000_000, freed_bytes=100 << 20)
    assert judge(Usage(10_000_000_000, 100 << 20), measured).honest
    assert judge(Usage(9_900_000_000, 98 << 20), measured).honest  # within the tolerance
    assert judge(Usage(30_000_000_000, 500 << 20), measured).honest  # over-claiming costs only
    lie = judge(Usage(5_000_000_000, 100 << 20), measured)
    assert not lie.honest and lie.cpu_short_ns == 5_000_000_000
    assert lie.findings == ("claimed 5.000 s of CPU, the kernel counted 10.000 s",)
    both = judge(Usage(0, 0), measured)
    assert len(both.findings) == 2 and "bytes freed" in both.findings[1]


@given(
    cpu=st.integers(0, 10**13),
    freed=st.integers(0, 10**12),
    claimed_fraction=st.floats(0.0, 2.0),
)
def test_a_verdict_follows_the_tolerance_exactly(
    cpu: int, freed: int, claimed_fraction: float
) -> None:
    measured = Usage(cpu, freed)
    claim = Usage(int(cpu * claimed_fraction), int(freed * claimed_fraction))
    verdict = judge(claim, measured)
    expected = CPU_TOLERANCE.allows(claim.cpu_ns, cpu) and MEMORY_TOLERANCE.allows(
        claim.freed_bytes, freed
    )
    assert verdict.honest is expected
    assert verdict.cpu_short_ns == max(cpu - claim.cpu_ns, 0)


def test_a_cheater_loses_money_on_average_with_the_becker_bond() -> None:
    """Simulated: a cheater gains G per tick unaudited; an audit (p per tick) takes the bond and
    the difference. Over many runs its mean profit is negative; without the bond it is not."""
    rng = random.Random(2026)
    p, gain, ticks = 0.01, 100, 2_000
    bond = becker_bond(Money(gain), p)

    def profit(fine: int) -> float:
        total = 0
        for _ in range(200):
            stolen = 0
            for _tick in range(ticks):
                stolen += gain
                if rng.random() < p:  # caught: pays back what it stole, loses the fine
                    total -= fine
                    stolen = 0
            total += stolen
        return total / 200

    assert profit(bond) < 0
    assert profit(0) >= 0
