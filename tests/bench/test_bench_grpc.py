"""bench.grpc: a short run against a real server gives every figure the report prints, both answers equal."""

from __future__ import annotations

from pathlib import Path

from bench import grpc as grpc_bench


def test_a_short_run_measures_both_protocols(committed_model_dir: Path) -> None:
    result = grpc_bench.run(0.3, 2, committed_model_dir)
    assert result["http_1"]["n"] > 0 and result["grpc_1"]["n"] > 0
    assert result["http_n_rps"] > 0 and result["grpc_n_rps"] > 0
    assert result["http_live"]["n"] > 0 and result["grpc_live"]["server_cpu_us"] >= 0
    assert len(result["probabilities"]) == 3 and abs(sum(result["probabilities"]) - 1) < 1e-5
    assert "gRPC / HTTP" in grpc_bench.report(result)
