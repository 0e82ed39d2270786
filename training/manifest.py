"""manifest.json: what the runtime reads (version, files → sha256) plus the full record of how the model was made.

Runtime contract (keep exactly): ``manifest["version"]`` is a string, ``manifest["files"]`` is a dict keyed by file
name (`runtime.constants` names) whose values hold a ``sha256`` hex string (and ``bytes``). The manifest cannot
hash itself, so it is the one file in the directory without an entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from runtime.constants import MANIFEST_FILE
from training.errors import ArtifactError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(model_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {
        name: {"sha256": sha256_file(model_dir / name), "bytes": (model_dir / name).stat().st_size}
        for name in sorted(names)
    }


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> Path:
    path = model_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ArtifactError(f"{path} not found; train a model with `python -m training train --out {model_dir}`") from e
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from e
    return manifest


def verify_files(model_dir: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Every file in the manifest → "ok" or why not; never raises, so callers can report all at once."""
    results: dict[str, str] = {}
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return {MANIFEST_FILE: "has no 'files' dict"}
    for name, entry in files.items():
        path = model_dir / name
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if not path.is_file():
            results[name] = "missing"
        elif not isinstance(expected, str):
            results[name] = "no sha256 in manifest"
        else:
            actual = sha256_file(path)
            results[name] = "ok" if actual == expected else f"sha256 {actual} != manifest {expected}"
    return results
