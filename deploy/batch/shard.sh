#!/usr/bin/env bash
# One shard of a herd batch job: the command every scheduler's array task
# runs (deploy/slurm, deploy/pbs). Resumable: a requeued or restarted task
# goes on from the lines its output already holds.
#   shard.sh MODEL INPUT OUTDIR INDEX COUNT [herd batch run options...]
# Writes OUTDIR/shard-INDEX.jsonl and OUTDIR/shard-INDEX.errors.jsonl.
# HERD: the herd binary (default: herd on PATH).
set -euo pipefail
if [ $# -lt 5 ]; then
    echo "usage: shard.sh MODEL INPUT OUTDIR INDEX COUNT [herd batch run options...]" >&2
    exit 2
fi
model=$1 input=$2 outdir=$3 index=$4 count=$5
shift 5
mkdir -p "$outdir"
exec "${HERD:-herd}" batch run -m "$model" --input "$input" --output "$outdir/shard-$index.jsonl" \
    --errors "$outdir/shard-$index.errors.jsonl" --shard "$index/$count" --quiet "$@"
