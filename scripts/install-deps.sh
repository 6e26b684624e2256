#!/usr/bin/env bash
# Installs the Debian packages herd needs to build and test, and only those
# that are missing (a second run costs nothing). Debian 12; needs root or sudo.
set -euo pipefail
packages=(
    build-essential cmake ninja-build pkg-config git
    libcmocka-dev libjansson-dev libpcre2-dev libevent-dev libxxhash-dev
    clang libclang-rt-14-dev clang-format
    python3 python3-numpy
    prometheus
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the end-to-end tests with the official openai SDK.
# Checked by command, not by package: a Node.js from elsewhere (NodeSource
# bundles npm) must not be replaced by Debian's.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# prometheus (promtool, and a server for the end-to-end scrape test): the
# package's service is not started in containers; the tests start their own.
if [ ${#missing[@]} -gt 0 ]; then
    echo "herd: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The npm packages of the SDK tests, exactly as package-lock.json pins them.
sdk="$(dirname "$0")/../tests/server/sdk"
if [ ! -d "$sdk/node_modules/openai" ]; then
    echo "herd: installing the npm packages of tests/server/sdk" >&2
    (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
