//! Every builtin rule: a true positive it must find and a near miss it must
//! not. Samples are generated (never real credentials) so this file does not
//! itself look like a leak to other scanners.

use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n)
            .map(|_| a[(self.next() % a.len() as u64) as usize] as char)
            .collect()
    }
}

const AN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UP: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOW: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const B32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BECH: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";
const DIG: &str = "0123456789";

/// (rule id, text with a secret, near-miss text without one)
fn cases() -> Vec<(&'static str, String, String)> {
    let mut g = Rng(0x9e37_79b9_7f4a_7c15);
    let mut r = |a: &str, n: usize| g.pick(a, n);
    vec![
        ("anthropic-api-key", format!("ANTHROPIC_API_KEY=sk-ant-api03-{}AA", r(B64URL, 93)), "ANTHROPIC_API_KEY=sk-ant-xxxx".into()),
        ("anthropic-admin-key", format!("key: sk-ant-admin01-{}AA", r(B64URL, 93)), "key: sk-ant-admin01-xxxxxxxx".into()),
        ("openai-api-key", format!("OPENAI_API_KEY=sk-proj-{}T3BlbkFJ{}", r(B64URL, 74), r(B64URL, 74)), format!("OPENAI_API_KEY=sk-proj-{}", r(AN, 40))),
        ("google-api-key", format!("key=AIza{}", r(B64URL, 35)), "key=AIzaSyYOUR_API_KEY".into()),
        ("groq-api-key", format!("GROQ_API_KEY=gsk_{}", r(AN, 52)), "GROQ_API_KEY=gsk_your_key_here".into()),
        ("xai-api-key", format!("XAI_API_KEY=xai-{}", r(AN, 80)), format!("XAI_API_KEY=xai-{}", r(AN, 20))),
        ("mistral-api-key", format!("MISTRAL_API_KEY=\"{}\"", r(AN, 32)), format!("MISTRAL_MODEL=\"{}\"", r(AN, 32))),
        ("cohere-api-key", format!("cohere_api_key = '{}'", r(AN, 40)), format!("cohere_api_key = '{}'", "x".repeat(40))),
        ("huggingface-access-token", format!("HF_TOKEN=hf_{}", r(LETTERS, 34)), format!("HF_TOKEN=hf_{}", "x".repeat(34))),
        ("huggingface-org-token", format!("token=api_org_{}", r(LETTERS, 34)), "token=api_org_example".into()),
        ("replicate-api-token", format!("REPLICATE_API_TOKEN=r8_{}", r(AN, 37)), "REPLICATE_API_TOKEN=r8_...".into()),
        ("perplexity-api-key", format!("pplx-{}", r(AN, 48)), format!("pplx-{}", r(AN, 12))),
        ("openrouter-api-key", format!("sk-or-v1-{}", r(HEX, 64)), "sk-or-v1-xxxxxxxx".into()),
        ("langsmith-api-key", format!("lsv2_pt_{}_{}", r(HEX, 32), r(HEX, 10)), format!("lsv2_pt_{}", r(HEX, 32))),
        ("together-api-key", format!("tgp_v1_{}", r(B64URL, 43)), "tgp_v1_abc".into()),
        ("deepseek-api-key", format!("DEEPSEEK_API_KEY=sk-{}", r(HEX, 32)), format!("OTHER_API_KEY=sk-{}", r(HEX, 32))),
        ("aws-access-key-id", format!("aws_access_key_id = AKIA{}", r(B32, 16)), "aws_access_key_id = AKIAIOSFODNN7EXAMPLE".into()),
        ("aws-secret-access-key", format!("aws_secret_access_key = {}", r(B64, 40)), "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
        ("gcp-service-account-key", format!("{{\"type\": \"service_account\", \"private_key_id\": \"{}\"}}", r(HEX, 40)), "{\"private_key_id\": \"\"}".into()),
        ("gcp-oauth-client-secret", format!("client_secret: GOCSPX-{}", r(B64URL, 28)), "client_secret: GOCSPX-xxxx".into()),
        ("google-oauth-access-token", format!("Bearer ya29.{}", r(B64URL, 120)), "ya29.short".into()),
        ("google-oauth-refresh-token", format!("refresh_token=1//0{}", r(B64URL, 90)), "path 1//0 x".into()),
        ("azure-storage-account-key", format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={}==;EndpointSuffix=core.windows.net", r(B64, 86)), "AccountKey=<your key>".into()),
        ("azure-ad-client-secret", format!("AZURE_CLIENT_SECRET={}8Q~{}", r(AN, 3), r(AN, 31)), "AZURE_CLIENT_SECRET=abc~def".into()),
        ("azure-sas-token", format!("https://a.blob.core.windows.net/c?sv=2022-11-02&ss=b&sp=r&sig={}%3D", r(AN, 43)), "https://a.blob.core.windows.net/c?sv=2022-11-02&sig=".into()),
        ("azure-devops-pat", format!("pat={}JQQJ99{}AZDO{}", r(AN, 52), r(AN, 3), r(AN, 4)), format!("pat={}", r(AN, 84))),
        ("digitalocean-token", format!("DO_TOKEN=dop_v1_{}", r(HEX, 64)), "DO_TOKEN=dop_v1_xxx".into()),
        ("alibaba-access-key-id", format!("ak=LTAI{}", r(AN, 20)), "ak=LTAIxxxxxxxxxxxxxxxxxxxx".into()),
        ("heroku-api-key", format!("HEROKU_API_KEY=HRKU-AA{}", r(B64URL, 58)), "HEROKU_API_KEY=HRKU-AAxxxx".into()),
        ("hashicorp-vault-token", format!("VAULT_TOKEN=hvs.{}", r(B64URL, 95)), "VAULT_TOKEN=hvs.example".into()),
        ("terraform-cloud-token", format!("token = \"{}.atlasv1.{}\"", r(AN, 14), r(B64URL, 67)), "token = \"abc.atlasv1.def\"".into()),
        ("doppler-token", format!("DOPPLER_TOKEN=dp.st.{}", r(AN, 43)), "DOPPLER_TOKEN=dp.st.dev".into()),
        ("cloudflare-origin-ca-key", format!("v1.0-{}-{}", r(HEX, 24), r(HEX, 146)), "version v1.0-beta".into()),
        ("databricks-token", format!("DATABRICKS_TOKEN=dapi{}", r(HEX, 32)), "DATABRICKS_TOKEN=dapi-token".into()),
        ("pulumi-access-token", format!("PULUMI_ACCESS_TOKEN=pul-{}", r(HEX, 40)), "PULUMI_ACCESS_TOKEN=pul-xxxx".into()),
        ("supabase-secret", format!("SUPABASE_ACCESS_TOKEN=sbp_{}", r(HEX, 40)), "SUPABASE_ACCESS_TOKEN=sbp_".into()),
        ("planetscale-token", format!("password: pscale_pw_{}", r(B64URL, 43)), "password: pscale_pw_".into()),
        ("github-pat", format!("GH_TOKEN=ghp_{}", r(AN, 36)), format!("GH_TOKEN=ghp_{}", "x".repeat(36))),
        ("github-oauth-token", format!("gho_{}", r(AN, 36)), format!("gho_{}", r(AN, 30))),
        ("github-user-to-server-token", format!("ghu_{}", r(AN, 36)), format!("ghu_{}", r(AN, 35))),
        ("github-server-to-server-token", format!("ghs_{}", r(AN, 36)), format!("ghs_{}", r(AN, 37))),
        ("github-refresh-token", format!("ghr_{}", r(AN, 76)), "ghr_xxxx".into()),
        ("github-fine-grained-pat", format!("github_pat_{}_{}", r(AN, 22), r(AN, 59)), format!("github_pat_{}", r(AN, 22))),
        ("gitlab-pat", format!("GITLAB_TOKEN=glpat-{}", r(B64URL, 20)), "GITLAB_TOKEN=glpat-xxxxxxxxxxxxxxxxxxxx".into()),
        ("gitlab-pipeline-trigger-token", format!("glptt-{}", r(HEX, 40)), "glptt-1234".into()),
        ("gitlab-runner-token", format!("token = \"glrt-{}\"", r(B64URL, 20)), "token = \"glrt-short\"".into()),
        ("gitlab-deploy-token", format!("gldt-{}", r(B64URL, 20)), "gldt-".into()),
        ("gitlab-ci-job-token", format!("glcbt-{}", r(B64URL, 24)), "glcbt-abc".into()),
        ("gitlab-feed-token", format!("glft-{}", r(B64URL, 20)), "glft-abc".into()),
        ("gitlab-oauth-app-secret", format!("gloas-{}", r(HEX, 64)), "gloas-abc".into()),
        ("gitlab-other-token", format!("glsoat-{}", r(B64URL, 20)), "glsoat-abc".into()),
        ("bitbucket-app-password", format!("BITBUCKET_APP_PASSWORD=ATBB{}", r(AN, 32)), "BITBUCKET_APP_PASSWORD=ATBB".into()),
        ("atlassian-api-token", format!("JIRA_TOKEN=ATATT3{}", r(B64URL, 180)), "JIRA_TOKEN=ATATT3xFfGF0".into()),
        ("bitbucket-access-token", format!("ATCTT3{}", r(B64URL, 180)), "ATCTT3xFfGF0".into()),
        ("npm-access-token", format!("//registry.npmjs.org/:_authToken=npm_{}", r(AN, 36)), "//registry.npmjs.org/:_authToken=${NPM_TOKEN}".into()),
        ("pypi-upload-token", format!("password = pypi-AgEIcHlwaS5vcmc{}", r(B64URL, 120)), "password = pypi-AgEI".into()),
        ("crates-io-api-token", format!("CARGO_REGISTRY_TOKEN=cio{}", r(AN, 32)), "let precious_metal = 1;".into()),
        ("dockerhub-token", format!("DOCKERHUB_TOKEN=dckr_pat_{}", r(B64URL, 27)), "DOCKERHUB_TOKEN=dckr_pat_xxx".into()),
        ("rubygems-api-key", format!("GEM_HOST_API_KEY: rubygems_{}", r(HEX, 48)), "GEM_HOST_API_KEY: rubygems_".into()),
        ("nuget-api-key", format!("NUGET_KEY=oy2{}", r(LOW, 43)), "NUGET_KEY=oy2abc".into()),
        ("slack-bot-token", format!("SLACK_BOT_TOKEN=xoxb-{}-{}-{}", r(DIG, 12), r(DIG, 13), r(AN, 24)), "SLACK_BOT_TOKEN=xoxb-your-token".into()),
        ("slack-user-token", format!("xoxp-{}-{}-{}-{}", r(DIG, 12), r(DIG, 12), r(DIG, 13), r(HEX, 32)), "xoxp-1234".into()),
        ("slack-app-token", format!("SLACK_APP_TOKEN=xapp-1-{}-{}-{}", r(UP, 11), r(DIG, 13), r(HEX, 64)), "SLACK_APP_TOKEN=xapp-1-".into()),
        ("slack-config-token", format!("xoxe.xoxp-1-{}", r(UP, 150)), "xoxe.xoxp-1-ABC".into()),
        ("slack-legacy-token", format!("xoxs-{}-{}-{}", r(DIG, 10), r(DIG, 10), r(AN, 40)), "xoxs-".into()),
        ("slack-webhook-url", format!("https://hooks.slack.com/services/T{}/B{}/{}", r(UP, 10), r(UP, 10), r(AN, 24)), "https://hooks.slack.com/services/".into()),
        ("discord-webhook-url", format!("https://discord.com/api/webhooks/{}/{}", r(DIG, 19), r(B64URL, 68)), "https://discord.com/api/webhooks/123/abc".into()),
        ("discord-bot-token", format!("DISCORD_TOKEN=M{}.{}.{}", r(B64URL, 25), r(B64URL, 6), r(B64URL, 38)), format!("DISCORD_CHANNEL=M{}", r(B64URL, 25))),
        ("telegram-bot-token", format!("TELEGRAM_BOT_TOKEN={}:AA{}", r(DIG, 10), r(B64URL, 33)), "TELEGRAM_BOT_TOKEN=123:AAxx".into()),
        ("twilio-api-key", format!("TWILIO_API_KEY=SK{}", r(HEX, 32)), format!("TWILIO_ACCOUNT=AC{}", r(HEX, 32))),
        ("sendgrid-api-key", format!("SENDGRID_API_KEY=SG.{}.{}", r(B64URL, 22), r(B64URL, 43)), "SENDGRID_API_KEY=SG.xxxx.yyyy".into()),
        ("mailgun-api-key", format!("MAILGUN_KEY=key-{}", r(HEX, 32)), "data-key-name".into()),
        ("mailchimp-api-key", format!("MAILCHIMP_KEY={}-us21", r(HEX, 32)), "region-us21".into()),
        ("stripe-secret-key", format!("STRIPE_KEY=sk_live_{}", r(AN, 99)), "STRIPE_KEY=sk_live_xxxxxxxxxxxxxxxxxxxxxxxx".into()),
        ("stripe-webhook-secret", format!("whsec_{}", r(AN, 32)), "whsec_".into()),
        ("square-access-token", format!("SQUARE_TOKEN=EAAA{}", r(B64URL, 60)), "SQUARE_TOKEN=EAAAxx".into()),
        ("square-oauth-secret", format!("sq0csp-{}", r(B64URL, 43)), "sq0csp-abc".into()),
        ("shopify-token", format!("SHOPIFY_TOKEN=shpat_{}", r(HEX, 32)), "SHOPIFY_TOKEN=shpat_xxx".into()),
        ("braintree-access-token", format!("access_token$production${}${}", r(LOW, 16), r(HEX, 32)), "access_token$production$".into()),
        ("private-key", format!("-----BEGIN RSA PRIVATE KEY-----\n{}\n{}\n-----END RSA PRIVATE KEY-----", r(B64, 64), r(B64, 64)), format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----", r(B64, 64))),
        ("openssh-private-key", format!("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA{}\n-----END OPENSSH PRIVATE KEY-----", r(B64, 70)), "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n-----END OPENSSH PRIVATE KEY-----".into()),
        ("pgp-private-key", format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQdG{}\n-----END PGP PRIVATE KEY BLOCK-----", r(B64, 80)), format!("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ{}\n-----END PGP PUBLIC KEY BLOCK-----", r(B64, 80))),
        ("putty-private-key", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPublic-Lines: 2\nAAAA\nPrivate-Lines: 1\nAAAA".to_string(), "PuTTY-User-Key-File-3: ssh-ed25519\n".into()),
        ("age-secret-key", format!("AGE-SECRET-KEY-1{}", r(BECH, 58)), "AGE-SECRET-KEY-1XXXX".into()),
        ("jwt", format!("token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{}.{}", r(B64URL, 20), r(B64URL, 43)), "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.".into()),
        ("database-url-password", format!("DATABASE_URL=postgres://app:{}@db.internal:5432/app", r(AN, 20)), "DATABASE_URL=postgres://app:${DB_PASSWORD}@db.internal:5432/app".into()),
        ("url-credentials", format!("git clone https://deploy:{}@git.example.com/repo.git", r(AN, 20)), "git clone https://user:<password>@git.example.com/repo.git".into()),
        ("generic-secret-assignment", format!("client_secret = \"{}\"", r(AN, 24)), "password = \"changeme-please\"".into()),
        ("authorization-bearer-token", format!("Authorization: Bearer {}", r(B64URL, 40)), "Authorization: Bearer ${TOKEN}".into()),
        ("authorization-basic-credentials", format!("Authorization: Basic {}", r(B64, 28)), "Authorization: Basic xxxxxxxxxxxxxxxx".into()),
        ("linear-api-key", format!("LINEAR_API_KEY=lin_api_{}", r(AN, 40)), "LINEAR_API_KEY=lin_api_".into()),
        ("notion-token", format!("NOTION_TOKEN=ntn_{}{}", r(DIG, 11), r(AN, 35)), "NOTION_TOKEN=ntn_123".into()),
        ("postman-api-key", format!("PMAK-{}-{}", r(HEX, 24), r(HEX, 34)), "PMAK-abc".into()),
        ("sentry-token", format!("SENTRY_AUTH_TOKEN=sntryu_{}", r(HEX, 64)), "SENTRY_AUTH_TOKEN=sntryu_".into()),
        ("newrelic-user-api-key", format!("NRAK-{}", r(UP, 27)), "NRAK-ABC".into()),
        ("grafana-token", format!("glsa_{}_{}", r(AN, 32), r(HEX, 8)), "glsa_abc".into()),
        ("figma-token", format!("FIGMA_TOKEN=figd_{}", r(B64URL, 40)), "FIGMA_TOKEN=figd_".into()),
        ("onepassword-service-account-token", format!("OP_SERVICE_ACCOUNT_TOKEN=ops_eyJ{}", r(B64URL, 200)), "OP_SERVICE_ACCOUNT_TOKEN=ops_eyJ".into()),
        ("datadog-api-key", format!("DD_API_KEY={}", r(HEX, 32)), format!("DD_SITE={}", r(HEX, 32))),
        ("okta-api-token", format!("OKTA_API_TOKEN=00{}", r(B64URL, 40)), "OKTA_API_TOKEN=00000".into()),
    ]
}

fn scanner() -> Scanner {
    Scanner::new(
        Rules::builtin(),
        KnownSecrets::empty(),
        ScanOptions::default(),
    )
}

#[test]
fn every_builtin_rule_has_a_case() {
    let ids: Vec<&str> = cases().iter().map(|c| c.0).collect();
    let missing: Vec<_> = scanner::builtin_rule_ids()
        .into_iter()
        .filter(|id| !ids.contains(id))
        .collect();
    assert!(missing.is_empty(), "rules without a test case: {missing:?}");
    assert!(scanner::builtin_rule_ids().len() >= 60);
}

#[test]
fn true_positives_and_near_misses() {
    let s = scanner();
    let mut failures = Vec::new();
    for (id, pos, neg) in cases() {
        let found = s.scan(pos.as_bytes());
        if !found.iter().any(|f| f.rule_id == id) {
            failures.push(format!(
                "{id}: missed its true positive (found {:?})",
                found.iter().map(|f| &f.rule_id).collect::<Vec<_>>()
            ));
        }
        for f in &found {
            // The redacted form never reveals the secret.
            assert!(
                f.redacted.chars().count() <= 5,
                "{id}: redacted too long: {}",
                f.redacted
            );
        }
        let found = s.scan(neg.as_bytes());
        if let Some(f) = found.iter().find(|f| f.rule_id == id) {
            failures.push(format!(
                "{id}: flagged its near miss {neg:?} ({})",
                f.redacted
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn catch_all_rules_ignore_code_and_placeholders() {
    let s = scanner();
    for line in [
        "let token_user = token_user_info.User.Sid;",
        "    pub const CREDENTIAL: sections::Credential = sections::Credential;",
        "token: CFStringTokenizerRef,",
        "aws_access_key_id = \"AKIAIOSFODNN7EXAMPLE\"",
        "let url = parse(\"http://user:pass%20word@example.com/path\");",
        "api_key = \"your-api-key-goes-here-1\"",
        "password: ${{ secrets.DB_PASSWORD }}",
        "secret_key = get_secret_key_from_vault(config)",
    ] {
        let found = s.scan(line.as_bytes());
        assert!(found.is_empty(), "{line:?} gave {found:?}");
    }
    // Unquoted values still count at the end of a line (.env, YAML).
    let env = format!("DB_PASSWORD={}\n", "q7Rk2Lm9Xz4Vb1Nt8Hs3");
    assert_eq!(
        s.scan(env.as_bytes())[0].rule_id,
        "generic-secret-assignment"
    );
}
