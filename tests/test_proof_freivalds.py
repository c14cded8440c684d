"""Freivalds' check itself: the vectors it draws, what one round can miss, and the float32 screen
that makes it cheap without changing a verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maxwell.proof.freivalds import (
    ALPHABET,
    ALPHABET_RMS,
    UNIT_ROUNDOFF,
    SecretProjection,
    bias_terms,
    draw_vectors,
    freivalds_statistic,
    project_weight,
)
from maxwell.proof.tolerance import DEFAULT_TOLERANCE, screen_gap_bound

F32 = np.float32


def _layer(width: int, tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.standard_normal((tokens, width)), 0).astype(F32)
    w = (rng.standard_normal((width, width)) / math.sqrt(width)).astype(F32)
    return a, w, (a @ w).astype(F32)


def _secret(w: np.ndarray, rounds: int, seed: int) -> SecretProjection:
    vectors = draw_vectors(np.random.default_rng(seed), w.shape[1], rounds)
    return SecretProjection(vectors, project_weight(w, vectors), None)


def test_vectors_are_drawn_uniformly_from_the_alphabet() -> None:
    vectors = draw_vectors(np.random.default_rng(0), 4096, 8)
    values, counts = np.unique(vectors, return_counts=True)
    assert tuple(values) == ALPHABET
    assert np.all(np.abs(counts / vectors.size - 0.25) < 0.01)
    assert pytest.approx(math.sqrt(2.5)) == ALPHABET_RMS


def test_one_round_misses_a_cancelling_pair_a_quarter_of_the_time() -> None:
    # d added to unit 3 and taken from unit 7 of one row: e.r = d (r_3 - r_7), zero exactly when
    # the two entries agree, which four equally likely values do with probability 1/4.
    a, w, y = _layer(64, 4, seed=1)
    forged = y.copy()
    forged[2, 3] += F32(8.0)
    forged[2, 7] -= F32(8.0)
    passed = [
        freivalds_statistic(forged, a, _secret(w, 1, seed)) <= DEFAULT_TOLERANCE.freivalds
        for seed in range(2000)
    ]
    assert 0.21 < np.mean(passed) < 0.29


@pytest.mark.parametrize("seed", range(20))
def test_one_changed_element_above_the_floor_is_caught_by_every_draw(seed: int) -> None:
    # The floor for one element is the tolerance x u ||Y_i|| x rms(r) / min |r| (min |r| = 1):
    # 1.2 times it is caught whatever the vectors, in one round.
    a, w, y = _layer(256, 8, seed)
    row, column = seed % 8, (seed * 37) % 256
    norm = float(np.sqrt(np.sum(y[row].astype(np.float64) ** 2)))
    forged = y.copy()
    floor = DEFAULT_TOLERANCE.freivalds * UNIT_ROUNDOFF * norm * ALPHABET_RMS
    forged[row, column] += F32(1.2 * floor)
    assert freivalds_statistic(forged, a, _secret(w, 1, seed)) > DEFAULT_TOLERANCE.freivalds


@pytest.mark.parametrize("width", [16, 256, 4096])
def test_the_float32_z_stays_within_its_bound_of_the_float64_z(width: int) -> None:
    a, w, y = _layer(width, 32, seed=width)
    for seed in range(4):
        secret = _secret(w, 4, seed)
        exact = freivalds_statistic(y, a, secret)  # screen 0: float64
        quick = freivalds_statistic(y, a, secret, screen=math.inf)  # float32 whatever it gives
        assert abs(quick - exact) <= screen_gap_bound(width)
        assert quick <= DEFAULT_TOLERANCE.freivalds_screen(width)  # honest: float32 is enough


def test_above_the_screen_the_float64_value_is_the_answer() -> None:
    a, w, y = _layer(256, 8, seed=3)
    forged = y.copy()
    forged[0, 0] += F32(1.0)
    secret = _secret(w, 4, seed=3)
    exact = freivalds_statistic(forged, a, secret)
    assert exact > DEFAULT_TOLERANCE.freivalds
    screen = DEFAULT_TOLERANCE.freivalds_screen(256)
    assert freivalds_statistic(forged, a, secret, screen=screen) == exact


def test_values_that_overflow_float32_sums_are_judged_in_float64() -> None:
    # Rows of 3e37: their squared norm overflows float32, so a float32 z would divide by inf and
    # call any error 0. The screen sees the overflow and hands the layer to float64.
    rng = np.random.default_rng(4)
    a = np.full((2, 8), 3e36, dtype=F32)
    w = np.eye(8, dtype=F32) * F32(10.0)
    y = (a.astype(np.float64) @ w).astype(F32)
    forged = y.copy()
    forged[1, 2] = F32(-3e37)
    vectors = draw_vectors(rng, 8, 4)
    secret = SecretProjection(vectors, project_weight(w, vectors), None)
    screen = DEFAULT_TOLERANCE.freivalds_screen(8)
    assert freivalds_statistic(forged, a, secret, screen=math.inf) == math.inf  # float32: overflow
    z = freivalds_statistic(forged, a, secret, screen=screen)
    assert z == freivalds_statistic(forged, a, secret) > DEFAULT_TOLERANCE.freivalds
    honest = freivalds_statistic(y, a, secret, screen=screen)
    assert honest == freivalds_statistic(y, a, secret) < 1.0


def test_a_gemm_bias_is_part_of_the_float32_check() -> None:
    a, w, y = _layer(64, 4, seed=5)
    bias = np.random.default_rng(5).standard_normal(64).astype(F32)
    secret = _secret(w, 4, seed=5)
    terms = bias_terms(bias, 1.0, 64, secret.vectors)
    with_bias = (y + bias).astype(F32)
    screen = DEFAULT_TOLERANCE.freivalds_screen(64)
    assert freivalds_statistic(with_bias, a, secret, bias=terms, screen=screen) < 50
    without = freivalds_statistic(y, a, secret, bias=terms, screen=screen)
    assert without > DEFAULT_TOLERANCE.freivalds


def test_the_screen_shrinks_with_the_width_and_ends_in_float64() -> None:
    tolerance = DEFAULT_TOLERANCE
    assert tolerance.freivalds_screen(64) == tolerance.freivalds / 2
    assert 0 < tolerance.freivalds_screen(16_384) < tolerance.freivalds_screen(4096)
    assert tolerance.freivalds_screen(65_536) == 0.0
    assert tolerance.freivalds_screen(4096) + 3 * screen_gap_bound(4096) <= tolerance.freivalds
