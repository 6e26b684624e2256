#!/usr/bin/env bash
# Installs the Debian packages herd needs to build and test, and only those
# that are missing (a second run costs nothing). Debian 12; needs root or sudo.
set -euo pipefail
packages=(
    build-essential cmake ninja-build pkg-config git
    libcmocka-dev libjansson-dev libpcre2-dev libevent-dev
    clang libclang-rt-14-dev clang-format
    python3 python3-numpy
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "herd: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
