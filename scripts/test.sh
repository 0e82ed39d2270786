#!/usr/bin/env bash
# Install everything the tests need into .venv (torch pinned to the CPU build), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[cpu,train,dev]'
.venv/bin/python -m pytest "$@"
