"""``/stream``: a real market streamed bar by bar answers what ``/predict`` answers on the same 60 candles; bad
messages are refused without touching the stored window; auth, limits, overload, close codes and metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import market_bars
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect
from test_server import KEY, server

START = datetime(2024, 1, 1, tzinfo=UTC)
HEADERS = {"x-api-key": KEY}


def auth() -> dict[str, str]:
    """A fresh header dict: Starlette's `websocket_connect` adds the handshake headers to the one it is given."""
    return dict(HEADERS)


#: What `/predict` and `/stream` must agree on exactly (the rest is when and how it was served).
SAME = ("signal", "confidence", "probabilities", "symbol", "exchange", "model_version", "precision", "provider")


def candle(bars: np.ndarray, i: int) -> dict[str, Any]:
    """Bar i of `bars` as the seed's candle, one day after bar i - 1 (float32 values, as /predict tests send)."""
    o, h, lo, c, v = (float(x) for x in bars[i].astype(np.float64))
    ts = (START + timedelta(days=i)).isoformat()
    return {"timestamp": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v}


def message(bars: np.ndarray, first: int, last: int, symbol: str = "SPX/USD", **extra: Any) -> dict[str, Any]:
    """Bars first..last (inclusive) as one /stream message."""
    return {
        "symbol": symbol,
        "exchange": "binance",
        "candles": [candle(bars, i) for i in range(first, last + 1)],
        **extra,
    }


def predict_body(bars: np.ndarray, last: int, symbol: str = "SPX/USD") -> dict[str, Any]:
    """The /predict request for the 60 candles ending at bar `last`."""
    return {"symbol": symbol, "exchange": "binance", "sequence": [candle(bars, i) for i in range(last - 59, last + 1)]}


def assert_same_answer(streamed: dict[str, Any], predicted: dict[str, Any]) -> None:
    assert "error" not in streamed, streamed
    for key in SAME:
        assert streamed["prediction"][key] == predicted["prediction"][key], key
    assert streamed["risk"] == predicted["risk"]
    assert streamed["audit"] == predicted["audit"]


@pytest.fixture(scope="module")
def bars() -> np.ndarray:
    return market_bars(100, seed=3)


