#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the
# main job on the built-in default model (models/stories260K.gguf). Until
# `herd serve` lands, the main job is `herd run`: a story from a prompt.
# Extra arguments go to `herd run` (e.g. -p "Once upon a time" -n 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
case " $* " in
    *" -p "* | *" --prompt "* | *" --prompt-ids "*) ;;
    *) set -- -p "Once upon a time" -n 200 "$@" ;;
esac
exec build/bin/herd run "$@"
