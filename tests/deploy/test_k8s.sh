#!/usr/bin/env bash
# The Kubernetes manifests (deploy/k8s) and the deploy scripts, checked
# without a cluster. One mode per CTest test, so that a missing tool skips
# (exit 77, with a note) only what needs it:
#   render   kubectl kustomize (or kustomize build) renders every overlay,
#            the base and the prometheus-adapter config; the PrometheusRule
#            generated from deploy/prometheus/herd-alerts.yml is up to date
#   schemas  every rendered object is valid against the Kubernetes, KEDA and
#            prometheus-operator schemas (tests/deploy/k8s/validate.mjs)
#   served   the probes, ports, args and metric names match what herd serve
#            and herd route serve (tests/deploy/k8s/served.mjs; needs HERD)
#   yaml     yamllint over deploy/ (.yamllint)
#   shell    shellcheck over deploy/, scripts/ and tests/deploy/
# Usage: test_k8s.sh MODE SOURCE_DIR [HERD]
set -euo pipefail
mode=$1
src=$(cd "$2" && pwd)
herd=${3:-}
k8s=$src/deploy/k8s
nodedir=$src/tests/deploy/k8s

skip() {
    echo "skip: $*"
    exit 77
}

# render DIR: every kustomization a user applies, one file each
render() {
    local out=$1 kust=() d name
    if command -v kubectl >/dev/null; then
        kust=(kubectl kustomize)
    elif command -v kustomize >/dev/null; then
        kust=(kustomize build)
    else
        skip "neither kubectl nor kustomize is installed (scripts/install-deps.sh installs kubectl)"
    fi
    for d in "$k8s"/base "$k8s"/overlays/* "$k8s"/prometheus-adapter; do
        name=$(basename "$d")
        "${kust[@]}" "$d" >"$out/$name.yaml" || { echo "FAIL: ${kust[*]} $d" >&2; exit 1; }
        echo "rendered $name: $(grep -c '^kind:' "$out/$name.yaml") objects"
    done
}

need_node_modules() {
    command -v node >/dev/null || skip "node is not installed (scripts/install-deps.sh)"
    [ -d "$nodedir/node_modules/kubernetes-models" ] ||
        skip "tests/deploy/k8s/node_modules is absent (scripts/install-deps.sh runs npm ci there)"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $mode in
render)
    render "$tmp"
    "$src/deploy/prometheus/gen-prometheusrule.sh" --check
    echo "ok: every overlay renders; the PrometheusRule matches deploy/prometheus/herd-alerts.yml"
    ;;
schemas)
    need_node_modules
    render "$tmp" >/dev/null
    node "$nodedir/validate.mjs" "$src/deploy/prometheus/herd-alerts.yml" "$tmp"/*.yaml
    ;;
served)
    need_node_modules
    [ -x "$herd" ] || { echo "usage: test_k8s.sh served SOURCE_DIR HERD" >&2; exit 2; }
    render "$tmp" >/dev/null
    node "$nodedir/served.mjs" "$herd" "$src/models/stories260K.gguf" "$tmp"/*.yaml
    ;;
yaml)
    command -v yamllint >/dev/null || skip "yamllint is not installed (Debian package yamllint; scripts/install-deps.sh)"
    yamllint --strict -c "$src/.yamllint" "$src/deploy"
    echo "ok: yamllint deploy/"
    ;;
shell)
    command -v shellcheck >/dev/null ||
        skip "shellcheck is not installed (Debian package shellcheck; scripts/install-deps.sh)"
    mapfile -t scripts < <(find "$src/deploy" "$src/scripts" "$src/tests/deploy" -name node_modules -prune -o \
        -type f -name '*.sh' -print | sort)
    shellcheck -x "${scripts[@]}"
    echo "ok: shellcheck ${#scripts[@]} scripts"
    ;;
*)
    echo "usage: test_k8s.sh render|schemas|served|yaml|shell SOURCE_DIR [HERD]" >&2
    exit 2
    ;;
esac
