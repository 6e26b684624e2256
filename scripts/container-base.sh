#!/usr/bin/env bash
# Makes the base image deploy/docker/Dockerfile builds FROM (debian:bookworm)
# without a registry: debootstraps a minimal Debian 12 root from the Debian
# mirror this machine's apt uses, and imports it into podman's local storage
# as docker.io/library/debian:bookworm, the name a short `FROM debian:bookworm`
# resolves to. Cached: does nothing when that image is already there.
#
#   scripts/container-base.sh [IMAGE]      (default docker.io/library/debian:bookworm)
#
# Environment: HERD_DEBIAN_MIRROR overrides the mirror (default: the first
# bookworm URI in /etc/apt/sources.list{,.d/*}, else http://deb.debian.org/debian).
# Needs root (debootstrap), debootstrap and podman (scripts/install-deps.sh).
set -euo pipefail

image=${1:-docker.io/library/debian:bookworm}
suite=bookworm

die() {
    echo "container-base: $*" >&2
    exit 1
}

command -v podman >/dev/null || die "podman is not installed (scripts/install-deps.sh)"
if podman image exists "$image"; then
    echo "container-base: $image is already in podman's storage"
    exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/install-deps.sh)"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root (run with sudo)"

# The mirror: the first URI serving bookworm in apt's own configuration,
# in either format (one-line sources.list or deb822 .sources), since the
# machine may reach only that one.
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v s="$suite" '$1 == "deb" && $0 ~ " " s "( |$)" && $0 ~ "/debian/?( |$)" {
            for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        # One stanza per blank-line-separated paragraph: its URIs and Suites.
        awk -v s="$suite" 'BEGIN { RS = "" }
            { uri = ""; ok = 0
              n = split($0, lines, "\n")
              for (i = 1; i <= n; i++) {
                  if (lines[i] ~ /^URIs:/) { split(lines[i], w, /[ \t]+/); uri = w[2] }
                  if (lines[i] ~ /^Suites:/ && (lines[i] " ") ~ (" " s " ")) ok = 1
              }
              if (ok && uri ~ /\/debian\/?$/) print uri }' "$f"
    done
}
mirror=${HERD_DEBIAN_MIRROR:-$(find_mirror | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

work=$(mktemp -d /var/tmp/herd-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "container-base: debootstrap $suite from $mirror (a few minutes)"
# minbase: Essential packages and apt only (~80 MiB), like Docker Hub's
# debian:bookworm; the Dockerfile installs what each stage needs.
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi

# apt inside the image: the same mirror, with bookworm-updates and the
# security suite where the host has one, in the deb822 format of the
# official image.
# (URIs: and deb lines only: a comment may name a mirror this machine
# cannot reach, as snapshot.debian.org in the cloud images' sources.)
security=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | grep -E '^(URIs:|deb )' |
    grep -o -E 'https?://[^ ]*/debian-security/?' | head -n 1 || true)
security=${security%/}
rm -f "$root/etc/apt/sources.list"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$suite" "$suite"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$suite"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} >"$root/etc/apt/sources.list.d/debian.sources"
# Smaller layers: no package caches or translations kept in the image (the
# same settings the official image ships).
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/tmp/*
# The host's name and resolver must not leak in: the runtime provides both.
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

tar --numeric-owner --xattrs -C "$root" -c . |
    podman import --quiet --change 'CMD ["bash"]' - "$image" >/dev/null
echo "container-base: imported $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
