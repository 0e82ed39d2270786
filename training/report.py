"""models/REPORT.md and its plots: loss curves, confusion matrix, reliability diagram."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # files only; no display on build machines
import matplotlib.pyplot as plt
import numpy as np

from runtime.constants import CLASSES
from training import comparison

REPORT_FILE: Final = "REPORT.md"
LOSS_PLOT: Final = "loss_curves.png"
CONFUSION_PLOT: Final = "confusion_matrix.png"
RELIABILITY_PLOT: Final = "reliability.png"
PLOT_FILES: Final = (LOSS_PLOT, CONFUSION_PLOT, RELIABILITY_PLOT)
_DPI = 80  # small files: the whole models/ directory stays well under 5 MB


def _save(fig: Any, path: Path) -> None:
    # No timestamp in the PNG metadata, so the same run writes the same bytes.
    fig.savefig(path, dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_loss_curves(history: list[dict[str, float]], best_epoch: int, path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("class-weighted cross-entropy")
    ax.set_title("Loss curves")
    ax.legend()
    _save(fig, path)


def plot_confusion(matrix: list[list[int]], title: str, path: Path) -> None:
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title)
    _save(fig, path)


def plot_reliability(calib: dict[str, Any], path: Path) -> None:
    bins = calib["bins"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    ax.bar(centers, [b["accuracy"] for b in bins], width=0.09, alpha=0.6, label="accuracy per bin")
    ax.plot(
        [b["confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        marker="o",
        color="C1",
        label="(mean confidence, accuracy)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, test split (ECE = {calib['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _split_table(splits: dict[str, Any]) -> str:
    rows = ["| split | calendar range | decision dates | windows | sell / hold / buy |", "|---|---|---|---|---|"]
    for name in ("train", "val", "test"):
        s = splits[name]
        f = s["class_fractions"]
        rows.append(
            f"| {name} | {s['calendar_range'][0]}  to  {s['calendar_range'][1]} | {s['decision_dates'][0]}  to  "
            f"{s['decision_dates'][1]} | {s['windows']} | {_pct(f['sell'])} / {_pct(f['hold'])} / {_pct(f['buy'])} |"
        )
    return "\n".join(rows)


#: Bar intervals with a name: (adjective for the candles, unit of the label horizon).
_NAMED_BARS: Final = {60: ("one-minute", "minute"), 3600: ("hourly", "hour"), 86400: ("daily", "day")}


def bar_words(series: list[dict[str, Any]]) -> tuple[str, str]:
    """How the report names the data's candles and the horizon's unit, from each series' ``bar_seconds``:
    ("hourly candles", "hours"), ("daily candles", "days"), ("15-minute candles", "candles"). Series that
    disagree, or a manifest written before ``bar_seconds`` was recorded, give ("candles", "candles")."""
    intervals = {s.get("bar_seconds") for s in series}
    if len(intervals) != 1:
        return "candles", "candles"
    seconds = intervals.pop()
    if not isinstance(seconds, int) or seconds <= 0:
        return "candles", "candles"
    if seconds in _NAMED_BARS:
        adjective, unit = _NAMED_BARS[seconds]
        return f"{adjective} candles", f"{unit}s"
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            return f"{seconds // size}-{name} candles", "candles"
    return f"{seconds}-second candles", "candles"


def write_report(path: Path, manifest: dict[str, Any]) -> None:
    """Render REPORT.md from the (not yet hashed) manifest, so report and manifest cannot disagree."""
    m = manifest
    metrics, data, train = m["metrics"], m["data"], m["training"]
    cfg = train["config"]
    fp32, int8 = metrics["test_torch_fp32"], metrics["test_onnx_int8"]
    base_rows = "\n".join(
        f"| {name} | {_pct(v['accuracy'])} | {v['macro_f1']:.3f} |" for name, v in metrics["baselines"].items()
    )
    parity_rows = "\n".join(
        f"| {c['name']} | {c['metric']} | {c['value']:.3g} | {c['limit']:g} | {'pass' if c['passed'] else 'FAIL'} |"
        for c in m["parity"]["checks"]
    )
    lat = m["latency"]
    lat_rows = "\n".join(
        f"| {t} | {lat[f'threads_{t}']['fp32']['median_ms']:.3f} | {lat[f'threads_{t}']['int8']['median_ms']:.3f} | "
        f"{lat[f'threads_{t}']['int8_speedup']:.2f}x | {'yes' if lat[f'threads_{t}']['target_met'] else 'no'} |"
        for t in (1, 2)
    )
    margin = metrics["top2_margin"]
    alt_rows = "\n".join(
        f"| {a['settings']} | {a['max_abs_diff_vs_onnx_fp32']:.4f} | {_pct(a['argmax_agreement_vs_onnx_fp32'])} |"
        for a in m["quantization"]["alternatives_not_shipped"]
    )
    test_span = " to ".join(data["splits"]["test"]["decision_dates"])
    per_class = ", ".join(
        f"{c}: P={v['precision']:.2f} R={v['recall']:.2f} F1={v['f1']:.2f}" for c, v in fp32["per_class"].items()
    )
    sizes = {name: info["bytes"] for name, info in m["files"].items()} if "files" in m else {}
    best = m["metrics"]["best_model_vs_best_baseline"]
    series = ", ".join(s["source"] for s in data["series"])
    candles, horizon_unit = bar_words(data["series"])
    text = f"""# SignalPredictor {m["version"]} — evaluation report

