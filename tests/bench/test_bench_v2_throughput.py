"""bench.v2_throughput: skips cleanly without CUDA, and its whole path works on the CPU provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import v2_throughput


def test_without_cuda_it_says_so_and_measures_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: the skip path does not apply")
    assert v2_throughput.main(["--provider", "cuda", "--out", str(tmp_path)]) == 2
    assert "CUDA is unavailable here" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cpu_provider_run_measures_http_against_in_process(tmp_path: Path) -> None:
    rc = v2_throughput.main(["--provider", "cpu", "--seconds", "0.3", "--connections", "2", "--out", str(tmp_path)])
    assert rc == 0
    results = json.loads((tmp_path / "v2_throughput.json").read_text())
    for workers in ("workers=1", "workers=2"):
        http = results["http"][workers]
        assert http["max_abs_dp_vs_in_process"] < 1e-5, "the binary v2 answer differs from in-process"
        for batch in ("64", "128", "256"):
            assert http[batch]["requests_ok"] > 0 and http[batch]["requests_not_ok"] == 0
            assert 0 < http[batch]["ratio_to_in_process"] < 10
    assert "| 256 |" in (tmp_path / "v2_throughput.md").read_text()
