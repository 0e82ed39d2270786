from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import market_windows, versioned_model_dir, window_to_payload
from prometheus_client.parser import text_string_to_metric_families

from runtime.constants import INT8_ROWWISE_FILE

JSON = {"content-type": "application/json"}


def _samples(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _predict(client: Any, seed: int = 0, **headers: str) -> Any:
    body = json.dumps(window_to_payload(market_windows(1, seed)[0]))
    return client.post("/predict", content=body, headers={**JSON, **headers})


def test_metrics_parse_and_move_with_traffic(make_client: Any) -> None:
    client = make_client(drift_sample_rate=0)
    before = _samples(client)
    ok = (("route", "/predict"), ("status", "200"))
    for seed in range(3):
        assert _predict(client, seed).status_code == 200
    client.post("/predict", content=b"{", headers=JSON)
    after = _samples(client)
    assert after[("edge_requests_total", ok)] - before.get(("edge_requests_total", ok), 0) == 3
    assert after[("edge_requests_total", (("route", "/predict"), ("status", "400")))] == 1
    assert after[("edge_request_duration_seconds_count", (("route", "/predict"),))] >= 4
    assert after[("edge_batch_size_count", ())] >= 3
    assert after[("edge_compute_seconds_count", ())] >= 3
    assert after[("edge_queue_seconds_count", ())] >= 3
    info = [k for k in after if k[0] == "edge_model_info"]
    assert len(info) == 1 and dict(info[0][1])["precision"] == "int8"


def test_process_and_platform_series_are_exported_and_move(make_client: Any, tmp_path: Path) -> None:
    """process_*, python_info and python_gc_* on /metrics describe this process (the TestClient serves in it)."""
    import gc

    import numpy as np

    client = make_client(drift_sample_rate=0)
    before = _samples(client)
    info = [dict(k[1]) for k in before if k[0] == "python_info"]
    assert len(info) == 1 and info[0]["implementation"] and info[0]["major"] == "3"
    assert before[("process_max_fds", ())] >= before[("process_open_fds", ())] > 0
    files = [open(tmp_path / f"f{i}", "w") for i in range(25)]  # held open while scraped
    ballast = np.ones(64 * 2**20 // 8)  # 64 MiB, every page touched
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn CPU this process is charged for
        pass
    gc.collect(2)
    after = _samples(client)
    try:
        assert after[("process_open_fds", ())] - before[("process_open_fds", ())] >= 25
        assert after[("process_resident_memory_bytes", ())] - before[("process_resident_memory_bytes", ())] > 48e6
        assert after[("process_cpu_seconds_total", ())] - before[("process_cpu_seconds_total", ())] >= 0.2
        gen2 = ("python_gc_collections_total", (("generation", "2"),))
        assert after[gen2] > before[gen2]
        assert after[("process_start_time_seconds", ())] == before[("process_start_time_seconds", ())]
    finally:
        for f in files:
            f.close()
        del ballast


def test_unknown_paths_share_one_label(make_client: Any) -> None:
    client = make_client()
    for i in range(5):
        client.get(f"/random-{i}")
    samples = _samples(client)
    assert samples[("edge_requests_total", (("route", "unmatched"), ("status", "404")))] == 5
    assert not any("random" in str(k) for k in samples)


def test_metrics_can_require_the_key(make_client: Any) -> None:
    client = make_client(api_keys="metrics-key-123", metrics_require_key=True)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"x-api-key": "metrics-key-123"}).status_code == 200


def test_drift_monitor_reports_agreement(make_client: Any) -> None:
    client = make_client(drift_sample_rate=1.0)
    deadline = time.monotonic() + 20
    samples: dict[Any, float] = {}
    while time.monotonic() < deadline:  # the FP32 reference loads in the background
        for seed in range(5):
            assert _predict(client, seed).status_code == 200
        samples = _samples(client)
        if samples.get(("edge_drift_windows_total", ()), 0) >= 5:
            break
        time.sleep(0.2)
    windows = samples[("edge_drift_windows_total", ())]
    assert windows >= 5
    # Agreement itself depends on near-ties among a handful of windows; the offline parity check bounds it
    # on the whole test split. Here: the counters are consistent and the drift stays inside the parity bound.
    assert 0 <= samples[("edge_drift_argmax_agreements_total", ())] <= windows
    assert samples[("edge_drift_max_abs_diff_count", ())] == windows
    assert 0 < samples[("edge_drift_worst_abs_diff", ())] <= 0.02


