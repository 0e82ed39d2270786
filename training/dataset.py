"""Windows, labels and chronological splits.

A sample is the window of `WINDOW_LENGTH` candles ending on day t, labelled from what happens next:

    r     = log(close[t + horizon] / close[t])                     forward log return
    sigma = std of the window's daily close-to-close log returns    (uses only data inside the window)
    label = buy  if r >  k * sigma * sqrt(horizon)
            sell if r < -k * sigma * sqrt(horizon)
            hold otherwise

Scaling the threshold by the window's own volatility keeps the classes comparable across calm and turbulent
years; sqrt(horizon) turns daily volatility into horizon volatility.

Splits are by calendar date over the union of all series' dates (so correlated series such as the S&P 500 and
NASDAQ share the same boundaries), and a sample belongs to a split only if its whole span, from the window's
first candle to the label's candle at t + horizon, lies inside that split. Samples straddling a boundary are
dropped, so no candle or label leaks across splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from runtime.constants import CLASSES, N_CLASSES, WINDOW_LENGTH
from training.data import Series

SELL, HOLD, BUY = (CLASSES.index(c) for c in ("sell", "hold", "buy"))
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class LabelSpec:
    horizon: int
    threshold_k: float


@dataclass(frozen=True)
class Samples:
    """Model inputs and labels for one split, plus what the baselines and the report need."""

    windows: npt.NDArray[np.float32]  # (n, WINDOW_LENGTH, 5) raw OHLCV, oldest first
    labels: npt.NDArray[np.int64]  # (n,) indices into CLASSES
    last_return: npt.NDArray[np.float64]  # (n,) log return of the window's last day (momentum baseline)
    window_start: npt.NDArray[np.datetime64]  # (n,) first candle of the window
    window_end: npt.NDArray[np.datetime64]  # (n,) last candle of the window (decision time)
    label_end: npt.NDArray[np.datetime64]  # (n,) candle at t + horizon whose close sets the label
    series: npt.NDArray[np.str_]  # (n,) series name

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=N_CLASSES)
        return {c: int(n) for c, n in zip(CLASSES, counts, strict=True)}

    def select(self, mask: npt.NDArray[np.bool_]) -> Samples:
        return Samples(
            windows=self.windows[mask],
            labels=self.labels[mask],
            last_return=self.last_return[mask],
            window_start=self.window_start[mask],
            window_end=self.window_end[mask],
            label_end=self.label_end[mask],
            series=self.series[mask],
        )

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        return Samples(
            windows=np.concatenate([p.windows for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            last_return=np.concatenate([p.last_return for p in parts]),
            window_start=np.concatenate([p.window_start for p in parts]),
            window_end=np.concatenate([p.window_end for p in parts]),
            label_end=np.concatenate([p.label_end for p in parts]),
            series=np.concatenate([p.series for p in parts]),
        )


def label_returns(
    forward_return: npt.NDArray[np.float64], sigma: npt.NDArray[np.float64], spec: LabelSpec
) -> npt.NDArray[np.int64]:
    """Forward log returns and window volatilities → class indices (see the module docstring)."""
    threshold = spec.threshold_k * sigma * np.sqrt(spec.horizon)
    labels = np.full(forward_return.shape, HOLD, dtype=np.int64)
    labels[forward_return > threshold] = BUY
    labels[forward_return < -threshold] = SELL
    return labels


def make_samples(series: Series, spec: LabelSpec) -> Samples:
    """Every window of one series that has a label (the last `horizon` days have none)."""
    frame = series.frame
    values = frame.to_numpy(np.float64)  # (days, 5)
    close = values[:, 3]
    n_days = len(frame)
    ends = np.arange(WINDOW_LENGTH - 1, n_days - spec.horizon)  # index t of each window's last candle
    if ends.size == 0:
        raise ValueError(
            f"{series.name}: {n_days} rows is too few; need at least {WINDOW_LENGTH + spec.horizon} "
            f"(window {WINDOW_LENGTH} + horizon {spec.horizon})"
        )
    offsets = np.arange(-WINDOW_LENGTH + 1, 1)  # (60,)
    idx = ends[:, None] + offsets[None, :]  # (n, 60)
    windows = values[idx].astype(np.float32)  # (n, 60, 5)
    log_close = np.log(close)
    daily = np.diff(log_close[idx], axis=1)  # (n, 59) returns inside each window
    sigma = daily.std(axis=1)
    forward = log_close[ends + spec.horizon] - log_close[ends]
    dates = pd.DatetimeIndex(frame.index).tz_convert("UTC").tz_localize(None).to_numpy()
    return Samples(
        windows=windows,
        labels=label_returns(forward, sigma, spec),
        last_return=daily[:, -1],
        window_start=dates[idx[:, 0]],
        window_end=dates[ends],
        label_end=dates[ends + spec.horizon],
        series=np.full(ends.shape, series.name),
    )


@dataclass(frozen=True)
class SplitBoundaries:
    """Half-open calendar ranges [start, end) per split; the last split's end is just past the last date."""

    train: tuple[np.datetime64, np.datetime64]
    val: tuple[np.datetime64, np.datetime64]
    test: tuple[np.datetime64, np.datetime64]

    def ranges(self) -> dict[str, tuple[np.datetime64, np.datetime64]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_boundaries(dates: npt.NDArray[np.datetime64], train_fraction: float, val_fraction: float) -> SplitBoundaries:
    """Cut the sorted unique calendar dates at the given fractions."""
    unique = np.unique(dates)
    n = unique.size
    i_val = round(n * train_fraction)
    i_test = round(n * (train_fraction + val_fraction))
    if not 0 < i_val < i_test < n:
        raise ValueError(f"{n} dates cannot be split at fractions {train_fraction}/{val_fraction}")
    after_last = unique[-1] + np.timedelta64(1, "D")
    return SplitBoundaries(
        train=(unique[0], unique[i_val]),
        val=(unique[i_val], unique[i_test]),
        test=(unique[i_test], after_last),
    )


@dataclass(frozen=True)
class Splits:
    train: Samples
    val: Samples
    test: Samples
    boundaries: SplitBoundaries
    dropped_straddling: int

    def items(self) -> list[tuple[str, Samples]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    def summary(self) -> dict[str, Any]:
        """Date ranges, sizes and class balance per split, for the manifest and the report."""
        out: dict[str, Any] = {"dropped_straddling_windows": self.dropped_straddling}
        for name, samples in self.items():
            start, end = self.boundaries.ranges()[name]
            out[name] = {
                "calendar_range": [_day(start), _day(end - np.timedelta64(1, "D"))],
                "first_window_start": _day(samples.window_start.min()),
                "last_label_date": _day(samples.label_end.max()),
                "decision_dates": [_day(samples.window_end.min()), _day(samples.window_end.max())],
                "windows": len(samples),
                "class_counts": samples.class_counts(),
                "class_fractions": {c: round(n / len(samples), 4) for c, n in samples.class_counts().items()},
            }
        return out


def _day(value: np.datetime64) -> str:
    return str(pd.Timestamp(value).date())


def make_splits(series: Sequence[Series], spec: LabelSpec, train_fraction: float, val_fraction: float) -> Splits:
    """Samples from every series, assigned to train/val/test by date; boundary-straddling windows dropped."""
    samples = Samples.concat([make_samples(s, spec) for s in series])
    all_dates = np.concatenate(
        [pd.DatetimeIndex(s.frame.index).tz_convert("UTC").tz_localize(None).to_numpy() for s in series]
    )
    bounds = split_boundaries(all_dates, train_fraction, val_fraction)
    parts: list[Samples] = []
    assigned = np.zeros(len(samples), dtype=bool)
    for start, end in (bounds.train, bounds.val, bounds.test):
        inside = (samples.window_start >= start) & (samples.label_end < end)
        assigned |= inside
        parts.append(samples.select(inside))
    for name, part in zip(SPLIT_NAMES, parts, strict=True):
        if len(part) == 0:
            raise ValueError(f"split {name!r} has no complete window; the data are too short for these fractions")
    return Splits(
        train=parts[0],
        val=parts[1],
        test=parts[2],
        boundaries=bounds,
        dropped_straddling=int((~assigned).sum()),
    )


def class_weights(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Inverse-frequency weights (mean 1 over samples); pass train labels only, so nothing leaks from val/test."""
    counts = np.bincount(labels, minlength=N_CLASSES).astype(np.float64)
    if (counts == 0).any():
        missing = [c for c, n in zip(CLASSES, counts, strict=True) if n == 0]
        raise ValueError(f"training labels contain no {missing} samples; lower or raise threshold_k")
    weights: npt.NDArray[np.float64] = counts.sum() / (N_CLASSES * counts)
    return weights
