from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import market_windows

from runtime.constants import FP32_FILE, FP32_ROWWISE_FILE, INT8_FILE, INT8_ROWWISE_FILE, MANIFEST_FILE
from runtime.errors import ConfigurationError, InferenceFailed, ModelLoadError
from runtime.session import (
    Model,
    available_cpus,
    choose_provider,
    cpu_quota,
    gpu_visible,
    instances_per_worker,
    threads_per_worker,
)


def test_loads_verifies_and_predicts(committed_model_dir: Path) -> None:
    model = Model.load(committed_model_dir, precision="int8", intra_op_threads=1)
    assert model.info.precision == "int8" and model.info.file == INT8_ROWWISE_FILE
    assert model.info.provider == "cpu" and model.info.batch_invariant
    assert model.info.sha256 == hashlib.sha256((committed_model_dir / INT8_ROWWISE_FILE).read_bytes()).hexdigest()
    probs = model.run(market_windows(7, seed=1))
    assert probs.shape == (7, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_auto_precision_is_int8_on_cpu(committed_model_dir: Path) -> None:
    assert Model.load(committed_model_dir, intra_op_threads=1, warmup=False).info.precision == "int8"


SERVED = [
    pytest.param(INT8_ROWWISE_FILE, "int8", True, id="int8-rowwise"),
    pytest.param(FP32_ROWWISE_FILE, "fp32", True, id="fp32-rowwise"),
    pytest.param(INT8_FILE, "int8", False, id="int8-batched"),
    pytest.param(FP32_FILE, "fp32", False, id="fp32-batched"),
]


@pytest.mark.parametrize(("name", "precision", "invariant"), SERVED)
def test_corrupted_file_is_refused_naming_it(model_dir_copy: Path, name: str, precision: str, invariant: bool) -> None:
    path = model_dir_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=rf"{re.escape(name)}.*does not match its manifest"):
        Model.load(model_dir_copy, precision=precision, batch_invariant=invariant)


@pytest.mark.parametrize(("name", "precision", "invariant"), SERVED)
def test_truncated_file_is_refused(model_dir_copy: Path, name: str, precision: str, invariant: bool) -> None:
    path = model_dir_copy / name
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=re.escape(name)):
        Model.load(model_dir_copy, precision=precision, batch_invariant=invariant)


@pytest.mark.parametrize(("name", "precision", "invariant"), SERVED)
def test_missing_file_is_refused(model_dir_copy: Path, name: str, precision: str, invariant: bool) -> None:
    (model_dir_copy / name).unlink()
    with pytest.raises(ModelLoadError, match=rf"{re.escape(name)}.*cannot be read"):
        Model.load(model_dir_copy, precision=precision, batch_invariant=invariant)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_served_answers_are_batch_invariant_and_equal_the_plain_file_alone(
    committed_model_dir: Path, precision: str
) -> None:
    import onnxruntime as ort

    from runtime.session import session_options

    model = Model.load(committed_model_dir, precision=precision, intra_op_threads=1)
    plain = ort.InferenceSession(
        str(committed_model_dir / (INT8_FILE if precision == "int8" else FP32_FILE)), session_options(1)
    )
    windows = market_windows(150, seed=21)  # other windows than the manifest's check used
    alone = np.concatenate([plain.run(None, {"ohlcv_sequence": windows[i : i + 1]})[0] for i in range(150)])
    rng = np.random.default_rng(3)
    for size in (1, 2, 3, 8, 50, 150):
        order = rng.permutation(150)
        got = np.empty_like(alone)
        for start in range(0, 150, size):
            rows = order[start : start + size]
            got[rows] = model.run(windows[rows])
        assert np.array_equal(got, alone), f"batch {size}: {int((got != alone).any(axis=1).sum())} windows differ"


def test_without_a_rowwise_file_windows_run_one_per_call(model_dir_copy: Path) -> None:
    manifest = json.loads((model_dir_copy / MANIFEST_FILE).read_text())
    del manifest["files"][INT8_ROWWISE_FILE]
    (model_dir_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    model = Model.load(model_dir_copy, precision="int8", intra_op_threads=1)
    assert model.info.file == INT8_FILE and model.info.batch_invariant
    windows = market_windows(9, seed=2)
    alone = np.concatenate([model.run(windows[i : i + 1]) for i in range(9)])
    assert np.array_equal(model.run(windows), alone)


def test_batch_invariant_off_serves_the_batched_file(committed_model_dir: Path) -> None:
    model = Model.load(committed_model_dir, precision="int8", intra_op_threads=1, batch_invariant=False)
    assert model.info.file == INT8_FILE and not model.info.batch_invariant
    windows = market_windows(64, seed=2)
    alone = np.concatenate([model.run(windows[i : i + 1]) for i in range(64)])
    assert not np.array_equal(model.run(windows), alone)  # what the default setting protects against


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(None, "not found", id="missing"),
        pytest.param("{not json", "cannot be read", id="broken-json"),
        pytest.param('{"name": "signal_predictor"}', "no 'files' table", id="no-files"),
        pytest.param('{"name": "other", "files": {}}', "is for model 'other'", id="wrong-model"),
    ],
)
def test_bad_manifest_is_refused(model_dir_copy: Path, content: str | None, match: str) -> None:
    manifest = model_dir_copy / MANIFEST_FILE
    if content is None:
        manifest.unlink()
    else:
        manifest.write_text(content)
    with pytest.raises(ModelLoadError, match=match):
        Model.load(model_dir_copy)


