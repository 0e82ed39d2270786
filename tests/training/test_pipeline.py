"""A tiny end-to-end run: synthetic CSV → train → export → quantize → parity → report → manifest, in seconds."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import onnx
from ohlcv_factories import HEADER, synthetic_rows, write_csv

from runtime.constants import FP32_FILE, INPUT_NAME, INT8_FILE, MANIFEST_FILE, OUTPUT_NAME, TORCH_FILE
from training.cli import main
from training.config import TrainingConfig
from training.errors import ParityError, QuantizationError
from training.manifest import verify_files
from training.parity import ParityCheck, ParityReport
from training.pipeline import PipelineResult, run_pipeline
from training.quantize import quantize_onnx


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    """One tiny pipeline run shared by this module's tests (training is the slow part)."""
    root = tmp_path_factory.mktemp("tiny")
    csv = root / "synthetic.csv"
    csv.write_text("\n".join([HEADER, *(",".join(map(str, r)) for r in synthetic_rows(2000))]) + "\n")
    # Small and briefly trained on purpose: a tiny model trained to high confidence develops sharp decision
    # regions where either INT8 model can jump on an isolated window (seen: |dp| up to 0.6 at seed 3).
    config = TrainingConfig(
        data=str(csv),
        hidden_size=16,
        epochs=4,
        batch_size=32,
        lr=0.005,
        seed=1,
        latency_runs=5,
        progress=False,
        num_threads=1,
    )
    return run_pipeline(config, root / "models")


def test_pipeline_writes_every_artifact(tiny_run: PipelineResult) -> None:
    names = {p.name for p in tiny_run.out_dir.iterdir()}
    assert {TORCH_FILE, FP32_FILE, INT8_FILE, MANIFEST_FILE, "REPORT.md"} <= names
    assert not any(n.endswith(".data") for n in names)  # single-file ONNX
    manifest = json.loads((tiny_run.out_dir / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == names - {MANIFEST_FILE}
    assert all(v == "ok" for v in verify_files(tiny_run.out_dir, manifest).values())


def test_manifest_meets_the_runtime_contract(tiny_run: PipelineResult) -> None:
    m = json.loads((tiny_run.out_dir / MANIFEST_FILE).read_text())
    assert m["name"] == "signal_predictor" and isinstance(m["version"], str)
    assert all(len(entry["sha256"]) == 64 for entry in m["files"].values())
    assert m["inputs"] == [{"name": INPUT_NAME, "shape": ["batch", 60, 5], "dtype": "float32"}]
    assert m["outputs"] == [{"name": OUTPUT_NAME, "shape": ["batch", 3], "dtype": "float32"}]
    assert m["classes"] == ["sell", "hold", "buy"] and m["window_length"] == 60
    assert m["architecture"]["hidden_size"] == 16
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])


def test_int8_graph_really_is_integer(tiny_run: PipelineResult) -> None:
    ops = {n.op_type for n in onnx.load(str(tiny_run.out_dir / INT8_FILE)).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "MatMulInteger" in ops
    assert "LSTM" not in ops
    fp32 = onnx.load(str(tiny_run.out_dir / FP32_FILE))
    assert fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_parity_passes(tiny_run: PipelineResult) -> None:
    tiny_run.parity.raise_for_failures()
    assert len(tiny_run.parity.checks) == 8


def test_quantizing_without_lstm_weights_fails_loudly(tiny_run: PipelineResult, tmp_path: Path) -> None:
    # Excluding the LSTM nodes mimics the dynamo-export pitfall: the LSTMs would silently stay FP32.
    lstms = [n.name for n in onnx.load(str(tiny_run.out_dir / FP32_FILE)).graph.node if n.op_type == "LSTM"]
    from training.quantize import OnnxQuantSettings

    with pytest.raises(QuantizationError, match="LSTM node\\(s\\) left in FP32"):
        quantize_onnx(
            tiny_run.out_dir / FP32_FILE, tmp_path / "x.onnx", OnnxQuantSettings(nodes_to_exclude=tuple(lstms))
        )


def test_parity_report_lists_every_failure() -> None:
    report = ParityReport(
        checks=[
            ParityCheck("a", "max_abs_diff", 0.5, 0.02, False),
            ParityCheck("b", "max_abs_diff", 0.0, 0.02, True),
            ParityCheck("c", "argmax_agreement", 0.9, 0.99, False),
        ]
    )
    with pytest.raises(ParityError, match=r"2 of 3 parity check\(s\) failed:\n  a: .*\n  c: ") as info:
        report.raise_for_failures()
    assert "b:" not in str(info.value)


def test_a_parity_failure_made_of_near_ties_says_so() -> None:
    info = {"near_tie_margin": 0.04, "fp32_near_tie_share": 0.213}
    flips_only = [
        ParityCheck("int8_vs_fp32", "argmax_agreement", 0.96, 0.99, False),
        ParityCheck("int8_vs_fp32", "max_abs_diff", 0.011, 0.02, True),
    ]
    with pytest.raises(
        ParityError, match=r"near ties \(21\.3% of the test windows have an FP32 top-2 margin under 0\.04\)"
    ):
        ParityReport(checks=flips_only, info=info).raise_for_failures()
    # When the probabilities themselves moved too far, the flips are not (only) near ties: no such claim.
    moved = [flips_only[0], ParityCheck("int8_vs_fp32", "max_abs_diff", 0.3, 0.02, False)]
    with pytest.raises(ParityError) as raised:
        ParityReport(checks=moved, info=info).raise_for_failures()
    assert "near ties" not in str(raised.value)


def test_the_tiny_run_records_its_near_tie_share(tiny_run: PipelineResult) -> None:
    share = tiny_run.parity.info["fp32_near_tie_share"]
    assert 0.0 <= share <= 1.0 and tiny_run.parity.info["near_tie_margin"] == 0.04


def test_parity_cli_rejects_a_tampered_directory(
    tiny_run: PipelineResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(tiny_run.out_dir, copy)
    with (copy / "REPORT.md").open("a") as fh:
        fh.write("edited\n")
    assert main(["parity", "--model-dir", str(copy)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"]["REPORT.md"].startswith("sha256 ")
    assert report["files"][INT8_FILE] == "ok"
    assert report["passed"] is False


def test_parity_cli_reports_a_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parity", "--model-dir", str(tmp_path)]) == 2
    assert "manifest.json not found" in capsys.readouterr().err


def test_train_cli_rejects_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(write_csv(tmp_path, synthetic_rows(5))), "--lr", "0"]) == 2
    assert "greater than 0" in capsys.readouterr().err
