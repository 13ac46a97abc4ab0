#!/usr/bin/env python3
"""Recall and precision of a gitleaks-style JSON report against truth.json,
by (file name, line). Prints: findings recall precision missed-formats."""
import collections, json, os, sys

truth = json.load(open(sys.argv[1]))
report = json.load(open(sys.argv[2])) or []
want = {(t["file"], t["line"]): t["format"] for t in truth}
got = {(os.path.basename(f["File"]), f["StartLine"]) for f in report}
tp = len(set(want) & got)
recall = tp / len(want) if want else 1.0
precision = tp / len(got) if got else 1.0
missed = collections.Counter(v for k, v in want.items() if k not in got)
print("%d %.4f %.4f %s" % (len(report), recall, precision, ",".join("%s:%d" % kv for kv in sorted(missed.items())) or "-"))
