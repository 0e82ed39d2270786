"""The model repository: every version under ``model_dir``, verified, with a state an operator can act on.

Layout: ``model_dir/manifest.json`` is the root version, served unless ``EDGE_MODEL_VERSION`` names another;
``model_dir/<version>/manifest.json`` are further versions side by side (what ``python -m training finetune``
writes), each directory named by its manifest's ``version``: a version is loaded by that name, and answers carry
the manifest's, so the two must agree. A directory without a manifest is not a version.

Each version is READY (every file of its manifest present and matching its sha256, the manifest well formed, its
declared input and output shapes the runtime's) or UNAVAILABLE with every reason found. Hashes are cached by
(path, inode, mtime, size): listing re-hashes only files that changed, so it costs one ``stat`` per file. A file
rewritten in place with the same size and mtime would keep its cached hash; loading never trusts the cache
(`runtime.session.Model.load` hashes the bytes it loads).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from runtime.constants import (
    CLASSES,
    FEATURES,
    FP32_FILE,
    INPUT_NAME,
    INT8_FILE,
    MANIFEST_FILE,
    MODEL_NAME,
    N_CLASSES,
    N_FEATURES,
    OUTPUT_NAME,
    VERSION_PATTERN,
    WINDOW_LENGTH,
)
from runtime.errors import ModelLoadError, ReloadFailed, VersionNotFound
from runtime.manifest import Manifest, sha256_file

#: The directory key of the root version. ``Settings.model_path(ROOT)`` is ``model_dir`` itself (pathlib drops a
#: "." component), and VERSION_PATTERN cannot produce it, so no request can name it by accident.
ROOT: Final = "."
READY: Final = "READY"
UNAVAILABLE: Final = "UNAVAILABLE"
State = Literal["READY", "UNAVAILABLE"]
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.\-]+))?(?:\+[0-9A-Za-z.\-]+)?$")


@dataclass(frozen=True)
class VersionEntry:
    version: str  # the manifest's version (a sub-directory's name when its manifest cannot be read)
    directory: str  # ROOT or the sub-directory's name: what Settings.model_path and Service.reload take
    state: State
    reason: str  # every problem found, "; "-separated; "" when READY
    created: datetime | None  # the manifest's `created` (UTC), None when absent or not ISO 8601

    def index_entry(self, serving_directory: str) -> dict[str, str]:
        """The Triton repository index entry; the served version's reason says so."""
        reason = self.reason or ("serving" if self.directory == serving_directory else "")
        return {"name": MODEL_NAME, "version": self.version, "state": self.state, "reason": reason}


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    """Semantic-version order (1.10.0 > 1.9.0 > 1.9.0-rc1); a name that is not semver sorts below every one."""
    match = _SEMVER.match(version)
    if match is None:
        return (-1, -1, -1, -1, version)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def newest_key(entry: VersionEntry) -> tuple[bool, datetime, tuple[int, int, int, int, str], str]:
    """ "Newest": the latest manifest `created`; a tie, or no `created` on either, goes to the higher semantic
    version, then the name. A version without a valid `created` is older than any with one."""
    return (
        entry.created is not None,
        entry.created or datetime.min.replace(tzinfo=UTC),
        semver_key(entry.version),
        entry.version,
    )


