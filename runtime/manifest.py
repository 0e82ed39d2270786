"""manifest.json: the one definition of a model directory's record, read by serving, training and the benchmark.

Contract: ``version`` is a string and ``files`` maps each artifact's file name to its ``sha256`` (and ``bytes``).
The manifest cannot hash itself, so it is the one file in the directory without an entry. Everything else in it
(training config, metrics, parity, batch invariance) is the record of how the model was made, kept in `raw`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.constants import MANIFEST_FILE, MODEL_NAME
from runtime.errors import ModelLoadError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(model_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``files`` table entries for `names` in `model_dir`, sorted by name."""
    return {
        name: {"sha256": sha256_file(model_dir / name), "bytes": (model_dir / name).stat().st_size}
        for name in sorted(names)
    }


def write_manifest(model_dir: Path, record: dict[str, Any]) -> Path:
    path = model_dir / MANIFEST_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Manifest:
    """A model directory's manifest as read from disk (`raw` is the whole record)."""

    name: str
    version: str
    files: dict[str, str]  # file name -> sha256
    raw: dict[str, Any]

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        """Read and check the contract; `ModelLoadError` naming the file and what is wrong otherwise."""
        path = model_dir / MANIFEST_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ModelLoadError(
                f"manifest '{path}' not found: is --model-dir pointing at the models directory?"
            ) from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"manifest '{path}' cannot be read: {e}") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
            raise ModelLoadError(f"manifest '{path}' has no 'files' table of sha256 hashes")
        if raw.get("name", MODEL_NAME) != MODEL_NAME:
            raise ModelLoadError(f"manifest '{path}' is for model '{raw.get('name')}', expected '{MODEL_NAME}'")
        files = {
            name: entry["sha256"]
            for name, entry in raw["files"].items()
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        }
        return cls(str(raw.get("name", MODEL_NAME)), str(raw.get("version", "unknown")), files, raw)

    def onnx_files(self) -> list[str]:
        return sorted(name for name in self.files if name.endswith(".onnx"))

    def verify(self, model_dir: Path, name: str) -> bytes:
        """Read one artifact and check it against its hash; `ModelLoadError` naming the file otherwise.

        Returns the bytes that were hashed, so what is loaded is exactly what was verified (no second read).
        """
        path = model_dir / name
        expected = self.files.get(name)
        if expected is None:
            raise ModelLoadError(f"manifest lists no sha256 for '{name}'; refusing to load an unverified model")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelLoadError(f"model file '{path}' cannot be read: {e.strerror or e}") from e
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ModelLoadError(
                f"model file '{path}' does not match its manifest: sha256 {actual} != expected {expected}"
            )
        return data

    def check_all(self, model_dir: Path) -> dict[str, str]:
        """Every file of the ``files`` table -> "ok" or why not; never raises, so callers can report all at once."""
        results: dict[str, str] = {}
        for name in self.raw["files"]:
            path = model_dir / name
            expected = self.files.get(name)
            if not path.is_file():
                results[name] = "missing"
            elif expected is None:
                results[name] = "no sha256 in manifest"
            else:
                actual = sha256_file(path)
                results[name] = "ok" if actual == expected else f"sha256 {actual} != manifest {expected}"
        return results
