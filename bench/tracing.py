"""What tracing costs a /predict: p50 at one connection, side by side in one run, against the code before it.

Four real servers (uvicorn, the committed INT8 model, one worker each) on loopback, asked in interleaved rounds
(the order rotates every round, so drift in the machine's load reaches every configuration alike):

- ``before``: the tree as it was before tracing existed (the parent of the commit that added runtime/tracing.py,
  or ``--before REV``), extracted with ``git archive``;
- ``off``: this tree, tracing off (no EDGE_TRACING, no OTEL_EXPORTER_OTLP_ENDPOINT) — the default;
- ``off+traceparent``: the same server, requests carrying a W3C traceparent (continued and echoed, no spans);
- ``on``: this tree with an OpenTelemetry SDK provider and the SDK's in-memory exporter behind a
  BatchSpanProcessor (as the OTLP exporter would be), requests carrying a traceparent.

Run: ``python -m bench.tracing`` (needs the ``otel`` extra). The machine is shared and noisy: compare the ratios
within one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.servers import REPO_ROOT, free_port

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BODY = (REPO_ROOT / "examples" / "predict_request.json").read_bytes()


def _before_rev() -> str:
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "runtime/tracing.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("runtime/tracing.py is not committed: pass --before REV")
    return f"{added[-1]}^"


def _extract(rev: str, into: Path) -> None:
    archive = subprocess.run(["git", "archive", rev, "runtime"], cwd=REPO_ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")


def _start(argv: list[str], cwd: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "OTEL_"))}
    env.update(
        {
            "BENCH_SPANS_FILE": str(log.parent / "spans"),
            "PYTHONPATH": str(cwd),
            "EDGE_MODEL_DIR": str(REPO_ROOT / "models"),
            "EDGE_DRIFT_SAMPLE_RATE": "0",
        }
    )
    args = [*argv, "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait_ready(port: int, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


class _Client:
    def __init__(self, port: int, traceparent: bool) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"content-type": "application/json"}
        if traceparent:
            self.headers["traceparent"] = TRACEPARENT
        self.echoed = 0

    def run(self, n: int, into: list[float]) -> None:
        for _ in range(n):
            start = time.perf_counter_ns()
            self.conn.request("POST", "/predict", body=BODY, headers=self.headers)
            response = self.conn.getresponse()
            response.read()
            into.append((time.perf_counter_ns() - start) / 1e3)
            if response.status != 200:
                raise SystemExit(f"/predict answered {response.status}")
            self.echoed += response.getheader("traceparent") is not None


def serve_in_memory(port: int) -> None:
    """The ``on`` server: runtime.server.serve with an SDK provider exporting to memory (bounded, counted)."""
    import uvicorn
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from runtime import logs
    from runtime.server.serve import serve
    from runtime.settings import Settings

    class Bounded(InMemorySpanExporter):
        exported = 0

        def export(self, spans: object) -> SpanExportResult:
            batch: list[ReadableSpan] = list(spans)  # type: ignore[call-overload]
            Bounded.exported += len(batch)
            # uvicorn re-raises SIGTERM after its shutdown, so atexit never runs: the count goes to a file.
            Path(os.environ["BENCH_SPANS_FILE"]).write_text(str(Bounded.exported))
            result = super().export(batch)
            if len(self.get_finished_spans()) > 50_000:
                self.clear()  # the bench runs long: keep memory flat
            return result

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Bounded()))

    settings = Settings(host="127.0.0.1", port=port)
    logs.configure(settings.log_level)
    serve(settings, uvicorn, tracer_provider=provider)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="git revision of the code before tracing (default: found from git log)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--serve-in-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_in_memory:
        serve_in_memory(args.port)
        return
    rev = args.before or _before_rev()
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        before_tree = Path(tmp) / "before"
        _extract(rev, before_tree)
        ports = {name: free_port() for name in ("before", "off", "on")}
        logs = {name: Path(tmp) / f"{name}.log" for name in ports}
        procs = {
            "before": _start([sys.executable, "-m", "runtime"], before_tree, ports["before"], logs["before"]),
            "off": _start([sys.executable, "-m", "runtime"], REPO_ROOT, ports["off"], logs["off"]),
            "on": _start(
                [sys.executable, "-m", "bench.tracing", "--serve-in-memory"],
                REPO_ROOT,
                ports["on"],
                logs["on"],
            ),
        }
        try:
            for name, port in ports.items():
                if not _wait_ready(port):
                    raise SystemExit(f"{name} server did not become ready:\n{logs[name].read_text()[-3000:]}")
            clients = {
                "before": _Client(ports["before"], traceparent=False),
                "off": _Client(ports["off"], traceparent=False),
                "off+traceparent": _Client(ports["off"], traceparent=True),
                "on": _Client(ports["on"], traceparent=True),
            }
            latencies: dict[str, list[float]] = {name: [] for name in clients}
            for client in clients.values():
                client.run(200, [])  # warm-up
                client.echoed = 0
            names = list(clients)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    clients[name].run(args.per_round, latencies[name])
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(30)
        spans_file = Path(tmp) / "spans"
        spans = spans_file.read_text() if spans_file.exists() else "unknown"
    n = args.rounds * args.per_round
    print(f"/predict at 1 connection, {n} requests per configuration in {args.rounds} interleaved rounds")
    print(f"before = {rev}; shared 2-CPU machine: compare ratios within this run")
    base = statistics.median(latencies["before"])
    for name, values in latencies.items():
        p50 = statistics.median(values)
        p99 = statistics.quantiles(values, n=100)[98]
        echoed = clients[name].echoed
        print(
            f"  {name:16s} p50 {p50:7.1f} us  p99 {p99:7.1f} us  p50 vs before {p50 / base:5.3f}x"
            f"  (traceparent echoed on {echoed})"
        )
    print(f"  on: {spans} spans reached the in-memory exporter (3 per request: request, queue, model run)")


if __name__ == "__main__":
    main()
