#!/usr/bin/env bash
# Installs what roomgate needs to build and test on Debian 12, idempotently.
# Only packages that are missing are installed; a machine that has them all is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  pkg-config clang
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev
  ffmpeg
  python3 python3-pip
  nginx-light libnginx-mod-rtmp libnginx-mod-stream
  coturn
  redis-server
  chromium
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# aiortc: an independent WebRTC stack the tests play through (wheels from PyPI, FFmpeg bundled in `av`).
if ! python3 -c 'import aiortc' >/dev/null 2>&1; then
  echo "install-deps: installing aiortc (pip)"
  python3 -m pip install --quiet aiortc 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages aiortc
fi

# The official Tencent Cloud SDK drives the Cloud API actions in a test (tests/sdk/).
if ! python3 -c 'import tencentcloud.trtc.v20190722' >/dev/null 2>&1; then
  echo "install-deps: installing tencentcloud-sdk-python-trtc (pip)"
  python3 -m pip install --quiet tencentcloud-sdk-python-trtc 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages tencentcloud-sdk-python-trtc
fi

# Node.js and npm (the machine's own when present; Debian's otherwise).
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing nodejs npm"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

# playwright-core drives Debian's chromium in the console's browser tests (tests/browser/).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "install-deps: installing playwright-core (npm)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# Tencent's official Node.js SDK (common client) drives the Cloud API in a test (tests/sdk/trtc_sdk.mjs).
if [ ! -d tests/sdk/node_modules/tencentcloud-sdk-nodejs-common ]; then
  echo "install-deps: installing tencentcloud-sdk-nodejs-common (npm)"
  (cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi
