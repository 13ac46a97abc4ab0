#!/usr/bin/env bash
# Added latency of the cred-proxy hop on loopback (p50/p99), compared in the
# same run with nginx doing the same job (inject a header, verified TLS to the
# upstream, upstream keep-alive). Target: added p50 <= 0.3 ms.
#
# Usage: bench/egress/cred-proxy-hop.sh [REQUESTS]   (default 5000)
set -euo pipefail
cd "$(dirname "$0")/../.."
requests="${1:-5000}"
cargo build --release -p cred-proxy --example hop_latency >&2
bin=target/x86_64-unknown-linux-gnu/release/examples/hop_latency
args=(--requests "$requests")
if command -v nginx >/dev/null 2>&1; then
  args+=(--nginx "$(command -v nginx)")
else
  echo "nginx not found: peer row skipped (apt-get install nginx)" >&2
fi
"$bin" "${args[@]}"
