#!/usr/bin/env python3
"""Generate a corpus of text files with random tokens of formats that both
scanner's builtin rules and gitleaks' default config claim, plus decoys
(placeholders, hashes, ids) that are not secrets. Writes truth.json: the
(file, line) of every planted secret. Deterministic for a given seed."""
import json, os, random, string, sys

out, files, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1
rng = random.Random(seed)
AN = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64URL = AN + "-_"
B64 = AN + "+/"
UP = string.ascii_uppercase + string.digits
def r(a, n): return "".join(rng.choice(a) for _ in range(n))

# (name, key, generator) — the key name gives gitleaks' context rules their keyword.
FORMATS = [
    ("github-pat", "GITHUB_TOKEN", lambda: "ghp_" + r(AN, 36)),
    ("github-oauth", "GH_OAUTH", lambda: "gho_" + r(AN, 36)),
    ("github-app", "GH_APP_TOKEN", lambda: "ghs_" + r(AN, 36)),
    ("github-fine-grained", "GH_PAT", lambda: "github_pat_" + r(AN, 22) + "_" + r(AN, 59)),
    ("gitlab-pat", "GITLAB_TOKEN", lambda: "glpat-" + r(B64URL, 20)),
    ("slack-bot", "SLACK_BOT_TOKEN", lambda: "xoxb-%s-%s-%s" % (r("0123456789", 12), r("0123456789", 13), r(AN, 24))),
    ("slack-webhook", "SLACK_WEBHOOK", lambda: "https://hooks.slack.com/services/T%s/B%s/%s" % (r(UP, 10), r(UP, 10), r(AN, 24))),
    ("stripe", "STRIPE_SECRET_KEY", lambda: "sk_live_" + r(AN, 99)),
    ("npm", "NPM_TOKEN", lambda: "npm_" + r(AN, 36)),
    ("pypi", "PYPI_TOKEN", lambda: "pypi-AgEIcHlwaS5vcmc" + r(B64URL, 70)),
    ("aws-key-id", "AWS_ACCESS_KEY_ID", lambda: "AKIA" + r("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
    ("anthropic", "ANTHROPIC_API_KEY", lambda: "sk-ant-api03-" + r(B64URL, 93) + "AA"),
    ("openai", "OPENAI_API_KEY", lambda: "sk-proj-" + r(B64URL, 74) + "T3BlbkFJ" + r(B64URL, 74)),
    ("google-api", "GOOGLE_API_KEY", lambda: "AIza" + r(B64URL, 35)),
    ("sendgrid", "SENDGRID_API_KEY", lambda: "SG." + r(B64URL, 22) + "." + r(B64URL, 43)),
    ("age", "AGE_KEY", lambda: "AGE-SECRET-KEY-1" + r("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
    ("digitalocean", "DO_TOKEN", lambda: "dop_v1_" + r(HEX, 64)),
    ("shopify", "SHOPIFY_TOKEN", lambda: "shpat_" + r(HEX, 32)),
    ("huggingface", "HF_TOKEN", lambda: "hf_" + r(string.ascii_letters, 34)),
    ("doppler", "DOPPLER_TOKEN", lambda: "dp.pt." + r(AN, 43)),
    ("databricks", "DATABRICKS_TOKEN", lambda: "dapi" + r(HEX, 32)),
    ("linear", "LINEAR_API_KEY", lambda: "lin_api_" + r(AN, 40)),
    ("postman", "POSTMAN_API_KEY", lambda: "PMAK-%s-%s" % (r(HEX, 24), r(HEX, 34))),
    ("pulumi", "PULUMI_ACCESS_TOKEN", lambda: "pul-" + r(HEX, 40)),
    ("rubygems", "GEM_HOST_API_KEY", lambda: "rubygems_" + r(HEX, 48)),
    ("newrelic", "NEW_RELIC_API_KEY", lambda: "NRAK-" + r(UP, 27)),
    ("planetscale", "PLANETSCALE_PASSWORD", lambda: "pscale_pw_" + r(B64URL, 43)),
    ("terraform", "TF_TOKEN", lambda: r(AN, 14) + ".atlasv1." + r(B64URL, 67)),
    ("grafana-sa", "GRAFANA_TOKEN", lambda: "glsa_%s_%s" % (r(AN, 32), r(HEX, 8))),
    ("jwt", "ID_TOKEN", lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI" + r(B64URL, 30) + "." + r(B64URL, 43)),
]
PEM = lambda: "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(r(B64, 64) for _ in range(8)) + "\n-----END RSA PRIVATE KEY-----"

DECOYS = [
    lambda: 'GITHUB_TOKEN = "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"',
    lambda: 'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"',
    lambda: 'password = "changeme"',
    lambda: 'commit = "%s"' % r(HEX, 40),
    lambda: 'id = "%s-%s-%s-%s-%s"' % (r(HEX, 8), r(HEX, 4), r(HEX, 4), r(HEX, 4), r(HEX, 12)),
    lambda: 'sha256 = "%s"' % r(HEX, 64),
    lambda: "ANTHROPIC_API_KEY=sk-ant-xxxx",
    lambda: 'token = os.environ["TOKEN"]',
    lambda: 'api_key = "${API_KEY}"',
    lambda: "url = https://example.com/path/%s" % r(AN, 12),
]
WORDS = "let fn return value config server client request response handler error result data buffer index count".split()

os.makedirs(out, exist_ok=True)
truth = []
for i in range(files):
    name = "f%04d.%s" % (i, rng.choice(["py", "env", "yaml", "js", "txt", "toml"]))
    lines = []
    for _ in range(rng.randint(80, 200)):
        x = rng.random()
        if x < 0.05:
            fmt = rng.choice(FORMATS)
            lines.append(('%s = "%s"' % (fmt[1], fmt[2]()), fmt[0]))
        elif x < 0.055:
            lines.append((PEM(), "private-key"))
        elif x < 0.09:
            lines.append((rng.choice(DECOYS)(), None))
        else:
            lines.append(("    " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))), None))
    text, ln = [], 1
    for line, kind in lines:
        if kind:
            truth.append({"file": name, "line": ln, "format": kind})
        text.append(line)
        ln += line.count("\n") + 1
    with open(os.path.join(out, name), "w") as f:
        f.write("\n".join(text) + "\n")
with open(os.path.join(os.path.dirname(out.rstrip("/")) or ".", "truth.json"), "w") as f:
    json.dump(truth, f)
print(len(truth), "secrets planted in", files, "files")
