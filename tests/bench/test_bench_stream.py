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
    assert result["http_floor_1"]["n"] > 0 and result["ws_floor_1"]["n"] > 0  # the no-work stack, both paths
    text = stream.report(result)
    assert "transport floor: a /stream message answered with no work" in text and "Lowest /stream p50" in text
    assert "| /stream (1 candle per message) |" in text and "candles/s" in text


def test_the_work_breakdown_times_every_phase_and_restores_them(committed_model_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    from bench import stream_work
    from runtime.http import stream as endpoint
    from runtime.streams import SymbolWindows

    before = (endpoint.decode_stream_message, SymbolWindows.prepare)
    result = stream_work.run(60, committed_model_dir)
    assert (endpoint.decode_stream_message, SymbolWindows.prepare) == before  # the wrappers are gone
    phases = result["phases_p50_us"]
    assert set(phases) == {label for label, _, _ in stream_work.PHASES}  # every phase ran on every message
    assert all(us > 0 for us in phases.values())
    # Phases run inside the message: their medians cannot add up to much more than the message's.
    assert sum(phases.values()) < 1.2 * result["answer_p50_us"]
    assert phases[stream_work.MODEL] == max(phases.values())
    text = stream_work.report(result)
    assert "| **the message, in the service** |" in text and "Service work outside the model run" in text
