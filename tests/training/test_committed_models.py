"""The artifacts committed in models/ are what ships: re-verify their hashes and parity on the real test split."""

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("arch")

from runtime.constants import FP32_FILE, INT8_FILE, MANIFEST_FILE, TORCH_FILE
from training.parity import TOLERANCES
from training.pipeline import recheck


@pytest.fixture(scope="module")
def recheck_report(committed_model_dir: Path) -> dict[str, Any]:
    return recheck(committed_model_dir)


def test_every_committed_file_matches_its_hash(recheck_report: dict[str, Any]) -> None:
    assert recheck_report["files"], "manifest lists no files"
    assert {k: v for k, v in recheck_report["files"].items() if v != "ok"} == {}


def test_committed_artifacts_pass_parity_on_the_real_test_split(recheck_report: dict[str, Any]) -> None:
    parity = recheck_report["parity"]
    failing = [c for c in parity["checks"] if not c["passed"]]
    assert failing == []
    assert parity["test_windows"] > 1000  # the full real test split, not a sample
    limits = {c["name"].split("@")[0]: c["limit"] for c in parity["checks"]}
    assert limits["torch_fp32_vs_onnx_fp32"] == TOLERANCES.fp32_max_abs_diff == 1e-5
    assert TOLERANCES.int8_max_abs_diff == 0.02 and TOLERANCES.int8_min_argmax_agreement == 0.99
    assert recheck_report["passed"] is True


def test_manifest_keeps_the_runtime_contract(committed_model_dir: Path) -> None:
    manifest = json.loads((committed_model_dir / MANIFEST_FILE).read_text())
    assert isinstance(manifest["version"], str) and manifest["version"]
    for name in (TORCH_FILE, FP32_FILE, INT8_FILE):
        assert len(manifest["files"][name]["sha256"]) == 64
    total = (
        sum((committed_model_dir / n).stat().st_size for n in manifest["files"])
        + (committed_model_dir / MANIFEST_FILE).stat().st_size
    )
    assert total < 5 * 1024 * 1024
