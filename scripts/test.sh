#!/usr/bin/env bash
# The test command of the README: everything a fresh machine needs, then the
# whole test suite. Idempotent: a second run reuses the base image, the
# release binaries and the content-hashed images.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step() { printf '\n==> %s\n' "$*"; }

step "base image (debootstrap, no registry needed)"
images/ensure-base.sh

step "gitleaks' default config (PyPI, in bench/.work): the scanner must load every rule of it"
python3 -c 'import ensurepip' 2>/dev/null || as_root apt-get install -y python3-venv
bash bench/scanner/gitleaks-setup.sh >/dev/null

step "release binaries for the sidecar images"
cargo build --release --workspace --bins

step "tests"
cargo test --workspace -- --test-threads="${BOT_BOTTLE_TEST_THREADS:-4}"
