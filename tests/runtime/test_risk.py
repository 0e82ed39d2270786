from __future__ import annotations

from typing import Any

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
    assert [{k: v for k, v in r.items() if k != "log_volatility"} for r in batched] == [
        {k: v for k, v in r.items() if k != "log_volatility"} for r in one_by_one
    ]


@pytest.mark.parametrize(
    ("mutate", "factor", "detection"),
    [
        pytest.param(lambda w: w.__setitem__((slice(None), 4), 0.0), "zero volume", 4, id="zero-volume"),
        pytest.param(lambda w: w.__setitem__((-1, 4), w[-2, 4] * 50), "x the window's average", 4, id="spike"),
        pytest.param(
            lambda w: w.__setitem__((slice(30, None), slice(0, 4)), w[30:, :4] * 1.5), "price gap", 4, id="gap"
        ),
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


# -- the seed's RiskAssessment.from_signal, transcribed verbatim from the seed design (section 3) ---------------
class _Point:
    def __init__(self, close: float) -> None:
        self.close = close


def _seed_calculate_volatility(sequence: list) -> float:  # type: ignore[type-arg]
    closes = [p.close for p in sequence]
    returns = [(closes[i] - closes[i - 1]) / closes[i - 1] for i in range(1, len(closes))]
    if not returns:
        return 0.0
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / len(returns)
    return variance**0.5


def _seed_calculate_trend_strength(sequence: list) -> float:  # type: ignore[type-arg]
    closes = [p.close for p in sequence]
    if len(closes) < 2:
        return 0.0
    total_move = abs(closes[-1] - closes[0])
    total_path = sum(abs(closes[i] - closes[i - 1]) for i in range(1, len(closes)))
    return total_move / total_path if total_path > 0 else 0.0


def _seed_from_signal(confidence: float, volatility: float, trend_strength: float) -> dict:  # type: ignore[type-arg]
    factors = []
    risk_score = 0.0
    if confidence < 0.7:
        factors.append("Low model confidence")
        risk_score += 2.0
    if volatility > 0.05:
        factors.append("High market volatility")
        risk_score += 3.0
    if trend_strength < 0.3:
        factors.append("Weak trend signal")
        risk_score += 1.5
    if risk_score < 2:
        level = "low"
        recommendation = "Proceed with standard position size"
    elif risk_score < 4:
        level = "medium"
        recommendation = "Consider reduced position size"
    elif risk_score < 7:
        level = "high"
        recommendation = "High risk - use caution"
    else:
        level = "critical"
        recommendation = "Do not trade - conditions unfavorable"
    return {
        "risk_score": min(risk_score, 10.0),
        "risk_level": level,
        "factors": factors,
        "recommendation": recommendation,
    }


def _market_closes() -> list[list[float]]:
    """Closes of real windows from two markets the model did not train on alone: S&P 500 and NASDAQ, plus
    scaled copies that push volatility over the seed's 0.05 and trends over 0.3 so every branch is taken."""
    from arch.data import nasdaq, sp500

    out = []
    for df in (sp500.load(), nasdaq.load()):
        close = df["Close"].to_numpy(dtype=np.float64)
        for start in range(0, len(close) - 60, 31):
            out.append(close[start : start + 60].tolist())
    rng = np.random.default_rng(1)
    for w in out[:150]:  # volatile copies: 8% daily noise on top of the real path
        out.append((np.asarray(w) * np.exp(rng.normal(0, 0.08, 60))).tolist())
    return out


def test_seed_risk_equals_the_seeds_own_functions_on_real_windows() -> None:
    from runtime.risk import seed_assessment

    windows = _market_closes()
    confidences = np.random.default_rng(2).uniform(0.34, 1.0, len(windows)).astype(np.float32).tolist()
    levels = set()
    for closes, confidence in zip(windows, confidences, strict=True):
        points = [_Point(c) for c in closes]
        vol, trend = _seed_calculate_volatility(points), _seed_calculate_trend_strength(points)
        expected = _seed_from_signal(confidence, vol, trend)
        got = seed_assessment(confidence, closes)
        assert {k: got[k] for k in expected} == expected
        assert (got["volatility"], got["trend_strength"]) == (vol, trend)  # bit-identical, same arithmetic
        levels.add(got["risk_level"])
    # Every reachable branch was exercised. The seed's factors add up to at most 2 + 3 + 1.5 = 6.5, so its
    # "critical" level (score >= 7) can never be given; the service keeps the rule as written.
    assert levels == {"low", "medium", "high"}, levels


def test_seed_risk_on_the_service_path_uses_the_closes_as_sent(make_client: Any) -> None:
    from conftest import window_to_payload

    window = market_windows(1, seed=4)[0].astype(np.float64)
    window[:, 3] += 1e-7  # closes that float32 cannot hold: the seed reads the float64 values
    window[:, 1] = np.maximum(window[:, 1], window[:, 3])
    body = window_to_payload(window)
    body["sequence"] = [{**c, "close": float(window[i, 3])} for i, c in enumerate(body["sequence"])]
    answer = make_client().post("/predict", json=body).json()
    points = [_Point(c["close"]) for c in body["sequence"]]
    expected = _seed_from_signal(
        answer["prediction"]["confidence"], _seed_calculate_volatility(points), _seed_calculate_trend_strength(points)
    )
    assert {k: answer["risk"][k] for k in expected} == expected
    assert answer["risk"]["volatility"] == _seed_calculate_volatility(points)