def test_unlisted_file_is_refused(model_dir_copy: Path) -> None:
    manifest = json.loads((model_dir_copy / MANIFEST_FILE).read_text())
    del manifest["files"][INT8_FILE]
    (model_dir_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=rf"no sha256 for '{INT8_FILE}'"):
        Model.load(model_dir_copy, precision="int8", batch_invariant=False)


def test_explicit_unavailable_provider_lists_the_available_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"'cuda'.*unavailable.*Available providers: CPUExecutionProvider"):
        choose_provider("cuda", ["CPUExecutionProvider"], gpu_visible=False)


@pytest.mark.parametrize(
    ("available", "gpu", "expected"),
    [
        pytest.param(["CPUExecutionProvider"], True, "cpu", id="no-cuda-ep"),
        pytest.param(["CUDAExecutionProvider", "CPUExecutionProvider"], False, "cpu", id="ep-but-no-gpu"),
        pytest.param(["CUDAExecutionProvider", "CPUExecutionProvider"], True, "cuda", id="cuda"),
    ],
)
def test_auto_provider(available: list[str], gpu: bool, expected: str) -> None:
    assert choose_provider("auto", available, gpu) == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"cpu.max": "150000 100000\n"}, 1.5, id="v2-quota"),
        pytest.param({"cpu.max": "max 100000\n"}, None, id="v2-unlimited"),
        pytest.param({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2.0, id="v1-quota"),
        pytest.param({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None, id="v1-unlimited"),
        pytest.param({}, None, id="no-cgroup"),
    ],
)
def test_cpu_quota(tmp_path: Path, files: dict[str, str], expected: float | None) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert cpu_quota(tmp_path) == expected


def test_available_cpus_rounds_a_fractional_quota_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000")
    assert available_cpus(tmp_path) == 1


@pytest.mark.parametrize(
    ("configured", "workers", "cpus", "expected"),
    [(0, 1, 2, 1), (0, 2, 2, 1), (0, 4, 2, 1), (0, 2, 8, 3), (0, 1, 8, 7), (0, 1, 1, 1), (3, 2, 2, 3)],
)
def test_instances_never_oversubscribe(configured: int, workers: int, cpus: int, expected: int) -> None:
    assert instances_per_worker(configured, workers, cpus) == expected


@pytest.mark.parametrize(("configured", "expected"), [(0, 1), (1, 1), (4, 4)])
def test_intra_op_threads_default_to_one_per_instance(configured: int, expected: int) -> None:
    # On 16 CPUs, 15 intra-op threads made a one-window call slower than 1 thread (bench/results/gpu.md).
    assert threads_per_worker(configured, workers=1, cpus=16) == expected


@pytest.mark.gpu
def test_cuda_provider_matches_cpu(committed_model_dir: Path) -> None:
    cpu = Model.load(committed_model_dir, precision="fp32", provider="cpu")
    gpu = Model.load(committed_model_dir, precision="fp32", provider="cuda")
    windows = market_windows(64, seed=2)
    np.testing.assert_allclose(gpu.run(windows), cpu.run(windows), atol=1e-4)


@pytest.mark.gpu
def test_cuda_non_finite_output_is_an_error(committed_model_dir: Path) -> None:
    """Seen on an H100: an all-zero window gives NaN probabilities on CUDA; the IO-binding path must check too."""
    gpu = Model.load(committed_model_dir, precision="fp32", provider="cuda")
    with pytest.raises(InferenceFailed, match="non-finite"):
        gpu.run(np.zeros((1, 60, 5), np.float32))


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        pytest.param(["nvidia3", "nvidiactl", "nvidia-uvm"], True, id="pod-with-gpu-3"),
        pytest.param(["nvidiactl", "nvidia-uvm"], False, id="control-devices-only"),
        pytest.param([], False, id="none"),
    ],
)
def test_gpu_visible_finds_any_device_index(tmp_path: Path, devices: list[str], expected: bool) -> None:
    for name in devices:
        (tmp_path / name).touch()
    assert gpu_visible(tmp_path, tmp_path / "no-proc") is expected


def test_inference_failure_does_not_carry_onnxruntime_text(committed_model_dir: Path) -> None:
    model = Model.load(committed_model_dir, intra_op_threads=1)
    with pytest.raises(InferenceFailed, match=r"^inference failed on a batch of 1 window\(s\)$"):
        model.run(np.zeros((1, 60, 4), dtype=np.float32))
