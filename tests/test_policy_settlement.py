"""Settlement's pure rules: accrue bills in memory, settle them as one entry when due."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maxwell.economy.ledger import GRID, LANDAUER, agent_account
from maxwell.node.policy.settlement import Accrual, accrue, due, settlement_entry

money = st.integers(min_value=0, max_value=10**9)
bills = st.lists(
    st.tuples(
        st.integers(0, 10**9),  # energy µJ
        st.integers(0, 10**9),  # bytes freed
        money,  # paid to the grid
        money,  # paid to the Landauer sink
    ),
    min_size=1,
    max_size=20,
)


def accrued(ticks: list[tuple[int, int, int, int]], first_tick: int = 5) -> Accrual:
    accrual = Accrual()
    for offset, (energy, freed, grid, landauer) in enumerate(ticks):
        detail: dict[str, object] = {
            "energy_uj": energy, "bytes_freed": freed, "energy_cost": grid,
            "landauer_cost": landauer, "shortfall": 0, "spot_price": 1.0, "temperature_c": 40.0,
        }  # fmt: skip
        accrual = accrue(accrual, first_tick + offset, detail, (grid, landauer))
    return accrual


@given(bills)
def test_one_settlement_moves_exactly_what_the_ticks_accrued(
    ticks: list[tuple[int, int, int, int]],
) -> None:
    accrual = accrued(ticks)
    assert accrual.ticks == len(ticks)
    assert (accrual.from_tick, accrual.to_tick) == (5, 5 + len(ticks) - 1)
    assert accrual.energy_uj == sum(t[0] for t in ticks)
    assert accrual.bytes_freed == sum(t[1] for t in ticks)
    assert accrual.owed == sum(t[2] + t[3] for t in ticks)
    key, movements, detail = settlement_entry("a1", accrual, 42)
    assert key == "bill:42:a1"
    assert all(m.debit == agent_account("a1") and m.amount > 0 for m in movements)
    assert sum(m.amount for m in movements if m.credit == GRID) == accrual.paid_energy
    assert sum(m.amount for m in movements if m.credit == LANDAUER) == accrual.paid_landauer
    assert detail["energy_uj"] == accrual.energy_uj and detail["ticks"] == len(ticks)


@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, 10), st.booleans(), st.booleans())
def test_an_idle_agent_is_never_settled_a_busy_one_once_per_interval_or_when_forced(
    now: float, settled_at: float, interval: float, forced: bool, busy: bool
) -> None:
    accrual = accrued([(1, 0, 1, 0)]) if busy else Accrual()
    decided = due(accrual, now_s=now, settled_at_s=settled_at, interval_s=interval, forced=forced)
    if not busy:
        assert decided is False
    elif forced:
        assert decided is True
    else:
        assert decided == (now - settled_at >= interval - 1e-9)
