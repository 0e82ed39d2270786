"""Batch invariance: does a window's answer depend on the other windows of its model run?

For each served configuration (the default batch-invariant row-wise graphs, and the `EDGE_BATCH_INVARIANT=false`
opt-out that runs the plain graphs batched) every window is run alone, then the same windows are cut into
batches of each size, in order and shuffled, and each window's probabilities are compared with its lone answer.

Two sets of real market windows: the markets the model was trained on (daily S&P 500 and NASDAQ from `arch`)
and held-out markets it never saw, with another bar size (EUR/USD hourly and GOOG daily, the data files shipped
in the `backtesting` package). The default configuration must be exact (0 differing windows); the opt-out's
measured bound on the held-out windows is what `runtime.batching.BATCH_INVARIANCE_ATOL` states.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.batching import BATCH_INVARIANCE_ATOL
from runtime.constants import FEATURES, FP32_FILE, FP32_ROWWISE_FILE, INPUT_NAME, INT8_FILE, INT8_ROWWISE_FILE
from runtime.constants import WINDOW_LENGTH as _W
from runtime.session import session_options

#: Batch sizes compared with batch 1: powers of two up to the CPU default and beyond, and a full /predict/batch.
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 100)
#: (configuration, precision, file): what the service runs with each setting of EDGE_BATCH_INVARIANT.
CONFIGS = (
    ("invariant", "int8", INT8_ROWWISE_FILE),
    ("invariant", "fp32", FP32_ROWWISE_FILE),
    ("batched", "int8", INT8_FILE),
    ("batched", "fp32", FP32_FILE),
)
_COLUMNS = [f.capitalize() for f in FEATURES]


def _windows_from(series: Sequence[np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
    per_series = [n // len(series) + (1 if i < n % len(series) else 0) for i in range(len(series))]
    windows: list[np.ndarray[Any, Any]] = []
    for arr, k in zip(series, per_series, strict=True):
        starts = np.linspace(0, len(arr) - _W, k).astype(int)
        windows.extend(arr[s : s + _W] for s in starts)
    return np.stack(windows).astype(np.float32)


def market_windows(n: int = 512) -> np.ndarray[Any, Any]:
    """``n`` real windows (float32, (n, 60, 5)), evenly spaced over both daily series of `arch`, oldest first."""
    try:
        from arch.data import nasdaq, sp500
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("arch is not installed, run `pip install .[train]` (or `pip install arch`)") from e
    return _windows_from([df[_COLUMNS].dropna().to_numpy(np.float64) for df in (sp500.load(), nasdaq.load())], n)


def held_out_windows(n: int = 338) -> np.ndarray[Any, Any]:
    """``n`` real windows from markets the model never saw: EUR/USD hourly and GOOG daily (`backtesting`'s data
    files, read as CSV without importing the package, whose plotting dependencies are not needed)."""
    import pandas as pd

    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("backtesting is not installed, run `pip install --no-deps backtesting` (data files only)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "test"
    frames = [pd.read_csv(folder / name, index_col=0, parse_dates=True) for name in ("EURUSD.csv", "GOOG.csv")]
    return _windows_from([df[_COLUMNS].dropna().to_numpy(np.float64) for df in frames], n)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])


def measure(
    model_dir: Path,
    markets: dict[str, np.ndarray[Any, Any]],
    *,
    configs: Sequence[tuple[str, str, str]] = CONFIGS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict[str, Any]:
    """Per configuration, market and batch size: windows differing from their lone answer, max/p99/median |Δp|,
    argmax agreement. Batches are cut from a shuffled order, so a window meets other neighbours at each size."""
    out: dict[str, Any] = {
        "windows": {name: len(w) for name, w in markets.items()},
        "atol": BATCH_INVARIANCE_ATOL,
        "points": [],
    }
    rng = np.random.default_rng(0)
    for config, precision, file in configs:
        if not (model_dir / file).exists():
            continue
        session = _session(model_dir / file)
        for market, windows in markets.items():
            alone = np.concatenate(
                [session.run(None, {INPUT_NAME: windows[i : i + 1]})[0] for i in range(len(windows))]
            )
            top2 = np.sort(alone, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]  # how far each window is from a tie between its two top classes
            for b in batch_sizes:
                order = rng.permutation(len(windows))
                got = np.empty_like(alone)
                for start in range(0, len(order), b):
                    rows = order[start : start + b]
                    got[rows] = session.run(None, {INPUT_NAME: windows[rows]})[0]
                diff = np.abs(got - alone).max(axis=1)  # (n,) per-window max over the classes
                flips = got.argmax(1) != alone.argmax(1)
                out["points"].append(
                    {
                        "config": config,
                        "precision": precision,
                        "market": market,
                        "batch": b,
                        "differing_windows": int((diff > 0).sum()),
                        "max_abs_dp": float(diff.max()),
                        "p99_abs_dp": float(np.quantile(diff, 0.99)),
                        "median_abs_dp": float(np.median(diff)),
                        "argmax_agreement": float(1 - flips.mean()),
                        "flips": int(flips.sum()),
                        # A changed signal is only acceptable on a near-tie (top two within 2 x the bound).
                        "flips_outside_near_ties": int((flips & (margin > 2 * BATCH_INVARIANCE_ATOL)).sum()),
                    }
                )
    invariant = [p for p in out["points"] if p["config"] == "invariant"]
    batched = [p for p in out["points"] if p["config"] == "batched"]
    out["invariant_exact"] = bool(invariant) and all(p["differing_windows"] == 0 for p in invariant)
    out["batched_max_abs_dp"] = max((p["max_abs_dp"] for p in batched), default=0.0)
    out["within_atol"] = out["invariant_exact"] and all(
        p["max_abs_dp"] <= BATCH_INVARIANCE_ATOL and p["flips_outside_near_ties"] == 0 for p in batched
    )
    return out


def default_markets() -> dict[str, np.ndarray[Any, Any]]:
    """The benchmark's two sets: training markets (512 windows) and held-out markets (338 windows)."""
    return {
        "training (S&P 500, NASDAQ daily)": market_windows(),
        "held-out (EUR/USD hourly, GOOG daily)": held_out_windows(),
    }


