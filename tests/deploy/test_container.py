"""The CPU image builds, serves /predict behind an API key, runs as non-root without torch, and stops cleanly.

Runs scripts/container_smoke.sh (docker where an engine answers, else podman). Select with `-m container`; it
skips, with the script's reason, where no container engine is usable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "container_smoke.sh"
SKIPPED = 77  # the script's "no usable engine" status


@pytest.mark.container
@pytest.mark.slow
def test_cpu_image_smoke() -> None:
    env = {**os.environ, "SMOKE_PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode == SKIPPED:
        reason = next((ln for ln in output.splitlines() if "SKIP" in ln), output.strip()[-300:])
        pytest.skip(reason)
    assert proc.returncode == 0, output
    assert "smoke: PASS" in proc.stdout
    assert "/predict with key: 200" in proc.stdout
    # The numbers the closing note reports are in the log; show them with -rP / -s.
    print(output)
