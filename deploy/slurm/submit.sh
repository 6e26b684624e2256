#!/usr/bin/env bash
# Submits a herd batch job to Slurm: SHARDS array tasks, then the merge
# once all of them succeeded. Prints the two job ids.
#   submit.sh SHARDS MODEL INPUT OUTDIR [sbatch options for the array...]
# HERD (the herd binary) is passed on to the jobs through the environment.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: submit.sh SHARDS MODEL INPUT OUTDIR [sbatch options...]" >&2
    exit 2
fi
shards=$1 model=$2 input=$3 outdir=$4
shift 4
here=$(dirname "$(readlink -f "$0")")
mkdir -p "$outdir"
# sbatch copies the script: where the shared commands are goes with it
export HERD_DEPLOY_DIR=${HERD_DEPLOY_DIR:-$(readlink -f "$here/..")}
array=$(sbatch --parsable --export=ALL --array="0-$((shards - 1))" --output="$outdir/slurm-%A_%a.out" "$@" \
    "$here/herd-batch.sbatch" "$(readlink -f "$model")" "$(readlink -f "$input")" "$(readlink -f "$outdir")")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --output="$outdir/slurm-merge-%j.out" "$here/herd-merge.sbatch" "$(readlink -f "$input")" "$(readlink -f "$outdir")")
echo "$array ${merge%%;*}"
