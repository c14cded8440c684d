"""`maxwell bench proof`: the report's shape and arithmetic (timings are not asserted)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from maxwell.bench import proof
from maxwell.cli.main import main


def test_quick_run_prints_the_promised_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "proof", "--json", "--quick"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"layers", "detection_rate", "false_alarm_rate"} <= set(report)
    assert [row["width"] for row in report["layers"]] == list(proof.QUICK_WIDTHS)
    assert proof.WIDTHS == (1024, 4096)  # the full run's widths
    for row in report["layers"]:
        assert {"width", "tokens", "recompute_ms", "verify_ms", "ratio"} <= set(row)
        assert row["tokens"] >= 32 and row["recompute_ms"] > 0 and row["verify_ms"] > 0
        ratio = row["recompute_ms"] / row["verify_ms"]
        assert row["ratio"] == pytest.approx(ratio, rel=0.01, abs=0.06)  # rounded to 0.1
        assert {"commitment_ms", "precompute_ms", "verify_ms_one_round"} <= set(row)
        assert row["verify_ms_float64"] > 0 and row["ratio_float64"] > 0
    assert report["met"]["ratio"] is False  # the quick run has no layer of the target width
    assert 0.0 <= report["detection_rate"] <= 1.0 and 0.0 <= report["false_alarm_rate"] <= 1.0
    assert report["tampered_proofs"] == report["honest_proofs"] == proof.QUICK_TRIALS
    assert set(report["detection_by_kind"]) == set(proof.TAMPER_KINDS)
    assert "not counted" in report["setup"]["verify_ms"]


def test_a_small_run_catches_every_tamper_and_accepts_every_honest_proof() -> None:
    report = proof.run_proof_bench(widths=(64, 256), trials=48)
    assert report["detection_rate"] == 1.0
    assert report["false_alarm_rate"] == 0.0


def test_tallies_and_rates() -> None:
    tally = proof.Tally.empty()
    assert tally.rate() is None
    for rejected in (True, True, False):
        tally.add("64/int8_weights", rejected)
    tally.add("256/int8_weights", True)
    assert tally.rate() == 0.75 and tally.total() == 4
    assert tally.rate("64/int8_weights") == pytest.approx(2 / 3)
    assert proof._by_suffix(tally.rates()) == {"int8_weights": pytest.approx((2 / 3 + 1) / 2)}


def test_bf16_and_int8_roundtrips_keep_what_they_promise() -> None:
    weights = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    bf16 = proof.bf16_roundtrip(weights)
    assert np.all(bf16.view(np.uint32) & 0xFFFF == 0)
    assert np.allclose(bf16, weights, rtol=2**-8)
    int8 = proof.int8_roundtrip(weights)
    assert len(np.unique(int8)) <= 255 and np.allclose(
        int8, weights, atol=np.abs(weights).max() / 127
    )


def test_detection_floor_grows_with_the_square_root_of_the_width() -> None:
    assert proof.detection_floor_rms(4096) == pytest.approx(2 * proof.detection_floor_rms(1024))


def test_the_wrapper_script_takes_the_same_flags() -> None:
    parser = argparse.ArgumentParser()
    proof.add_arguments(parser)
    args = parser.parse_args(["--json", "--quick"])
    assert args.json and args.quick


def _timing(width: int, recompute_ms: float, verify_ms: float) -> proof.LayerTiming:
    return proof.LayerTiming(
        width=width, tokens=32, recompute_ms=recompute_ms, verify_ms=verify_ms,
        verify_ms_one_round=verify_ms / 2, verify_ms_float64=verify_ms * 2,
        commitment_ms=0.1, precompute_ms=5.0,
    )  # fmt: skip


@pytest.mark.parametrize(("ratio_4096", "met"), [(120.0, True), (80.0, False)])
def test_the_ratio_target_is_judged_at_width_4096(ratio_4096: float, met: bool) -> None:
    timings = [_timing(1024, 1.0, 0.1), _timing(4096, ratio_4096 * 0.05, 0.05)]
    honest, tampered = proof.Tally.empty(), proof.Tally.empty()
    honest.add("4096/blas", False)
    tampered.add("4096/int8_weights", True)
    report = proof.build_report(
        timings, tampered, honest, proof.Tally.empty(), quick=False, rounds=4
    )
    assert report["met"]["ratio"] is met  # the 1024-wide layer's 10x does not count
    assert report["met"]["detection_rate"] and report["met"]["false_alarm_rate"]
