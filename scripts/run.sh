#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the
# main job, `herd serve`, on the built-in default model
# (models/stories260K.gguf) at http://127.0.0.1:8080. Extra arguments go to
# `herd serve` (e.g. --port 9000, -m MODEL). Ctrl-C drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/bin/herd serve "$@"
