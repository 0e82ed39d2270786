from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from fake_model import write_fake_model_dir  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import onnxruntime

        has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs CUDA (onnxruntime-gpu and a visible GPU)")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def committed_model_dir() -> Path:
    """The artifacts the service ships with."""
    path = REPO / "models"
    if not (path / "manifest.json").exists():
        pytest.fail("models/manifest.json is missing: the committed model is part of the product")
    return path


@pytest.fixture(scope="session")
def fake_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_model_dir(tmp_path_factory.mktemp("fake_model"))


def copy_version(source: Path, target: Path) -> Path:
    """A copy of the version in `source` alone: its files, not the further versions in its sub-directories
    (``models/`` also holds ``models/1.1.0-eurusd/``)."""
    shutil.copytree(source, target, ignore=lambda d, names: [n for n in names if (Path(d) / n).is_dir()])
    return target


@pytest.fixture
def model_dir_copy(tmp_path: Path, committed_model_dir: Path) -> Path:
    """A writable copy of the committed model directory (for corrupting)."""
    return copy_version(committed_model_dir, tmp_path / "models")


def versioned_model_dir(tmp_path: Path, committed: Path, versions: tuple[str, ...] = ("v1", "v2")) -> Path:
    """models/<version>/ copies of the committed model, each manifest naming its version (for reload tests)."""
    root = tmp_path / "models"
    for version in versions:
        copy_version(committed, root / version)
        manifest = json.loads((root / version / "manifest.json").read_text())
        manifest["version"] = version
        (root / version / "manifest.json").write_text(json.dumps(manifest))
    return root


def market_windows(n: int, seed: int = 0) -> np.ndarray:
    """n real S&P 500 windows (float32, [n, 60, 5]) if `arch` is installed, else a random walk."""
    arr = _market(seed)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(arr) - 60, n)
    return np.stack([arr[s : s + 60] for s in starts]).astype(np.float32)


def market_bars(n: int, seed: int = 0) -> np.ndarray:
    """n consecutive real S&P 500 days (float32, [n, 5], oldest first) if `arch` is installed, else a random walk."""
    arr = _market(seed)
    start = int(np.random.default_rng(seed).integers(0, len(arr) - n))
    return arr[start : start + n].astype(np.float32)


def _market(seed: int) -> np.ndarray:
    """Daily OHLCV rows (float64, [n, 5]): S&P 500 1999-2018 from `arch`, else a seeded random walk."""
    try:
        from arch.data import sp500

        df = sp500.load()
        arr = df[["Open", "High", "Low", "Close", "Volume"]].to_numpy(dtype=np.float64)
    except ImportError:
        rng = np.random.default_rng(seed)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 6000)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        arr = np.stack(
            [
                open_,
                np.maximum(open_, close) * 1.003,
                np.minimum(open_, close) * 0.997,
                close,
                rng.uniform(1e6, 2e6, 6000),
            ],
            axis=1,
        )
    return arr


def window_to_payload(
    window: np.ndarray, symbol: str = "SPX/USD", start: datetime | None = None, exchange: str = "binance"
) -> dict[str, Any]:
    start = start or datetime(2024, 1, 1, tzinfo=UTC)
    return {
        "symbol": symbol,
        "exchange": exchange,
        "sequence": [
            {
                "timestamp": (start + timedelta(days=i)).isoformat(),
                "open": float(r[0]),
                "high": float(r[1]),
                "low": float(r[2]),
                "close": float(r[3]),
                "volume": float(r[4]),
            }
            for i, r in enumerate(window.astype(np.float64))
        ],
    }


@pytest.fixture
def payload() -> Callable[..., dict[str, Any]]:
    """Factory: a valid /predict body built from a real market window."""

    def make(seed: int = 0, symbol: str = "SPX/USD") -> dict[str, Any]:
        # float32 round-trip so the server sees exactly the window the test computes with
        return window_to_payload(market_windows(1, seed)[0], symbol)

    return make


@pytest.fixture
def make_client(committed_model_dir: Path) -> Iterator[Callable[..., Any]]:
    """Factory: a TestClient over create_app(Settings(**overrides)) with its lifespan running."""
    from starlette.testclient import TestClient

    from runtime.http.app import create_app
    from runtime.settings import Settings

    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        overrides.setdefault("model_dir", committed_model_dir)
        overrides.setdefault("intra_op_threads", 1)
        client = TestClient(create_app(Settings(**overrides)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
