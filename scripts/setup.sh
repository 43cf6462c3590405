#!/usr/bin/env bash
# Set up a virtual environment with everything steve1_ray needs (CPU torch; no downloads at run time).
# Usage: bash scripts/setup.sh [VENV_DIR]   (default .venv)
# The install steps themselves are scripts/install.sh, shared with the cluster image (Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${STEVE1_VENV:-.venv}}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
bash scripts/install.sh dev "$VENV/bin/python"
echo "steve1_ray environment ready in $VENV"
