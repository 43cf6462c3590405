#!/usr/bin/env bash
# Wheels for running benchmarks/gpu_check.sh on a GPU machine that has PyTorch but none of Ray, Serve, crafter or
# ftfy, and no package index (the workplace's H200 image: Python 3.12, torch 2.11). Run here, with PyPI reachable:
#
#   bash benchmarks/gpu_prepare.sh [DIR]        # -> DIR (default .whl): ~43 MB; ignore DIR in git; again
#                                               # before each run: it rewrites DIR/COMMIT (git describe --dirty)
#
# then on the GPU machine, in the checkout, with DIR beside it:
#
#   mkdir -p /tmp/site && python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl \
#     && tar -xJf DIR/ray.tar.xz -C /tmp/site && STEVE1_COMMIT=$(cat DIR/COMMIT) PYTHONPATH=/tmp/site PYTHON=python3 \
#     bash benchmarks/gpu_check.sh
#
# Ray's wheel (79 MB) is repacked without its Java jars, RLlib and the dashboard's source maps (30 MB as tar.xz,
# executable bits kept) so that it travels with a working tree under 64 MB; the check needs none of those. The
# versions are the ones this project's CPU environment runs; grpcio and protobuf travel too, because the generated
# code of grpcio-reflection and opentelemetry-proto refuses an older runtime than it was made with. Measured in
# session 18 (benchmarks/RESULTS.md): the install takes 6 s there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_34_x86_64
        --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64)
mkdir -p "$DIR"
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$DIR" \
  ftfy==6.3.1 wcwidth==0.9.4 opensimplex==0.4.5.1 ruamel.yaml==0.19.1 gymnasium==1.4.0 Farama-Notifications==0.0.6 \
  fastapi==0.165.0 annotated-doc==0.0.7 starlette==1.10.0 uvicorn==0.55.0 \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 \
  opentelemetry-proto==1.45.2 opentelemetry-exporter-prometheus==0.66b2 importlib-metadata==10.2.0 zipp==4.1.2 \
  grpcio-reflection==1.85.1 grpcio==1.85.3 protobuf==7.36.2 aiohttp-cors==0.8.1 colorful==0.5.8 \
  smart_open==9.0.4 mmh3==5.3.1 watchfiles==1.3.0
# crafter is published as a source distribution only: build its (pure Python) wheel here
"$PY" -m pip wheel -q --no-deps -w "$DIR" crafter==1.8.3
if [[ ! -s "$DIR/ray.tar.xz" ]]; then  # made once (a minute of xz); the downloads above skip what is there
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$tmp" ray==2.60.0
  mkdir "$tmp/x"
  "$PY" -m zipfile -e "$tmp"/ray-2.60.0-*.whl "$tmp/x"
  rm -rf "$tmp/x/ray/jars" "$tmp/x/ray/rllib"
  find "$tmp/x/ray/dashboard" -name '*.map' -delete
  chmod +x "$tmp/x/ray/core/src/ray/gcs/gcs_server" "$tmp/x/ray/core/src/ray/raylet/raylet"  # zipfile drops them
  find "$tmp/x/ray" -name '*.so' -exec chmod +x {} +
  tar -C "$tmp/x" -cJf "$DIR/ray.tar.xz.part" . && mv "$DIR/ray.tar.xz.part" "$DIR/ray.tar.xz"
fi
# the machine's copy may carry an older .git, so gpu_check reads the commit from here: run this script again right
# before each run on the GPU machine (it then only rewrites this file)
git describe --always --dirty > "$DIR/COMMIT"
du -sh "$DIR"
