"""The runtime's exceptions. Service errors carry their HTTP status and a stable code."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def detail(loc: Iterable[str | int], message: str, type_: str) -> dict[str, str]:
    """One entry of an error's `details`, as the seed's validation handler writes it: the dotted `field` (FastAPI's
    location, so body fields start with ``body.``), the `message` and the rule's `type`."""
    return {"field": ".".join(str(part) for part in loc), "message": message, "type": type_}


class EdgeError(Exception):
    """Base of every error the runtime raises on purpose."""

    status_code: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(
        self, message: str, *, details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}


class ModelLoadError(EdgeError, RuntimeError):
    """The model directory, manifest or an artifact is missing, corrupt or does not match its hash."""

    status_code = 503
    code = "MODEL_UNAVAILABLE"


class ConfigurationError(EdgeError, ValueError):
    """A setting has a value that cannot work (e.g. an unavailable execution provider)."""

    code = "CONFIGURATION_ERROR"


class BadRequest(EdgeError, ValueError):
    status_code = 400
    code = "BAD_REQUEST"


class Unauthorized(EdgeError):
    status_code = 401
    code = "UNAUTHORIZED"


class RateLimited(EdgeError):
    """The API key has used its request rate (`EDGE_RATE_LIMIT`); `Retry-After` says when to come back."""

    status_code = 429
    code = "RATE_LIMITED"


class ModelNotFound(EdgeError):
    """A v2 path or gRPC request names a model or version this server does not serve."""

    status_code = 404
    code = "MODEL_NOT_FOUND"


class PayloadTooLarge(EdgeError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(EdgeError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class Overloaded(EdgeError):
    status_code = 503
    code = "OVERLOADED"


class NotReady(EdgeError):
    status_code = 503
    code = "NOT_READY"


class InferenceFailed(EdgeError, RuntimeError):
    status_code = 500
    code = "INFERENCE_FAILED"


class DeadlineExceeded(EdgeError):
    """The request's deadline passed before the model could run it; it was not computed."""

    status_code = 504
    code = "DEADLINE_EXCEEDED"


class StaleWindow(EdgeError):
    """The window's last candle is older than the configured maximum age."""

    status_code = 422
    code = "STALE_WINDOW"


class ReloadFailed(EdgeError):
    """A reload could not verify or load the new model; the old one keeps serving."""

    status_code = 409
    code = "RELOAD_FAILED"


class ValidationFailed(EdgeError, ValueError):
    """Input broke a rule that needs the service's state (a streamed candle against its stored window)."""

    status_code = 422
    code = "VALIDATION_FAILED"


class TooManySymbols(EdgeError):
    """A stream connection named more symbols than `EDGE_STREAM_MAX_SYMBOLS`; nothing was stored."""

    status_code = 422
    code = "TOO_MANY_SYMBOLS"


class OriginRejected(EdgeError):
    """A browser page from an origin not in `EDGE_CORS_ORIGINS` tried to open a WebSocket (no CORS preflight
    protects a WebSocket upgrade, so the Origin header is checked instead)."""

    status_code = 403
    code = "ORIGIN_REJECTED"


class ReloadInProgress(EdgeError):
    """Another reload is running; reloads are serialized and a concurrent one is refused, not queued."""

    status_code = 409
    code = "RELOAD_IN_PROGRESS"


class VersionNotFound(EdgeError):
    """A version the model repository does not hold (`runtime.repository`)."""

    status_code = 404
    code = "VERSION_NOT_FOUND"
