"""Parsing wrk's output into numbers (no wrk needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import wrk

# Real output of `wrk -t1 -c2 -d1s --latency -s bench/predict.lua` against a server answering 501.
ERRORS_RUN = """\
Running 1s test @ http://127.0.0.1:18555/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.94ms    2.11ms  12.19ms   76.11%
    Req/Sec   696.90    193.66     1.02k    60.00%
  Latency Distribution
     50%    2.09ms
     75%    4.08ms
     90%    6.03ms
     99%    9.30ms
  693 requests in 1.00s, 375.79KB read
  Non-2xx or 3xx responses: 693
Requests/sec:    692.79
Transfer/sec:    375.68KB
BENCHJSON {"requests":693,"duration_us":1000305,"bytes":384813,"connect_errors":0,"read_errors":0,\
"write_errors":0,"status_errors":693,"timeout_errors":0,"lat_min_us":482,"lat_max_us":12190,\
"lat_mean_us":2941.534,"lat_stdev_us":2112.741,"p50_us":2088,"p75_us":4084,"p90_us":6030,"p99_us":9299,\
"p999_us":12190}
"""

CLEAN_TEXT = """\
Running 10s test @ http://127.0.0.1:8000/predict
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    41.20ms    5.10ms 150.00ms   90.00%
    Req/Sec     1.55k   100.00     1.70k    70.00%
  Latency Distribution
     50%  850.00us
     75%   42.00ms
     90%    1.02s
     99%    2.00m
  15500 requests in 10.01s, 12.40MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
Requests/sec:   1548.45
Transfer/sec:      1.24MB
"""


@pytest.mark.parametrize(
    ("token", "ms"),
    [
        pytest.param("850.00us", 0.85, id="us"),
        pytest.param("1.23ms", 1.23, id="ms"),
        pytest.param("2.01s", 2010.0, id="s"),
        pytest.param("1.50m", 90_000.0, id="m"),
    ],
)
def test_parse_time_ms_units(token: str, ms: float) -> None:
    assert wrk.parse_time_ms(token) == pytest.approx(ms)


def test_parse_time_ms_rejects_garbage() -> None:
    with pytest.raises(wrk.WrkError, match="unrecognised wrk time '12 parsecs'"):
        wrk.parse_time_ms("12 parsecs")


def test_json_line_is_preferred_and_exact() -> None:
    r = wrk.parse_output(ERRORS_RUN, connections=2, threads=1)
    assert r.source == "json"
    assert r.requests == 693
    assert r.duration_s == pytest.approx(1.000305)
    assert r.rps == pytest.approx(693 / 1.000305)
    assert (r.p50_ms, r.p75_ms, r.p90_ms, r.p99_ms) == (2.088, 4.084, 6.030, 9.299)
    assert r.mean_ms == pytest.approx(2.941534)
    assert r.max_ms == pytest.approx(12.19)


def test_non_2xx_responses_make_the_run_invalid() -> None:
    r = wrk.parse_output(ERRORS_RUN, connections=2, threads=1)
    assert r.non2xx == 693
    assert r.errors == 693
    assert not r.ok


def test_text_report_parses_units_and_socket_errors() -> None:
    r = wrk.parse_text(CLEAN_TEXT)
    assert r.source == "text"
    assert (r.threads, r.connections, r.requests) == (1, 64, 15500)
    assert r.duration_s == pytest.approx(10.01)
    assert r.rps == pytest.approx(1548.45)
    assert (r.p50_ms, r.p75_ms, r.p90_ms, r.p99_ms) == pytest.approx((0.85, 42.0, 1020.0, 120_000.0))
    assert r.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 2}
    assert r.non2xx == 0
    assert r.errors == 5
    assert not r.ok


def test_clean_run_is_ok() -> None:
    text = CLEAN_TEXT.replace("  Socket errors: connect 0, read 3, write 0, timeout 2\n", "")
    r = wrk.parse_output(text, connections=64, threads=1)
    assert r.source == "text"
    assert r.errors == 0
    assert r.ok


def test_text_3xx_count_overrides_json_status_count() -> None:
    # wrk's Lua summary counts only statuses > 399; its text line also counts 3xx.
    text = ERRORS_RUN.replace('"status_errors":693', '"status_errors":0')
    r = wrk.parse_output(text, connections=2, threads=1)
    assert r.source == "json"
    assert r.non2xx == 693


def test_missing_latency_distribution_is_an_error() -> None:
    text = CLEAN_TEXT.split("  Latency Distribution")[0] + "  15500 requests in 10.01s, 12.40MB read\n"
    with pytest.raises(wrk.WrkError, match="Latency Distribution"):
        wrk.parse_text(text)


def test_build_command_keeps_threads_at_most_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrk, "wrk_binary", lambda: "/usr/bin/wrk")
    cmd = wrk.build_command(
        "http://127.0.0.1:1/predict",
        connections=1,
        duration_s=3,
        threads=2,
        body_file=Path("/tmp/b.json"),
        api_key="benchkey",
        timeout_s=10,
    )
    assert cmd[:6] == ["/usr/bin/wrk", "-t1", "-c1", "-d3s", "--timeout=10s", "--latency"]
    assert cmd[-3:] == ["--", "/tmp/b.json", "benchkey"]
    assert Path(cmd[cmd.index("-s") + 1]).name == "predict.lua"


def test_lua_script_reports_json_and_sends_the_key() -> None:
    lua = wrk.LUA_SCRIPT.read_text()
    assert "BENCHJSON" in lua
    assert 'wrk.headers["X-API-Key"]' in lua
    assert "function request" not in lua  # a static request costs wrk no Lua per request
