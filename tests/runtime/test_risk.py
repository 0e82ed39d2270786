from __future__ import annotations

import numpy as np
import pytest
from conftest import market_windows

from runtime.risk import assess, window_features


def test_single_window_path_equals_the_batch_path() -> None:
    windows = market_windows(200, seed=9)
    windows[5, :, 4] = 0.0  # all-zero volume
    windows[6, -1, 4] *= 50  # volume spike
    windows[7, 30:, :4] *= 1.3  # price gap
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=200).astype(np.float32)
    batch = window_features(windows)
    singles = [window_features(windows[i : i + 1]) for i in range(200)]
    for name in ("volatility", "zero_volume", "gap", "spike"):
        np.testing.assert_allclose([getattr(s, name)[0] for s in singles], getattr(batch, name), rtol=1e-9, atol=0)
    batched = assess(batch, probs)
    one_by_one = [assess(singles[i], probs[i : i + 1])[0] for i in range(200)]
    assert [{k: v for k, v in r.items() if k != "volatility"} for r in batched] == [
        {k: v for k, v in r.items() if k != "volatility"} for r in one_by_one
    ]


@pytest.mark.parametrize(
    ("mutate", "factor", "detection"),
    [
        pytest.param(lambda w: w.__setitem__((slice(None), 4), 0.0), "zero volume", 4, id="zero-volume"),
        pytest.param(lambda w: w.__setitem__((-1, 4), w[-2, 4] * 50), "x the window's average", 4, id="spike"),
        pytest.param(lambda w: w.__setitem__((slice(30, None), slice(0, 4)), w[30:, :4] * 1.5), "price gap", 4,
                     id="gap"),
    ],
)
def test_detection_flags(mutate: object, factor: str, detection: int) -> None:
    window = market_windows(1, seed=3)[0].astype(np.float64)
    mutate(window)  # type: ignore[operator]
    [risk] = assess(window_features(window[None]), np.array([[0.2, 0.5, 0.3]], dtype=np.float32))
    assert risk["detection"] == detection
    assert any(factor in f for f in risk["factors"]), risk["factors"]
    assert risk["risk_priority_number"] == risk["severity"] * risk["occurrence"] * risk["detection"]


def test_certain_model_on_a_calm_window_is_low_risk() -> None:
    window = np.tile(np.array([100.0, 100.1, 99.9, 100.0, 1e6]), (60, 1))
    window[:, 3] += np.linspace(0, 0.01, 60)
    window[1:, 0] = window[:-1, 3]  # each candle opens at the previous close: no gaps
    window[:, 1] = np.maximum(window[:, 1], window[:, 3])
    [risk] = assess(window_features(window[None]), np.array([[0.0, 1.0, 0.0]], dtype=np.float32))
    assert (risk["severity"], risk["occurrence"], risk["detection"]) == (1, 1, 1)
    assert risk["risk_level"] == "low"


def test_uncertain_model_on_a_wild_window_is_critical() -> None:
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.1, 60)))
    window = np.stack([close, close * 1.01, close * 0.99, close, np.zeros(60)], axis=1)
    window[1:, 0] = close[:-1] * 3  # every open gaps far away from the previous close
    window[:, 1] = np.maximum(window[:, 0], window[:, 1])
    [risk] = assess(window_features(window[None]), np.array([[1 / 3, 1 / 3, 1 / 3]], dtype=np.float32))
    assert (risk["severity"], risk["occurrence"], risk["detection"]) == (10, 10, 7)
    assert risk["risk_level"] == "critical"
