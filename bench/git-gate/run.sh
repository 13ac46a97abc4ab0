#!/usr/bin/env bash
# Push a 1,000-commit branch through git-gate and straight to the same sshd,
# several rounds each, and print the times, the overhead ratio and the gate's
# own scan time (from its log). Needs Docker and the local base image.
#
#   bash bench/git-gate/run.sh [COMMITS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMITS=${1:-1000}
ROUNDS=${2:-3}
WORK=bench/.work/git-gate
LABEL=dev.bot-bottle.test=bench-git-gate-$$
NAME=bb-bench-gg-$$
rm -rf "$WORK" && mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

cleanup() {
  docker rm -f -v "$NAME-up" "$NAME-gate" >/dev/null 2>&1 || true
  docker network rm "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "==> release binary and images"
cargo build -q --release -p git-gate
BIN=target/x86_64-unknown-linux-gnu/release/git-gate
mkdir -p "$WORK/ctx-gate" "$WORK/ctx-sshd"
cp images/git-gate.Dockerfile "$WORK/ctx-gate/Dockerfile"; cp "$BIN" "$WORK/ctx-gate/git-gate"
cp images/upstream-sshd.Dockerfile "$WORK/ctx-sshd/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q --label "$LABEL" -t bb-bench/git-gate:latest "$WORK/ctx-gate" >/dev/null
DOCKER_BUILDKIT=0 docker build -q --label "$LABEL" -t bb-bench/upstream-sshd:latest "$WORK/ctx-sshd" >/dev/null

echo "==> upstream sshd and gate"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/key"
docker network create --label "$LABEL" "$NAME" >/dev/null
REPOS=""; for r in $(seq 1 "$ROUNDS"); do REPOS="$REPOS direct$r gated$r"; done
docker run -d --name "$NAME-up" --label "$LABEL" --network "$NAME" --network-alias upstream.example.test \
  -p 127.0.0.1::22 -e AUTHORIZED_KEY="$(cat "$WORK/key.pub")" -e REPOS="$REPOS" bb-bench/upstream-sshd:latest >/dev/null
until docker logs "$NAME-up" 2>&1 | grep -q 'Server listening'; do sleep 0.2; done
HOSTKEY=$(docker logs "$NAME-up" 2>/dev/null | sed -n 's/^HOSTKEY //p')
SSH_PORT=$(docker port "$NAME-up" 22/tcp | head -1 | sed 's/.*://')

mkdir -p "$WORK/config"
{
  echo 'state_dir = "/state"'
  for r in $(seq 1 "$ROUNDS"); do
    printf '[[remote]]\nname = "gated%s"\nupstream = "ssh://git@upstream.example.test/srv/git/gated%s.git"\nidentity_file = "/config/key"\nknown_host_key = "%s"\npush_refs = ["refs/heads/*"]\n' "$r" "$r" "$HOSTKEY"
  done
} > "$WORK/config/git-gate.toml"
cp "$WORK/key" "$WORK/config/key"; chmod 0600 "$WORK/config/"*
docker create --init --name "$NAME-gate" --label "$LABEL" --network "$NAME" -p 127.0.0.1::9418 bb-bench/git-gate:latest >/dev/null
tar -C "$WORK/config" --owner=10003 --group=10003 -cf - . | docker cp - "$NAME-gate:/config"
docker start "$NAME-gate" >/dev/null
until docker logs "$NAME-gate" 2>&1 | grep -q 'git-gate serving'; do
  if [ "$(docker inspect -f '{{.State.Running}}' "$NAME-gate")" != true ]; then docker logs "$NAME-gate"; exit 1; fi
  sleep 0.2
done
GATE_PORT=$(docker port "$NAME-gate" 9418/tcp | head -1 | sed 's/.*://')

echo "==> a $COMMITS-commit branch"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
git init -q -b main "$WORK/src"
python3 - "$COMMITS" > "$WORK/stream" <<'PY'
import sys, random
n = int(sys.argv[1]); rnd = random.Random(42)
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()
out = sys.stdout
for i in range(1, n + 1):
    body = "\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(40)) + "\n"
    data = body.encode()
    msg = f"commit {i}: {rnd.choice(words)} {rnd.choice(words)}\n".encode()
    out.write(f"commit refs/heads/main\nmark :{i}\ncommitter Bench <bench@example.test> {1700000000 + i} +0000\n")
    out.write(f"data {len(msg)}\n"); out.flush(); sys.stdout.buffer.write(msg)
    if i > 1: out.write(f"from :{i-1}\n")
    out.write(f"M 100644 inline src/file{i % 50}.txt\ndata {len(data)}\n"); out.flush(); sys.stdout.buffer.write(data); out.write("\n")
PY
git -C "$WORK/src" fast-import --quiet < "$WORK/stream"
git -C "$WORK/src" reset -q --hard main

export GIT_SSH_COMMAND="ssh -F /dev/null -i $WORK/key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$WORK/known_hosts"
echo "[127.0.0.1]:$SSH_PORT $HOSTKEY" > "$WORK/known_hosts"

now() { date +%s.%N; }
direct=(); gated=(); scans=()
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now); git -C "$WORK/src" push -q "ssh://git@127.0.0.1:$SSH_PORT/srv/git/direct$r.git" main:refs/heads/bench; t1=$(now)
  direct+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); git -C "$WORK/src" push -q "git://127.0.0.1:$GATE_PORT/gated$r.git" main:refs/heads/bench; t1=$(now)
  gated+=("$(echo "$t1 - $t0" | bc)")
  got=$(docker exec -u git "$NAME-up" git --git-dir="/srv/git/gated$r.git" rev-parse refs/heads/bench)
  [ "$got" = "$(git -C "$WORK/src" rev-parse main)" ] || { echo "gated push did not land upstream" >&2; exit 1; }
done
mapfile -t scans < <(docker logs "$NAME-gate" 2>/dev/null | python3 -c '
import sys, json
for l in sys.stdin:
    try: j = json.loads(l)
    except Exception: continue
    f = j.get("fields", {})
    if f.get("message") == "scanned push": print(f["scan_ms"] / 1000, f["commits"])
')

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
md=$(median "${direct[@]}"); mg=$(median "${gated[@]}")
ms=$(median $(printf '%s\n' "${scans[@]}" | cut -d' ' -f1))
echo
printf '| %-34s | %10s |\n' "$COMMITS-commit push ($ROUNDS rounds, median)" "seconds"
printf '|%s|%s|\n' "------------------------------------" "------------"
printf '| %-34s | %10.2f |\n' "straight to sshd (ssh)" "$md"
printf '| %-34s | %10.2f |\n' "through git-gate (git://)" "$mg"
printf '| %-34s | %10.2f |\n' "  of which scanning (gate log)" "$ms"
printf '| %-34s | %9.2fx |\n' "overhead ratio gate / direct" "$(echo "$mg / $md" | bc -l)"
echo
echo "rounds direct: ${direct[*]}"
echo "rounds gated:  ${gated[*]}"
echo "scans (s, commits): ${scans[*]}"
