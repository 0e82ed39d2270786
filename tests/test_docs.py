from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_documented_in_the_readme(name: str) -> None:
    readme = (REPO / "README.md").read_text()
    assert f"`EDGE_{name.upper()}`" in readme and f"`--{name.replace('_', '-')}`" in readme


def test_readme_test_command_is_what_ci_runs() -> None:
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in (REPO / "README.md").read_text()


def test_runtime_passes_mypy_strict() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "runtime"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:]
