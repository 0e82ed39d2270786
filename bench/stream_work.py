"""Where one ``/stream`` message's time goes inside the service, phase by phase (in-process, no socket).

    python -m bench.stream_work                 # 5,000 one-candle messages
    python -m bench.stream_work --messages 500  # smoke

`bench.stream` measures round trips; this splits the service's share of one. It builds the real app
(`create_app`, default settings, INT8, batch-invariant), starts its lifespan, and answers one-candle messages of
a real market through the ``/stream`` endpoint's own message handler, alone on the server as at one connection
(the inline path: the model runs on the loop's thread). Each phase is the real function, wrapped for the run with a
timer and restored afterwards; the medians are of the phases as they run in sequence, caches and all, which is
what a message pays (a phase run back to back in a loop is faster). The model's phase is timed around
`Model._run_on` (``InferenceSession.run`` and the finite check) and printed beside the same graph, with the same
session options, run back to back (`bench.floor.time_runs`).

"Other" is the message's median minus the phases' medians: admission, the batcher's bookkeeping, the
coroutine hand-offs and the outcome counter. What this does not see is the transport (``bench.stream``'s
transport floors) and uvicorn's and Starlette's per-message dispatch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.floor import time_runs
from bench.servers import REPO_ROOT
from bench.stream import KEY, Feed, _bars
from runtime.constants import INT8_ROWWISE_FILE
from runtime.session import session_options

MODEL = "model run (onnxruntime, finite check)"

#: (label, module path, attribute path) of each timed phase, in the order a message meets them.
PHASES: tuple[tuple[str, str, str], ...] = (
    ("decode and field rules (msgspec)", "runtime.http.stream", "decode_stream_message"),
    ("check against the stored window", "runtime.streams", "SymbolWindows.prepare"),
    ("60-candle float32 window", "runtime.streams", "Update.window"),
    (MODEL, "runtime.session", "Model._run_on"),
    ("model metrics", "runtime.metrics", "Metrics.observe_batch"),
    ("candle risk features", "runtime.service", "window_features"),
    ("answer: seed risk, FMEA, audit hash", "runtime.service", "responses"),
    ("request metrics and statistics", "runtime.metrics", "Metrics.observe_request"),
    ("JSON encode", "runtime.http.stream", "_encode"),
)


@contextlib.contextmanager
def timed_phases(samples: dict[str, list[float]]) -> Iterator[None]:
    """Wrap every phase with a timer appending seconds to ``samples[label]``; restore them on exit."""
    import importlib

    restore: list[tuple[Any, str, Any]] = []
    try:
        for label, module_name, path in PHASES:
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            restore.append((owner, name, original))
            setattr(owner, name, _timer(original, samples.setdefault(label, [])))
        yield
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


def _timer(fn: Callable[..., Any], out: list[float]) -> Callable[..., Any]:
    clock = time.perf_counter

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            out.append(clock() - t0)

    return timed


def run(messages: int, model_dir: Path) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from runtime.http.app import create_app
    from runtime.http.stream import StreamEndpoint
    from runtime.settings import Settings
    from runtime.streams import SymbolWindows

    feed = Feed(_bars())
    frames = [feed.message("SPX/USD", i, i) for i in range(60, 60 + messages)]
    samples: dict[str, list[float]] = {}
    totals: list[float] = []
    # Wrapped before the app exists: the batcher keeps the metrics' bound method it was started with.
    with timed_phases(samples):
        app = create_app(Settings(model_dir=model_dir, api_keys=KEY))
        with TestClient(app) as client:
            service = app.state.service
            service.backlog = lambda: 1  # alone on the server, as at one connection (serve.py counts it live)
            endpoint = StreamEndpoint(service)

            async def answer_all() -> None:
                windows = SymbolWindows(16)
                _, outcome = await endpoint._answer(feed.message("SPX/USD", 0, 59), windows, KEY, None, "fill")
                assert outcome == "ok", outcome  # 60 candles: the window is full
                for warm in range(200):  # warm the path on throw-away windows (the stored one stays as filled)
                    scratch = SymbolWindows(16)
                    await endpoint._answer(feed.message("W", warm, warm + 59), scratch, KEY, None, "warm")
                for phase in samples.values():
                    phase.clear()  # start-up's warm-up runs and the warm messages are not measured
                clock = time.perf_counter
                for i, frame in enumerate(frames):
                    t0 = clock()
                    _, outcome = await endpoint._answer(frame, windows, KEY, None, f"m{i}")
                    totals.append(clock() - t0)
                    if outcome != "ok":
                        raise RuntimeError(f"message {i} was not answered with a signal: {outcome}")

            assert client.portal is not None  # inside `with TestClient(...)`
            client.portal.call(answer_all)
    # The graph the service ran (batch-invariant: the row-wise INT8 file), the same options, back to back.
    session = ort.InferenceSession(
        str(model_dir / INT8_ROWWISE_FILE), sess_options=session_options(1), providers=["CPUExecutionProvider"]
    )
    window = np.asarray(feed.rows[:60], dtype=np.float32)[None]
    floor = time_runs(session, window, seconds=1.0)
    return {
        "messages": messages,
        "answer_p50_us": statistics.median(totals) * 1e6,
        "phases_p50_us": {label: statistics.median(v) * 1e6 for label, v in samples.items()},
        "model_back_to_back_p50_us": statistics.median(floor) * 1e3,
    }


def report(r: dict[str, Any]) -> str:
    total = r["answer_p50_us"]
    phases: dict[str, float] = r["phases_p50_us"]
    lines = ["| phase of one /stream message | p50 (µs) | share |", "|---|---:|---:|"]
    for label, us in phases.items():
        lines.append(f"| {label} | {us:.1f} | {us / total:.0%} |")
    other = total - sum(phases.values())
    lines += [
        f"| other: admission, batcher bookkeeping, hand-offs | {other:.1f} | {other / total:.0%} |",
        f"| **the message, in the service** | **{total:.1f}** | |",
        "",
        f"The same session run back to back: {r['model_back_to_back_p50_us']:.1f} µs. Service work outside the "
        f"model run: {total - phases[MODEL]:.0f} µs per message ({r['messages']} one-candle messages of the S&P 500).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_work", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = run(args.messages, args.model_dir)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
