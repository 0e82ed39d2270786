"""``python -m training report``: the committed reports are what the template renders from their manifests, and a
re-render never touches a model file nor accepts other data than the version was trained on."""

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")  # training.report
pytest.importorskip("pandas")

from conftest import copy_version

from runtime.constants import INT8_FILE, MANIFEST_FILE
from training.cli import main
from training.errors import ArtifactError
from training.manifest import file_entries, write_manifest
from training.rerender import rerender_report

REPO = Path(__file__).resolve().parents[2]
EURUSD_CSV = REPO / "examples" / "eurusd_1h.csv"


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("version", ["", "1.1.0-eurusd"])
def test_each_committed_report_is_what_its_manifest_renders(
    committed_model_dir: Path, tmp_path: Path, version: str
) -> None:
    if not version:
        pytest.importorskip("arch")  # the root version was trained on arch's data
    copy = copy_version(committed_model_dir / version, tmp_path / "version")
    before = _snapshot(copy)
    result = rerender_report(copy, str(EURUSD_CSV) if version else None)
    assert result["added"] == {s: {} for s in result["added"]}  # the manifest already records everything
    assert _snapshot(copy) == before  # byte for byte: the report, the manifest, every model file


def test_an_old_manifest_gains_the_bar_interval_and_a_report_that_names_it(
    committed_model_dir: Path, tmp_path: Path
) -> None:
    copy = copy_version(committed_model_dir / "1.1.0-eurusd", tmp_path / "version")
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    del manifest["data"]["series"][0]["bar_seconds"]  # as written before the loader recorded it
    (copy / "REPORT.md").write_text("an old template's report")
    manifest["files"].update(file_entries(copy, ["REPORT.md"]))  # consistent: only the wording is old
    write_manifest(copy, manifest)
    int8 = (copy / INT8_FILE).read_bytes()
    assert main(["report", "--model-dir", str(copy), "--data", str(EURUSD_CSV)]) == 0
    after = json.loads((copy / MANIFEST_FILE).read_text())
    assert after["data"]["series"][0]["bar_seconds"] == 3600
    report = (copy / "REPORT.md").read_text()
    assert "hourly candles" in report and "over 5 hours" in report and "daily" not in report.lower()
    assert (copy / INT8_FILE).read_bytes() == int8
    assert after["files"]["REPORT.md"]["bytes"] == (copy / "REPORT.md").stat().st_size


def test_other_data_under_the_same_name_is_refused_and_nothing_changes(
    committed_model_dir: Path, tmp_path: Path
) -> None:
    copy = copy_version(committed_model_dir / "1.1.0-eurusd", tmp_path / "version")
    before = _snapshot(copy)
    other = tmp_path / "elsewhere" / EURUSD_CSV.name  # same file name, so the same "csv:eurusd_1h.csv" source
    other.parent.mkdir()
    lines = EURUSD_CSV.read_text().splitlines()
    other.write_text("\n".join(lines[:-1]) + "\n")  # one bar fewer
    with pytest.raises(ArtifactError, match="file_sha256 differs"):
        rerender_report(copy, str(other))
    assert _snapshot(copy) == before


def test_a_model_file_that_does_not_match_its_hash_is_refused(committed_model_dir: Path, tmp_path: Path) -> None:
    copy = copy_version(committed_model_dir / "1.1.0-eurusd", tmp_path / "version")
    with (copy / INT8_FILE).open("ab") as fh:
        fh.write(b"\0")
    before = _snapshot(copy)
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        rerender_report(copy, str(EURUSD_CSV))
    assert _snapshot(copy) == before
    assert main(["report", "--model-dir", str(copy), "--data", str(EURUSD_CSV)]) == 2  # the CLI's refusal
