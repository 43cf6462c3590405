#!/usr/bin/env bash
# How steve1_ray is installed, in one place: scripts/setup.sh (development, tests and CI) and the Dockerfile (the
# cluster image of cluster.yaml and deploy/kuberay/) both run this; tests/test_deploy.py checks that they do.
#
#   bash scripts/install.sh dev PYTHON             torch, then this checkout editable with the test extras, every
#                                                  package at constraints.txt's version (on Python 3.11; other
#                                                  Pythons unpinned)
#   bash scripts/install.sh wheel PYTHON OUT_DIR   build this checkout's wheel into OUT_DIR
#   bash scripts/install.sh image PYTHON WHEEL     torch, then the wheel (into the image's Python, next to its Ray)
#
# torch goes first, alone and pinned (pyproject.toml's pin; the test checks they agree), so that no other
# requirement chooses its build: where pip finds a local CPU wheel (our machines) that one, else PyPI's (CUDA on
# Linux: what the GPU image wants).
set -euo pipefail
TORCH="torch==2.13.0"
MODE=${1:?usage: bash scripts/install.sh dev|wheel|image PYTHON [OUT_DIR|WHEEL]}
PY=${2:?usage: bash scripts/install.sh $MODE PYTHON ...}
REPO="$(cd "$(dirname "$0")/.." && pwd)"

case "$MODE" in
  dev)
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "$TORCH"
    # every other package at the version the README's numbers were measured with (constraints.txt says why), on
    # the Python it was frozen on; other Pythons (3.10: NumPy 2.4 needs 3.11) get what pip picks for them
    PIN=(-c "$REPO/constraints.txt")
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "scripts/install.sh: constraints.txt was frozen on Python 3.11; installing unpinned versions" >&2
      PIN=()
    fi
    "$PY" -m pip install -q ${PIN[@]+"${PIN[@]}"} -e "$REPO[test]"
    # Test reference only (tests/test_tokenizer.py compares our tokenizer with CLIP's own, read by path, never
    # imported: its torchvision requirement is skipped on purpose). steve1_ray ships the vocabulary itself.
    "$PY" -m pip install -q --no-deps clip-anytorch==2.6.0
    ;;
  wheel)
    OUT=${3:?usage: bash scripts/install.sh wheel PYTHON OUT_DIR}
    "$PY" -m pip wheel -q --no-deps -w "$OUT" "$REPO"
    ;;
  image)
    WHEEL=${3:?usage: bash scripts/install.sh image PYTHON WHEEL}
    "$PY" -m pip install -q --no-cache-dir "$TORCH"
    "$PY" -m pip install -q --no-cache-dir "$WHEEL"
    ;;
  *)
    echo "scripts/install.sh: unknown mode '$MODE': dev, wheel or image" >&2
    exit 2
    ;;
esac
