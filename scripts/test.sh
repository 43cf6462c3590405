#!/usr/bin/env bash
# Set up the environment (if needed) and run the whole test suite on CPU.
# Usage: bash scripts/test.sh [pytest args...]
# Tests run in STEVE1_TEST_WORKERS (default 2) pytest-xdist processes, one test file each at a time (`--dist
# loadfile` keeps a file's module fixtures, e.g. its Serve app or two-node cluster, in one process), the longest
# files first (tests/conftest.py LONGEST_FIRST). 3 processes on 2 cores ran slower and some Serve set-ups failed.
# `-n 0` runs them all in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STEVE1_VENV:-.venv}
# Headless Chromium for the web-page test (Debian packages; needs root or sudo; without it that test skips),
# installed while the venv is set up: apt's downloads and pip's installs overlap instead of adding up.
browser_log=$(mktemp)
bash scripts/install_browser.sh >"$browser_log" 2>&1 &
browser=$!
bash scripts/setup.sh "$VENV"
if wait "$browser"; then tail -n 1 "$browser_log"; else
  tail -n 5 "$browser_log" >&2
  echo "scripts/test.sh: chromium not installed; the browser test will be skipped" >&2
fi
rm -f "$browser_log"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} RAY_USAGE_STATS_ENABLED=0 RAY_DEDUP_LOGS=0 \
       RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0 TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 -n "${STEVE1_TEST_WORKERS:-2}" \
     --dist loadfile --no-loadscope-reorder "$@"
