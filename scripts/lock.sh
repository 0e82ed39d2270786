#!/usr/bin/env bash
# Refresh the lock files in requirements/ from pyproject.toml: exact versions with every file's sha256, for
# Linux x86_64 and CPython 3.11 (the images' and CI's platform). Run it after changing a dependency or to take
# new releases, then run the tests (tests/test_locks.py checks each lock against pyproject.toml).
#
#   bash scripts/lock.sh            # all four; ~6 minutes here (pip-compile resolves each set from the index)
#
# requirements/cpu.txt       Dockerfile.cpu (EXTRAS=cpu, the default)
# requirements/cpu-grpc.txt  Dockerfile.cpu --build-arg EXTRAS=cpu,grpc
# requirements/gpu.txt       Dockerfile.gpu
# requirements/test.txt      scripts/test.sh (and so CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-lock/bin/pip-compile ]; then
    python3 -m venv .venv-lock
    .venv-lock/bin/pip install --quiet 'pip-tools==7.7.0'
fi
compile() {
    local out=$1
    shift
    .venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
        --no-emit-find-links --no-header --resolver=backtracking "$@" -o "requirements/$out.txt" pyproject.toml
    echo "requirements/$out.txt"
}
# The test set first: the serving sets are then constrained to it, so the image and the tests run the same
# versions of everything they share.
compile test --extra cpu --extra train --extra dev --extra grpc --extra otel
compile cpu --extra cpu -c requirements/test.txt
compile cpu-grpc --extra cpu --extra grpc -c requirements/test.txt
compile gpu --extra gpu -c requirements/test.txt
