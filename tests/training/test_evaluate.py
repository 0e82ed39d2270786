import numpy as np
import pytest

pytest.importorskip("pandas")

from training.dataset import BUY, HOLD, SELL
from training.evaluate import calibration, classification_metrics


def test_metrics_on_a_known_confusion() -> None:
    labels = np.array([SELL, SELL, HOLD, HOLD, BUY, BUY])
    predicted = np.array([SELL, HOLD, HOLD, HOLD, BUY, SELL])
    m = classification_metrics(labels, predicted)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: sell P=1/2 R=1/2 -> 0.5; hold P=2/3 R=1 -> 0.8; buy P=1 R=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_class_never_predicted_scores_zero_f1() -> None:
    m = classification_metrics(np.array([SELL, HOLD, BUY]), np.array([HOLD, HOLD, HOLD]))
    assert m["per_class"]["sell"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx(0.5 / 3)  # hold: P=1/3, R=1 -> F1=0.5


@pytest.mark.parametrize(
    ("confidence", "correct_fraction", "expected_ece"),
    [
        pytest.param(0.8, 0.8, 0.0, id="calibrated"),
        pytest.param(0.9, 0.5, 0.4, id="overconfident"),
    ],
)
def test_ece(confidence: float, correct_fraction: float, expected_ece: float) -> None:
    n = 100
    rest = (1 - confidence) / 2
    probs = np.tile([confidence, rest, rest], (n, 1))  # always predicts class 0
    labels = np.where(np.arange(n) < correct_fraction * n, 0, 1)
    result = calibration(labels, probs)
    assert result["ece"] == pytest.approx(expected_ece, abs=1e-9)
    assert len(result["bins"]) == 1
