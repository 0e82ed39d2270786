from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.__main__ import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_flags_override_environment() -> None:
    s = load_settings(["--port", "9001", "--precision", "fp32"], environ={"EDGE_PORT": "9000", "EDGE_WORKERS": "2"})
    assert (s.port, s.precision, s.workers) == (9001, "fp32", 2)


def test_environment_is_read_with_prefix() -> None:
    s = load_settings([], environ={"EDGE_API_KEYS": "key-one-111, key-two-222", "EDGE_MAX_BATCH_DELAY_US": "250"})
    assert [k.get_secret_value() for k in s.api_keys] == ["key-one-111", "key-two-222"]
    assert s.max_batch_delay_us == 250
    assert "key-one" not in repr(s)  # secrets never print


@pytest.mark.parametrize(
    ("args", "provider", "expected"),
    [
        pytest.param([], "cpu", 8, id="cpu-default"),
        pytest.param([], "cuda", 256, id="cuda-default"),
        pytest.param(["--max-batch-size", "32"], "cuda", 32, id="explicit-wins"),
        pytest.param(["--max-batch-size", "2"], "cpu", 2, id="explicit-cpu"),
    ],
)
def test_batch_size_defaults_by_provider(args: list[str], provider: str, expected: int) -> None:
    assert load_settings(args, environ={}).batch_size_for(provider) == expected


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--port", "99999"], "port", id="port-range"),
        pytest.param(["--workers", "0"], "workers", id="workers"),
        pytest.param(["--precision", "fp16"], "invalid choice", id="precision"),
    ],
)
def test_invalid_settings_exit_2_naming_the_setting(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_refuses_public_bind_without_keys() -> None:
    result = _run("--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "refusing to serve unauthenticated on 0.0.0.0" in result.stderr


def test_refuses_to_start_on_a_corrupt_model(model_dir_copy: Path) -> None:
    path = model_dir_copy / "signal_predictor.int8.rowwise.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    result = _run("--model-dir", str(model_dir_copy), "--port", "0")
    assert result.returncode == 1
    assert "signal_predictor.int8.rowwise.onnx" in result.stderr and "does not match its manifest" in result.stderr
