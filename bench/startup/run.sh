#!/usr/bin/env bash
# Startup benchmark: warm images, wall time of `orchestrator start demo -y -- true`
# (three networks, egress healthy, agent provisioned, the command run, full
# teardown) against a bare baseline in the same run: `docker network create`
# x3 + `docker run --rm IMAGE true` + removing the networks.
# Targets (issue 7): <= 2 s and <= 1.5x the baseline.
#
# Usage: bench/startup/run.sh [RUNS]     (default 5; needs demo/run.sh's images)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-5}"
ORCH="${ORCH:-target/x86_64-unknown-linux-gnu/release/orchestrator}"
[ -x "$ORCH" ] || cargo build --release -p orchestrator
"$ORCH" images build --only egress >/dev/null
"$ORCH" images build --only test-agent >/dev/null
IMAGE="$(docker image inspect bot-bottle/test-agent:latest --format '{{.Id}}')"

HOME_DIR="$(mktemp -d /tmp/bb-bench.XXXXXX)"
NET=bb-bench-internet
trap 'docker rm -f bb-bench-up >/dev/null 2>&1; docker network rm $NET >/dev/null 2>&1; BOT_BOTTLE_HOME=$HOME_DIR "$ORCH" cleanup -y >/dev/null 2>&1; rm -rf "$HOME_DIR"' EXIT
cp -r orchestrator/examples/home/. "$HOME_DIR/"
sed -i "s/bb-demo-internet/$NET/" "$HOME_DIR/bottles/demo.md"
docker network create --subnet 10.214.0.0/24 --label dev.bot-bottle.bench=1 "$NET" >/dev/null
export BOT_BOTTLE_HOME="$HOME_DIR"

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

"$ORCH" start demo -y -- true >/dev/null 2>&1 # warm-up (page cache, first health check)

bb=(); base=()
for i in $(seq 1 "$RUNS"); do
  t0=$(now); "$ORCH" start demo -y -- true >/dev/null 2>&1; t1=$(now)
  bb+=("$(ms "$t0" "$t1")")
  t0=$(now)
  for n in a b c; do docker network create --internal --label dev.bot-bottle.bench=1 "bb-bench-$n-$i" >/dev/null; done
  docker run --rm --network "bb-bench-a-$i" "$IMAGE" true
  for n in a b c; do docker network rm "bb-bench-$n-$i" >/dev/null; done
  t1=$(now)
  base+=("$(ms "$t0" "$t1")")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }
m_bb=$(median "${bb[@]}"); m_base=$(median "${base[@]}")
ratio=$(awk -v a="$m_bb" -v b="$m_base" 'BEGIN { printf "%.2f", a / b }')
printf '%-44s %8s %s\n' "what" "median" "runs (ms)"
printf '%-44s %6s ms %s\n' "orchestrator start demo -y -- true" "$m_bb" "${bb[*]}"
printf '%-44s %6s ms %s\n' "baseline: 3x network create + run --rm true" "$m_base" "${base[*]}"
printf 'ratio %s (target <= 1.5), absolute target <= 2000 ms\n' "$ratio"
