#!/usr/bin/env bash
# Build the cluster image (Dockerfile) as <registry>/steve1-ray:<version of pyproject.toml> and push it.
# Usage: bash scripts/build_image.sh REGISTRY [--no-push]      e.g. ghcr.io/your-org, 123456789012.dkr.ecr.us-west-2.amazonaws.com
# cluster.yaml and deploy/kuberay/*.yaml name ghcr.io/your-org/steve1-ray:<version>: put your registry there
# (docs/deploy.md). DOCKER=podman works too.
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${1:?usage: bash scripts/build_image.sh REGISTRY [--no-push]}
PUSH=${2:-}
if [ -n "$PUSH" ] && [ "$PUSH" != "--no-push" ]; then
  echo "scripts/build_image.sh: unknown option '$PUSH' (only --no-push)" >&2
  exit 2
fi
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
IMAGE="${REGISTRY%/}/steve1-ray:${VERSION:?no version = \"...\" line in pyproject.toml}"
DOCKER=${DOCKER:-docker}
"$DOCKER" build -t "$IMAGE" -f Dockerfile .
if [ "$PUSH" != "--no-push" ]; then
  "$DOCKER" push "$IMAGE"
fi
echo "$IMAGE"
