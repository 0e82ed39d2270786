"""The model repository: versions side by side under model_dir, Triton's index/load/unload, failed loads.

Fixtures build the repository in tmp_path from the committed model (the root, 1.0.0), copies of it under other
versions, tampered copies, and a different model (the fake graph, 2.0.0) whose probabilities differ from 1.0.0's,
so that "answers with the new version's probabilities" can fail.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_version, market_windows, window_to_payload
from fake_model import write_fake_model_dir

from runtime.constants import INT8_FILE, INT8_ROWWISE_FILE
from runtime.repository import READY, ROOT, UNAVAILABLE, Repository, VersionEntry, newest_key

KEY = "repository-key-0123"
AUTH = {"x-api-key": KEY}
LOAD = "/v2/repository/models/signal_predictor/load"


def add_copy(root: Path, source: Path, version: str, **manifest_changes: Any) -> Path:
    """root/<version>/: a copy of `source` whose manifest names `version` (and any other changes)."""
    target = root / version
    copy_version(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update({"version": version, **manifest_changes})
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def flip_byte(path: Path) -> None:
    """Corrupt one byte in the middle: same size, new content."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def repo(tmp_path: Path, committed_model_dir: Path) -> Path:
    """models/ = the committed model (1.0.0) + 2.0.0 (another model, created later) + a tampered copy."""
    root = tmp_path / "models"
    copy_version(committed_model_dir, root)
    fake = write_fake_model_dir(root / "2.0.0", version="2.0.0")
    manifest = json.loads((fake / "manifest.json").read_text())
    (fake / "manifest.json").write_text(json.dumps({**manifest, "created": "2026-12-02T00:00:00Z"}))
    flip_byte(add_copy(root, committed_model_dir, "tampered", created="2026-12-03T00:00:00Z") / INT8_FILE)
    return root


@pytest.fixture
def client(make_client: Any, repo: Path) -> Any:
    return make_client(model_dir=repo, api_keys=[KEY], drift_sample_rate=0)


def _index(client: Any, **kwargs: Any) -> dict[str, dict[str, str]]:
    response = client.post("/v2/repository/index", headers=AUTH, **kwargs)
    assert response.status_code == 200, response.text
    return {entry["version"]: entry for entry in response.json()}


def _predict(client: Any, seed: int = 3) -> dict[str, Any]:
    response = client.post("/predict", json=window_to_payload(market_windows(1, seed)[0]), headers=AUTH)
    assert response.status_code == 200, response.text
    prediction: dict[str, Any] = response.json()["prediction"]
    return prediction


