#!/usr/bin/env bash
# The base image, once per machine: installs debootstrap from Debian's
# packages when it is missing, then runs bootstrap-base.sh. Both README
# commands (demo/run.sh, scripts/test.sh) start with it, so a fresh machine
# needs nothing installed by hand beyond Docker and Rust.
#
# Usage: images/ensure-base.sh   (root or sudo only when the image is missing)
set -euo pipefail
cd "$(dirname "$0")/.."

docker image inspect bot-bottle/base:bookworm >/dev/null 2>&1 && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v debootstrap >/dev/null; then
  echo "installing debootstrap (Debian package) to build the base image"
  # A fresh machine may have no package lists yet.
  as_root apt-get install -y -q debootstrap \
    || { as_root apt-get update -q && as_root apt-get install -y -q debootstrap; }
fi
as_root images/bootstrap-base.sh
