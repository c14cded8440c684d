"""Attack: bid the maximum and pay spot anyway. Measured before the fix: with one core for sale
an agent bidding 3 and one bidding 2 both paid exactly 1.0 $J per J where the uniform price was
2.0. Now the winner pays the clearing price for every joule it burns under that grant."""

from __future__ import annotations

from pathlib import Path

from maxwell.clock import FakeClock
from maxwell.node.config import NodeConfig
from maxwell.node.daemon import NodeDaemon
from maxwell.testing import FakeSensors, FakeSupervisor
from maxwell.units import Money

J = 1_000_000
TICK_S = 0.1


def test_the_high_bidder_pays_the_clearing_price_for_its_energy(tmp_path: Path) -> None:
    clock, supervisor = FakeClock(), FakeSupervisor()
    daemon = NodeDaemon(
        NodeConfig(state_dir=tmp_path / "state", tick_s=TICK_S, capacity_cores=1.0),
        clock=clock, sensors=FakeSensors(clock, supervisor), supervisor=supervisor,
    )  # fmt: skip
    try:
        high = daemon.spawn(["burn"], fund=Money(1000 * J), bid=3.0, demand=1.0).agent
        low = daemon.spawn(["burn"], fund=Money(1000 * J), bid=2.0, demand=1.0).agent
        for _ in range(30):
            supervisor.burn(high, TICK_S)  # it holds the core
            clock.advance(TICK_S)
            daemon.tick_once()
        daemon.tick_once(settle_all=True)
        spot = daemon.price().spot
        assert spot < 2.0
        assert daemon.price().clearing == 2.0  # `maxwell price` shows what winners pay
        assert daemon.agent(low).state == "frozen"
        bills = [
            e for e in daemon.ledger().entries() if e.kind == "bill" and e.detail["agent"] == high
        ]
        energy = sum(int(e.detail["energy_uj"]) for e in bills)
        paid = sum(int(e.detail["energy_cost"]) for e in bills)
        assert energy > 0
        # After its first interval (billed at spot, before any clearing), 2.0 per joule.
        assert paid > 1.9 * energy and paid > spot * energy * 1.5
        assert daemon.agent(high).paid == paid
        assert daemon.ledger().verify().ok
    finally:
        daemon.shutdown(kill_agents=True)
