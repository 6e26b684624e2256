#!/usr/bin/env bash
# Installs the Debian packages herd needs to build and test, and only those
# that are missing (a second run costs nothing). Debian 12; needs root or sudo.
set -euo pipefail
packages=(
    build-essential cmake ninja-build pkg-config git
    libcmocka-dev libjansson-dev libpcre2-dev libevent-dev libxxhash-dev
    clang libclang-rt-14-dev clang-format
    python3 python3-numpy
    prometheus
    yamllint shellcheck
    # the container image test (tests/deploy/test_container.sh): daemonless
    # podman with runc (crun refuses the cgroup v1 hybrid layout of some
    # VMs), debootstrap for the base image (scripts/container-base.sh), curl
    podman runc debootstrap curl
    # the batch test on a real single-node Slurm (tests/batch/test_slurm.sh)
    slurm-wlm munge
    # the web pages' browser test (tests/web): Debian's headless chromium,
    # driven by npm playwright-core, which never downloads a browser
    chromium
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the end-to-end tests with the official openai SDK.
# Checked by command, not by package: a Node.js from elsewhere (NodeSource
# bundles npm) must not be replaced by Debian's.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# kubectl renders the Kubernetes manifests (kubectl kustomize). Debian 12's
# kubernetes-client is 1.20, whose kustomize predates components: take
# kubectl from the Kubernetes project's own apt repository instead (signed;
# needs curl and gpg) unless a kubectl or kustomize is already here.
need_kubectl=0
command -v kubectl >/dev/null || command -v kustomize >/dev/null || need_kubectl=1
# prometheus (promtool, and a server for the end-to-end scrape test): the
# package's service is not started in containers; the tests start their own.
if [ ${#missing[@]} -gt 0 ]; then
    echo "herd: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$need_kubectl" = 1 ]; then
    echo "herd: installing kubectl from pkgs.k8s.io" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    k8s_repo=https://pkgs.k8s.io/core:/stable:/v1.32/deb/
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends curl gpg ca-certificates >/dev/null
    $SUDO install -d -m 0755 /etc/apt/keyrings
    curl -fsSL "${k8s_repo}Release.key" | $SUDO gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes.gpg
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] $k8s_repo /" |
        $SUDO tee /etc/apt/sources.list.d/kubernetes.list >/dev/null
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubectl >/dev/null
fi
# The npm packages of the SDK tests, exactly as package-lock.json pins them.
sdk="$(dirname "$0")/../tests/server/sdk"
if [ ! -d "$sdk/node_modules/openai" ] || [ ! -d "$sdk/node_modules/ajv" ]; then
    echo "herd: installing the npm packages of tests/server/sdk" >&2
    (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# The schema packages of the Kubernetes manifest tests (kubernetes-models),
# pinned by tests/deploy/k8s/package-lock.json.
k8s_tests="$(dirname "$0")/../tests/deploy/k8s"
if [ ! -d "$k8s_tests/node_modules/kubernetes-models" ]; then
    echo "herd: installing the npm packages of tests/deploy/k8s" >&2
    (cd "$k8s_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# playwright-core for the browser test of the pages, pinned by
# tests/web/package-lock.json.
web_tests="$(dirname "$0")/../tests/web"
if [ ! -d "$web_tests/node_modules/playwright-core" ]; then
    echo "herd: installing the npm packages of tests/web" >&2
    (cd "$web_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
