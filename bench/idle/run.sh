#!/usr/bin/env bash
# Idle benchmark: what N bottles that do nothing cost the host, measured
# host-wide from /proc/stat (dockerd, containerd, the shims and every
# container included), minus the same machine with no bottle, in one run.
# A bottle is the demo's (agent + egress); the agent runs its idle command.
#
# Peer: set OLD_ORCH to an orchestrator of an earlier build to measure its
# bottles in the same run (issue 12: the 0.2 s health check cost ~78 % of a
# core for 20 bottles). Target (issue 12): 20 idle bottles < 5 % of a core,
# measured over at least three of the engine's check intervals (120 s).
#
# Usage: bench/idle/run.sh [N] [WINDOW_S]   (defaults 20 and 360; needs
#        demo/run.sh's images)
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-20}"
WINDOW="${2:-360}"
BASE_WINDOW="${BASE_WINDOW:-60}"
OLD_WINDOW="${OLD_WINDOW:-60}"
ORCH="${ORCH:-target/x86_64-unknown-linux-gnu/release/orchestrator}"
[ -x "$ORCH" ] || cargo build --release -p orchestrator
# The sidecar binaries the images are built from (also for OLD_ORCH).
export BOT_BOTTLE_BIN_DIR="${BOT_BOTTLE_BIN_DIR:-$(cd "$(dirname "$ORCH")" && pwd)}"
"$ORCH" images build --only egress >/dev/null
"$ORCH" images build --only test-agent >/dev/null

HOME_DIR="$(mktemp -d /tmp/bb-idle.XXXXXX)"
# The demo bottle on a network of the bench's own (the demo's stays free).
NET=bb-bench-idle
SUBNET=10.217.0.0/24
cleanup() {
  BOT_BOTTLE_HOME="$HOME_DIR" "$ORCH" cleanup --all -y >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$HOME_DIR"
}
trap cleanup EXIT
cp -r orchestrator/examples/home/. "$HOME_DIR/"
sed -i "s/bb-demo-internet/$NET/; s#10.214.0.0/24#$SUBNET#" "$HOME_DIR/bottles/demo.md"
docker network rm "$NET" >/dev/null 2>&1 || true
docker network create --subnet "$SUBNET" --label dev.bot-bottle.bench=1 "$NET" >/dev/null
export BOT_BOTTLE_HOME="$HOME_DIR"
HZ="$(getconf CLK_TCK)"

# Busy and total jiffies of all cores.
jiffies() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat; }

# Share of one core the whole host used over $1 seconds, in percent.
measure() {
  local b0 t0 b1 t1
  read -r b0 t0 < <(jiffies)
  sleep "$1"
  read -r b1 t1 < <(jiffies)
  awk -v b="$((b1 - b0))" -v s="$1" -v hz="$HZ" 'BEGIN { printf "%.2f", b / (s * hz) * 100 }'
}

# Starts N detached bottles with orchestrator $1, waits, measures $2 seconds.
bottles() {
  local orch="$1" window="$2" i
  for i in $(seq 1 "$N"); do
    "$orch" start demo -y --detach >/dev/null 2>&1 || { echo "start $i failed" >&2; exit 1; }
  done
  sleep 15 # let start-up work settle before measuring
  local running
  running=$(docker ps -q --filter "label=dev.bot-bottle.role=agent" | wc -l)
  [ "$running" -ge "$N" ] || { echo "only $running agents running" >&2; exit 1; }
  measure "$window"
  # An earlier build may not know --all (its cleanup removed everything).
  "$orch" cleanup --all -y >/dev/null 2>&1 || "$orch" cleanup -y >/dev/null 2>&1
}

printf 'measuring: no bottle (%s s)\n' "$BASE_WINDOW" >&2
base=$(measure "$BASE_WINDOW")
printf 'measuring: %s bottles of this build (%s s)\n' "$N" "$WINDOW" >&2
new=$(bottles "$ORCH" "$WINDOW")
old=""
if [ -n "${OLD_ORCH:-}" ]; then
  printf 'measuring: %s bottles of %s (%s s)\n' "$N" "$OLD_ORCH" "$OLD_WINDOW" >&2
  old=$(bottles "$OLD_ORCH" "$OLD_WINDOW")
fi

row() { awk -v w="$1" -v t="$2" -v b="$base" -v n="$N" -v s="$3" 'BEGIN {
  d = t - b; printf "%-34s %6s s %8.2f %% %8.2f %% %8.3f %%\n", w, s, t, d, d / n }'; }
printf '%-34s %8s %10s %10s %10s\n' "host, $(nproc) cores" "window" "busy" "-idle" "per bottle"
printf '%-34s %6s s %8.2f %%\n' "no bottle" "$BASE_WINDOW" "$base"
row "$N bottles (this build)" "$new" "$WINDOW"
[ -z "$old" ] || row "$N bottles (OLD_ORCH)" "$old" "$OLD_WINDOW"
echo "(percent of one core; target: $N idle bottles < 5 % after subtracting the idle host)"
