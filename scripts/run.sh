#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the
# main job on the built-in default model (models/stories260K.gguf). Until
# `herd serve` lands, the main job is `herd inspect` of that model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/bin/herd inspect models/stories260K.gguf "$@"
