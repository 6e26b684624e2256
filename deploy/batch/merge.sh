#!/usr/bin/env bash
# The merge after every shard of a herd batch job finished (deploy/slurm,
# deploy/pbs): OUTDIR/output.jsonl and OUTDIR/errors.jsonl in input order,
# checked to hold every input line exactly once (else exit 1, nothing
# written).
#   merge.sh INPUT OUTDIR
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: merge.sh INPUT OUTDIR" >&2
    exit 2
fi
input=$1 outdir=$2
shopt -s nullglob
parts=("$outdir"/shard-*.jsonl)
if [ ${#parts[@]} -eq 0 ]; then
    echo "merge.sh: no shard outputs in $outdir" >&2
    exit 1
fi
exec "${HERD:-herd}" batch merge --input "$input" --output "$outdir/output.jsonl" --errors "$outdir/errors.jsonl" \
    "${parts[@]}"
