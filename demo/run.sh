#!/usr/bin/env bash
# The README's main job: on a machine with a Docker Engine and no registry,
# bring up the demo bottle (orchestrator/examples/home, agent `demo`, the
# plain test-agent image), show an allowed request pass and a disallowed one
# refused by egress with its `X-Bottle-Block` text, and tear everything down.
#
# "The internet" of the demo is a container of ours on a Docker network of its
# own (bb-demo-internet, 10.214.0.0/24) under the alias api.example.test; the
# demo bottle names that network in `egress.attach_networks`.
#
# Usage: demo/run.sh            (builds what is missing; needs root only for
#                                the one-time base image bootstrap)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

NET=bb-demo-internet
SUBNET=10.214.0.0/24
UPSTREAM=bb-demo-upstream
LABEL=dev.bot-bottle.demo=1
# cargo puts the binaries under CARGO_TARGET_DIR when it is set (relative to
# the checkout, where this script runs).
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release"
ORCH="$BIN/orchestrator"

DEMO_HOME="$(mktemp -d /tmp/bot-bottle-demo.XXXXXX)"
cleanup() {
  step "removing the demo upstream and its network"
  docker rm -f "$UPSTREAM" >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  BOT_BOTTLE_HOME="$DEMO_HOME" "$ORCH" cleanup --all -y >/dev/null 2>&1 || true
  rm -rf "$DEMO_HOME"
}
trap cleanup EXIT

# First, so a fresh machine asks for root (debootstrap) before the long build.
step "base image (built locally once, no registry; installs debootstrap if missing)"
images/ensure-base.sh

step "building the orchestrator and the sidecar binaries (release, static)"
cargo build --release -p orchestrator -p egress -p cred-proxy -p git-gate

step "images (content-hash tags: unchanged images are not rebuilt)"
"$ORCH" images build --only egress
"$ORCH" images build --only test-agent

step "demo home: $DEMO_HOME (copy of orchestrator/examples/home)"
cp -r orchestrator/examples/home/. "$DEMO_HOME/"
export BOT_BOTTLE_HOME="$DEMO_HOME"

step "the demo's 'internet': $NET ($SUBNET) with api.example.test"
docker rm -f "$UPSTREAM" >/dev/null 2>&1 || true
docker network rm "$NET" >/dev/null 2>&1 || true
if ! docker network inspect "$NET" >/dev/null 2>&1; then
  docker network create --subnet "$SUBNET" --label "$LABEL" "$NET" >/dev/null
elif [ "$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NET")" = "$SUBNET" ]; then
  # Docker 20.10 can keep a count of endpoints that no longer exist after
  # many containers left a network at once ("has active endpoints"); the
  # network is empty and as good as new.
  echo "note: reusing network $NET ($SUBNET): the engine would not remove it" >&2
else
  echo "error: a network $NET exists with another subnet than $SUBNET; remove it with: docker network rm $NET" >&2
  exit 1
fi
docker run -d --name "$UPSTREAM" --label "$LABEL" --network "$NET" --network-alias api.example.test \
  bot-bottle/base:bookworm sh -c 'mkdir -p /srv && echo "hello from api.example.test" > /srv/allowed && cd /srv && exec python3 -m http.server 80' >/dev/null

# `docker run -d` returns before the server listens: wait for it (30 s at most).
deadline=$((SECONDS + 30))
until docker exec "$UPSTREAM" bash -c 'exec 3<>/dev/tcp/127.0.0.1/80' 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "error: the demo upstream ($UPSTREAM) is not listening on port 80 after 30 s; its log:" >&2
    docker logs --tail 20 "$UPSTREAM" >&2 || true
    exit 1
  fi
  sleep 0.1
done

UP_IP="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$UPSTREAM")"

step "orchestrator start demo: an allowed request, then a disallowed one"
set +e
"$ORCH" start demo -y -- bash -c '
  echo "--- GET http://api.example.test/allowed (route: api.example.test, /allowed, GET)"
  curl -sS -m 10 -i http://api.example.test/allowed
  echo
  echo "--- GET http://api.example.test/secret (same host, path not allowed)"
  curl -sS -m 10 -i http://api.example.test/secret
  echo
  echo "--- GET https://example.org/ (no route)"
  curl -sS -m 10 -i https://example.org/ 2>&1
  echo
  echo "--- direct connection to the upstream ('"$UP_IP"') ignoring the proxy"
  curl -sS -m 3 --noproxy "*" http://'"$UP_IP"'/allowed 2>&1 || echo "refused: the bottle has no way out but egress"
'
code=$?
set -e

step "after the session: the containers are gone, the audit trail stays (until cleanup)"
"$ORCH" list
for id in $(ls "$DEMO_HOME/state" 2>/dev/null); do
  "$ORCH" logs "$id" || true
done
exit $code
