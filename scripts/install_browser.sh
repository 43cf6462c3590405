#!/usr/bin/env bash
# Install headless Chromium + chromedriver (Debian packages) for the web-page test (tests/test_page.py).
# Idempotent: does nothing when both binaries are already there. Needs root (or sudo) and apt.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "chromium and chromedriver already installed: $(chromium --version 2>/dev/null || true)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_browser.sh: not root and no sudo; install the Debian packages chromium chromium-driver yourself" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
echo "installed: $(chromium --version 2>/dev/null || true)"
