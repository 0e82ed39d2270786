"""The model: manifest, hash verification, execution provider, threads, warm-up. Knows no HTTP."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runtime import cuda
from runtime.constants import (
    FP32_FILE,
    FP32_ROWWISE_FILE,
    INPUT_NAME,
    INT8_FILE,
    INT8_ROWWISE_FILE,
    MANIFEST_FILE,
    N_CLASSES,
    N_FEATURES,
    OUTPUT_NAME,
    WINDOW_LENGTH,
)
from runtime.errors import ConfigurationError, InferenceFailed, ModelLoadError
from runtime.manifest import Manifest
from runtime.types import Float32Array

log = logging.getLogger(__name__)

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "onnxruntime is not installed, run `pip install neuraltrade-edge[cpu]` (or `[gpu]` for CUDA)"
        ) from e
    return onnxruntime


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self: Path = Path("/proc/self")) -> float | None:
    """CPUs granted by the container's cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    v2 = cgroup_root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for base in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct", cgroup_root):
        try:
            q = int((base / "cpu.cfs_quota_us").read_text())
            p = int((base / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if q <= 0 else q / p
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota (rounded up, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def threads_per_worker(configured: int, workers: int, cpus: int | None = None) -> int:
    """Intra-op threads per model instance: `configured`, else 1.

    One thread per session, and parallelism from instances (`instances_per_worker`): on the 16-CPU machine of the
    last GPU run, 15 intra-op threads made a one-window INT8 call slower than one (0.99 vs 0.43 ms) and their
    spinning burned CPU while idle; on 2 CPUs, 1 thread is this model's fastest setting at batch 1 (0.37 vs 0.42
    ms) and `bench.instances` measures the large-batch case. `workers` and `cpus` are kept for callers that size
    by them; more threads only where a measurement shows they pay, set explicitly.
    """
    del workers, cpus
    return configured if configured > 0 else 1


def instances_per_worker(configured: int, workers: int, cpus: int | None = None) -> int:
    """Model instances (inference threads, one session each) per worker: `configured`, else the CPUs this worker
    may use (affinity and cgroup quota, divided among the workers) less one for its event loop, at least 1."""
    if configured > 0:
        return configured
    per_worker = (cpus if cpus is not None else available_cpus()) // max(1, workers)
    return max(1, per_worker - 1)


def session_options(intra_op_threads: int, *, allow_spinning: bool = False) -> Any:
    """The onnxruntime session options the service uses (the benchmark's floor uses the same).

    Spinning is off for both the intra- and inter-op pools unless asked for: a spinning pool keeps its threads
    busy-waiting between calls, which showed as ~15 CPU-seconds per second on an idle-ish 16-CPU server.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    spin = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def require_cuda(ort: Any | None = None) -> None:
    """Refuse (ConfigurationError naming what is missing) unless CUDA looks usable: for ``provider=cuda``, checked
    before any session is built and, with several workers, once in the parent before they are spawned."""
    ort = ort if ort is not None else _import_onnxruntime()
    cuda.preload_libraries(ort)
    problems = cuda.diagnose(ort)
    if problems:
        raise ConfigurationError("EDGE_PROVIDER=cuda but CUDA is not usable: " + "; ".join(problems))


def choose_provider(requested: str, available: list[str], gpu_visible: bool) -> str:
    """Resolve ``auto|cpu|cuda`` against what onnxruntime offers."""
    if requested == "auto":
        if _PROVIDERS["cuda"] in available and not gpu_visible:
            log.warning("onnxruntime offers CUDA but no GPU is visible: falling back to the CPU provider")
        return "cuda" if _PROVIDERS["cuda"] in available and gpu_visible else "cpu"
    if _PROVIDERS[requested] not in available:
        raise ConfigurationError(
            f"execution provider '{requested}' ({_PROVIDERS[requested]}) is unavailable. "
            f"Available providers: {', '.join(available)}"
        )
    return requested


def gpu_visible(dev: Path = Path("/dev"), proc: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """A cheap check that a CUDA device is visible: any /dev/nvidiaN (a pod given GPU 3 sees only /dev/nvidia3)."""
    return any(p.name[len("nvidia") :].isdigit() for p in dev.glob("nvidia[0-9]*")) or proc.exists()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    precision: Literal["int8", "fp32"]
    provider: str
    intra_op_threads: int
    file: str
    #: Sessions over the same bytes, each run by its own inference thread (Triton's instance count).
    instances: int = 1
    #: sha256 of the file's bytes as verified and loaded (the audit record of every prediction names it).
    sha256: str = ""
    #: Whether a window's probabilities are independent of the other windows in its model run.
    batch_invariant: bool = False


class Model:
    """onnxruntime sessions over one verified artifact. Thread-safe: `run` may be called from any thread.

    `runners()` gives one run function per instance (session); the batcher gives each its own thread, so two
    batches never share a session's thread pool or arena. The sessions are built from the same bytes with the same
    options, and on CPU the served graph is row-wise, so a window's answer does not depend on which instance or
    which batch computed it (tested bit for bit).
    """

    def __init__(
        self,
        session: Any,
        info: ModelInfo,
        manifest: Manifest,
        *,
        one_window_per_call: bool = False,
        extra_sessions: tuple[Any, ...] = (),
    ) -> None:
        self._session = session
        self._sessions = (session, *extra_sessions)
        self.info = info
        self.manifest = manifest
        self._output_names = [OUTPUT_NAME]
        self._use_iobinding = info.provider == "cuda"
        # Batch invariance without a row-wise file: one session.run per window (slower, same guarantee).
        self._one_window_per_call = one_window_per_call

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        precision: str = "auto",
        provider: str = "auto",
        intra_op_threads: int = 1,
        warmup: bool = True,
        batch_invariant: bool = True,
        instances: int = 1,
        cuda_instances: int = 1,
        allow_spinning: bool = False,
    ) -> Model:
        """Verify and load one artifact of `model_dir`.

        With `batch_invariant` on CPU, the row-wise graph (`INT8_ROWWISE_FILE` / `FP32_ROWWISE_FILE`, one Scan
        iteration per window inside a single call) is served when the manifest lists it, else the plain graph one
        window per call: either way a window's answer is bit-identical to its answer alone. On CUDA windows are
        batched (a call costs the same from 1 to 256 windows) and the flag does not apply.
        """
        ort = _import_onnxruntime()
        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()  # an edge service next to an exchange phones nobody
        manifest = Manifest.load(model_dir)
        if provider == "cuda":
            require_cuda(ort)
        chosen = choose_provider(provider, ort.get_available_providers(), gpu_visible())
        resolved: Literal["int8", "fp32"]
        if precision == "auto":
            resolved = "fp32" if chosen == "cuda" else "int8"
        elif precision in ("int8", "fp32"):
            resolved = precision  # type: ignore[assignment]
        else:
            raise ConfigurationError(f"precision '{precision}' is not one of auto, int8, fp32")
        name = INT8_FILE if resolved == "int8" else FP32_FILE
        invariant = batch_invariant and chosen == "cpu"
        one_window_per_call = False
        if invariant:
            rowwise = INT8_ROWWISE_FILE if resolved == "int8" else FP32_ROWWISE_FILE
            if rowwise in manifest.files:
                name = rowwise
            else:
                one_window_per_call = True
                log.warning(
                    "%s/%s lists no %s: serving %s one window per call to keep answers batch-invariant "
                    "(slower under load; `python -m training rowwise` adds the file)",
                    model_dir,
                    MANIFEST_FILE,
                    rowwise,
                    name,
                )
        path = model_dir / name
        data = manifest.verify(model_dir, name)

        options = session_options(intra_op_threads, allow_spinning=allow_spinning)
        providers = [_PROVIDERS[chosen]] + (["CPUExecutionProvider"] if chosen == "cuda" else [])
        if chosen == "cuda":
            cuda.preload_libraries(ort)
            # Sessions on one GPU share it: one unless asked (more than one is not measured on CUDA yet).
            instances = cuda_instances
        sessions = []
        for _ in range(max(1, instances)):
            try:
                sessions.append(ort.InferenceSession(data, sess_options=options, providers=providers))
            except Exception as e:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
                if provider == "cuda":
                    raise ConfigurationError(cuda.explain_failure(ort, str(e))) from e
                raise ModelLoadError(f"model file '{path}' could not be loaded by onnxruntime: {e}") from e
        session = sessions[0]
        _check_signature(session, path)
        actual = session.get_providers()[0]
        if actual != _PROVIDERS[chosen]:
            # onnxruntime silently falls back when the CUDA provider cannot load (driver, libraries).
            log.warning("requested %s but onnxruntime runs on %s", _PROVIDERS[chosen], actual)
            if provider == "cuda":
                raise ConfigurationError(cuda.explain_failure(ort, f"onnxruntime fell back to {actual}"))
            chosen = "cpu"
        info = ModelInfo(
            name=manifest.name,
            version=manifest.version,
            precision=resolved,
            provider=chosen,
            intra_op_threads=intra_op_threads,
            file=name,
            sha256=hashlib.sha256(data).hexdigest(),
            batch_invariant=invariant,
            instances=len(sessions),
        )
        model = cls(
            session, info, manifest, one_window_per_call=one_window_per_call, extra_sessions=tuple(sessions[1:])
        )
        if warmup:
            model.warm_up()
        log.info(
            "model loaded",
            extra={
                "model_version": info.version,
                "precision": resolved,
                "provider": chosen,
                "threads": intra_op_threads,
                "instances": len(sessions),
            },
        )
        return model

    def warm_up(self) -> None:
        """Run the batch sizes the service will see, so the first request pays no allocation cost."""
        rng = np.random.default_rng(0)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, WINDOW_LENGTH)))
        window = np.stack([close, close * 1.01, close * 0.99, close, np.full_like(close, 1e6)], axis=-1)
        for run in self.runners():
            for n in (1, 8, 1):
                probs = run(np.repeat(window[None].astype(np.float32), n, axis=0))
                if not np.all(np.isfinite(probs)):
                    raise ModelLoadError(f"model '{self.info.file}' produced non-finite probabilities during warm-up")

    def runners(self) -> list[Callable[[Float32Array], Float32Array]]:
        """One run function per instance, each over its own session (same graph, same options, same answers)."""
        if len(self._sessions) == 1:
            return [self.run]  # one instance: `run` itself (a subclass overriding it is honoured)
        return [functools.partial(self._run_on, session) for session in self._sessions]

    def run(self, windows: Float32Array) -> Float32Array:
        """Probabilities of shape (n, 3) for float32 windows of shape (n, 60, 5), on the first instance."""
        return self._run_on(self._session, windows)

    def _run_on(self, session: Any, windows: Float32Array) -> Float32Array:
        try:
            if self._use_iobinding:
                out: Float32Array = self._run_iobinding(session, windows)
            elif self._one_window_per_call and len(windows) > 1:
                run = session.run
                out = np.concatenate(
                    [run(self._output_names, {INPUT_NAME: windows[i : i + 1]})[0] for i in range(len(windows))]
                )
            else:
                out = session.run(self._output_names, {INPUT_NAME: windows})[0]
        except Exception as e:
            # onnxruntime's text names files and graph nodes: it goes to the log, not to the client.
            log.error("onnxruntime failed on a batch of %d: %s", len(windows), e)
            raise InferenceFailed(f"inference failed on a batch of {len(windows)} window(s)") from e
        if not np.isfinite(out).all():
            raise InferenceFailed("the model produced non-finite probabilities for this input")
        return out

    def _run_iobinding(self, session: Any, windows: Float32Array) -> Float32Array:
        # On CUDA the input is bound once per run and the output allocated on the device. Measured on an H100
        # (bench/results/gpu.md) this buys nothing over session.run for this model: about 2 ms per call at any
        # batch size either way; the LSTM's sequential steps, not the copies, bound it.
        binding = session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(windows))
        binding.bind_output(OUTPUT_NAME, "cuda")
        session.run_with_iobinding(binding)
        result: Float32Array = binding.copy_outputs_to_cpu()[0]
        return result


def _check_signature(session: Any, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problems = []
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs {[i.name for i in inputs]} != ['{INPUT_NAME}']")
    elif list(inputs[0].shape[1:]) != [WINDOW_LENGTH, N_FEATURES] or inputs[0].type != "tensor(float)":
        problems.append(f"input shape {inputs[0].shape} {inputs[0].type} != [batch, {WINDOW_LENGTH}, {N_FEATURES}]")
    if [o.name for o in outputs] != [OUTPUT_NAME]:
        problems.append(f"outputs {[o.name for o in outputs]} != ['{OUTPUT_NAME}']")
    elif outputs[0].shape[-1] != N_CLASSES:
        problems.append(f"output shape {outputs[0].shape} does not end in {N_CLASSES}")
    if problems:
        raise ModelLoadError(f"model file '{path}' has the wrong signature: {'; '.join(problems)}")
