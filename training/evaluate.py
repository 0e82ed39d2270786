"""Out-of-sample metrics: accuracy, macro-F1, confusion matrix, calibration (ECE), and naive baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.constants import CLASSES, N_CLASSES
from training.dataset import BUY, HOLD, SELL, Samples

ECE_BINS = 10


def confusion_matrix(labels: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Rows are true classes, columns predicted classes, both in CLASSES order."""
    matrix = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def classification_metrics(labels: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> dict[str, Any]:
    matrix = confusion_matrix(labels, predicted)
    tp = np.diag(matrix).astype(np.float64)
    precision = np.divide(tp, matrix.sum(axis=0), out=np.zeros(N_CLASSES), where=matrix.sum(axis=0) > 0)
    recall = np.divide(tp, matrix.sum(axis=1), out=np.zeros(N_CLASSES), where=matrix.sum(axis=1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(N_CLASSES), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / matrix.sum()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(CLASSES, precision, recall, f1, matrix.sum(axis=1), strict=True)
        },
        "confusion_matrix": matrix.tolist(),
    }


def calibration(labels: npt.NDArray[np.int64], probs: npt.NDArray[Any], bins: int = ECE_BINS) -> dict[str, Any]:
    """Top-label reliability: per confidence bin, mean confidence vs accuracy; ECE is their weighted gap."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
        ece += mask.mean() * abs(conf - acc)
        rows.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": int(mask.sum()),
                "confidence": conf,
                "accuracy": acc,
            }
        )
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    return {"ece": float(ece), "bins": rows, "nll": nll, "mean_confidence": float(confidence.mean())}


def baselines(train: Samples, test: Samples) -> dict[str, dict[str, Any]]:
    """Naive rules the model must beat to be worth anything. Each uses only what is known at decision time."""
    majority = int(np.bincount(train.labels, minlength=N_CLASSES).argmax())
    momentum = np.where(test.last_return > 0, BUY, np.where(test.last_return < 0, SELL, HOLD)).astype(np.int64)
    out = {
        f"majority_class ({CLASSES[majority]}, from train)": np.full(len(test), majority, dtype=np.int64),
        "last_return_sign (momentum)": momentum,
        "last_return_sign_reversed (mean reversion)": (2 - momentum).astype(np.int64),
    }
    results = {}
    for name, predicted in out.items():
        m = classification_metrics(test.labels, predicted)
        results[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return results
