"""`bench.invariance`: batched vs batch-1 answers of the committed models on real market windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import invariance
from runtime.batching import BATCH_INVARIANCE_ATOL

pytest.importorskip("arch")


def test_market_windows_are_real_valid_candles() -> None:
    w = invariance.market_windows(40)
    assert w.shape == (40, 60, 5) and w.dtype == np.float32
    assert np.isfinite(w).all()
    o, h, lo, c = w[..., 0], w[..., 1], w[..., 2], w[..., 3]
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert len({float(x[-1, 3]) for x in w}) > 30, "windows should come from different days"


def test_committed_models_stay_within_the_stated_bound(committed_model_dir: Path) -> None:
    result = invariance.measure(committed_model_dir, invariance.market_windows(96), batch_sizes=(2, 8, 32))
    assert [(p["precision"], p["batch"]) for p in result["points"]] == [
        (prec, b) for prec in ("int8", "fp32") for b in (2, 8, 32)
    ]
    assert result["atol"] == BATCH_INVARIANCE_ATOL
    assert result["within_atol"], result["points"]
    for p in result["points"]:
        assert 0 <= p["median_abs_dp"] <= p["p99_abs_dp"] <= p["max_abs_dp"] <= BATCH_INVARIANCE_ATOL
        if p["precision"] == "fp32":
            assert p["max_abs_dp"] < 1e-5  # no per-batch quantization: only float summation order differs
            assert p["argmax_agreement"] == 1.0
    int8 = [p for p in result["points"] if p["precision"] == "int8"]
    assert max(p["max_abs_dp"] for p in int8) > 1e-6, "INT8 batches should move probabilities measurably"


def test_markdown_flags_a_bound_exceeded() -> None:
    point = {
        "precision": "int8",
        "batch": 8,
        "max_abs_dp": 0.02,
        "p99_abs_dp": 0.01,
        "median_abs_dp": 1e-3,
        "argmax_agreement": 0.99,
        "flips_outside_near_ties": 1,
    }
    text = "\n".join(invariance.markdown({"windows": 10, "atol": 5e-3, "points": [point], "within_atol": False}))
    assert "**Some difference exceeds it" in text
    assert "| int8 | 8 | 2.00e-02 | 1.00e-02 | 1.00e-03 | 99.00% | 1 |" in text
