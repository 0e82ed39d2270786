"""One typed settings object for the service. Every field comes from a CLI flag or an ``EDGE_`` variable."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from runtime.constants import VERSION_PATTERN
from runtime.schemas import DEFAULT_EXCHANGES, EXCHANGE_PATTERN

MIN_KEY_LENGTH = 8
Precision = Literal["auto", "int8", "fp32"]
Provider = Literal["auto", "cpu", "cuda"]


class Settings(BaseSettings):
    """Service configuration. Environment variables use the ``EDGE_`` prefix (``EDGE_PORT=8000``)."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to bind (0 = any free port).")
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="TCP port for KServe v2 / Triton gRPC (inference.GRPCInferenceService) on the same host and "
        "in the same process as HTTP (needs the grpc extra); 0 = off.",
    )
    model_dir: Path = Field(default=Path("models"), description="Directory holding manifest.json and the models.")
    model_version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="Serve model_dir/<version>/ instead of model_dir itself (several versions side by side).",
    )
    precision: Precision = Field(
        default="auto", description="Model precision: auto = int8 on CPU, fp32 on CUDA (integer ops run on CPU)."
    )
    provider: Provider = Field(
        default="auto", description="Execution provider: auto = CUDA when available and a GPU is visible, else CPU."
    )
    workers: int = Field(default=1, ge=1, le=64, description="Server processes sharing the port.")
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="onnxruntime intra-op threads per model instance; 0 = 1 (parallelism comes from instances).",
    )
    instances: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Model instances per worker: inference threads, each with its own onnxruntime session, fed by "
        "the one batching queue; 0 = on CPU the CPUs this worker may use (affinity, cgroup quota, divided among "
        "the workers) less one for the event loop, at least 1; on CUDA 1.",
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let onnxruntime's thread pools busy-wait between calls (lower latency with intra_op_threads "
        "> 1, at the cost of CPU burned while idle). Off: an idle server uses ~0 CPU.",
    )
    max_batch_size: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Most windows coalesced into one model run; 0 = by provider: 8 on CPU (the LSTM's cost per "
        "window is lowest near 4-8), 256 on CUDA (a call costs about the same from 1 to 256 windows).",
    )
    max_batch_delay_us: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="Microseconds a batch may wait for more requests once the model is idle (0 = never wait).",
    )
    batch_invariant: bool = Field(
        default=True,
        description="On CPU, give every window the answer it gets alone, bit for bit, whatever shares its model run "
        "(the row-wise model: one Scan iteration per window). false = batched INT8, faster under load, whose "
        "dynamic quantization moves a window's probabilities with its batch neighbours (bound in the README).",
    )
    inline_when_idle: bool = Field(
        default=True,
        description="Run a request on the event loop when it is the only one in the server (saves two thread "
        "hand-offs at low load); under concurrency requests always go through the batching thread.",
    )
    coalesce_writes: bool = Field(
        default=True,
        description="Send each response's status line, headers and body in one write (a transport around "
        "uvicorn's httptools protocol); false = stock uvicorn httptools.",
    )
    gil_switch_interval_us: int = Field(
        default=250,
        ge=50,
        le=100_000,
        description="Python's GIL switch interval in microseconds. The inference thread must retake the GIL when "
        "onnxruntime returns; at Python's default (5000) it waits behind a busy event loop.",
    )
    max_queue: int = Field(
        default=256, ge=1, le=100_000, description="Windows admitted but not yet computed; beyond it: 503."
    )
    max_pending_requests: int = Field(
        default=128,
        ge=1,
        le=100_000,
        description="Requests the server may hold (read, parsed or queued) before new ones get 503 at once; "
        "bounds the latency of accepted requests under overload (single-worker mode).",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body in bytes (413 above).")
    max_header_bytes: int = Field(
        default=16 << 10, ge=1024, description="Largest total size of request headers in bytes (431 above)."
    )
    header_limit_while_reading: bool = Field(
        default=True,
        description="Count the request line and headers against max_header_bytes as they arrive, before the "
        "parser buffers them (431 and close past it, in work bounded by the limit); false = only after the "
        "whole block is parsed (stock httptools).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds from a connection's start, or its previous response, to a complete header block; "
        "past it 408 and close (a connection that sent nothing is just closed). 0 = no limit (stock uvicorn).",
    )
    body_timeout_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds from the end of a request's headers to the end of its body; past it 408 and close, "
        "and the request leaves admission at once. 0 = no limit (stock uvicorn).",
    )
    max_pipelined: int = Field(
        default=8,
        ge=0,
        le=1024,
        description="Requests one connection may have parsed and not yet answered; at the limit the server stops "
        "reading from it until responses drain (bounds memory per connection). 0 = unbounded (stock uvicorn).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Open connections past which a new connection may only ask the probes (/health, /ready, "
        "/v2/health/*) and gets a JSON 503 for anything else; existing connections are untouched. Default: 3/4 of "
        "the open-file limit (RLIMIT_NOFILE), so the process keeps descriptors for its own files; 0 = no cap.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Accepted X-API-Key values (comma-separated in EDGE_API_KEYS)."
    )
    api_keys_file: Path | None = Field(default=None, description="File with one API key per line.")
    allow_unauthenticated: bool = Field(
        default=False, description="Allow serving without API keys on a non-loopback address."
    )
    graceful_timeout: float = Field(
        default=10.0, ge=0, le=3600, description="Seconds to finish in-flight requests after SIGTERM."
    )
    max_window_age_s: float = Field(
        default=0.0, ge=0, description="Reject windows whose last candle is older than this, in seconds (0 = off)."
    )
    drift_sample_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Fraction of INT8 requests re-run on FP32 off the hot path to measure drift (0 = off).",
    )
    shadow_version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$",
        description="A candidate version from the model repository to run in the background on a sample of live "
        "windows; /metrics compares it with the served one (edge_shadow_*). Must be READY, else start-up fails.",
    )
    shadow_sample_rate: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Fraction of requests whose windows the shadow version also computes, off the hot path "
        "(dropped, and counted, when it is busy).",
    )
    metrics_require_key: bool = Field(default=False, description="Require X-API-Key on /metrics.")
    drain_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="Seconds to keep serving with /ready false after SIGTERM before closing the listener, so "
        "load balancers stop sending first (Kubernetes: or use a preStop sleep).",
    )
    exchanges: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_EXCHANGES,
        min_length=1,
        max_length=64,
        description="Exchanges a request may name (comma-separated in EDGE_EXCHANGES); default: the seed's five.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        max_length=64,
        description="Browser origins allowed by CORS, e.g. https://desk.example.com (comma-separated; empty = "
        "CORS off).",
    )
    rate_limit: float = Field(
        default=0.0, ge=0, le=1_000_000, description="Requests per second allowed per API key (0 = no limit)."
    )
    rate_limit_burst: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Requests a key may send at once above the rate (token bucket size; 0 = max(1, rate)).",
    )
    stream_max_symbols: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Symbols one /stream WebSocket connection may track (each keeps its last 60 candles, about "
        "3 KB); a message naming one more is refused with TOO_MANY_SYMBOLS and nothing is stored.",
    )
    stream_idle_s: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="Seconds a /stream connection may stay without a message before the server closes it (code "
        "1000); its windows are freed (0 = never).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    access_log: bool = Field(default=False, description="Log one JSON line per request.")
    tracing: bool | None = Field(
        default=None,
        description="OpenTelemetry spans (request, queue wait, model run) exported over OTLP; needs the `otel` "
        "extra. Unset: on exactly when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set. An incoming W3C "
        "traceparent is continued and echoed either way.",
    )
    debug: bool = Field(default=False, description="Include exception text in 500 responses.")

    @field_validator("exchanges", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("exchanges")
    @classmethod
    def _exchange_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if re.fullmatch(EXCHANGE_PATTERN, name) is None:
                raise ValueError(f"exchange '{name[:40]}' must match {EXCHANGE_PATTERN} (lower case, as the seed's)")
        return tuple(dict.fromkeys(value))

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?", origin) is None:
                raise ValueError(f"CORS origin '{origin[:80]}' must be scheme://host[:port] with no path, or '*'")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _key_length(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            if len(key.get_secret_value()) < MIN_KEY_LENGTH:
                raise ValueError(f"every API key must be at least {MIN_KEY_LENGTH} characters long")
        return value

    def all_api_keys(self) -> list[bytes]:
        """Keys from `api_keys` and `api_keys_file`, as bytes for constant-time comparison."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text(encoding="utf-8")
            except OSError as e:
                raise ValueError(f"api_keys_file '{self.api_keys_file}' cannot be read: {e.strerror}") from e
            from_file = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            if any(len(k) < MIN_KEY_LENGTH for k in from_file):
                raise ValueError(
                    f"api_keys_file '{self.api_keys_file}': every API key must be at least {MIN_KEY_LENGTH} characters"
                )
            keys += from_file
        return [k.encode() for k in keys]

    def export_to_environ(self) -> None:
        """Hand the resolved settings to worker processes, which rebuild them from the environment."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            if name == "api_keys":
                value = ",".join(k.get_secret_value() for k in value)
            os.environ[f"EDGE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)

    def connection_cap(self) -> int:
        """`max_connections`, or 3/4 of this process's soft open-file limit when it is not set (0: no cap)."""
        if self.max_connections is not None:
            return self.max_connections
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 0
        return max(64, soft * 3 // 4)

    def model_path(self, version: str | None = None) -> Path:
        """Directory of the model to serve: model_dir, or model_dir/<version> when a version is named."""
        version = version or self.model_version
        return self.model_dir / version if version else self.model_dir

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def rate_limit_bucket(self) -> int:
        """Token bucket size for `rate_limit`: the burst, or one second's worth (at least one request)."""
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit))

    def batch_size_for(self, provider: str) -> int:
        """`max_batch_size`, or the provider's default when it is 0."""
        if self.max_batch_size:
            return self.max_batch_size
        return 256 if provider == "cuda" else 8