@pytest.fixture(scope="module")
def client(committed_model_dir: Path) -> Iterator[TestClient]:
    """One app for the tests that need no special settings (model load and warm-up once)."""
    from runtime.http.app import create_app
    from runtime.settings import Settings

    app = create_app(Settings(model_dir=committed_model_dir, intra_op_threads=1, api_keys=[KEY]))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def predict(client: TestClient, bars: np.ndarray, last: int, symbol: str = "SPX/USD") -> dict[str, Any]:
    response = client.post("/predict", json=predict_body(bars, last, symbol), headers=HEADERS)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(client: TestClient, name: str, labels: str = "") -> float:
    text = client.get("/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_a_market_streamed_bar_by_bar_gets_predict_s_answers(client: TestClient, bars: np.ndarray) -> None:
    ok_before = metric(client, "edge_stream_messages_total", '{outcome="ok"}')
    with client.websocket_connect("/stream", headers=auth()) as ws:
        assert metric(client, "edge_stream_connections") == 1
        ws.send_json(message(bars, 0, 58))
        assert ws.receive_json() == {
            "symbol": "SPX/USD",
            "exchange": "binance",
            "status": "warming",
            "have": 59,
            "need": 60,
        }
        for last in range(59, 79):
            ws.send_json(message(bars, last, last))
            assert_same_answer(ws.receive_json(), predict(client, bars, last))
    assert metric(client, "edge_stream_connections") == 0
    assert metric(client, "edge_stream_messages_total", '{outcome="ok"}') == ok_before + 20


def test_many_candles_at_once_and_many_symbols_on_one_connection(client: TestClient, bars: np.ndarray) -> None:
    with client.websocket_connect("/stream", headers=auth()) as ws:
        ws.send_json(message(bars, 0, 59, "AAA"))  # a full window at once: a signal straight away
        assert_same_answer(ws.receive_json(), predict(client, bars, 59, "AAA"))
        ws.send_json(message(bars, 10, 20, "BBB"))
        assert ws.receive_json()["have"] == 11
        ws.send_json(message(bars, 60, 64, "AAA"))  # five new bars: the answer is for the latest 60
        assert_same_answer(ws.receive_json(), predict(client, bars, 64, "AAA"))
        ws.send_json(message(bars, 21, 69, "BBB"))  # 11 + 49 = 60 candles: bars 10..69
        assert_same_answer(ws.receive_json(), predict(client, bars, 69, "BBB"))


def _late(c: dict[str, Any]) -> None:
    c["timestamp"] = (START + timedelta(days=30)).isoformat()


def _same_time(c: dict[str, Any]) -> None:
    c["timestamp"] = (START + timedelta(days=59)).isoformat()


BAD = [
    pytest.param(lambda m: m["candles"][0].update(high=m["candles"][0]["low"] * 0.9), "candles.0.high", "ohlc_range",
                 id="high-below-low"),
    pytest.param(lambda m: _late(m["candles"][0]), "candles.0.timestamp", "time_order", id="out-of-order"),
    pytest.param(lambda m: _same_time(m["candles"][0]), "candles.0.timestamp", "duplicate_timestamp",
                 id="duplicate-timestamp"),
    pytest.param(lambda m: m["candles"][0].update(timestamp="2024-03-01T00:00:00"), "candles.0.timestamp",
                 "timezone_aware", id="naive-timestamp"),
    pytest.param(lambda m: m.update(exchange="nasdaq"), "exchange", "literal_error", id="unknown-exchange"),
    pytest.param(lambda m: m.update(symbol="spx/usd"), "symbol", "string_pattern_mismatch", id="lower-case-symbol"),
    pytest.param(lambda m: m["candles"][0].update(volume=-1), "candles.0.volume", "greater_than_equal",
                 id="negative-volume"),
    pytest.param(lambda m: m["candles"].append({**m["candles"][0]}), "candles.1.timestamp", "duplicate_timestamp",
                 id="repeated-within-a-message"),
    pytest.param(lambda m: m.update(candles=[]), "candles", "too_short", id="no-candles"),
    pytest.param(lambda m: m.update(extra=1), "extra", "extra_forbidden", id="unknown-field"),
]  # fmt: skip


@pytest.mark.parametrize(("spoil", "field", "kind"), BAD)
def test_a_bad_message_is_refused_and_changes_nothing(
    client: TestClient, bars: np.ndarray, spoil: Callable[[dict[str, Any]], None], field: str, kind: str
) -> None:
    invalid_before = metric(client, "edge_stream_messages_total", '{outcome="invalid"}')
    with client.websocket_connect("/stream", headers=auth()) as ws:
        ws.send_json(message(bars, 0, 59))
        assert_same_answer(ws.receive_json(), predict(client, bars, 59))
        bad = message(bars, 60, 60)
        spoil(bad)
        ws.send_json(bad)
        error = ws.receive_json()
        assert error["code"] == "VALIDATION_FAILED", error
        assert [(d["field"], d["type"]) for d in error["details"]] == [(field, kind)], error
        assert error["request_id"]
        if kind not in ("literal_error", "string_pattern_mismatch"):
            assert (error["symbol"], error["exchange"]) == ("SPX/USD", "binance")
        ws.send_json(message(bars, 60, 60))  # the window is as it was: bar 60 is still the next one
        assert_same_answer(ws.receive_json(), predict(client, bars, 60))
    assert metric(client, "edge_stream_messages_total", '{outcome="invalid"}') == invalid_before + 1


def test_a_bad_candle_after_good_ones_refuses_the_whole_message(client: TestClient, bars: np.ndarray) -> None:
    with client.websocket_connect("/stream", headers=auth()) as ws:
        ws.send_json(message(bars, 0, 10))
        assert ws.receive_json()["have"] == 11
        bad = message(bars, 11, 14)
        bad["candles"][2]["open"] = bad["candles"][2]["high"] * 2
        ws.send_json(bad)
        error = ws.receive_json()
        assert [d["field"] for d in error["details"]] == ["candles.2.open"]
        assert "open (" in error["details"][0]["message"] and error["error"] == "invalid candles for SPX/USD on binance"
        ws.send_json(message(bars, 11, 11))  # bars 11 and 12 were not stored
        assert ws.receive_json()["have"] == 12


def test_malformed_json_keeps_the_connection(client: TestClient, bars: np.ndarray) -> None:
    with client.websocket_connect("/stream", headers=auth()) as ws:
        ws.send_text('{"symbol": "SPX/USD", ')
        error = ws.receive_json()
        assert error["code"] == "BAD_REQUEST" and error["details"][0]["type"] == "json_invalid"
        ws.send_text("[1, 2]")
        assert ws.receive_json()["code"] == "VALIDATION_FAILED"
        ws.send_json(message(bars, 0, 0))
        assert ws.receive_json()["have"] == 1


@pytest.mark.parametrize(
    ("send", "code"),
    [
        pytest.param(lambda ws: ws.send_bytes(b'{"symbol": "X"}'), 1003, id="binary-frame"),
        pytest.param(lambda ws: ws.send_text(" " * ((1 << 20) + 1)), 1009, id="over-max-body-bytes"),
    ],
)
def test_protocol_violations_close_the_connection(client: TestClient, send: Callable[[Any], None], code: int) -> None:
    with client.websocket_connect("/stream", headers=auth()) as ws:
        send(ws)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == code


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong-key-0123456789"}], ids=["missing-key", "wrong-key"])
def test_the_upgrade_needs_the_api_key(client: TestClient, headers: dict[str, str]) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/stream", headers=headers):
        pass  # pragma: no cover - never accepted
    assert denied.value.status_code == 401
    assert denied.value.json()["code"] == "UNAUTHORIZED"


def test_browser_origins_need_the_cors_list(make_client: Callable[..., TestClient]) -> None:
    """No CORS preflight guards a WebSocket upgrade: a page's Origin must be in EDGE_CORS_ORIGINS."""
    client = make_client(api_keys=[KEY], cors_origins=["https://desk.example.com"])
    evil = {**auth(), "origin": "https://evil.example.com"}
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/stream", headers=evil):
        pass  # pragma: no cover - never accepted
    assert denied.value.status_code == 403 and denied.value.json()["code"] == "ORIGIN_REJECTED"
    with client.websocket_connect("/stream", headers={**auth(), "origin": "https://desk.example.com"}) as ws:
        ws.send_text("{}")
        assert ws.receive_json()["code"] == "VALIDATION_FAILED"


def test_symbols_past_the_limit_are_refused(make_client: Callable[..., TestClient], bars: np.ndarray) -> None:
    client = make_client(api_keys=[KEY], stream_max_symbols=2)
    with client.websocket_connect("/stream", headers=auth()) as ws:
        for symbol in ("AAA", "BBB"):
            ws.send_json(message(bars, 0, 0, symbol))
            assert ws.receive_json()["have"] == 1
        ws.send_json(message(bars, 0, 0, "CCC"))
        error = ws.receive_json()
        assert error["code"] == "TOO_MANY_SYMBOLS" and error["symbol"] == "CCC", error
        ws.send_json(message(bars, 1, 1, "AAA"))
        assert ws.receive_json()["have"] == 2


def test_a_full_server_answers_overloaded_and_keeps_the_window(
    make_client: Callable[..., TestClient], bars: np.ndarray
) -> None:
    client = make_client(api_keys=[KEY], max_pending_requests=1)
    service = client.app.state.service  # type: ignore[attr-defined]
    with client.websocket_connect("/stream", headers=auth()) as ws:
        ws.send_json(message(bars, 0, 58))
        assert ws.receive_json()["status"] == "warming"
        service.admitted = 1  # one request in flight elsewhere: the server is full
        ws.send_json(message(bars, 59, 59))
        error = ws.receive_json()
        assert error["code"] == "OVERLOADED" and error["retry_after_s"] == 1, error
        ws.send_json(message(bars, 0, 0, "BBB"))  # warming needs no model run: still answered
        assert ws.receive_json()["have"] == 1
        service.admitted = 0
        ws.send_json(message(bars, 59, 59))  # the same bar again: it was not stored
        assert_same_answer(ws.receive_json(), predict(client, bars, 59))
    assert metric(client, "edge_stream_messages_total", '{outcome="overloaded"}') == 1


def test_the_rate_limit_counts_messages(make_client: Callable[..., TestClient], bars: np.ndarray) -> None:
    client = make_client(api_keys=[KEY], rate_limit=0.01, rate_limit_burst=3)
    with client.websocket_connect("/stream", headers=auth()) as ws:  # the upgrade takes one token
        for i in range(2):
            ws.send_json(message(bars, i, i))
            assert ws.receive_json()["have"] == i + 1
        ws.send_json(message(bars, 2, 2))
        error = ws.receive_json()
        assert error["code"] == "RATE_LIMITED" and error["retry_after_s"] > 0, error
    assert metric(client, "edge_stream_messages_total", '{outcome="rate_limited"}') == 1


def test_an_idle_connection_is_closed(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=[KEY], stream_idle_s=0.2)
    with client.websocket_connect("/stream", headers=auth()) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000 and "EDGE_STREAM_IDLE_S" in closed.value.reason


def test_a_stale_window_is_refused_and_not_stored(make_client: Callable[..., TestClient], bars: np.ndarray) -> None:
    client = make_client(api_keys=[KEY], max_window_age_s=3600)  # the test's candles are from 2024
    with client.websocket_connect("/stream", headers=auth()) as ws:
        ws.send_json(message(bars, 0, 59))
        error = ws.receive_json()
        assert error["code"] == "STALE_WINDOW", error
        assert [d["field"] for d in error["details"]] == ["candles.59.timestamp"]
        ws.send_json(message(bars, 0, 0))  # nothing was stored: bar 0 is new again
        assert ws.receive_json()["have"] == 1


def test_lenient_input_goes_through_the_schema_and_gives_the_same_window(bars: np.ndarray) -> None:
    """What the msgspec fast path refuses but the schema accepts (numbers as strings) decodes to the same rows."""
    from runtime.decoding import decode_stream_message

    strict = message(bars, 0, 2)
    lenient = json.loads(json.dumps(strict))
    for c in lenient["candles"]:
        c["open"], c["volume"] = str(c["open"]), str(c["volume"])
    fast, slow = decode_stream_message(json.dumps(strict)), decode_stream_message(json.dumps(lenient))
    assert np.array_equal(fast.rows, slow.rows) and fast.timestamps == slow.timestamps
    assert (fast.symbol, fast.exchange) == (slow.symbol, slow.exchange) == ("SPX/USD", "binance")


def test_a_real_server_streams_like_it_predicts(tmp_path: Path, bars: np.ndarray) -> None:
    """uvicorn + websockets: the same answers as POST /predict, and the close codes on the wire."""
    import http.client

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    with server(tmp_path, "--max-body-bytes", "65536", "--intra-op-threads", "1") as (_, port):
        url = f"ws://127.0.0.1:{port}/stream"
        http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def post(last: int) -> dict[str, Any]:
            http_conn.request(
                "POST",
                "/predict",
                json.dumps(predict_body(bars, last)),
                {**HEADERS, "content-type": "application/json"},
            )
            response = http_conn.getresponse()
            assert response.status == 200
            answer: dict[str, Any] = json.loads(response.read())
            return answer

        with connect(url, additional_headers=HEADERS) as ws:
            ws.send(json.dumps(message(bars, 0, 58)))
            assert json.loads(ws.recv(timeout=30))["have"] == 59
            for last in range(59, 79):
                ws.send(json.dumps(message(bars, last, last)))
                assert_same_answer(json.loads(ws.recv(timeout=30)), post(last))
            bad = message(bars, 79, 79)
            bad["candles"][0]["low"] = bad["candles"][0]["high"] * 2
            ws.send(json.dumps(bad))
            assert json.loads(ws.recv(timeout=30))["details"][0]["field"] == "candles.0.high"
            ws.send(json.dumps(message(bars, 79, 79)))
            assert_same_answer(json.loads(ws.recv(timeout=30)), post(79))
        for frame, code in ((b"\x00binary", 1003), ("x" * 70_000, 1009)):
            with connect(url, additional_headers=HEADERS) as ws:
                ws.send(frame)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == code
        with pytest.raises(InvalidStatus) as refused:
            connect(url)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"{}")["code"] == "UNAUTHORIZED"
        http_conn.close()


def test_a_stream_outlives_the_http_header_and_body_timeouts(tmp_path: Path, bars: np.ndarray) -> None:
    """The upgraded connection is the WebSocket protocol's: the HTTP timers (EDGE_HEADER_TIMEOUT_S, here 1 s)
    that were armed as the upgrade request completed must not close it (they did, after 10 s by default)."""
    import time

    from websockets.sync.client import connect

    timeouts = ("--header-timeout-s", "1", "--body-timeout-s", "1", "--intra-op-threads", "1")
    with (
        server(tmp_path, *timeouts) as (_, port),
        connect(f"ws://127.0.0.1:{port}/stream", additional_headers=HEADERS) as ws,
    ):
        ws.send(json.dumps(message(bars, 0, 59)))
        assert "prediction" in json.loads(ws.recv(timeout=30))
        end = time.monotonic() + 2.5
        last = 60
        while time.monotonic() < end:
            time.sleep(0.25)
            ws.send(json.dumps(message(bars, last, last)))
            assert "prediction" in json.loads(ws.recv(timeout=30)), last
            last += 1
