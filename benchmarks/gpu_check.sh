#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): on one GPU in under 8 minutes, 2x training in bf16 at the paper's batch
# shape (frames/s, MFU from counted FLOPs), served 2x actions/s at 16/64/256 sessions, MineCLIP fp16 embedding
# frames/s -> benchmarks/results/gpu_check.json and gpu_check.md.
#
#   bash benchmarks/gpu_check.sh                               # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu-dry-run --out /tmp/gc   # tiny sizes on CPU in < 60 s (the test suite runs this)
#   bash benchmarks/gpu_check.sh --peak-tflops 989 --sections train   # any other flag: benchmarks/gpu_check.py --help
#
# Python: $PYTHON, else the checkout's .venv, else python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}" RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0
exec "$PYTHON" benchmarks/gpu_check.py "$@"
