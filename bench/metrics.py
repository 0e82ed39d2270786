"""Reading the service's own Prometheus histograms around a measured load (what happened inside the server)."""

from __future__ import annotations

from typing import Any

from bench.servers import http_request

#: Unlabelled model-side histograms of the service (runtime.metrics), and the /predict request histogram.
MODEL_HISTOGRAMS = ("edge_batch_size", "edge_compute_seconds", "edge_queue_seconds")
PREDICT_DURATION = 'edge_request_duration_seconds{route="/predict"}'


def scrape_histograms(
    port: int, names: tuple[str, ...] = (*MODEL_HISTOGRAMS, PREDICT_DURATION)
) -> dict[str, dict[str, Any]]:
    """The cumulative buckets, count and sum of each histogram in ``names``, from GET /metrics.

    A name may carry one label selector, e.g. ``edge_request_duration_seconds{route="/predict"}``: only series
    with that label are read.
    """
    status, raw = http_request(port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out: dict[str, dict[str, Any]] = {n: {"buckets": {}, "count": 0.0, "sum": 0.0} for n in names}
    wanted = {n: (n.partition("{")[0], n.partition("{")[2].rstrip("}")) for n in names}
    for line in raw.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        metric, _, labels = key.partition("{")
        for n, (base, selector) in wanted.items():
            if selector and selector not in labels:
                continue
            if metric == f"{base}_bucket":
                le = labels.split('le="', 1)[1].split('"', 1)[0]
                out[n]["buckets"][le] = float(value)
            elif metric == f"{base}_count":
                out[n]["count"] = float(value)
            elif metric == f"{base}_sum":
                out[n]["sum"] = float(value)
    return out


def histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What one level added to a histogram: runs per bucket (not cumulative, labelled by range), count, mean."""
    edges = sorted(after["buckets"], key=lambda le: float(le))
    per_bucket: dict[str, int] = {}
    prev_edge, prev_cum = "0", 0.0
    for le in edges:
        cum = after["buckets"][le] - before["buckets"].get(le, 0.0)
        n = round(cum - prev_cum)
        if n:
            label = f"{_num(prev_edge)}-{_num(le)}" if le != "+Inf" else f">{_num(prev_edge)}"
            per_bucket[label] = n
        prev_edge, prev_cum = le, cum
    count = after["count"] - before["count"]
    total = after["sum"] - before["sum"]
    return {"count": round(count), "sum": total, "mean": total / count if count else None, "buckets": per_bucket}


def inside_server(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over one measured point: time inside the server per /predict, model time per run and per request.

    ``server_ms`` runs from the ASGI call to the end of the response (HTTP parsing and the socket writes' return
    excluded); what wrk sees beyond it is the loopback, the kernel, uvicorn's parser and wrk itself.
    """
    d = {n: histogram_delta(before[n], after[n]) for n in after}
    requests = d[PREDICT_DURATION]["count"]
    runs = d["edge_compute_seconds"]["count"]
    return {
        "requests": requests,
        "server_ms": None if not requests else 1e3 * d[PREDICT_DURATION]["sum"] / requests,
        "model_runs": runs,
        "model_ms_per_run": None if not runs else 1e3 * d["edge_compute_seconds"]["sum"] / runs,
        "model_ms_per_request": None if not requests else 1e3 * d["edge_compute_seconds"]["sum"] / requests,
        "windows_per_run": d["edge_batch_size"]["mean"],
        "queue_ms_per_run": None if not runs else 1e3 * d["edge_queue_seconds"]["sum"] / runs,
    }


def _num(le: str) -> str:
    x = float(le)
    return str(int(x)) if x.is_integer() else f"{x:g}"