def _direct(path: Path, seed: int = 3) -> list[float]:
    """The probabilities of a direct onnxruntime run of `path` on the window `_predict` sends."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"ohlcv_sequence": market_windows(1, seed)[:1]})[0]
    return [float(p) for p in out[0]]


# -- index -----------------------------------------------------------------------------------------------------
def test_index_lists_every_version_with_its_state_and_reason(
    client: Any, repo: Path, committed_model_dir: Path
) -> None:
    (add_copy(repo, committed_model_dir, "missing") / INT8_ROWWISE_FILE).unlink()
    add_copy(repo, committed_model_dir, "narrow", inputs=[{"name": "ohlcv_sequence", "shape": ["batch", 30, 5]}])
    add_copy(repo, committed_model_dir, "9.9.9").rename(repo / "elsewhere")
    (repo / "broken").mkdir()
    (repo / "broken" / "manifest.json").write_text("{not json")
    (repo / "notaversion").mkdir()  # no manifest: not a version, not listed

    listed = client.get("/v2/repository/index", headers=AUTH)
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
    entries = listed.json()
    assert all(set(e) == {"name", "version", "state", "reason"} and e["name"] == "signal_predictor" for e in entries)
    by_version = {e["version"]: e for e in entries}
    assert entries[0]["version"] == "1.0.0"  # the root first, then sub-directories by name
    assert set(by_version) == {"1.0.0", "2.0.0", "tampered", "missing", "narrow", "9.9.9", "broken"}
    assert by_version["1.0.0"] == {"name": "signal_predictor", "version": "1.0.0", "state": READY, "reason": "serving"}
    assert by_version["2.0.0"]["state"] == READY and by_version["2.0.0"]["reason"] == ""
    reasons = {v: e["reason"] for v, e in by_version.items() if e["state"] == UNAVAILABLE}
    assert set(reasons) == {"tampered", "missing", "narrow", "9.9.9", "broken"}
    assert f"'{INT8_FILE}' does not match its manifest: sha256 " in reasons["tampered"]
    assert reasons["missing"] == f"'{INT8_ROWWISE_FILE}' is missing"
    assert "incompatible inputs" in reasons["narrow"] and "[batch, 60, 5]" in reasons["narrow"]
    assert "manifest version '9.9.9' does not match its directory 'elsewhere'" in reasons["9.9.9"]
    assert reasons["broken"].startswith("bad manifest:") and "cannot be read" in reasons["broken"]

    assert set(_index(client, json={"ready": True})) == {"1.0.0", "2.0.0"}
    assert set(_index(client)) == set(by_version)  # POST with no body: everything, as GET


def test_listing_rehashes_only_what_changed(repo: Path) -> None:
    repository = Repository(repo)
    first = repository.scan()
    cold = repository.hashed_bytes
    assert cold > 3_000_000  # every file of every version, hashed once
    assert repository.scan() == first and repository.hashed_bytes == cold  # the second listing: stat only
    target = repo / "2.0.0" / INT8_FILE
    flip_byte(target)  # same size, new mtime: re-hashed, and caught
    entry = next(e for e in repository.scan() if e.version == "2.0.0")
    assert entry.state == UNAVAILABLE and INT8_FILE in entry.reason
    assert repository.hashed_bytes == cold + target.stat().st_size


def test_newest_is_latest_created_then_semantic_version() -> None:
    def entry(version: str, created: str | None) -> VersionEntry:
        when = datetime.fromisoformat(created).replace(tzinfo=UTC) if created else None
        return VersionEntry(version, version, READY, "", when)

    entries = [entry("1.10.0", None), entry("1.9.0", "2026-01-02"), entry("1.2.0", "2026-01-03")]
    assert max(entries, key=newest_key).version == "1.2.0"  # created wins over the version number
    assert max([entries[0], entry("1.9.0", None)], key=newest_key).version == "1.10.0"  # semver, not text order
    ties = [entry("2.0.0-rc1", "2026-01-03"), entry("2.0.0", "2026-01-03"), entry("nightly", "2026-01-03")]
    assert max(ties, key=newest_key).version == "2.0.0"  # a release above its pre-release; non-semver lowest


# -- load ------------------------------------------------------------------------------------------------------
def test_load_by_version_answers_with_that_version_and_its_probabilities(client: Any, repo: Path) -> None:
    before = _predict(client)
    assert before["model_version"] == "1.0.0"
    assert before["probabilities"]["sell"] == pytest.approx(_direct(repo / INT8_ROWWISE_FILE)[0], abs=1e-6)

    response = client.post(LOAD, json={"parameters": {"version": "2.0.0"}}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "reloaded",
        "previous_version": "1.0.0",
        "model_version": "2.0.0",
        "precision": "int8",
        "provider": "cpu",
    }
    after = _predict(client)
    expected = _direct(repo / "2.0.0" / INT8_FILE)
    assert after["model_version"] == "2.0.0"
    assert list(after["probabilities"].values()) == pytest.approx(expected, abs=1e-6)
    assert abs(after["probabilities"]["sell"] - before["probabilities"]["sell"]) > 1e-3  # another model indeed
    assert _index(client)["2.0.0"]["reason"] == "serving" and _index(client)["1.0.0"]["reason"] == ""
    v2 = client.post("/v2/models/signal_predictor/infer", headers=AUTH, json=_v2_body())
    assert v2.status_code == 200 and v2.json()["model_version"] == "2.0.0"

    # The root is a version like any other: loaded back by its name.
    back = client.post(LOAD, json={"parameters": {"version": "1.0.0"}}, headers=AUTH)
    assert back.status_code == 200 and back.json()["model_version"] == "1.0.0"
    assert _predict(client)["probabilities"] == before["probabilities"]
    # /admin/reload (and SIGHUP) reload the served version: the root, not EDGE_MODEL_VERSION or 2.0.0
    again = client.post("/admin/reload", headers={**AUTH, "content-type": "application/json"})
    assert again.status_code == 200 and again.json()["model_version"] == "1.0.0"


def _v2_body() -> dict[str, Any]:
    window = market_windows(1, 3)
    return {
        "inputs": [{"name": "ohlcv_sequence", "datatype": "FP32", "shape": [1, 60, 5], "data": window.ravel().tolist()}]
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="no-body"),
        pytest.param({}, id="empty-object"),
        pytest.param({"parameters": {}}, id="no-version"),
    ],
)
def test_load_without_a_version_takes_the_newest_ready_one(client: Any, body: Any) -> None:
    # "tampered" is the newest by `created` but UNAVAILABLE; 2.0.0 is the newest READY version.
    kwargs = {} if body is None else {"json": body}
    response = client.post(LOAD, headers=AUTH, **kwargs)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "2.0.0"
    assert _predict(client)["model_version"] == "2.0.0"


def test_a_failed_load_keeps_the_old_version_serving(client: Any, repo: Path, committed_model_dir: Path) -> None:
    refused = client.post(LOAD, json={"parameters": {"version": "tampered"}}, headers=AUTH)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert "version 'tampered' is UNAVAILABLE" in error and "does not match its manifest" in error
    assert error.endswith("still serving version 1.0.0")

    # READY in the index (its hashes match) but not a model onnxruntime can load: the load itself fails.
    garbage = add_copy(repo, committed_model_dir, "garbage")
    for name in (INT8_FILE, INT8_ROWWISE_FILE):
        (garbage / name).write_bytes(b"not an onnx graph")
    manifest = json.loads((garbage / "manifest.json").read_text())
    digest = hashlib.sha256(b"not an onnx graph").hexdigest()
    for name in (INT8_FILE, INT8_ROWWISE_FILE):
        manifest["files"][name] = {"sha256": digest, "bytes": 17}
    (garbage / "manifest.json").write_text(json.dumps(manifest))
    assert _index(client)["garbage"]["state"] == READY
    failed = client.post(LOAD, json={"parameters": {"version": "garbage"}}, headers=AUTH)
    assert failed.status_code == 409
    assert "could not be loaded by onnxruntime" in failed.json()["error"]
    assert "still serving version 1.0.0" in failed.json()["error"]

    assert _predict(client)["model_version"] == "1.0.0"
    assert client.get("/ready").json()["model_version"] == "1.0.0"
    assert 'edge_model_reloads_total{outcome="failed"} 2.0' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragments"),
    [
        pytest.param(
            LOAD,
            {"json": {"parameters": {"version": "9.9.9"}}},
            404,
            ["no version '9.9.9'", "2.0.0"],
            id="unknown-version",
        ),
        pytest.param(
            LOAD,
            {"json": {"parameters": {"version": "../etc"}}},
            400,
            ["parameters.version", "string_pattern_mismatch"],
            id="version-pattern",
        ),
        pytest.param(
            LOAD,
            {"json": {"parameters": {"config": "{}"}}},
            400,
            ["parameters.config", "extra_forbidden"],
            id="triton-config",
        ),
        pytest.param(
            LOAD, {"json": {"version": "2.0.0"}}, 400, ["version", "extra_forbidden"], id="version-outside-parameters"
        ),
        pytest.param(LOAD, {"content": b"{oops"}, 400, ["json_invalid"], id="bad-json"),
        pytest.param(
            LOAD, {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415, ["text/plain"], id="text-plain"
        ),
        pytest.param("/v2/repository/models/other/load", {}, 404, ["unknown model 'other'"], id="unknown-model"),
        pytest.param("/v2/repository/models/signal_predictor/unload", {}, 400, ["cannot be unloaded"], id="unload"),
        pytest.param(
            "/v2/repository/index", {"json": {"ready": "maybe"}}, 400, ["ready", "bool_type"], id="index-ready"
        ),
    ],
)
def test_repository_requests_are_refused_with_the_reason(
    client: Any, path: str, kwargs: dict[str, Any], status: int, fragments: list[str]
) -> None:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    response = client.post(path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert all(f in response.json()["error"] for f in fragments), response.json()
    assert _predict(client)["model_version"] == "1.0.0"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/repository/index"),
        ("POST", "/v2/repository/index"),
        ("POST", LOAD),
        ("POST", LOAD.replace("load", "unload")),
    ],
)
def test_repository_routes_need_the_api_key(client: Any, method: str, path: str) -> None:
    response = client.request(method, path, json={"parameters": {"version": "2.0.0"}} if "load" in path else None)
    assert response.status_code == 401 and response.json() == {"error": "missing X-API-Key header"}
    wrong = client.request(method, path, headers={"x-api-key": "wrong-key-000000"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "ApiKey"
    assert _predict(client)["model_version"] == "1.0.0"


def test_a_load_while_another_runs_is_refused(repo: Path) -> None:
    from starlette.testclient import TestClient

    from runtime.http.app import create_app
    from runtime.service import default_model_loader
    from runtime.settings import Settings

    entered, release = threading.Event(), threading.Event()

    def loader(settings: Settings, version: str | None) -> Any:
        if version is not None:  # not the start-up load
            entered.set()
            release.wait(10)
        return default_model_loader(settings, version)

    settings = Settings(model_dir=repo, api_keys=[KEY], intra_op_threads=1, drift_sample_rate=0)
    with TestClient(create_app(settings, model_loader=loader), raise_server_exceptions=False) as client:
        results: list[Any] = []
        first = threading.Thread(
            target=lambda: results.append(client.post(LOAD, json={"parameters": {"version": "2.0.0"}}, headers=AUTH))
        )
        first.start()
        assert entered.wait(10)
        second = client.post(LOAD, headers=AUTH)
        assert second.status_code == 409 and "already in progress" in second.json()["error"]
        release.set()
        first.join(10)
        assert results[0].status_code == 200 and results[0].json()["model_version"] == "2.0.0"


def test_server_metadata_lists_the_extension(client: Any) -> None:
    assert "model_repository" in client.get("/v2").json()["extensions"]


def test_root_directory_key_is_the_model_dir(repo: Path) -> None:
    from runtime.settings import Settings

    assert Settings(model_dir=repo).model_path(ROOT) == repo
    assert Settings(model_dir=repo, model_version="2.0.0").model_path(ROOT) == repo  # explicit root wins


def test_the_committed_repository_is_ready(committed_model_dir: Path) -> None:
    entries = Repository(committed_model_dir).scan()
    assert [(e.version, e.state, e.reason) for e in entries if e.directory == ROOT] == [("1.0.0", READY, "")]
    assert all(e.state == READY for e in entries), [(e.version, e.reason) for e in entries]
