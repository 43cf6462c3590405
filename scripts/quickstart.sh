#!/usr/bin/env bash
# Set up the environment (if needed) and run the whole STEVE-1 pipeline on the embedded world (crafter).
# Usage: bash scripts/quickstart.sh [key=value ...]     e.g. tiny=true, episodes=24, out=runs/qs2
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STEVE1_VENV:-.venv}
bash scripts/setup.sh "$VENV"
# A private local cluster needs no auth token (Ray 2.60 turns token auth on by default; see README for clusters).
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} RAY_USAGE_STATS_ENABLED=0 RAY_DEDUP_LOGS=0 \
       RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0 PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
exec "$VENV/bin/steve1" quickstart "$@"
