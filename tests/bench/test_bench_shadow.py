"""bench.shadow: the committed fine-tuned version shadowed on both real markets, then promoted over the API."""

from __future__ import annotations

import pytest

pytest.importorskip("arch")

from bench import shadow


def test_a_short_run_shadows_then_promotes_the_committed_finetune() -> None:
    result = shadow.run("1.1.0-eurusd", 20)
    assert [r["windows_sent"] for r in result["markets"]] == [20, 20]
    for row in result["markets"]:
        # Sequential requests, one window each: the shadow keeps up, and its counts are exactly the offline ones.
        assert row["dropped"] == 0 and row["shadowed"] == 20, row
        assert row["service_equals_offline"], row
        assert 0 <= row["agreement"] <= 1 and row["offline_abs_diff_max"] <= 1
    promotion = result["promotion"]
    assert promotion["answered_version"] == "1.1.0-eurusd"
    assert promotion["max_abs_diff_vs_offline"] == 0.0  # bit-identical to the version run in-process
    index = {entry["version"]: entry for entry in promotion["index"]}
    assert index["1.0.0"]["state"] == index["1.1.0-eurusd"]["state"] == "READY"
    assert index["1.1.0-eurusd"]["reason"] == "serving"  # listed after the load, as the served version
    assert "| EUR/USD hourly" in shadow.render(result)
