#!/usr/bin/env bash
# The container image end to end with Debian's podman (no daemon): makes the
# base image if missing (scripts/container-base.sh), builds
# deploy/docker/Dockerfile, then runs the image as a user would: `herd serve`
# with a model mounted read-only, /readyz, a chat completion, the image's
# HEALTHCHECK, SIGTERM and a clean drain (exit 0, the drain lines in the
# log); `herd route --help` from the same image; and the non-root user.
#
#   test_container.sh SOURCE_DIR
#
# Skips (77), saying why, where podman cannot build or run containers here
# (not installed, not root, no base image and none can be made, a runtime
# that cannot start a container); once a container runs, every failure is a
# failure. Every wait is bounded. Environment: HERD_CONTAINER_IMAGE (the tag
# to build, default localhost/herd:ci; kept afterwards so the next run
# reuses its layers).
set -euo pipefail

src=$(realpath "$1")
image=${HERD_CONTAINER_IMAGE:-localhost/herd:ci}
name=herd-ci-$$
t0=$SECONDS

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    exit 1
}
step() {
    echo "== $* ($((SECONDS - t0)) s)"
}

command -v podman >/dev/null || skip "podman is not installed (Debian packages podman, runc: scripts/install-deps.sh)"
command -v runc >/dev/null || skip "runc is not installed (Debian package runc: scripts/install-deps.sh)"
command -v curl >/dev/null || skip "curl is not installed"
# Rootless podman needs subordinate ids and a user namespace set up for the
# user; CI runs as root, and the base image needs root (debootstrap) anyway.
[ "$(id -u)" -eq 0 ] || skip "not root: this test runs rootful podman"

# This machine's podman settings (runc; no default ulimits): see the file.
export CONTAINERS_CONF=$src/deploy/docker/containers.conf

