#!/usr/bin/env bash
# Submits a herd batch job to PBS Pro (default) or Torque (PBS_FLAVOR=torque):
# SHARDS array indices, then the merge once all succeeded.
#   submit.sh SHARDS MODEL INPUT OUTDIR [qsub options for the array...]
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: submit.sh SHARDS MODEL INPUT OUTDIR [qsub options...]" >&2
    exit 2
fi
shards=$1 model=$2 input=$3 outdir=$4
shift 4
here=$(dirname "$(readlink -f "$0")")
mkdir -p "$outdir"
vars="MODEL=$(readlink -f "$model"),INPUT=$(readlink -f "$input"),OUTDIR=$(readlink -f "$outdir"),SHARDS=$shards"
vars="$vars,HERD=${HERD:-herd},HERD_DEPLOY_DIR=$(readlink -f "$here/..")"
if [ "${PBS_FLAVOR:-pro}" = torque ]; then
    array=$(qsub -t "0-$((shards - 1))" -v "$vars" "$@" "$here/herd-batch.pbs")
    merge=$(qsub -W depend="afterokarray:$array" -v "$vars" "$here/herd-merge.pbs")
else
    array=$(qsub -J "0-$((shards - 1))" -v "$vars" "$@" "$here/herd-batch.pbs")
    merge=$(qsub -W depend="afterok:$array" -v "$vars" "$here/herd-merge.pbs")
fi
echo "$array $merge"
