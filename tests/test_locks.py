"""The lock files (requirements/*.txt): each is complete for its extras, pinned, hashed, in step with pyproject.toml,
and the images and the test command install from them with hashes required.

A lock that falls behind pyproject.toml (a bound raised, a dependency added) fails here, with the refresh command.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
#: Lock file -> the extras it installs (with the base dependencies). Dockerfile.cpu's EXTRAS=a,b reads a-b.txt.
LOCKS = {
    "cpu": ("cpu",),
    "cpu-grpc": ("cpu", "grpc"),
    "gpu": ("gpu",),
    "test": ("cpu", "train", "dev", "grpc", "otel"),
}
REFRESH = "bash scripts/lock.sh"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def parse_lock(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes)."""
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash=sha256:"):
            assert current is not None, f"{path.name}: a hash before any requirement"
            version, hashes = pins[current]
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}( \\)?", line), line
            pins[current] = (version, hashes + 1)
            continue
        match = _PIN.match(line)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        current = canonicalize_name(match.group(1))
        pins[current] = (Version(match.group(2)), 0)
    return pins


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_lock_pins_and_hashes_each_package(lock: str) -> None:
    pins = parse_lock(REPO / "requirements" / f"{lock}.txt")
    assert pins
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"{lock}.txt: no --hash for {unhashed}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_lock_satisfies_pyproject(lock: str) -> None:
    pins = parse_lock(REPO / "requirements" / f"{lock}.txt")
    problems = []
    for req in wanted(LOCKS[lock]):
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name == "neuraltrade-edge":
            continue
        if name not in pins:
            problems.append(f"{req} is not locked")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req} but the lock has {pins[name][0]}")
    assert not problems, f"requirements/{lock}.txt is out of step with pyproject.toml ({REFRESH}): {problems}"


def test_locks_agree_on_the_shared_packages() -> None:
    """The serving image and the tests run the same versions of what they share (onnxruntime, uvicorn, ...)."""
    cpu, grpc, test = (parse_lock(REPO / "requirements" / f"{n}.txt") for n in ("cpu", "cpu-grpc", "test"))
    for name, (version, _) in cpu.items():
        assert grpc[name][0] == version, name
        if name in test:
            assert test[name][0] == version, f"{name}: cpu.txt {version}, test.txt {test[name][0]}"


def test_the_images_and_the_test_command_install_from_the_locks() -> None:
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    assert "--require-hashes" in test_sh and "-r requirements/test.txt" in test_sh
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        assert "--require-hashes" in (REPO / dockerfile).read_text(), dockerfile
    lock_sh = (REPO / "scripts" / "lock.sh").read_text()
    for lock, extras in LOCKS.items():
        assert f"requirements/{lock}.txt" in lock_sh and " ".join(f"--extra {e}" for e in extras) in lock_sh, lock
