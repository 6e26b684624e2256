#!/usr/bin/env bash
# herd batch on a real Slurm (RELIABILITY G2 for the cluster): munged,
# slurmctld and slurmd started here (no systemd: a minimal slurm.conf with
# proctrack/linuxproc and task/none, ports of its own), a job array over a
# few hundred lines submitted with deploy/slurm/submit.sh, one array task
# requeued while it runs (scontrol requeue), the dependent merge awaited,
# and the merged output compared with a single-process run: every
# custom_id exactly once, the same texts. Stops its daemons when done.
# Skips (77) without root or without Slurm and munge.
#   test_slurm.sh HERD SRC
set -euo pipefail
herd=$(readlink -f "$1")
src=$(readlink -f "$2")
model="$src/models/stories260K.gguf"
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: the Slurm test starts slurmd, which needs root"
    exit 77
fi
for c in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
    if ! command -v "$c" >/dev/null; then
        echo "SKIP: $c not installed (scripts/install-deps.sh installs slurm-wlm and munge)"
        exit 77
    fi
done

t=$(mktemp -d /tmp/herd-slurm.XXXXXX)
pids=()
cleanup() {
    local rc=$?
    if [ -n "${SLURM_CONF:-}" ]; then scancel --quiet --full "--user=$(id -un)" 2>/dev/null || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$rc" != 0 ]; then
        for f in "$t"/*.log "$t"/out/slurm-*.out; do
            [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
        done
    fi
    rm -rf "$t"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

# ------------------------------------------------------------------ munge
mkdir -p "$t/munge"
# munged wants its socket's directories searchable by all (clients run as
# any user); the key stays readable by root only
chmod 711 "$t" "$t/munge"
dd if=/dev/urandom of="$t/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$t/munge/munge.key"
munged --force -F --socket="$t/munge/munge.socket" --key-file="$t/munge/munge.key" \
    --pid-file="$t/munge/munged.pid" --log-file="$t/munged.log" --seed-file="$t/munge/seed" >>"$t/munged.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$t/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$t/munge/munge.socket" ] || fail "munged did not start"

# ------------------------------------------------------------------ slurm
host=$(hostname -s)
port=$((20000 + RANDOM % 20000))
mkdir -p "$t/state" "$t/spool" "$t/out"
cat >"$t/slurm.conf" <<CONF
ClusterName=herdtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$t/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$t/state
SlurmdSpoolDir=$t/spool
SlurmctldPidFile=$t/slurmctld.pid
SlurmdPidFile=$t/slurmd.pid
SlurmctldLogFile=$t/slurmctld.log
SlurmdLogFile=$t/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=500 State=UNKNOWN
PartitionName=herd Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$t/slurm.conf"
slurmctld -D -i -f "$SLURM_CONF" >>"$t/slurmctld.log" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >>"$t/slurmd.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 150); do
    if [ "$(sinfo -h -o %T 2>/dev/null | head -1)" = idle ]; then
        ready=1
        break
    fi
    sleep 0.2
done
[ "$ready" = 1 ] || fail "the Slurm node did not come up: $(sinfo 2>&1 | tail -2)"
echo "slurm up: $(sinfo -h -o '%P %D %T %C')"

# ------------------------------------------------------------ the input
lines=300
python3 - "$t/in.jsonl" "$lines" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        body = {"model": "stories260K", "prompt": f"Once upon a time {i}", "max_tokens": 160,
                "temperature": 0, "ignore_eos": True}
        f.write(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/completions", "body": body}) + "\n")
PY
"$herd" batch run -m "$model" --threads 1 -q -i "$t/in.jsonl" -o "$t/single.jsonl" \
    || fail "the single-process run failed"

# ------------------------------------------ the array, a requeue, the merge
export HERD="$herd"
read -r array merge < <("$src/deploy/slurm/submit.sh" 3 "$model" "$t/in.jsonl" "$t/out")
echo "array job $array, merge job $merge"
# requeue task 1 once it has written some answers (mid-run)
requeued=0
for _ in $(seq 600); do
    state=$(squeue -h -j "${array}_1" -o %T 2>/dev/null || true)
    if [ "$state" = RUNNING ] && [ -s "$t/out/shard-1.jsonl" ]; then
        scontrol requeue "${array}_1"
        requeued=1
        break
    fi
    sleep 0.1
done
[ "$requeued" = 1 ] || fail "array task 1 was never seen running with output to requeue"
before=$(wc -l <"$t/out/shard-1.jsonl")
echo "requeued task 1 after $before answers"
# a requeued job waits for its begin time: start it now
for _ in $(seq 50); do
    scontrol update "jobid=${array}_1" begintime=now 2>/dev/null && break
    sleep 0.1
done
for _ in $(seq 900); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.2
done
[ -z "$(squeue -h -o %i)" ] || fail "jobs still queued after 3 minutes: $(squeue)"
[ -f "$t/out/output.jsonl" ] || fail "the merge job wrote no output.jsonl"

python3 - "$t/single.jsonl" "$t/out/output.jsonl" "$t/out/errors.jsonl" "$lines" <<'PY'
import json, sys
single, merged, errors, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def rows(p):
    return [json.loads(l) for l in open(p) if l.strip()]
m = rows(merged)
ids = [r["custom_id"] for r in m]
assert ids == [f"q{i}" for i in range(n)], f"merged custom_ids not in input order, or not each once ({len(ids)} rows)"
assert rows(errors) == [], "no line failed"
text = lambda rs: {r["custom_id"]: r["response"]["body"]["choices"][0]["text"] for r in rs}
assert text(m) == text(rows(single)), "the merged answers differ from a single-process run"
print(f"merged {len(m)} answers: every custom_id once, equal to the single-process run")
PY
restarts=$(scontrol show job "${array}_1" | grep -o 'Restarts=[0-9]*' | head -1)
[ "$restarts" = Restarts=1 ] || fail "Slurm does not count the requeue of task 1 ($restarts)"
# the second run of task 1 went on from the answers the first one wrote
grep -Eq '[1-9][0-9]* already written' "$t/out/slurm-${array}_1.out" ||
    fail "the requeued task did not resume: $(cat "$t/out/slurm-${array}_1.out")"
echo "PASS: Slurm array of 3 over $lines lines, task 1 requeued mid-run, merge equal to a single run"
