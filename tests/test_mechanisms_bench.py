"""`maxwell bench market`: the report's arithmetic and its shape (timings are not asserted)."""

from __future__ import annotations

import json
import math

import pytest

from maxwell.bench import market
from maxwell.economy.mechanisms import MECHANISM_NAMES


def test_growth_exponent_recovers_known_powers() -> None:
    sizes = [1_000, 10_000, 100_000, 1_000_000]
    assert market.growth_exponent(sizes, [n**1.0 for n in sizes]) == pytest.approx(1.0)
    assert market.growth_exponent(sizes, [3 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert market.growth_exponent([10], [1.0]) is None
    reference = market.nlogn_exponent(sizes)
    assert reference is not None and 1.0 < reference < 1.2


def test_auctioneer_fraction_is_cpu_per_tick_over_cpu_allocated() -> None:
    # 2 cores x 100 ms = 0.2 CPU-seconds a tick; 0.1 ms + 0.1 ms of work = 0.1%.
    assert market.auctioneer_fraction(0.1, 0.1) == pytest.approx(0.001)
    assert market.auctioneer_fraction(0.1, 0.1, update_us=5.0, rebids=1000) == pytest.approx(
        (0.2e-3 + 5e-3) / 0.2
    )


def test_small_run_has_the_promised_shape(capsys: pytest.CaptureFixture[str]) -> None:
    report = market.run_market_bench(quick=True, sizes=(1_000, 2_000))
    assert {"results", "growth_exponent", "auctioneer_fraction"} <= set(report)
    results = report["results"]
    assert isinstance(results, list) and len(results) == 2 * len(MECHANISM_NAMES)
    for row in results:
        assert {"mechanism", "n", "clear_ms", "update_us", "draw_us"} <= set(row)
        assert row["clear_ms"] > 0 and row["update_us"] > 0
        assert (row["draw_us"] is not None) == (row["mechanism"] == "lottery")
    exponents = report["growth_exponent"]
    assert isinstance(exponents, dict) and set(exponents) == set(MECHANISM_NAMES)
    fraction = report["auctioneer_fraction"]
    assert isinstance(fraction, float) and 0 < fraction < 1 and math.isfinite(fraction)
    # The headline is the real auctioneer's tick (some rebids + clear_book); the old figure
    # (export + vectorised clear) is still reported, under its own name.
    ticks = report["auctioneer_tick_ms"]
    assert isinstance(ticks, dict)
    assert fraction == pytest.approx(ticks["rebid_share"] / 200.0, rel=1e-3)
    assert report["auctioneer_fraction_all_rebid"] == pytest.approx(
        ticks["all_rebid"] / 200.0, rel=1e-3
    )
    assert report["auctioneer_fraction_no_rebid"] == pytest.approx(
        ticks["no_rebid"] / 200.0, rel=1e-3
    )
    assert 0 < ticks["no_rebid"] < ticks["rebid_share"] < ticks["all_rebid"]
    assert report["auctioneer_rebid_share"] == market.AUCTION_REBID_SHARE
    rebids = report["auctioneer_rebids_in_budget"]
    assert isinstance(rebids, int) and rebids >= 0
    vectorised = report["auctioneer_fraction_vectorised_by_mechanism"]
    assert isinstance(vectorised, dict) and set(vectorised) == set(MECHANISM_NAMES)
    compared = report["charged_vs_free"]
    assert isinstance(compared, dict) and set(compared["summary"]) == set(MECHANISM_NAMES)
    json.dumps(report)  # serialisable as it stands
    from rich.console import Console

    Console(width=200).print(market.render_table(report))
    assert "uniform" in capsys.readouterr().out
