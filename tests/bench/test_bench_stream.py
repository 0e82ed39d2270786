"""bench.stream: a short run against a real server gives every figure the report prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import stream


def test_a_short_run_measures_every_path(committed_model_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    result = stream.run(0.3, 2, committed_model_dir)
    assert result["stream_1"]["n"] > 0 and result["predict_1"]["n"] > 0
    assert result["stream_n_candles_s"] > 0 and result["predict_n_rps"] > 0 and result["floor_int8_p50_ms"] > 0
    text = stream.report(result)
    assert "| /stream (1 candle per message) |" in text and "candles/s" in text
