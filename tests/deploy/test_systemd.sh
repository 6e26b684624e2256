#!/usr/bin/env bash
# deploy/systemd's units checked by systemd itself, without installing them:
# `systemd-analyze verify` must print nothing (it exits 0 on unknown keys and
# bad values and only warns, so any output fails here), and
# `systemd-analyze security --offline` must rate the hardening "OK" or
# better (exposure at most 2.0 of 10; the units score 1.6 today).
#
#   test_systemd.sh HERD SOURCE_DIR
#
# verify needs each ExecStart binary to exist: the test checks copies of the
# units whose /usr/local/bin/herd is the built binary. Skips (77) when
# systemd-analyze is absent.
set -euo pipefail

herd=$(realpath "$1") # systemd wants an absolute ExecStart
src=$2

if ! command -v systemd-analyze >/dev/null; then
    echo "note: systemd-analyze is absent (Debian package systemd): not checked"
    exit 77
fi
[ -x "$herd" ] || {
    echo "FAIL: $herd is not an executable"
    exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

units=(herd.service herd-route.service)
copies=()
for u in "${units[@]}"; do
    grep -q '^ExecStart=/usr/local/bin/herd ' "$src/deploy/systemd/$u" || {
        echo "FAIL: $u: ExecStart does not start /usr/local/bin/herd (the documented install path)"
        exit 1
    }
    sed "s|^ExecStart=/usr/local/bin/herd |ExecStart=$herd |" "$src/deploy/systemd/$u" >"$tmp/$u"
    copies+=("$tmp/$u")
done

fail=0
# --man=no: Documentation= man pages need not be installed here.
out=$(timeout 60 systemd-analyze verify --man=no "${copies[@]}" 2>&1) || fail=1
if [ -n "$out" ] || [ "$fail" -ne 0 ]; then
    echo "FAIL: systemd-analyze verify:"
    echo "$out"
    exit 1
fi
echo "ok: systemd-analyze verify ${units[*]}"

for c in "${copies[@]}"; do
    # --threshold: a non-zero exit when the exposure exceeds 2.0 (20 in
    # tenths), the top of systemd's "OK" band.
    if ! out=$(timeout 60 systemd-analyze security --offline=yes --threshold=20 "$c" 2>&1); then
        echo "$out"
        echo "FAIL: $(basename "$c"): exposure above 2.0 (a hardening line was lost?)"
        exit 1
    fi
    echo "ok: $(printf '%s\n' "$out" | grep 'Overall exposure level' | sed -e 's/^[^O]*//' -e 's/ *[^ ]*$//')"
done

# What herd itself accepts: every flag the units pass (on ExecStart and in
# the default *_ARGS) must be one of the subcommand's; systemd cannot know.
for u in "${units[@]}"; do
    case $u in
    herd.service) cmd=serve ;;
    herd-route.service) cmd=route ;;
    esac
    lines=$(grep -E '^ExecStart=|^Environment="?HERD_[A-Z_]*ARGS=' "$src/deploy/systemd/$u")
    help=$("$herd" "$cmd" --help 2>&1)
    n=0
    for flag in $(grep -o -E -- '[ =]--?[a-z][a-z-]*' <<<"$lines" | tr -d ' ='); do
        grep -q -E -- " ${flag}[ ,]" <<<"$help" || {
            echo "FAIL: $u passes $flag, which herd $cmd does not know"
            exit 1
        }
        n=$((n + 1))
    done
    echo "ok: $u's $n flags are herd $cmd's"
done
