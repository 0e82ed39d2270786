"""``python -m training report``: render a version's REPORT.md again from its manifest, without retraining.

For when the report's wording improves after a version was built (the first one: naming the data's bar interval
instead of assuming daily candles). The model files are not touched and must match the manifest first. The data
series are loaded again only to add what the loader records now and the manifest lacks (``bar_seconds``), and
only from the same data: a series whose recorded fingerprint (the CSV's sha256, or arch's values digest) differs
is refused. The manifest then gets the new report's hash; nothing else in it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import TrainingConfig
from training.data import load_source
from training.errors import ArtifactError
from training.manifest import file_entries, load_verified_manifest, write_manifest
from training.report import PLOT_FILES, REPORT_FILE, write_report

#: What identifies a series' data in its provenance: a CSV's file hash, arch's digest of the validated values.
FINGERPRINTS = ("file_sha256", "sha256_of_values")


def rerender_report(model_dir: Path, data: str | None = None) -> dict[str, Any]:
    """Re-render ``model_dir``/REPORT.md; returns what was added to each series and the report's new sha256."""
    manifest = load_verified_manifest(model_dir)
    config = TrainingConfig.recorded(manifest)
    recorded: list[dict[str, Any]] = manifest["data"]["series"]
    fresh = [s.provenance for s in load_source(data or config.data, csv_timezone=config.csv_timezone)]
    if [s["source"] for s in fresh] != [s["source"] for s in recorded]:
        raise ArtifactError(
            f"the data loaded ({[s['source'] for s in fresh]}) is not the data {model_dir} was trained on "
            f"({[s['source'] for s in recorded]})"
        )
    added: dict[str, dict[str, Any]] = {}
    for old, new in zip(recorded, fresh, strict=True):
        for key in FINGERPRINTS:
            if key in old and old[key] != new.get(key):
                raise ArtifactError(f"{old['source']}: {key} differs from the manifest's; this is not the same data")
        added[old["source"]] = {key: value for key, value in new.items() if key not in old}
        old.update(added[old["source"]])
    # The report names the model files' sizes from `files`: render with them, as the pipeline does.
    generated = {REPORT_FILE, *PLOT_FILES}
    model_files = {name: entry for name, entry in manifest["files"].items() if name not in generated}
    write_report(model_dir / REPORT_FILE, {**manifest, "files": model_files})
    manifest["files"] = dict(sorted({**manifest["files"], **file_entries(model_dir, [REPORT_FILE])}.items()))
    write_manifest(model_dir, manifest)
    return {"model_dir": str(model_dir), "added": added, "report": manifest["files"][REPORT_FILE]}
