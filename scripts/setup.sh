#!/usr/bin/env bash
# Install what vhdtool needs on a Debian machine: Debian tools, a venv with vhdtool and its extras,
# and Azurite (the local Azure Storage emulator). Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv python3-pip nodejs npm)
if [ "${1:-}" = "--test" ]; then
  APT_PACKAGES+=(qemu-utils libvhdi-utils gdisk fdisk dosfstools mtools xfsprogs e2fsprogs ntfs-3g
                 libhivex-bin libwin-hivex-perl wimtools gzip btrfs-progs cpio zstd lz4 xz-utils bzip2)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# node and npm may come from elsewhere than Debian (e.g. nodesource): accept them as they are.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]:-}"
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[azure,inspect,test,docs,bench]"

if [ ! -x node_modules/.bin/azurite-blob ]; then
  npm install --silent --no-audit --no-fund --no-save --prefix . azurite@3 >/dev/null
fi