class Repository:
    """Scans and verifies ``model_dir``'s versions. Thread-safe (scans run off the event loop)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        #: Bytes hashed since creation: what a listing cost (0 when every file's hash came from the cache).
        self.hashed_bytes = 0
        self._hashes: dict[Path, tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()

    def scan(self) -> list[VersionEntry]:
        """Every version: the root first (when it has a manifest), then sub-directories by name."""
        with self._lock:
            seen: set[Path] = set()
            directories = [ROOT] if (self.model_dir / MANIFEST_FILE).is_file() else []
            try:
                subdirs = sorted(p.name for p in self.model_dir.iterdir() if (p / MANIFEST_FILE).is_file())
            except OSError:
                subdirs = []
            entries: list[VersionEntry] = []
            for directory in directories + subdirs:
                entry = self._check(directory, seen)
                if any(e.version == entry.version for e in entries):
                    first = next(e for e in entries if e.version == entry.version)
                    entry = _unavailable(entry, f"version '{entry.version}' is already in '{_where(first.directory)}'")
                entries.append(entry)
            # Forget files no longer listed, so the cache is bounded by what the repository holds.
            self._hashes = {path: value for path, value in self._hashes.items() if path in seen}
            return entries

    def find(self, version: str) -> VersionEntry:
        """The entry of `version`; `VersionNotFound` (404) naming the versions there are."""
        entries = self.scan()
        for entry in entries:
            if entry.version == version:
                return entry
        listed = ", ".join(e.version for e in entries) or "none"
        raise VersionNotFound(f"no version '{version[:100]}' in the model repository (versions: {listed})")

    def resolve(self, version: str | None) -> VersionEntry:
        """A READY version to load: `version`, or the newest READY one when None; `ReloadFailed` (409) naming the
        reason when it is UNAVAILABLE (or when no version is READY)."""
        if version is not None:
            entry = self.find(version)
            if entry.state != READY:
                raise ReloadFailed(f"version '{entry.version}' is UNAVAILABLE: {entry.reason}")
            return entry
        ready = [e for e in self.scan() if e.state == READY]
        if not ready:
            raise ReloadFailed(f"no READY version in the model repository '{self.model_dir}'")
        return max(ready, key=newest_key)

    # -- verification ----------------------------------------------------------------------------------------
    def _check(self, directory: str, seen: set[Path]) -> VersionEntry:
        path = self.model_dir if directory == ROOT else self.model_dir / directory
        fallback = "unknown" if directory == ROOT else directory
        try:
            manifest = Manifest.load(path)
        except ModelLoadError as e:
            return VersionEntry(fallback, directory, UNAVAILABLE, f"bad manifest: {e.message}", None)
        raw = manifest.raw
        version = str(raw.get("version", fallback))
        problems: list[str] = []
        if "version" not in raw or not isinstance(raw["version"], str):
            problems.append("bad manifest: no 'version' string")
        if directory != ROOT:
            if version != directory:
                problems.append(
                    f"manifest version '{version[:64]}' does not match its directory '{directory}' "
                    "(a version is loaded by its directory name: rename one)"
                )
            if re.fullmatch(VERSION_PATTERN, directory) is None:
                problems.append(f"directory name '{directory[:64]}' is not a valid version ({VERSION_PATTERN})")
        problems += _shape_problems(raw)
        for required in (INT8_FILE, FP32_FILE):
            if required not in manifest.files:
                problems.append(f"manifest lists no sha256 for '{required}'")
        for name in raw["files"]:
            problem = self._file_problem(path, str(name), manifest.files.get(name), seen)
            if problem:
                problems.append(problem)
        state: State = UNAVAILABLE if problems else READY
        return VersionEntry(version, directory, state, "; ".join(problems), _created(raw.get("created")))

    def _file_problem(self, directory: Path, name: str, expected: str | None, seen: set[Path]) -> str:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            return f"file name '{name[:64]}' is not a plain file name"
        if expected is None:
            return f"manifest lists no sha256 for '{name}'"
        path = directory / name
        try:
            stat = path.stat()
        except OSError:
            return f"'{name}' is missing"
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        seen.add(path)
        cached = self._hashes.get(path)
        if cached is not None and cached[0] == key:
            actual = cached[1]
        else:
            try:
                actual = sha256_file(path)
            except OSError as e:
                return f"'{name}' cannot be read: {e.strerror or e}"
            self.hashed_bytes += stat.st_size
            self._hashes[path] = (key, actual)
        if actual != expected:
            return f"'{name}' does not match its manifest: sha256 {actual} != {expected}"
        return ""


def _shape_problems(raw: dict[str, Any]) -> list[str]:
    """What the manifest declares about the graph's interface, against what the runtime feeds and reads. A manifest
    that declares nothing is checked when loaded (the session's signature check)."""
    problems = []
    for key, expected in (("window_length", WINDOW_LENGTH), ("features", list(FEATURES)), ("classes", list(CLASSES))):
        if key in raw and raw[key] != expected:
            problems.append(f"incompatible {key}: {json.dumps(raw[key])[:80]} (the runtime's: {json.dumps(expected)})")
    for key, name, want in (
        ("inputs", INPUT_NAME, [WINDOW_LENGTH, N_FEATURES]),
        ("outputs", OUTPUT_NAME, [N_CLASSES]),
    ):
        if key not in raw:
            continue
        declared = raw[key]
        ok = (
            isinstance(declared, list)
            and len(declared) == 1
            and isinstance(declared[0], dict)
            and declared[0].get("name") == name
            and isinstance(declared[0].get("shape"), list)
            and declared[0]["shape"][1:] == want
            and declared[0].get("dtype", "float32") == "float32"
        )
        if not ok:
            problems.append(
                f"incompatible {key}: {json.dumps(declared)[:120]} (the runtime's: {name} float32 [batch, "
                f"{', '.join(map(str, want))}])"
            )
    return problems


def _created(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        created = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC)


def _unavailable(entry: VersionEntry, problem: str) -> VersionEntry:
    reason = f"{entry.reason}; {problem}" if entry.reason else problem
    return VersionEntry(entry.version, entry.directory, UNAVAILABLE, reason, entry.created)


def _where(directory: str) -> str:
    return "the root" if directory == ROOT else directory
