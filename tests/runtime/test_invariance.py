"""The same window gets the same answer whatever the load, on every path, and every answer replays offline."""

from __future__ import annotations

import http.client
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from conftest import market_windows, window_to_payload
from test_server import BLOCK_TORCH, KEY, REPO, server

AUTH = {"content-type": "application/json", "x-api-key": KEY}


def _post(conn: http.client.HTTPConnection, path: str, body: Any) -> Any:
    raw = json.dumps(body)
    for _ in range(200):  # a shed request (503, the admission queue is bounded) is retried, as clients do
        conn.request("POST", path, body=raw, headers=AUTH)
        response = conn.getresponse()
        data = response.read()
        if response.status != 503:
            break
        time.sleep(0.02)
    assert response.status == 200, (path, response.status, data[:300])
    return json.loads(data)


def _v2_body(windows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "ohlcv_sequence",
                "shape": list(windows.shape),
                "datatype": "FP32",
                "data": windows.astype(np.float64).ravel().tolist(),
            }
        ]
    }


def test_mixed_traffic_at_64_connections_gets_each_windows_lone_answer(tmp_path: Path) -> None:
    windows = market_windows(48, seed=31)
    payloads = [window_to_payload(w, f"W{i}/USD") for i, w in enumerate(windows)]
    with server(tmp_path) as (_, port):
        quiet = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lone = [_post(quiet, "/predict", p)["prediction"]["probabilities"] for p in payloads]
        lone_rows = [[p["sell"], p["hold"], p["buy"]] for p in lone]
        seen: list[tuple[str, int, list[float]]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            deadline = time.monotonic() + 60
            try:
                for _ in range(6):  # bounded in count and in time
                    if time.monotonic() > deadline:
                        break
                    kind = rng.choice(("predict", "batch", "v2"))
                    if kind == "predict":
                        i = rng.randrange(len(windows))
                        answer = _post(conn, "/predict", payloads[i])["prediction"]["probabilities"]
                        got = [(kind, i, [answer["sell"], answer["hold"], answer["buy"]])]
                    else:
                        idx = rng.sample(range(len(windows)), rng.randint(1, len(windows)))
                        if kind == "batch":
                            answers = _post(conn, "/predict/batch", {"requests": [payloads[i] for i in idx]})
                            rows = [
                                [a["prediction"]["probabilities"][c] for c in ("sell", "hold", "buy")] for a in answers
                            ]
                        else:
                            out = _post(conn, "/v2/models/signal_predictor/infer", _v2_body(windows[idx]))
                            rows = np.asarray(out["outputs"][0]["data"]).reshape(-1, 3).tolist()
                        got = [(kind, i, row) for i, row in zip(idx, rows, strict=True)]
                    with lock:
                        seen.extend(got)
            except BaseException as e:  # reported below: a thread's assertion must fail the test
                errors.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(s,)) for s in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
    assert not errors, errors[:3]
    assert {kind for kind, _, _ in seen} == {"predict", "batch", "v2"}
    differing = [(kind, i) for kind, i, row in seen if row != lone_rows[i]]
    assert not differing, f"{len(differing)} of {len(seen)} windows differ from their lone answer: {differing[:5]}"
    # The load really was batched: some model runs held more than one request's windows.
    runs = float(re.search(r"^edge_batch_size_count ([0-9.e+]+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    windows_run = float(re.search(r"^edge_batch_size_sum ([0-9.e+]+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert windows_run > runs, (runs, windows_run)
    assert "edge_batch_invariance_bound 0.0" in metrics


def _replay(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)  # replay needs no torch, onnx or training
    return subprocess.run(
        [sys.executable, "-m", "runtime", "replay", "--model-dir", str(REPO / "models"), *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_reproduces_recorded_answers_bit_for_bit(make_client: Any, tmp_path: Path) -> None:
    client = make_client()
    windows = market_windows(12, seed=8)
    bodies: list[Any] = [window_to_payload(w, f"R{i}/USD") for i, w in enumerate(windows[:4])]
    bodies.append({"requests": [window_to_payload(w, f"B{i}/USD") for i, w in enumerate(windows[4:])]})
    answers = [client.post("/predict/batch" if "requests" in b else "/predict", json=b).json() for b in bodies]
    requests_file, answers_file = tmp_path / "requests.jsonl", tmp_path / "answers.jsonl"
    requests_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    answers_file.write_text("".join(json.dumps(a) + "\n" for a in answers))

    done = _replay(tmp_path, str(requests_file), "--expect", str(answers_file))
    assert done.returncode == 0, done.stderr
    assert "identical to the recorded ones" in done.stderr
    replayed = [json.loads(line) for line in done.stdout.splitlines()]
    assert replayed[0]["prediction"]["probabilities"] == answers[0]["prediction"]["probabilities"]
    assert replayed[4][7]["audit"] == answers[4][7]["audit"]

    # One recorded probability off by one float32 step: replay names the first mismatch and fails.
    tampered = json.loads(json.dumps(answers))
    buy = tampered[4][2]["prediction"]["probabilities"]["buy"]
    tampered[4][2]["prediction"]["probabilities"]["buy"] = float(np.nextafter(np.float32(buy), np.float32(1)))
    answers_file.write_text("".join(json.dumps(a) + "\n" for a in tampered))
    failed = _replay(tmp_path, str(requests_file), "--expect", str(answers_file))
    assert failed.returncode == 1
    assert "mismatch in answer 5: [2].prediction.probabilities.buy" in failed.stderr


def test_replay_of_one_body_and_its_errors(make_client: Any, tmp_path: Path) -> None:
    body = window_to_payload(market_windows(1, seed=4)[0])
    answer = make_client().post("/predict", json=body).json()
    (tmp_path / "req.json").write_text(json.dumps(body, indent=2))
    (tmp_path / "ans.json").write_text(json.dumps(answer, indent=2))
    done = _replay(tmp_path, str(tmp_path / "req.json"), "--expect", str(tmp_path / "ans.json"))
    assert done.returncode == 0, done.stderr
    # A recorded answer from another model file is named as such.
    answer["audit"]["model_sha256"] = "0" * 64
    (tmp_path / "ans.json").write_text(json.dumps(answer))
    other = _replay(tmp_path, str(tmp_path / "req.json"), "--expect", str(tmp_path / "ans.json"))
    assert other.returncode == 1 and ".audit.model_sha256" in other.stderr
    # An invalid body is refused as the service refuses it.
    (tmp_path / "bad.json").write_text(json.dumps({**body, "exchange": "nyse"}))
    bad = _replay(tmp_path, str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "exchange" in bad.stderr
