from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pandas")

from ohlcv_factories import synthetic_rows, write_csv

from runtime.constants import WINDOW_LENGTH
from training.data import load_csv
from training.dataset import BUY, HOLD, SELL, LabelSpec, class_weights, label_returns, make_samples, make_splits

SPEC = LabelSpec(horizon=5, threshold_k=0.5)


@pytest.mark.parametrize(
    ("forward", "sigma", "expected"),
    [
        pytest.param(0.05, 0.01, BUY, id="big-rise"),
        pytest.param(-0.05, 0.01, SELL, id="big-fall"),
        pytest.param(0.005, 0.01, HOLD, id="small-rise"),  # threshold 0.5 * 0.01 * sqrt(5) = 0.0112
        pytest.param(0.012, 0.01, BUY, id="just-above"),
        pytest.param(0.05, 0.1, HOLD, id="rise-in-a-volatile-window"),
    ],
)
def test_label_rule(forward: float, sigma: float, expected: int) -> None:
    assert label_returns(np.array([forward]), np.array([sigma]), SPEC)[0] == expected


def test_samples_use_the_right_days(tmp_path: Path) -> None:
    series = load_csv(write_csv(tmp_path, synthetic_rows(100)))
    samples = make_samples(series, SPEC)
    assert len(samples) == 100 - WINDOW_LENGTH - SPEC.horizon + 1
    frame = series.frame
    first = samples.windows[0]
    assert np.allclose(first, frame.iloc[:WINDOW_LENGTH].to_numpy(np.float32))
    close = frame["close"].to_numpy()
    t = WINDOW_LENGTH - 1
    forward = np.log(close[t + SPEC.horizon] / close[t])
    sigma = np.diff(np.log(close[: t + 1])).std()
    assert samples.labels[0] == label_returns(np.array([forward]), np.array([sigma]), SPEC)[0]
    assert samples.label_end[0] == frame.index[t + SPEC.horizon].tz_localize(None).to_datetime64()


def test_splits_do_not_leak(tmp_path: Path) -> None:
    series = load_csv(write_csv(tmp_path, synthetic_rows(600)))
    splits = make_splits([series], SPEC, 0.6, 0.2)
    ranges = splits.boundaries.ranges()
    for name, part in splits.items():
        start, end = ranges[name]
        assert len(part) > 0
        # The whole span — first input candle to the label's candle — is inside the split.
        assert (part.window_start >= start).all()
        assert (part.label_end < end).all()
    assert splits.train.label_end.max() < splits.val.window_start.min()
    assert splits.val.label_end.max() < splits.test.window_start.min()
    # Each boundary drops the windows that would straddle it.
    assert splits.dropped_straddling == 2 * (WINDOW_LENGTH + SPEC.horizon - 1)
    summary = splits.summary()
    assert summary["train"]["calendar_range"][0] == "2020-01-01"
    assert sum(summary["test"]["class_counts"].values()) == len(splits.test)


def test_class_weights_come_from_the_labels_given() -> None:
    weights = class_weights(np.array([SELL, HOLD, HOLD, BUY, BUY, BUY]))
    assert weights == pytest.approx([2.0, 1.0, 2 / 3])


def test_class_weights_reject_a_missing_class() -> None:
    with pytest.raises(ValueError, match=r"no \['sell'\] samples"):
        class_weights(np.array([HOLD, BUY]))


def test_too_short_series_is_rejected(tmp_path: Path) -> None:
    series = load_csv(write_csv(tmp_path, synthetic_rows(WINDOW_LENGTH)))
    with pytest.raises(ValueError, match="too few"):
        make_samples(series, SPEC)
