from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import market_windows

from runtime.batching import BATCH_INVARIANCE_ATOL, Batcher
from runtime.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded
from runtime.session import Model


class RecordingModel:
    """Stands in for the model: sums each window, records batch sizes, can be slowed or broken."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, windows: np.ndarray) -> np.ndarray:
        self.gate.wait()
        self.batch_sizes.append(len(windows))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        s = windows.reshape(len(windows), -1).sum(axis=1, keepdims=True)
        return np.concatenate([s, s + 1, s + 2], axis=1).astype(np.float32)


def _windows(n: int, value: float) -> np.ndarray:
    return np.full((n, 60, 5), value, dtype=np.float32)


async def _with_batcher(model: RecordingModel, body: Any, **kwargs: Any) -> Any:
    batcher = Batcher(model.run, **kwargs)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop(2.0)


def test_concurrent_requests_coalesce_and_each_gets_its_own_rows() -> None:
    model = RecordingModel(delay=0.02)

    async def body(batcher: Batcher) -> None:
        model.gate.clear()  # hold the first batch so the rest queue up behind it
        first = asyncio.ensure_future(batcher.submit(_windows(1, 0)))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit(_windows(1, i))) for i in range(1, 11)]
        await asyncio.sleep(0.01)
        model.gate.set()
        results = await asyncio.gather(first, *rest)
        for i, r in enumerate(results):
            assert r.probabilities.shape == (1, 3)
            assert r.probabilities[0, 0] == pytest.approx(i * 300)
        assert results[5].batch_size == 10

    asyncio.run(_with_batcher(model, body, max_batch_size=32))
    assert model.batch_sizes == [1, 10]


def test_max_batch_size_splits_batches_but_never_splits_a_request() -> None:
    model = RecordingModel()

    async def body(batcher: Batcher) -> None:
        model.gate.clear()
        futures = [batcher.enqueue(_windows(n, 1)) for n in (3, 3, 3, 5)]
        model.gate.set()
        await asyncio.gather(*futures)

    asyncio.run(_with_batcher(model, body, max_batch_size=4))
    assert sorted(model.batch_sizes) == [3, 3, 3, 5]


def test_lone_request_is_not_held_back() -> None:
    model = RecordingModel()

    async def body(batcher: Batcher) -> float:
        await batcher.submit(_windows(1, 1))  # warm the thread
        start = time.perf_counter()
        await batcher.submit(_windows(1, 1))
        return time.perf_counter() - start

    elapsed = asyncio.run(_with_batcher(model, body, max_batch_delay_us=0))
    assert elapsed < 0.5  # generous: only checks there is no waiting for company


def test_failing_batch_fails_every_waiter() -> None:
    model = RecordingModel(fail=True)

    async def body(batcher: Batcher) -> list[Any]:
        model.gate.clear()
        futures = [batcher.enqueue(_windows(1, i)) for i in range(5)]
        model.gate.set()
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(_with_batcher(model, body))
    assert len(results) == 5
    assert all(isinstance(r, InferenceFailed) for r in results)
    assert "RuntimeError" in str(results[0]) and "boom" not in str(results[0])


def test_full_queue_sheds_at_once() -> None:
    model = RecordingModel()

    async def body(batcher: Batcher) -> None:
        model.gate.clear()
        first = batcher.enqueue(_windows(1, 0))
        await asyncio.sleep(0.05)  # the worker holds the first; the queue is empty again
        held = [batcher.enqueue(_windows(2, 0)) for _ in range(2)]
        with pytest.raises(Overloaded, match="queue full"):
            batcher.enqueue(_windows(1, 0))
        model.gate.set()
        await asyncio.gather(first, *held)

    asyncio.run(_with_batcher(model, body, max_queue=4))


def test_expired_deadline_is_not_computed() -> None:
    model = RecordingModel(delay=0.05)

    async def body(batcher: Batcher) -> None:
        model.gate.clear()
        first = batcher.enqueue(_windows(1, 0))
        await asyncio.sleep(0.02)  # the worker has taken `first` and waits at the gate
        late = batcher.enqueue(_windows(1, 9), deadline=time.perf_counter() + 0.01)
        await asyncio.sleep(0.03)
        model.gate.set()
        await first
        with pytest.raises(DeadlineExceeded):
            await late

    asyncio.run(_with_batcher(model, body))
    assert model.batch_sizes == [1]


def test_after_drain_nothing_is_admitted() -> None:
    model = RecordingModel()

    async def body(batcher: Batcher) -> None:
        assert await batcher.drain(1.0)
        with pytest.raises(NotReady):
            batcher.enqueue(_windows(1, 0))

    asyncio.run(_with_batcher(model, body))


@pytest.mark.parametrize("invariant", [True, False], ids=["batch-invariant", "batched-opt-out"])
def test_batched_equals_unbatched_on_the_real_model_under_concurrency(
    committed_model_dir: Path, invariant: bool
) -> None:
    model = Model.load(committed_model_dir, precision="int8", intra_op_threads=1, batch_invariant=invariant)
    windows = market_windows(48, seed=5)
    single = np.concatenate([model.run(windows[i : i + 1]) for i in range(len(windows))])

    async def body(batcher: Batcher) -> list[Any]:
        return await asyncio.gather(*(batcher.submit(windows[i : i + 1]) for i in range(len(windows))))

    async def run() -> list[Any]:
        batcher = Batcher(model.run, max_batch_size=16)
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop(2.0)

    results = asyncio.run(run())
    batched = np.concatenate([r.probabilities for r in results])
    assert max(r.batch_size for r in results) > 1, "requests were never coalesced"
    if invariant:  # the default: every window gets exactly its lone answer
        assert np.array_equal(batched, single)
        return
    np.testing.assert_allclose(batched, single, atol=BATCH_INVARIANCE_ATOL)
    # The signal itself may only differ on near-ties, where the two top classes are within twice the tolerance.
    top2 = np.sort(single, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * BATCH_INVARIANCE_ATOL
    assert (batched.argmax(1) == single.argmax(1))[clear].all()


def test_inline_run_only_when_the_model_is_idle() -> None:
    model = RecordingModel()

    async def body(batcher: Batcher) -> None:
        result = batcher.run_inline_if_idle(_windows(2, 1))
        assert result is not None and result.batch_size == 2 and result.queue_ms == 0.0
        assert result.probabilities[:, 0] == pytest.approx([300, 300])
        model.gate.clear()
        queued = batcher.enqueue(_windows(1, 0))
        await asyncio.sleep(0.02)  # the worker holds it at the gate: the model is busy
        assert batcher.run_inline_if_idle(_windows(1, 0)) is None
        model.gate.set()
        await queued

    asyncio.run(_with_batcher(model, body))
    assert model.batch_sizes == [2, 1]


def test_inline_failure_is_an_inference_error_and_frees_the_model() -> None:
    model = RecordingModel(fail=True)

    async def body(batcher: Batcher) -> None:
        with pytest.raises(InferenceFailed, match="RuntimeError"):
            batcher.run_inline_if_idle(_windows(1, 0))
        model.fail = False
        assert batcher.run_inline_if_idle(_windows(1, 0)) is not None

    asyncio.run(_with_batcher(model, body))