def markdown(result: dict[str, Any]) -> list[str]:
    """The RESULTS.md section."""
    sizes = ", ".join(f"{n} {name}" for name, n in result["windows"].items())
    verdict = (
        "The default (batch-invariant) configuration gave every window exactly its lone answer, and the opt-out "
        f"stayed within its stated bound {result['atol']:g}."
        if result["within_atol"]
        else "**A default-configuration window differed from its lone answer, or the opt-out exceeded its bound "
        f"{result['atol']:g} or changed a signal away from a near-tie.**"
    )
    lines = [
        "## Batch invariance (each window alone against the same windows in shuffled batches of each size)",
        "",
        f"Real windows: {sizes}. `invariant` is the default (`EDGE_BATCH_INVARIANT=true`, the row-wise graphs); "
        f"`batched` is the opt-out (the plain graphs, batched). {verdict}",
        "",
        "| config | precision | market | batch | windows ≠ alone | max \\|Δp\\| | p99 \\|Δp\\| | median \\|Δp\\| "
        "| argmax agreement | flips off near-ties |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['config']} | {p['precision']} | {p['market']} | {p['batch']} | {p['differing_windows']} "
            f"| {p['max_abs_dp']:.2e} | {p['p99_abs_dp']:.2e} | {p['median_abs_dp']:.2e} "
            f"| {100 * p['argmax_agreement']:.2f}% | {p['flips_outside_near_ties']} |"
        )
    return lines


if __name__ == "__main__":
    import json
    import sys

    res = measure(Path(sys.argv[1] if len(sys.argv) > 1 else "models"), default_markets())
    print("\n".join(markdown(res)))
    print(json.dumps({k: v for k, v in res.items() if k != "points"}))
