"""manifest.json for training: `runtime.manifest` is the one definition; this adds training's errors.

Training writes the record (`write_manifest`, `file_entries`) and re-checks directories (`verify_files`) with the
runtime's own functions, so a directory the pipeline accepts is one the service loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.constants import MANIFEST_FILE
from runtime.errors import ModelLoadError
from runtime.manifest import Manifest, file_entries, sha256_file, write_manifest
from training.errors import ArtifactError

__all__ = ["file_entries", "load_manifest", "load_verified_manifest", "sha256_file", "verify_files", "write_manifest"]


def load_manifest(model_dir: Path) -> dict[str, Any]:
    """The whole record (a dict the pipeline may extend), or `ArtifactError` saying what to do."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} not found; train a model with `python -m training train --out {model_dir}`")
    try:
        return dict(Manifest.load(model_dir).raw)
    except ModelLoadError as e:
        raise ArtifactError(f"{e}; train a model with `python -m training train --out {model_dir}`") from e


def verify_files(model_dir: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Every file in the manifest -> "ok" or why not; never raises, so callers can report all at once."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return {"manifest.json": "has no 'files' dict"}
    hashes = {n: e["sha256"] for n, e in files.items() if isinstance(e, dict) and isinstance(e.get("sha256"), str)}
    return Manifest(str(manifest.get("name", "")), str(manifest.get("version", "")), hashes, manifest).check_all(
        model_dir
    )


def load_verified_manifest(model_dir: Path) -> dict[str, Any]:
    """`load_manifest`, then every file against its sha256: `ArtifactError` naming each one that does not match."""
    manifest = load_manifest(model_dir)
    problems = {name: why for name, why in verify_files(model_dir, manifest).items() if why != "ok"}
    if problems:
        raise ArtifactError(f"{model_dir} does not match its manifest: {problems}")
    return manifest
