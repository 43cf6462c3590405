#!/usr/bin/env bash
# Set up a virtual environment with everything steve1_ray needs (CPU torch; no downloads at run time).
# Usage: bash scripts/setup.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${STEVE1_VENV:-.venv}}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned, so nothing else can pull a CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[test]"
# Test reference only (tests/test_tokenizer.py compares our tokenizer with CLIP's own, read by path, never
# imported: its torchvision requirement is skipped on purpose). steve1_ray ships the vocabulary itself.
"$VENV/bin/python" -m pip install -q --no-deps clip-anytorch==2.6.0
echo "steve1_ray environment ready in $VENV"
