"""Optimistic billing's pure policy: bonds, claims billed once, what stays under-billed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maxwell.audit.policy import Usage, deterred
from maxwell.node.policy.optimistic import (
    TickPrices,
    bill_claim,
    bond_for,
    gain_per_tick,
    joules_per_cpu_ns,
)

PRICES = TickPrices(spot_price=1.5, temperature_c=60.0, landauer_multiplier=1e9)
counters = st.integers(min_value=0, max_value=10**13)
usages = st.builds(Usage, counters, counters)
rates = st.floats(min_value=0.0, max_value=1e-2, allow_nan=False)
probabilities = st.floats(min_value=1e-4, max_value=1.0)


@given(
    st.floats(min_value=0.01, max_value=64),
    st.floats(min_value=0.1, max_value=20),
    st.floats(min_value=0.01, max_value=5),
    st.floats(min_value=0.01, max_value=100),
    probabilities,
)
def test_the_bond_deters_the_gain_of_a_tick_of_lying(
    demand: float, watts: float, tick_s: float, spot: float, p: float
) -> None:
    gain = gain_per_tick(demand, watts, tick_s, spot)
    assert gain == demand * watts * tick_s * 1e6 * spot
    bond = bond_for(gain, p)
    assert bond >= 1
    assert deterred(bond, round(gain), p)
    assert bond_for(gain, p / 2) >= bond  # rarer audits need a larger bond
    assert bond_for(gain * 2, p) >= bond


@given(usages, usages, rates, usages, st.integers(0, 10**12))
def test_a_claim_is_billed_once_and_never_backwards(
    claim: Usage, billed: Usage, rate: float, metered: Usage, metered_uj: int
) -> None:
    first = bill_claim(claim, billed, rate, metered, metered_uj, PRICES)
    assert first.energy_uj >= 0 and first.bytes_freed >= 0
    assert first.billed_up_to.cpu_ns >= billed.cpu_ns
    assert first.billed_up_to.freed_bytes >= billed.freed_bytes
    assert first.billed_up_to.cpu_ns >= claim.cpu_ns
    assert first.energy_uj == round(max(claim.cpu_ns - billed.cpu_ns, 0) * rate)
    # The same claim again bills nothing more.
    again = bill_claim(claim, first.billed_up_to, rate, metered, metered_uj, PRICES)
    assert (again.energy_uj, again.bytes_freed) == (0, 0)
    assert again.billed_up_to == first.billed_up_to


@given(usages, usages, rates, usages, st.integers(0, 10**12))
def test_what_a_claim_under_bills_is_the_metered_bill_minus_the_claimed_one(
    claim: Usage, billed: Usage, rate: float, metered: Usage, metered_uj: int
) -> None:
    result = bill_claim(claim, billed, rate, metered, metered_uj, PRICES)
    expected = PRICES.total(metered_uj, metered.freed_bytes) - PRICES.total(
        result.energy_uj, result.bytes_freed
    )
    assert result.under_billed == expected


def test_an_honest_claim_under_bills_nothing_and_silence_under_bills_the_meter() -> None:
    rate = 0.002  # µJ per ns: 2 W per busy core
    metered = Usage(cpu_ns=500_000_000, freed_bytes=4096)
    energy = round(metered.cpu_ns * rate)
    honest = bill_claim(
        Usage(1_500_000_000, 8192), Usage(1_000_000_000, 4096), rate, metered, energy, PRICES
    )
    assert (honest.energy_uj, honest.bytes_freed, honest.under_billed) == (energy, 4096, 0)
    silent = bill_claim(Usage(1_000_000_000, 4096), Usage(1_000_000_000, 4096), rate, metered,
                        energy, PRICES)  # fmt: skip
    assert silent.energy_uj == 0
    assert silent.under_billed == PRICES.total(energy, 4096) > 0


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 10**10), max_size=6),
       st.floats(min_value=0.1, max_value=20))  # fmt: skip
def test_the_rate_is_the_ticks_energy_per_cpu_second(cpu: dict[str, int], watts: float) -> None:
    energy = {agent: 3 * ns for agent, ns in cpu.items()}
    rate = joules_per_cpu_ns(cpu, energy, watts)
    if sum(cpu.values()) == 0:
        assert rate == watts / 1000
    else:
        assert rate == 3.0
