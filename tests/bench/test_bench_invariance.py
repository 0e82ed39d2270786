"""`bench.invariance`: each window's answer alone against the same window in shuffled batches, on real markets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import invariance
from runtime.batching import BATCH_INVARIANCE_ATOL

pytest.importorskip("arch")


@pytest.mark.parametrize("load", [invariance.market_windows, invariance.held_out_windows], ids=["training", "held-out"])
def test_market_windows_are_real_valid_candles(load: object) -> None:
    w = load(40)  # type: ignore[operator]
    assert w.shape == (40, 60, 5) and w.dtype == np.float32
    assert np.isfinite(w).all()
    o, h, lo, c = w[..., 0], w[..., 1], w[..., 2], w[..., 3]
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert len({float(x[-1, 3]) for x in w}) > 30, "windows should come from different days"


def test_default_is_exact_and_the_opt_out_stays_within_its_bound(committed_model_dir: Path) -> None:
    markets = {"training": invariance.market_windows(64), "held-out": invariance.held_out_windows(64)}
    result = invariance.measure(committed_model_dir, markets, batch_sizes=(2, 8, 32))
    assert {(p["config"], p["precision"], p["market"]) for p in result["points"]} == {
        (c, prec, m) for c, prec, _ in invariance.CONFIGS for m in markets
    }
    assert result["atol"] == BATCH_INVARIANCE_ATOL
    assert result["invariant_exact"] and result["within_atol"], result["points"]
    for p in result["points"]:
        assert 0 <= p["median_abs_dp"] <= p["p99_abs_dp"] <= p["max_abs_dp"] <= BATCH_INVARIANCE_ATOL
        if p["config"] == "invariant":
            assert p["differing_windows"] == 0 and p["max_abs_dp"] == 0.0
        elif p["precision"] == "fp32":
            assert p["max_abs_dp"] < 1e-5 and p["argmax_agreement"] == 1.0  # float summation order only
    batched_int8 = [p for p in result["points"] if p["config"] == "batched" and p["precision"] == "int8"]
    assert max(p["max_abs_dp"] for p in batched_int8) > 1e-4, "per-batch INT8 scales should move probabilities"


def test_markdown_flags_a_bound_exceeded() -> None:
    point = {
        "config": "batched",
        "precision": "int8",
        "market": "held-out",
        "batch": 8,
        "differing_windows": 10,
        "max_abs_dp": 0.02,
        "p99_abs_dp": 0.01,
        "median_abs_dp": 1e-3,
        "argmax_agreement": 0.99,
        "flips_outside_near_ties": 1,
    }
    result = {"windows": {"held-out": 10}, "atol": 1e-2, "points": [point], "within_atol": False}
    text = "\n".join(invariance.markdown(result))
    assert "**A default-configuration window differed" in text
    assert "| batched | int8 | held-out | 8 | 10 | 2.00e-02 | 1.00e-02 | 1.00e-03 | 99.00% | 1 |" in text
