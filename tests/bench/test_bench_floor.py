from __future__ import annotations

import pytest

from bench.floor import percentile, summarise


@pytest.mark.parametrize(
    ("q", "expected"),
    [pytest.param(50, 50, id="p50"), pytest.param(99, 99, id="p99"), pytest.param(100, 100, id="max")],
)
def test_nearest_rank_percentile(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, q) == expected


def test_summary_of_samples() -> None:
    s = summarise([1.0, 2.0, 3.0, 4.0])
    assert s == {"runs": 4, "p50_ms": 2.5, "p99_ms": 4.0, "mean_ms": 2.5, "min_ms": 1.0}
