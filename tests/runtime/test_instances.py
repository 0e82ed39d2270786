"""Model instances: several inference threads, one session each, one batching queue; no spinning; CUDA refusal."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import market_windows

from runtime import cuda
from runtime.batching import Batcher
from runtime.session import Model, session_options
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]


class _Overlap:
    """Run functions that record how many run at once and which one ran."""

    def __init__(self, n: int, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.used: set[int] = set()
        self.runs = [self._make(i) for i in range(n)]

    def _make(self, i: int) -> Any:
        def run(windows: np.ndarray) -> np.ndarray:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.used.add(i)
            time.sleep(self.delay)
            with self.lock:
                self.now -= 1
            s = windows.reshape(len(windows), -1).sum(axis=1, keepdims=True)
            return np.concatenate([s, s, s], axis=1).astype(np.float32)

        return run


def test_instances_compute_batches_at_the_same_time() -> None:
    fake = _Overlap(2, delay=0.05)

    async def body() -> list[Any]:
        batcher = Batcher(fake.runs, max_batch_size=1)
        batcher.start()
        try:
            assert batcher.instances == 2
            return await asyncio.gather(*[batcher.submit(np.full((1, 60, 5), i, np.float32)) for i in range(8)])
        finally:
            await batcher.stop(2.0)

    results = asyncio.run(body())
    assert fake.most == 2, "two instances never computed at once"
    assert fake.used == {0, 1}
    assert {r.instance for r in results} == {0, 1}
    assert [r.probabilities[0, 0] for r in results] == [i * 300 for i in range(8)]
    assert sorted(r.run_id for r in results) == list(range(1, 9)), "each model run has its own id"


def test_an_inline_run_holds_an_instance_so_no_two_batches_share_one() -> None:
    fake = _Overlap(1, delay=0.05)

    async def body() -> None:
        batcher = Batcher(fake.runs, max_batch_size=1)
        batcher.start()
        try:
            queued = batcher.enqueue(np.zeros((1, 60, 5), np.float32))
            await asyncio.sleep(0.01)  # the thread holds the only instance
            assert batcher.run_inline_if_idle(np.zeros((1, 60, 5), np.float32)) is None
            await queued
        finally:
            await batcher.stop(2.0)

    asyncio.run(body())
    assert fake.most == 1


def test_answers_are_bit_identical_whichever_instance_runs_them(committed_model_dir: Path) -> None:
    model = Model.load(committed_model_dir, instances=2)
    assert model.info.instances == 2 and model.info.batch_invariant
    windows = market_windows(48, seed=5)
    alone = np.concatenate([model.run(w[None]) for w in windows])
    first, second = model.runners()
    assert np.array_equal(first(windows), alone) and np.array_equal(second(windows), alone)

    async def body() -> list[Any]:
        batcher = Batcher(model.runners(), max_batch_size=8)
        batcher.start()
        try:
            # Requests of 1-3 windows, so batches of mixed composition land on both instances.
            sizes = [1 + i % 3 for i in range(24)]
            offsets = np.cumsum([0, *sizes])
            futures = [batcher.enqueue(windows[a:b]) for a, b in itertools.pairwise(offsets)]
            return [(a, await f) for a, f in zip(offsets[:-1], futures, strict=True)]
        finally:
            await batcher.stop(5.0)

    results = asyncio.run(body())
    for start, result in results:
        n = len(result.probabilities)
        assert np.array_equal(result.probabilities, alone[start : start + n]), f"rows {start}..{start + n} moved"
    assert {r.instance for _, r in results} == {0, 1}, "one instance did all the work: the test proved nothing"


@pytest.mark.parametrize(("allow", "expected"), [(False, "0"), (True, "1")])
def test_thread_pools_never_spin_unless_asked(allow: bool, expected: str) -> None:
    options = session_options(4, allow_spinning=allow)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == expected


def test_default_settings_give_one_thread_per_instance(committed_model_dir: Path) -> None:
    from runtime.service import default_model_loader

    model = default_model_loader(Settings(model_dir=committed_model_dir, instances=2), None)
    assert (model.info.instances, model.info.intra_op_threads) == (2, 1)


class _CpuOnlyOrt:
    __version__ = "1.0-test"

    @staticmethod
    def get_available_providers() -> list[str]:
        return ["CPUExecutionProvider"]


class _GpuOrt(_CpuOnlyOrt):
    @staticmethod
    def get_available_providers() -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_diagnosis_names_the_cpu_build_the_driver_and_the_device(tmp_path: Path) -> None:
    problems = cuda.diagnose(_CpuOnlyOrt(), loadable=lambda name: False, dev=tmp_path, proc=tmp_path / "none")
    assert len(problems) == 3
    assert "install the CUDA build" in problems[0] and "neuraltrade-edge[gpu]" in problems[0]
    assert "libcuda.so.1" in problems[1] and "nvidia-smi" in problems[1]
    assert "no GPU device" in problems[2]


def test_diagnosis_names_the_missing_cuda_library(tmp_path: Path) -> None:
    (tmp_path / "nvidia0").touch()
    present = {"libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcufft.so.12"}
    problems = cuda.diagnose(_GpuOrt(), loadable=present.__contains__, dev=tmp_path, proc=tmp_path / "none")
    assert len(problems) == 1
    assert "libcudnn.so.9" in problems[0] and "libcudart" not in problems[0]


def test_provider_cuda_refuses_to_start_without_a_gpu() -> None:
    """`EDGE_PROVIDER=cuda python -m runtime` exits non-zero within seconds, saying what is missing."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "--port", "0"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "EDGE_PROVIDER": "cuda"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "EDGE_PROVIDER=cuda but CUDA is not usable" in output
    assert "CUDAExecutionProvider" in output and "neuraltrade-edge[gpu]" in output
    assert elapsed < 30, f"took {elapsed:.1f} s to refuse"
