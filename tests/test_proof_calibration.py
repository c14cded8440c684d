"""The calibration behind the tolerances: honest runs stay well inside them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maxwell.proof import calibration
from maxwell.proof.tolerance import (
    CALIBRATION_MARGIN,
    DEFAULT_TOLERANCE,
    ELEMENTWISE_TOLERANCE,
    FREIVALDS_TOLERANCE,
    HONEST_ELEMENTWISE_Z,
    HONEST_FREIVALDS_Z,
    screen_gap_bound,
)


def test_the_constants_are_ten_times_the_recorded_honest_maxima() -> None:
    assert calibration.round_up(CALIBRATION_MARGIN * HONEST_FREIVALDS_Z) == FREIVALDS_TOLERANCE
    assert calibration.round_up(CALIBRATION_MARGIN * HONEST_ELEMENTWISE_Z) == ELEMENTWISE_TOLERANCE


def test_a_quick_calibration_stays_a_margin_below_the_tolerances() -> None:
    # The quick sweep is the full sweep's first three widths (same seed, same models), so its
    # maxima may not exceed the recorded ones; the tolerances keep their 10x margin over them.
    report = calibration.calibrate(widths=calibration.QUICK_WIDTHS, repeats=2)
    assert 0 < report.largest_freivalds_z <= DEFAULT_TOLERANCE.freivalds / CALIBRATION_MARGIN
    assert 0 < report.largest_elementwise_z <= DEFAULT_TOLERANCE.elementwise / CALIBRATION_MARGIN
    assert set(report.by_order) == set(calibration.HONEST_ORDERS)
    assert report.tolerance.freivalds <= DEFAULT_TOLERANCE.freivalds
    # the verifier's own float32 rounding stays inside the bound its screen is built on
    assert set(report.screen_gap_by_width) == set(calibration.QUICK_WIDTHS)
    for width, gap in report.screen_gap_by_width.items():
        assert 0 < gap <= screen_gap_bound(width)


@pytest.mark.parametrize(
    ("value", "rounded"), [(187.3, 190.0), (306.0, 310.0), (38.5, 39.0), (0.0, 0.0), (20.0, 20.0)]
)
def test_round_up_keeps_two_significant_figures(value: float, rounded: float) -> None:
    assert calibration.round_up(value) == rounded


@pytest.mark.parametrize("order", sorted(calibration.HONEST_ORDERS))
def test_every_honest_order_computes_the_same_product(order: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 300)).astype(np.float32)
    b = rng.standard_normal((300, 7)).astype(np.float32)
    product = calibration.HONEST_ORDERS[order](a, b)
    assert product.dtype == np.float32 and product.shape == (5, 7)
    np.testing.assert_allclose(product, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_the_module_prints_its_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert calibration.main(["--quick"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"largest_freivalds_z", "largest_elementwise_z", "tolerance", "margin"} <= set(report)
    assert set(report["screen_gap_by_width"]) == {str(width) for width in calibration.QUICK_WIDTHS}
