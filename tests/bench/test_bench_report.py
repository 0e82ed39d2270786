"""The PASS/FAIL logic and the median-of-rounds summary, on hand-made figures."""

from __future__ import annotations

from typing import Any

import pytest

from bench import plot, report
from bench.targets import Target, evaluate, summarise_rounds


def row(config: str, conns: int, rps: float, p50: float, *, errors: int = 0, rnd: int = 0) -> dict[str, Any]:
    return {
        "round": rnd,
        "config": config,
        "connections": conns,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "requests": int(rps * 10),
        "errors": errors,
        "non2xx": errors,
        "duration_s": 10.0,
        "server_cpu_s": rps * 10 * 0.001,
        "wrk_cpu_s": 1.0,
    }


FLOOR = {"points": {"int8@1": {"p50_ms": 0.5}, "fp32@1": {"p50_ms": 1.0}}}


def rows_for(service_p50: float, service_rps64: float, seed_errors: int = 0) -> list[dict[str, Any]]:
    return [
        row("int8", 1, 900, service_p50),
        row("int8", 64, service_rps64, 40.0),
        row("seed", 1, 300, 3.0),
        row("seed", 64, 300, 200.0, errors=seed_errors),
    ]


def test_summary_takes_the_median_of_rounds_and_flags_errors() -> None:
    rows = [row("int8", 1, r, p, rnd=i) for i, (r, p) in enumerate([(100, 1.0), (300, 3.0), (200, 2.0)])]
    rows.append(row("int8", 8, 500, 4.0, errors=2))
    s = summarise_rounds(rows)
    assert s["int8"][1]["rps"] == 200
    assert s["int8"][1]["p50_ms"] == 2.0
    assert s["int8"][1]["rounds"] == 3
    assert s["int8"][1]["ok"]
    assert s["int8"][1]["server_cpu_ms_per_req"] == pytest.approx(1.0)
    assert s["int8"][1]["wrk_cpu_pct"] == pytest.approx(10.0)
    assert not s["int8"][8]["ok"]
    assert s["int8"][8]["errors"] == 2


def test_all_targets_pass() -> None:
    s = summarise_rounds(rows_for(service_p50=0.9, service_rps64=1600))
    targets = evaluate(s, service="int8", seed="seed", floor=FLOOR, cold_start_s=0.8, rss_mb=120)
    assert [t.status for t in targets] == ["PASS"] * 6
    assert targets[0].value == pytest.approx(0.9 / 3.0)
    assert targets[1].value == pytest.approx(0.9 / 0.5)
    assert targets[2].value == pytest.approx(1600 / 300)
    assert targets[3].value == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("p50", "rps64", "cold", "rss", "failing"),
    [
        pytest.param(1.2, 1600, 0.8, 120, [0, 1], id="slow-at-one-connection"),
        pytest.param(0.9, 1400, 0.8, 120, [2], id="throughput-below-5x"),
        pytest.param(0.9, 1600, 1.3, 120, [4], id="slow-cold-start"),
        pytest.param(0.9, 1600, 0.8, 151, [5], id="too-much-memory"),
    ],
)
def test_each_target_fails_on_its_own(p50: float, rps64: float, cold: float, rss: float, failing: list[int]) -> None:
    s = summarise_rounds(rows_for(service_p50=p50, service_rps64=rps64))
    targets = evaluate(s, service="int8", seed="seed", floor=FLOOR, cold_start_s=cold, rss_mb=rss)
    assert [i for i, t in enumerate(targets) if t.status == "FAIL"] == failing


def test_threshold_is_inclusive() -> None:
    assert Target("x", 0.30, "<=", 0.30).status == "PASS"
    assert Target("x", 5.0, ">=", 5.0).status == "PASS"
    assert Target("x", 4.99, ">=", 5.0).status == "FAIL"


def test_a_run_with_errors_is_not_reported_as_throughput() -> None:
    s = summarise_rounds(rows_for(service_p50=0.9, service_rps64=1600, seed_errors=5))
    t = evaluate(s, service="int8", seed="seed", floor=FLOOR, cold_start_s=0.8, rss_mb=120)[2]
    assert t.status == "FAIL"
    assert t.note == "INVALID: seed had 5 failed request(s) at 64 connection(s)"


def test_missing_measurements_are_not_applicable() -> None:
    s = summarise_rounds([row("int8", 1, 900, 0.9)])
    targets = evaluate(s, service="int8", seed="seed", floor=None, cold_start_s=None, rss_mb=None)
    assert [t.status for t in targets] == ["N/A"] * 6
    assert "seed not measured at 1 connection(s)" in targets[0].note


def test_markdown_and_plot_are_written(tmp_path: Any) -> None:
    rows = [*rows_for(service_p50=0.9, service_rps64=1600), row("http", 1, 9000, 0.1)]
    rows[0]["inside_server"] = {"server_ms": 0.7, "model_ms_per_run": 0.4, "windows_per_run": 1.0}
    rows[0]["inside_server"]["model_ms_per_request"] = 0.4
    rows[0]["mean_ms"] = 0.95
    s = summarise_rounds(rows)
    targets = evaluate(s, service="int8", seed="seed", floor=FLOOR, cold_start_s=0.8, rss_mb=120)
    results: dict[str, Any] = {
        "meta": {
            "quick": True,
            "started_utc": "now",
            "elapsed_s": 1.0,
            "git_commit": "abc",
            "cpu_model": "cpu",
            "cpus": 2,
            "loadavg": "0",
            "wrk_threads": 1,
            "duration_s": 3,
            "warmup_s": 1,
            "rounds": 1,
            "connections": [1, 64],
            "versions": {"wrk": "4.1"},
        },
        "configs": [{"name": "int8", "description": "service"}, {"name": "seed", "description": "seed"}],
        "targets": [{**t.__dict__, "status": t.status} for t in targets],
        "summary": s,
        "floor": {
            "intra_op_threads": 2,
            "points": {"int8@1": {"precision": "int8", "batch": 1, "p50_ms": 0.5, "p99_ms": 0.7, "runs": 10}},
        },
        "verification": {"int8": {"ok": True, "max_abs_dp": 0.0, "detail": "200"}},
    }
    md = report.markdown(results)
    assert "QUICK RUN" in md
    assert "| int8 | 1 | 900 | 0.9 |" in md
    assert "**PASS**" in md
    # in proportion: (0.9 - 0.1) ms of work against the 0.5 ms model floor
    assert "HTTP floor (`http`" in md and "the difference, 0.8 ms, is 1.6x the bare model's 0.5 ms" in md
    # where the time goes: 0.95 - 0.7 outside, 0.7 - 0.4 rest in server
    assert "| int8 | 1 | 0.95 | 0.7 | 0.25 | 0.4 | 1 | 0.4 | 0.3 |" in md
    pytest.importorskip("matplotlib")  # the `train` extra
    plot.plot(tmp_path / "p.png", s, results["floor"], "t")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_http_floor_answers_a_fixed_body_after_reading_the_request() -> None:
    from starlette.testclient import TestClient

    from bench import http_floor

    with TestClient(http_floor.app) as client:  # type: ignore[arg-type]
        r = client.post("/predict", content=b"x" * 10_000, headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.content == http_floor.ANSWER
        assert 600 <= len(r.content) <= 800  # about a real prediction's size
        assert client.get("/ready").json() == {"status": "ready"}
        with client.websocket_connect("/stream") as ws:  # the /stream floor: one fixed answer per message
            for text in ('{"symbol": "X"}', "not even json"):
                ws.send_text(text)
                assert ws.receive_text() == http_floor.ANSWER.decode()
