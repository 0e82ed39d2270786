"""bench.scaling: the server really runs on the CPUs it is given, and the table reports what was measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import scaling
from bench.servers import ServerSpec


def test_pinned_spec_runs_under_taskset_on_exactly_those_cpus() -> None:
    spec = scaling.pinned(ServerSpec("service", ["python", "-m", "runtime"]), [0, 3])
    assert spec.argv[:3] == ["taskset", "-c", "0,3"] and spec.argv[3:] == ["python", "-m", "runtime"]
    assert spec.name == "service-cpus2"


def test_summary_takes_the_median_over_rounds_and_compares_with_the_seed() -> None:
    rows = [
        {
            "server": s,
            "cpus": 1,
            "connections": 64,
            "rps": r,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "errors": 0,
            "wrk_cpus": "1",
        }
        for s, r in (("service", 900.0), ("service", 1000.0), ("service", 1100.0), ("seed", 250.0), ("seed", 250.0))
    ]
    table = scaling.summarise(rows)
    service = next(r for r in table if r["server"] == "service")
    assert (service["rps"], service["rounds"]) == (1000.0, 3)
    meta = {"cpus_available": 2, "cpu_model": "x", "commit": "abc", "seconds": 5, "rounds": 3, "command": "c"}
    assert "1 CPU(s) @ 64: 4.0x" in scaling.markdown(table, meta)


@pytest.mark.slow
def test_a_one_cpu_run_writes_its_table(tmp_path: Path) -> None:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        pytest.skip("needs wrk and taskset (apt-get install wrk util-linux)")
    argv = ["--cpus", "1", "--connections", "1", "--seconds", "1", "--rounds", "1", "--no-seed", "--out", str(tmp_path)]
    assert scaling.main(argv) == 0
    data = json.loads((tmp_path / "scaling.json").read_text())
    (row,) = data["table"]
    assert (row["server"], row["cpus"], row["connections"], row["errors"]) == ("service", 1, 1, 0)
    assert row["rps"] > 0 and row["instances"] == 1  # 1 CPU seen through taskset: 1 instance
    assert "| 1 | 1 | service | 1 |" in (tmp_path / "scaling.md").read_text()