def test_stale_window_is_rejected_and_counted(make_client: Any) -> None:
    client = make_client(max_window_age_s=3600)
    old = window_to_payload(market_windows(1)[0], start=datetime(2020, 1, 1, tzinfo=UTC))
    response = client.post("/predict", content=json.dumps(old), headers=JSON)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "STALE_WINDOW" and body["details"][0]["field"] == "body.sequence.59.timestamp"
    fresh = window_to_payload(market_windows(1)[0], start=datetime.now(UTC) - timedelta(days=59, minutes=1))
    assert client.post("/predict", content=json.dumps(fresh), headers=JSON).status_code == 200
    assert _samples(client)[("edge_rejected_total", (("reason", "stale"),))] == 1


def test_reload_switches_version_atomically(make_client: Any, tmp_path: Path, committed_model_dir: Path) -> None:
    root = versioned_model_dir(tmp_path, committed_model_dir)
    client = make_client(model_dir=root, model_version="v1", api_keys="admin-key-123")
    auth = {"x-api-key": "admin-key-123"}
    assert _predict(client, **auth).json()["prediction"]["model_version"] == "v1"
    assert client.post("/admin/reload", content=b'{"version": "v2"}', headers={**JSON}).status_code == 401
    response = client.post("/admin/reload", content=b'{"version": "v2"}', headers={**JSON, **auth})
    assert response.status_code == 200, response.text
    assert response.json()["previous_version"] == "v1" and response.json()["model_version"] == "v2"
    assert _predict(client, **auth).json()["prediction"]["model_version"] == "v2"
    assert client.get("/ready").json()["model_version"] == "v2"


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        pytest.param("corrupt", "does not match its manifest", id="corrupt-file"),
        pytest.param("missing-version", "not found", id="missing-version"),
    ],
)
def test_failed_reload_keeps_the_old_model(
    make_client: Any, tmp_path: Path, committed_model_dir: Path, damage: str, match: str
) -> None:
    root = versioned_model_dir(tmp_path, committed_model_dir)
    target = "v2"
    if damage == "corrupt":
        path = root / "v2" / INT8_ROWWISE_FILE
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    else:
        target = "v9"
    client = make_client(model_dir=root, model_version="v1")
    response = client.post("/admin/reload", content=json.dumps({"version": target}), headers=JSON)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "RELOAD_FAILED" and match in body["error"] and "still serving version v1" in body["error"]
    assert _predict(client).json()["prediction"]["model_version"] == "v1"
    assert client.get("/ready").status_code == 200
    assert _samples(client)[("edge_model_reloads_total", (("outcome", "failed"),))] == 1


def test_reload_body_is_validated(make_client: Any) -> None:
    response = make_client().post("/admin/reload", content=b'{"version": "../etc"}', headers=JSON)
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "body.version"


def test_access_log_has_no_keys_or_payloads(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(api_keys="very-secret-key-1", access_log=True)
    with caplog.at_level("INFO", logger="runtime.access"):
        assert _predict(client, **{"x-api-key": "very-secret-key-1"}).status_code == 200
    records = [r for r in caplog.records if r.name == "runtime.access"]
    assert records and records[-1].__dict__["status"] == 200 and records[-1].__dict__["route"] == "/predict"
    text = caplog.text + " ".join(str(r.__dict__) for r in records)
    assert "very-secret-key-1" not in text and "ohlcv" not in text


def test_a_concurrent_reload_is_refused_not_queued(committed_model_dir: Path) -> None:
    """One reload at a time: a second one while the first loads gets RELOAD_IN_PROGRESS at once; then one drift
    monitor remains (the reload waited for the previous reference and stopped the old monitor)."""
    import asyncio
    import threading

    from runtime.errors import ReloadInProgress
    from runtime.service import Service, default_model_loader
    from runtime.settings import Settings

    settings = Settings(model_dir=committed_model_dir, intra_op_threads=1, precision="int8", drift_sample_rate=1)
    release = threading.Event()
    calls = []

    def loader(s: Settings, version: str | None) -> Any:
        calls.append(version)
        if len(calls) > 1:
            release.wait(10)  # the reload's load, held until the second reload has been refused
        return default_model_loader(s, version)

    async def main() -> None:
        service = Service.from_settings(settings, loader)
        service.start()
        service.wait_for_drift_loader()
        first_monitor = service.drift
        first = asyncio.create_task(service.reload())
        await asyncio.sleep(0.05)
        with pytest.raises(ReloadInProgress, match="already in progress"):
            await service.reload()
        release.set()
        await first
        service.wait_for_drift_loader()
        assert service.drift is not None and service.drift is not first_monitor
        assert [t.name for t in threading.enumerate()].count("edge-drift") == 1  # the first one was stopped
        await service.stop()
        assert service.drift is None
        assert "edge-drift" not in [t.name for t in threading.enumerate()]

    asyncio.run(main())
    assert len(calls) == 2
