#!/usr/bin/env bash
# Install everything the tests need into .venv from requirements/test.txt (torch: the CPU build), then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The /docs browser test drives Debian's chromium through Playwright (which cannot download a browser here). Not
# fatal: without it that test fails under CI (and skips elsewhere), the rest of the suite still runs.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "warning: apt-get could not install chromium; the /docs browser test will not run" >&2
    else
        echo "note: /usr/bin/chromium is missing (install it as root: apt-get install chromium)" >&2
    fi
fi
# The alert/recording-rule tests run Debian's promtool (package `prometheus`); same terms as chromium above.
if ! command -v promtool >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
            || echo "warning: apt-get could not install prometheus; the promtool rule tests will not run" >&2
    else
        echo "note: promtool is missing (install it as root: apt-get install prometheus)" >&2
    fi
fi
# The one-CPU scaling-curve test and the benchmarks drive Debian's wrk; same terms as chromium above.
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; } \
            || echo "warning: apt-get could not install wrk; the scaling-curve test will not run" >&2
    else
        echo "note: wrk is missing (install it as root: apt-get install wrk)" >&2
    fi
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# Everything from the lock (exact versions, each file's sha256 checked; `bash scripts/lock.sh` refreshes it: README,
# "Locked builds"), then the project itself without resolving anything more; `pip check` fails the run if the
# lock no longer satisfies pyproject.toml. torch is the CPU build (2.13.0+cpu), found on this machine's disk.
.venv/bin/pip install --quiet --require-hashes --no-deps -r requirements/test.txt
.venv/bin/pip install --quiet --no-deps -e .
.venv/bin/pip check
# Held-out market data (EUR/USD hourly, GOOG daily) for the batch-invariance checks: only the package's CSV files are
# read, so its plotting dependencies (bokeh) are left out.
.venv/bin/pip install --quiet --no-deps 'backtesting==0.6.6'
# Static checks first (fast, and a failure names the file): lint, formatting, strict types on both packages.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict runtime training
.venv/bin/python -m pytest "$@"