tmp=$(mktemp -d)
cleanup() {
    timeout 60 podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- the base image and whether podman can run anything here --------------
step "base image"
if ! timeout 1200 bash "$src/scripts/container-base.sh" >"$tmp/base.log" 2>&1; then
    cat "$tmp/base.log"
    skip "no base image docker.io/library/debian:bookworm and scripts/container-base.sh could not make one (log above)"
fi
tail -n 1 "$tmp/base.log"
if ! timeout 120 podman run --rm --network host docker.io/library/debian:bookworm true >"$tmp/probe.log" 2>&1; then
    cat "$tmp/probe.log"
    skip "podman cannot run a container on this machine (above)"
fi
# Port mapping needs a container network (CNI here); where there is none,
# the container shares the host's network instead.
net=(--network host)
if timeout 120 podman run --rm -p 127.0.0.1::9 docker.io/library/debian:bookworm true >"$tmp/net.log" 2>&1; then
    net=()
else
    echo "note: port mapping unavailable, using --network host: $(tail -n 1 "$tmp/net.log")"
fi

# ---- build -----------------------------------------------------------------
# --format docker keeps the HEALTHCHECK (podman's OCI format drops it);
# --pull=never: no registry is reachable, the base must be local;
# --network host: the build's apt reaches the mirror the way the host does.
step "podman build"
if ! timeout 1800 podman build --format docker --pull=never --network host -f "$src/deploy/docker/Dockerfile" \
    -t "$image" "$src" >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log"
    fail "podman build failed (last lines above)"
fi
echo "built $image: $(podman image inspect --format '{{.Size}}' "$image") bytes"
[ "$(podman image inspect --format '{{.Config.User}}' "$image")" = "10001:10001" ] ||
    fail "the image's user is not 10001:10001"
grep -q /usr/local/libexec/herd/healthcheck <<<"$(podman image inspect --format '{{.Config.Healthcheck}}' "$image")" ||
    fail "the image has no HEALTHCHECK (built in OCI format?)"

# ---- the same image runs herd route, and as non-root ------------------------
step "herd route --help, id"
out=$(timeout 60 podman run --rm "$image" route --help 2>&1) || fail "herd route --help: $out"
grep -q '^usage: herd route' <<<"$out" || fail "herd route --help printed: $out"
out=$(timeout 60 podman run --rm --entrypoint id "$image" 2>&1)
grep -q '^uid=10001(herd) gid=10001(herd)' <<<"$out" || fail "the container runs as: $out"
# The built-in model (under HERD_HOME) is found without -m.
out=$(timeout 60 podman run --rm "$image" run -p "Once upon a time" -n 8 2>&1) ||
    fail "herd run with the built-in model: $out"

# ---- serve: a model mounted read-only ---------------------------------------
# A free port: with --network host the container binds the host's.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
models=$tmp/models
mkdir -p "$models"
cp "$src/models/stories260K.gguf" "$models/model.gguf"
chmod -R a+rX "$models"
step "podman run (port $port)"
if [ ${#net[@]} -eq 0 ]; then
    publish=(-p "127.0.0.1:$port:8080")
    cport=8080
else
    publish=(--network host)
    cport=$port
fi
# --health-interval=disable: podman runs periodic checks from a systemd
# timer, and this machine has no systemd; the check is run by hand below.
# (podman 4.3 still logs "unable to get systemd connection to add
# healthchecks" here: kept in run.log, shown only on failure.)
# --read-only, no capabilities, no new privileges: as deploy/k8s runs it
# and docs/deploy-container.md says works.
if ! timeout 120 podman run -d --name "$name" "${publish[@]}" --health-interval=disable --read-only \
    --cap-drop=ALL --security-opt=no-new-privileges \
    -e HERD_HEALTH_PORT="$cport" -v "$models:/models:ro" "$image" \
    serve --host 0.0.0.0 --port "$cport" -m /models/model.gguf --model-name tiny >"$tmp/run.log" 2>&1; then
    cat "$tmp/run.log"
    fail "podman run failed"
fi

url=http://127.0.0.1:$port
ready=0
for _ in $(seq 1 120); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/readyz" || true)" = 200 ]; then
        ready=1
        break
    fi
    [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || break
    sleep 0.5
done
if [ "$ready" -ne 1 ]; then
    podman logs "$name" 2>&1 | tail -n 20
    fail "/readyz did not answer 200 within 60 s (log above)"
fi
step "ready"

out=$(curl -s --max-time 30 "$url/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny", "messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 16}')
python3 -c '
import json, sys
r = json.loads(sys.argv[1])
c = r["choices"][0]
assert r["object"] == "chat.completion", r
assert r["model"] == "tiny", r
assert c["message"]["role"] == "assistant" and c["message"]["content"], r
assert c["finish_reason"] in ("stop", "length"), r
assert r["usage"]["completion_tokens"] >= 1, r
print("chat:", json.dumps(c["message"]["content"]))
' "$out" || fail "the chat completion: $out"

out=$(timeout 60 podman healthcheck run "$name" 2>&1) || fail "podman healthcheck run: $out"
echo "healthcheck: ${out:-healthy}"

# ---- SIGTERM drains ---------------------------------------------------------
step "SIGTERM"
podman kill --signal TERM "$name" >/dev/null
# herd exits by itself once drained: wait for that, not for podman stop's
# SIGKILL (the drain allows 30 s for running requests; none run here).
code=$(timeout 60 podman wait "$name" 2>&1) || fail "the container did not stop within 60 s of SIGTERM"
logs=$(podman logs "$name" 2>&1)
echo "$logs" | tail -n 3
[ "$code" = 0 ] || fail "exit status $code after SIGTERM, not 0"
grep -q 'SIGTERM: draining' <<<"$logs" || fail "no 'SIGTERM: draining' line in the log"
grep -q 'serve stopped' <<<"$logs" || fail "no 'stopped' line in the log"
step "ok: drained and exited 0"
