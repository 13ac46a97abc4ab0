#!/usr/bin/env bash
# Builds the local base image `bot-bottle/base:bookworm` with no registry:
# debootstrap from the Debian mirror this machine's apt uses, then `docker import`.
# Every image of bot-bottle builds FROM this (ARG BASE), so nothing is ever pulled.
# Packages are installed here, at bootstrap time, because build containers are
# not guaranteed to reach the Debian mirror.
#
# Usage: images/bootstrap-base.sh [--force]     (needs root and debootstrap)
set -euo pipefail

IMAGE="${BOT_BOTTLE_BASE_IMAGE:-bot-bottle/base:bookworm}"
SUITE="${BOT_BOTTLE_BASE_SUITE:-bookworm}"
# The mirror the machine's own apt sources use, so air-gapped mirrors work too.
MIRROR="${BOT_BOTTLE_DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -n1 || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
# What the sidecars and the test agent need. git-gate: git, openssh-client;
# test-agent: the rest; the tests' upstream: openssh-server.
PACKAGES="ca-certificates,bash,curl,git,openssh-client,openssh-server,python3,iproute2,dnsutils,tini,netcat-openbsd,procps"

if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE already present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root: run with sudo" >&2; exit 1; }

root="$(mktemp -d /tmp/bot-bottle-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap $SUITE from $MIRROR into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR"
# Keep the image small and free of host-specific state.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/etc/ssh/ssh_host_*
echo "deb $MIRROR $SUITE main" > "$root/etc/apt/sources.list"
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["/bin/bash"]' - "$IMAGE"
echo "built $IMAGE"
