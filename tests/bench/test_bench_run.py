"""Pre-flight checks and configuration parsing of the harness (no servers started)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench import config, run


def model_dir(tmp_path: Path, *, tamper: str | None = None) -> Path:
    files = {}
    for name in ("signal_predictor.int8.onnx", "signal_predictor.onnx", "signal_predictor.pt"):
        data = name.encode()
        (tmp_path / name).write_bytes(data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest()}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": files}))
    if tamper:
        (tmp_path / tamper).write_bytes(b"retrained")
    return tmp_path


def test_consistent_model_directory_passes(tmp_path: Path) -> None:
    assert run.check_artifacts(model_dir(tmp_path), with_torch=True) is None


def test_a_file_rewritten_mid_training_is_refused(tmp_path: Path) -> None:
    problem = run.check_artifacts(model_dir(tmp_path, tamper="signal_predictor.pt"), with_torch=True)
    assert problem is not None
    assert "signal_predictor.pt' does not match its manifest" in problem


def test_torch_file_is_only_checked_when_the_seed_runs(tmp_path: Path) -> None:
    assert run.check_artifacts(model_dir(tmp_path, tamper="signal_predictor.pt"), with_torch=False) is None


def test_configurations_from_the_command_line() -> None:
    args = run.resolve(
        run.build_parser().parse_args(
            ["--quick", "--workers", "2", "--seed-threads", "1", "2",
             "--variant", "int8-t1=int8,EDGE_INTRA_OP_THREADS=1"]
        )
    )  # fmt: skip
    configs = {c.name: c for c in config.configurations(args)}
    assert list(configs) == ["int8", "fp32", "seed", "seed-t2", "http", "int8-w2", "int8-t1"]
    assert configs["http"].kind == "http"
    assert configs["int8-w2"].workers == 2
    assert configs["seed-t2"].threads == 2
    assert configs["int8-t1"].env == {"EDGE_INTRA_OP_THREADS": "1"}
    assert (args.duration, args.warmup, args.rounds) == (3.0, 1.0, 1)
    assert args.connections == [1, 8, 64]


@pytest.mark.parametrize(
    "variant",
    [pytest.param("noequals", id="no-precision"), pytest.param("x=int4", id="bad-precision"),
     pytest.param("x=int8,EDGE_A", id="bad-pair")],
)  # fmt: skip
def test_malformed_variant_is_rejected(variant: str) -> None:
    args = run.resolve(run.build_parser().parse_args(["--variant", variant]))
    with pytest.raises(SystemExit, match="--variant"):
        config.configurations(args)
