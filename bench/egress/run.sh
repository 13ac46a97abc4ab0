#!/usr/bin/env bash
# egress against its peers, in one run, on loopback, against the same HTTPS upstream:
# direct, through egress, through mitmproxy (PyPI, in bench/.work/mitm-venv) and through
# squid with ssl-bump (Debian squid-openssl). Prints a Markdown table: keep-alive latency
# p50/p99, new-connection latency, requests/s at concurrency 1/64/256, MB/s for a 100 MB
# body, idle and peak RSS of the proxy process, binary size.
#
# Usage: bench/egress/run.sh [SECONDS_PER_RPS_STEP]   (default 3)
# Targets: keep-alive p50 <= 1.5x direct, >= 10x mitmproxy's requests/s, idle RSS <= 10 MB,
# binary <= 15 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-3}"
cargo build -q --release -p egress --bin egress --example bench
bin=target/x86_64-unknown-linux-gnu/release/egress
args=(--egress "$bin" --work bench/.work/egress --secs "$secs")
venv=bench/.work/mitm-venv
if [ ! -x "$venv/bin/mitmdump" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q mitmproxy || echo "mitmproxy not installed: row skipped" >&2
fi
[ -x "$venv/bin/mitmdump" ] && args+=(--mitmdump "$venv/bin/mitmdump")
if [ -x /usr/sbin/squid ] && [ -x /usr/lib/squid/security_file_certgen ]; then
  args+=(--squid /usr/sbin/squid)
else
  echo "squid-openssl not found: row skipped (apt-get install squid-openssl)" >&2
fi
ulimit -n 16384 2>/dev/null || true
target/x86_64-unknown-linux-gnu/release/examples/bench "${args[@]}"
