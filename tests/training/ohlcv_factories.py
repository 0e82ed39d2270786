"""Synthetic OHLCV rows for the training tests (a plain module: test files import it by name)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

HEADER = "timestamp,open,high,low,close,volume"
CsvRow = Sequence[object]


def synthetic_rows(n: int, *, period: int = 20, start: datetime | None = None, seed: int = 0) -> list[list[object]]:
    """A clean daily series: a sine-wave price plus seeded noise (so the 5-day move is mostly predictable and all
    three labels occur) with ordinary OHLC ranges."""
    start = start or datetime(2020, 1, 1, tzinfo=UTC)
    rng = random.Random(seed)
    rows: list[list[object]] = []
    for i in range(n):
        close = 100.0 * math.exp(0.05 * math.sin(2 * math.pi * i / period) + 0.01 * rng.gauss(0, 1))
        open_ = 100.0 * math.exp(0.05 * math.sin(2 * math.pi * (i - 0.5) / period))
        high, low = max(open_, close) * 1.002, min(open_, close) * 0.998
        volume = 1_000_000 + 10_000 * (i % 7)
        rows.append([(start + timedelta(days=i)).isoformat(), open_, high, low, close, volume])
    return rows


def write_csv(directory: Path, rows: Sequence[CsvRow], *, header: str = HEADER, name: str = "data.csv") -> Path:
    """Write rows (header added) to `directory`/`name` and return the path.

    A plain function rather than a conftest fixture: tests/runtime imports helpers with ``from conftest import``,
    which a second conftest.py module under tests/ would shadow.
    """
    path = directory / name
    lines = [header, *(",".join(str(cell) for cell in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