Generated by `python -m training {"finetune" if "finetune" in m else "train"}` on {m["created"]}. Every number
here is also in `manifest.json`.

## Bottom line

{m["summary"]}
{"" if "finetune" not in m else chr(10) + comparison.render(m)}
## Data

- Source: {series} (`--data {cfg["data"]}`); {candles}, every row validated with `runtime.schemas.validate_candle`.
- Data quirks, kept as-is because they pass the API's rules: {data["quirks"]}
- Labels: forward log return over {cfg["horizon"]} {horizon_unit} vs ±{cfg["threshold_k"]} x (std of the window's
  per-candle log returns) x √{cfg["horizon"]}; above → buy, below → sell, otherwise hold.
- Splits by calendar date ({cfg["train_fraction"]:.0%} / {cfg["val_fraction"]:.0%} / rest) over the union of all
  series' dates; a window belongs to a split only if its 60 input candles *and* its label candle lie inside it
  ({data["splits"]["dropped_straddling_windows"]} boundary-straddling windows dropped). BatchNorm statistics and
  class weights come from the training split only.

{_split_table(data["splits"])}

## Out-of-sample results (test split, {fp32["support"]} windows)

| model | accuracy | macro-F1 |
|---|---|---|
| SignalPredictor, torch FP32 | {_pct(fp32["accuracy"])} | {fp32["macro_f1"]:.3f} |
| SignalPredictor, ONNX INT8 (ships) | {_pct(int8["accuracy"])} | {int8["macro_f1"]:.3f} |
{base_rows}

Model minus best baseline: accuracy {best["accuracy_delta"] * 100:+.1f} points, macro-F1
{best["macro_f1_delta"]:+.3f}.

Per class (torch FP32): {per_class}.

![confusion matrix]({CONFUSION_PLOT})

Calibration (torch FP32, top-label, {len(metrics["calibration"]["bins"])} non-empty bins): ECE =
{metrics["calibration"]["ece"]:.3f}, mean confidence {metrics["calibration"]["mean_confidence"]:.3f},
test NLL {metrics["calibration"]["nll"]:.3f} (uniform guess: {np.log(3):.3f}).

![reliability diagram]({RELIABILITY_PLOT})

## Training

{train["epochs_run"]} epoch(s) run, best validation loss at epoch {train["best_epoch"]}
({"stopped early" if train["stopped_early"] else "ran to the epoch limit"}); {train["wall_seconds"]:.0f} s of
training on {cfg["num_threads"]} CPU thread(s), seed {cfg["seed"]}. AdamW lr {cfg["lr"]}, cosine schedule with
{cfg["warmup_epochs"]} warm-up epoch(s), batch {cfg["batch_size"]}, gradient clipping at {cfg["grad_clip"]},
class weights {", ".join(f"{w:.2f}" for w in train["class_weights"])} (sell, hold, buy).

![loss curves]({LOSS_PLOT})

## Quantization and parity

INT8 graph: `onnxruntime.quantization.quantize_dynamic` ({m["quantization"]["onnx"]}) on the FP32 export; ops
{m["quantization"]["int8_op_counts"]}. Sizes: FP32 {sizes.get("signal_predictor.onnx", 0):,} bytes, INT8
{sizes.get("signal_predictor.int8.onnx", 0):,} bytes.

| check | metric | value | limit | result |
|---|---|---|---|---|
{parity_rows}

INT8 checks run on all {m["parity"]["test_windows"]} test windows, one window per call. Context for the
argmax-agreement figures: the FP32 model's gap between its top two probabilities is below 0.001 for
{_pct(margin["below_0.001"])} of test windows (median gap {margin["median"]:.4f}), so a quantization error of a
few thousandths flips a handful of near-ties. Not enforced, for information: torch INT8 vs torch FP32 max
|dp| {m["parity"]["torch_int8_vs_torch_fp32_max_abs_diff"]:.4f}; ONNX INT8 called with batches of 64 (activation
ranges then depend on the batch) vs ONNX FP32 max |dp| {m["parity"]["onnx_int8_batch64_vs_onnx_fp32_max_abs_diff"]:.4f}.
Other quantization settings, tried on this model and not shipped (vs ONNX FP32, one window per call):

| settings | max abs diff | argmax agreement |
|---|---|---|
{alt_rows}

## Single-window latency (bare onnxruntime, CPU, median of {lat["runs"]} runs)

| intra-op threads | FP32 ms | INT8 ms | INT8 speed-up | ≥ {lat["target_int8_speedup"]}x target |
|---|---|---|---|---|
{lat_rows}

FP32 and INT8 calls alternate so background load hits both alike. Measured on the build machine
({m["environment"]["cpu_count"]} CPU cores, shared with other jobs), so treat absolute numbers as indicative;
bench/ owns the serving benchmarks.

## Limits

Market direction is close to unpredictable from past prices alone; these windows overlap heavily (one new
candle per window), so the effective number of independent test samples is far below the window count, and the
test period ({test_span}) is one market regime. Do not read a difference of a few points as an edge.
"""
    path.write_text(text, encoding="utf-8")
