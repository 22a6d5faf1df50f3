#!/usr/bin/env bash
# Installs everything a fresh Debian 12 machine lacks to build rustasr from source, then builds it.
# Idempotent: already-present packages are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_need=()
for pkg in libopenblas-dev g++ make python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_need+=("$pkg")
done
if ((${#apt_need[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_need[@]}"
fi

# --ignore-scripts: the native addon is built once, below, instead of by the install hook.
npm ci --ignore-scripts --no-audit --no-fund
npm run build
