"""`python -m training finetune`: a tiny parent fine-tuned on another market, end to end, and every refusal.

The parent is a tiny version trained here (hidden 16, a few epochs) so the whole chain runs in seconds; the new
market is a synthetic series with another period and noise seed, so the parent has something to adapt to.
"""

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import numpy as np
import torch
from ohlcv_factories import HEADER, synthetic_rows, write_csv

from runtime.constants import FP32_FILE, INT8_FILE, MANIFEST_FILE, TORCH_FILE
from runtime.repository import READY, Repository
from runtime.session import Model
from training.cli import main
from training.config import FinetuneOptions, TrainingConfig
from training.errors import ArtifactError, DataValidationError, TrainingError
from training.finetune import finetune
from training.manifest import verify_files
from training.model import ENCODER_MODULES
from training.pipeline import PipelineResult, run_pipeline


def _csv(path: Path, rows: list[list[object]]) -> Path:
    path.write_text("\n".join([HEADER, *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    root = tmp_path_factory.mktemp("parent")
    config = TrainingConfig(
        data=str(_csv(root / "parent_market.csv", synthetic_rows(1600))),
        hidden_size=16,
        epochs=3,
        batch_size=32,
        lr=0.005,
        seed=1,
        latency_runs=3,
        progress=False,
        num_threads=1,
    )
    return run_pipeline(config, root / "models")


@pytest.fixture(scope="module")
def new_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market")
    return _csv(root / "other_market.csv", synthetic_rows(1200, period=13, seed=7))


@pytest.fixture(scope="module")
def child(parent: PipelineResult, new_market: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The CLI run, with ``-v`` after the subcommand: (out dir, exit code, its arguments)."""
    out = tmp_path_factory.mktemp("child") / "ft"
    argv = ["finetune", "-v", "--from", str(parent.out_dir), "--data", str(new_market), "--out", str(out)]
    argv += ["--epochs", "3", "--lr", "0.003", "--version", "1.1.0-other", "--no-progress"]
    code = main(argv)
    return out, code, " ".join(argv)


def _manifest(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text())
    return manifest


def test_finetune_writes_a_complete_parity_checked_version(child: tuple[Path, int, str]) -> None:
    out, code, _ = child
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {TORCH_FILE, FP32_FILE, INT8_FILE, MANIFEST_FILE, "REPORT.md"} <= names
    m = _manifest(out)
    assert m["version"] == "1.1.0-other" and m["created"].endswith("Z")
    assert all(v == "ok" for v in verify_files(out, m).values())
    assert m["parity"]["passed"] and len(m["parity"]["checks"]) == 8
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # the temporary build dir is gone


def test_the_manifest_records_the_parent_and_what_was_frozen(
    child: tuple[Path, int, str], parent: PipelineResult
) -> None:
    m = _manifest(child[0])
    parent_manifest = _manifest(parent.out_dir)
    assert m["parent"]["version"] == parent_manifest["version"]
    assert m["parent"]["checkpoint_sha256"] == parent_manifest["files"][TORCH_FILE]["sha256"]
    ft = m["finetune"]
    assert ft["freeze_encoder"] is True and ft["frozen_modules"] == list(ENCODER_MODULES)
    assert ft["frozen_parameters"] and 0 < ft["trainable_parameters"] < ft["total_parameters"]
    assert "finetune -v --from" in ft["command"]


def test_the_frozen_encoder_is_bit_identical_and_the_head_moved(
    child: tuple[Path, int, str], parent: PipelineResult
) -> None:
    def state(directory: Path) -> dict[str, torch.Tensor]:
        loaded: dict[str, torch.Tensor] = torch.load(
            io.BytesIO((directory / TORCH_FILE).read_bytes()), weights_only=True
        )
        return loaded

    before, after = state(parent.out_dir), state(child[0])
    assert before.keys() == after.keys()
    encoder = [k for k in before if k.split(".")[0] in ENCODER_MODULES]
    head = [k for k in before if k not in encoder and before[k].is_floating_point()]
    assert encoder and head
    assert all(torch.equal(before[k], after[k]) for k in encoder)  # weights and BatchNorm running statistics
    assert any(not torch.equal(before[k], after[k]) for k in head)


def test_the_report_compares_parent_finetuned_and_baselines_honestly(child: tuple[Path, int, str]) -> None:
    m = _manifest(child[0])
    market = m["finetune"]["new_market_test"]
    for model in ("parent", "finetuned"):
        scores = market[model]
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["macro_f1"] <= 1 and scores["nll"] > 0
        assert 0 <= scores["ece"] <= 1
    assert any(name.startswith("majority_class") for name in market["baselines"])
    forgot = m["finetune"]["parent_market_test"]  # the parent's CSV is still on disk: forgetting is measured
    assert forgot is not None and 0 <= forgot["argmax_agreement_with_parent"] <= 1
    verdict = m["finetune"]["verdict"]
    assert verdict.startswith("Fine-tuning ") and "parent's own test split" in verdict
    report = (child[0] / "REPORT.md").read_text()
    assert "## Fine-tuning" in report and verdict in report
    assert "| fine-tuned (torch FP32) |" in report and "majority_class" in report
    assert "daily candles" in report and "over 5 days" in report  # the synthetic markets are daily


def test_the_runtime_lists_and_serves_the_new_version(
    child: tuple[Path, int, str], parent: PipelineResult, new_market: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(parent.out_dir, repo)
    shutil.copytree(child[0], repo / "1.1.0-other")
    entries = {e.version: e for e in Repository(repo).scan()}
    assert entries["1.1.0-other"].state == READY, entries["1.1.0-other"].reason
    assert Repository(repo).resolve(None).version == "1.1.0-other"  # the newest
    model = Model.load(repo / "1.1.0-other", precision="int8", provider="cpu", intra_op_threads=1)
    assert model.info.version == "1.1.0-other"
    window = np.random.default_rng(0).lognormal(4.6, 0.01, size=(1, 60, 5)).astype(np.float32)
    probs = model.runners()[0](window)
    assert probs.shape == (1, 3) and abs(float(probs.sum()) - 1.0) < 1e-5


def _refused(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("damage", ["missing", "tampered"])
def test_a_damaged_parent_is_refused_naming_the_file(
    damage: str, parent: PipelineResult, new_market: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "parent"
    shutil.copytree(parent.out_dir, broken)
    if damage == "missing":
        (broken / INT8_FILE).unlink()
    else:
        with (broken / TORCH_FILE).open("r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match=INT8_FILE if damage == "missing" else TORCH_FILE):
        finetune(broken, out, FinetuneOptions(data=str(new_market), epochs=1, progress=False))
    _refused(out)


def test_an_incompatible_architecture_is_refused(parent: PipelineResult, new_market: Path, tmp_path: Path) -> None:
    broken = tmp_path / "parent"
    shutil.copytree(parent.out_dir, broken)
    manifest = _manifest(broken)
    manifest["architecture"]["hidden_size"] = 32  # the checkpoint holds hidden size 16
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest))
    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match="incompatible architecture"):
        finetune(broken, out, FinetuneOptions(data=str(new_market), epochs=1, progress=False))
    _refused(out)


def test_invalid_csv_rows_are_listed_and_nothing_is_written(parent: PipelineResult, tmp_path: Path) -> None:
    rows = synthetic_rows(600, period=13, seed=7)
    rows[10][2] = -5.0  # high < low
    rows[20][1] = "abc"  # open not a number
    csv = write_csv(tmp_path, rows)
    out = tmp_path / "out"
    with pytest.raises(DataValidationError) as info:
        finetune(parent.out_dir, out, FinetuneOptions(data=str(csv), epochs=1, progress=False))
    message = str(info.value)
    assert "line 12" in message and "line 22" in message  # CSV line numbers (the header is line 1)
    _refused(out)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [(150, "has no complete window; the data are too short"), (600, "too few windows for the split: 'val' has 26")],
)
def test_too_little_data_is_refused(rows: int, reason: str, parent: PipelineResult, tmp_path: Path) -> None:
    csv = write_csv(tmp_path, synthetic_rows(rows, period=13, seed=7))
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match=reason):
        finetune(parent.out_dir, out, FinetuneOptions(data=str(csv), epochs=1, progress=False))
    _refused(out)


def test_an_out_directory_in_use_is_refused_untouched(parent: PipelineResult, new_market: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not empty"):
        finetune(parent.out_dir, out, FinetuneOptions(data=str(new_market), epochs=1, progress=False))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_cli_reports_a_bad_parent_with_exit_code_2(
    new_market: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["finetune", "--from", str(tmp_path / "nowhere"), "--data", str(new_market), "--out", str(out)])
    assert code == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()
