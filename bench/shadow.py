"""Shadow, then promotion, on real market windows: the figures an operator would read before loading a version.

    python -m bench.shadow [--shadow-version 1.1.0-eurusd] [--windows 600]

Starts the service on ``models/`` (serving the root version) with ``EDGE_SHADOW_VERSION`` and a sample rate of 1,
sends the last ``--windows`` bar-by-bar windows of each market to ``/predict`` (one connection, as a bot would),
then reads the shadow series from ``/metrics``: agreement (same argmax) and the per-window max |Δp| histogram,
per market (deltas between scrapes). The same windows are run through both versions in this process
(`runtime.session.Model`, batch-invariant as the service is), and the service's counts must equal them exactly
whenever no sample was dropped. Then the candidate is loaded over the repository API and ``/predict`` must
answer with its version and its probabilities.

Markets: S&P 500 daily (``arch``; the parent's market) and EUR/USD hourly (``examples/eurusd_1h.csv``; the
fine-tuned version's market). The last windows of each lie in that market's test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.payload import encode, request_body, sp500_candles
from bench.servers import REPO_ROOT, Server, free_port, http_request, running, service_spec
from runtime.constants import FEATURES, WINDOW_LENGTH
from runtime.session import Model

API_KEY = "bench-shadow-key-0123"
RESULTS = REPO_ROOT / "bench" / "results"


def eurusd_candles() -> list[dict[str, Any]]:
    """examples/eurusd_1h.csv as API candles (its naive timestamps are UTC, as the fine-tune read them)."""
    with (REPO_ROOT / "examples" / "eurusd_1h.csv").open() as f:
        return [
            {"timestamp": row["timestamp"] + "Z", **{k: float(row[k]) for k in FEATURES}} for row in csv.DictReader(f)
        ]


def rolling(candles: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """The last `n` windows, one bar apart (what a bot sends as each bar closes)."""
    first = max(0, len(candles) - WINDOW_LENGTH - n + 1)
    return [candles[i : i + WINDOW_LENGTH] for i in range(first, len(candles) - WINDOW_LENGTH + 1)]


def shadow_series(port: int) -> dict[str, float]:
    """Cumulative shadow figures: windows, agreements, dropped and the |Δp| histogram buckets (le -> count)."""
    status, raw = http_request(port, "GET", "/metrics", headers={"X-API-Key": API_KEY})
    assert status == 200, raw[:200]
    out: dict[str, float] = {"windows": 0.0, "agreements": 0.0, "dropped": 0.0}
    for family in text_string_to_metric_families(raw.decode()):
        for s in family.samples:
            if s.name == "edge_shadow_windows_total":
                out["windows"] += s.value
            elif s.name == "edge_shadow_argmax_agreements_total":
                out["agreements"] += s.value
            elif s.name == "edge_shadow_dropped_total":
                out["dropped"] += s.value
            elif s.name == "edge_shadow_abs_diff_bucket":
                key = f"le={s.labels['le']}"
                out[key] = out.get(key, 0.0) + s.value
    return out


def wait_for_shadow(port: int, expected: float, timeout_s: float = 30.0) -> dict[str, float]:
    """Scrape until every sampled window was computed or dropped (the shadow runs behind the answers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        series = shadow_series(port)
        if series["windows"] + series["dropped"] >= expected or time.monotonic() > deadline:
            return series
        time.sleep(0.05)


def offline(serving: Model, shadow: Model, windows: np.ndarray) -> dict[str, Any]:
    """Both versions on the same windows, one window per call (as the service ran them)."""
    p = np.concatenate([serving.run(w[None]) for w in windows])
    q = np.concatenate([shadow.run(w[None]) for w in windows])
    diff = np.abs(p - q).max(axis=1)
    return {
        "agreements": int((p.argmax(1) == q.argmax(1)).sum()),
        "abs_diff": diff,
        "shadow_probabilities": q,
    }


def run(shadow_version: str, n: int) -> dict[str, Any]:
    models = REPO_ROOT / "models"
    serving_model = Model.load(models, precision="int8", provider="cpu", intra_op_threads=1)
    shadow_model = Model.load(models / shadow_version, precision="int8", provider="cpu", intra_op_threads=1)
    markets = {
        "S&P 500 daily (parent's market)": sp500_candles(10_000),
        "EUR/USD hourly (fine-tune's market)": eurusd_candles(),
    }
    port = free_port()
    spec = service_spec(
        "service-shadow",
        port=port,
        model_dir=str(models),
        precision="int8",
        workers=1,
        api_key=API_KEY,
        env={"EDGE_SHADOW_VERSION": shadow_version, "EDGE_SHADOW_SAMPLE_RATE": "1", "EDGE_DRIFT_SAMPLE_RATE": "0"},
    )
    server = Server(spec, port, RESULTS / "logs")
    rows: list[dict[str, Any]] = []
    with running([server]):
        server.start()
        server.wait_ready()
        before = shadow_series(port)
        sent = 0.0
        for market, candles in markets.items():
            windows = rolling(candles, n)
            symbol = "EUR/USD" if "EUR" in market else "SPX/USD"
            t0 = time.perf_counter()
            for w in windows:
                status, raw = http_request(
                    port,
                    "POST",
                    "/predict",
                    encode(request_body(w, symbol=symbol)),
                    {"Content-Type": "application/json", "X-API-Key": API_KEY},
                )
                assert status == 200, raw[:300]
            elapsed = time.perf_counter() - t0
            sent += len(windows)
            after = wait_for_shadow(port, before["windows"] + before["dropped"] + len(windows))
            delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            before = after
            arr = np.array([[[c[f] for f in FEATURES] for c in w] for w in windows], dtype=np.float32)
            ref = offline(serving_model, shadow_model, arr)
            rows.append(
                {
                    "market": market,
                    "windows_sent": len(windows),
                    "requests_per_s": len(windows) / elapsed,
                    "shadowed": int(delta["windows"]),
                    "dropped": int(delta["dropped"]),
                    "agreement": delta["agreements"] / max(delta["windows"], 1),
                    "abs_diff_buckets": {k[3:]: v for k, v in delta.items() if k.startswith("le=")},
                    "offline_agreement": ref["agreements"] / len(windows),
                    "offline_abs_diff_p50": float(np.median(ref["abs_diff"])),
                    "offline_abs_diff_p99": float(np.quantile(ref["abs_diff"], 0.99)),
                    "offline_abs_diff_max": float(ref["abs_diff"].max()),
                    "service_equals_offline": int(delta["dropped"]) == 0
                    and int(delta["agreements"]) == ref["agreements"]
                    and int(delta["windows"]) == len(windows),
                }
            )
            last_window, last_shadow = windows[-1], ref["shadow_probabilities"][-1]

        # Promotion: load the candidate over the repository API; answers must name it and carry its probabilities.
        status, raw = http_request(
            port,
            "POST",
            "/v2/repository/models/signal_predictor/load",
            json.dumps({"parameters": {"version": shadow_version}}).encode(),
            {"Content-Type": "application/json", "X-API-Key": API_KEY},
        )
        assert status == 200, raw[:300]
        status, raw = http_request(
            port,
            "POST",
            "/predict",
            encode(request_body(last_window, symbol="EUR/USD")),
            {"Content-Type": "application/json", "X-API-Key": API_KEY},
        )
        assert status == 200, raw[:300]
        prediction = json.loads(raw)["prediction"]
        answered = np.array([prediction["probabilities"][c] for c in ("sell", "hold", "buy")])
        promotion = {
            "load": "200",
            "answered_version": prediction["model_version"],
            "max_abs_diff_vs_offline": float(np.abs(answered - last_shadow).max()),
        }
        index_status, index_raw = http_request(port, "GET", "/v2/repository/index", headers={"X-API-Key": API_KEY})
        promotion["index"] = json.loads(index_raw) if index_status == 200 else index_status
    return {"shadow_version": shadow_version, "markets": rows, "promotion": promotion}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"Shadow {result['shadow_version']} beside the served 1.0.0 (sample rate 1, one connection, `/predict`):",
        "",
        "| market | windows | shadowed | dropped | agreement (service) | agreement (offline) | "
        "max|Δp| p50 / p99 / max (offline) | service == offline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["markets"]:
        diff = f"{r['offline_abs_diff_p50']:.3f} / {r['offline_abs_diff_p99']:.3f} / {r['offline_abs_diff_max']:.3f}"
        lines.append(
            f"| {r['market']} | {r['windows_sent']} | {r['shadowed']} | {r['dropped']} | "
            f"{100 * r['agreement']:.1f} % | {100 * r['offline_agreement']:.1f} % | {diff} | "
            f"{'yes' if r['service_equals_offline'] else 'no'} |"
        )
    p = result["promotion"]
    lines += [
        "",
        f"Promotion: repository load {p['load']}; `/predict` then answered version {p['answered_version']}, "
        f"probabilities within {p['max_abs_diff_vs_offline']:.1e} of the version run in-process.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shadow-version", default="1.1.0-eurusd")
    parser.add_argument("--windows", type=int, default=600, help="last N windows of each market")
    parser.add_argument("--out", type=Path, default=RESULTS / "shadow.json")
    args = parser.parse_args(argv)
    result = run(args.shadow_version, args.windows)
    text = render(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
