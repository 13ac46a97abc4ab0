//! The builtin rules, written for this crate from each provider's public
//! token format. Prefixed formats are matched by prefix and shape; formats
//! without a prefix only next to a key name that mentions the provider.

use crate::rules::{AllowlistSpec, RuleSpec};

/// How a rule's regex is built.
enum Pat {
    /// A complete pattern.
    Raw(&'static str),
    /// `<key mentioning one of names> = <value>`: the value pattern is the
    /// secret (matched case-sensitively).
    Assign(&'static str, &'static str),
}

struct Def {
    id: &'static str,
    description: &'static str,
    pat: Pat,
    keywords: &'static [&'static str],
    entropy: f64,
    /// Allowlist regexes on the secret (placeholders, documented examples).
    allow: &'static [&'static str],
    /// Allowlist stopwords: a secret containing one is a placeholder.
    stop: &'static [&'static str],
}

const fn def(
    id: &'static str,
    description: &'static str,
    pat: Pat,
    keywords: &'static [&'static str],
    entropy: f64,
) -> Def {
    Def {
        id,
        description,
        pat,
        keywords,
        entropy,
        allow: &[],
        stop: &[],
    }
}

const fn def_allow(
    id: &'static str,
    description: &'static str,
    pat: Pat,
    keywords: &'static [&'static str],
    entropy: f64,
    allow: &'static [&'static str],
) -> Def {
    Def {
        id,
        description,
        pat,
        keywords,
        entropy,
        allow,
        stop: &[],
    }
}

/// A catch-all rule: template references, placeholders, examples and
/// values without a digit are not findings.
const fn def_generic(
    id: &'static str,
    description: &'static str,
    pat: Pat,
    keywords: &'static [&'static str],
    entropy: f64,
) -> Def {
    Def {
        id,
        description,
        pat,
        keywords,
        entropy,
        allow: GENERIC_ALLOW,
        stop: GENERIC_STOP,
    }
}

use Pat::{Assign, Raw};

const GENERIC_ALLOW: &[&str] = &[
    r"^\$\{?[A-Za-z_{(]",
    r"^\{\{",
    r"^<[^>]*>?$",
    r"^%[sv(]",
    r"^[^0-9]*$",
    r"::",
];

const GENERIC_STOP: &[&str] = &[
    "example",
    "sample",
    "dummy",
    "placeholder",
    "changeme",
    "change_me",
    "redacted",
    "xxxx",
    "****",
    "your_",
    "your-",
    "pass",
    "secret",
    "token",
    "1234567",
    "abcdef",
];

#[rustfmt::skip]
const DEFS: &[Def] = &[
    // ---- LLM providers
    def("anthropic-api-key", "Anthropic API key", Raw(r"\b(sk-ant-api\d{2}-[A-Za-z0-9_-]{80,100}AA)(?:[^A-Za-z0-9_-]|$)"), &["sk-ant-api"], 3.0),
    def("anthropic-admin-key", "Anthropic Admin API key", Raw(r"\b(sk-ant-admin\d{2}-[A-Za-z0-9_-]{80,100}AA)(?:[^A-Za-z0-9_-]|$)"), &["sk-ant-admin"], 3.0),
    def("openai-api-key", "OpenAI API key", Raw(r"\b(sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,200}T3BlbkFJ[A-Za-z0-9_-]{20,200})(?:[^A-Za-z0-9_-]|$)"), &["t3blbkfj"], 3.0),
    def("google-api-key", "Google API key (Gemini, Maps, Firebase, GCP)", Raw(r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)"), &["aiza"], 3.0),
    def("groq-api-key", "Groq API key", Raw(r"\b(gsk_[A-Za-z0-9]{52})\b"), &["gsk_"], 3.0),
    def("xai-api-key", "xAI (Grok) API key", Raw(r"\b(xai-[A-Za-z0-9]{80})\b"), &["xai-"], 3.0),
    def("mistral-api-key", "Mistral AI API key", Assign("mistral", r"[A-Za-z0-9]{32}"), &["mistral"], 3.0),
    def("cohere-api-key", "Cohere API key", Assign("cohere|co_api_", r"[A-Za-z0-9]{40}"), &["cohere", "co_api_key"], 3.0),
    def("huggingface-access-token", "Hugging Face access token", Raw(r"\b(hf_[A-Za-z]{34})\b"), &["hf_"], 3.0),
    def("huggingface-org-token", "Hugging Face organization API token", Raw(r"\b(api_org_[A-Za-z]{34})\b"), &["api_org_"], 3.0),
    def("replicate-api-token", "Replicate API token", Raw(r"\b(r8_[A-Za-z0-9]{37})\b"), &["r8_"], 3.0),
    def("perplexity-api-key", "Perplexity API key", Raw(r"\b(pplx-[A-Za-z0-9]{48})\b"), &["pplx-"], 3.0),
    def("openrouter-api-key", "OpenRouter API key", Raw(r"\b(sk-or-v1-[a-f0-9]{64})\b"), &["sk-or-v1-"], 3.0),
    def("langsmith-api-key", "LangSmith API key", Raw(r"\b(lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10})\b"), &["lsv2_"], 3.0),
    def("together-api-key", "Together AI API key", Raw(r"\b(tgp_v1_[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)"), &["tgp_v1_"], 3.0),
    def("deepseek-api-key", "DeepSeek API key", Assign("deepseek", r"sk-[a-f0-9]{32}"), &["deepseek"], 3.0),
    // ---- Cloud
    def_allow("aws-access-key-id", "AWS access key ID", Raw(r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b"), &["akia", "asia", "abia", "acca"], 3.0, &[r"EXAMPLE$"]),
    def_allow("aws-secret-access-key", "AWS secret access key", Raw(r#"(?i)(?:aws[\w.-]{0,20}secret|secret[_.-]?access)[\w.-]{0,20}["']?[ \t]*(?:=|:=|:|=>)[ \t]*["']?(?-i:([A-Za-z0-9/+]{40}))(?:[^A-Za-z0-9/+=]|$)"#), &["secret"], 3.5, &[r"EXAMPLEKEY$"]),
    def("gcp-service-account-key", "Google Cloud service account key file", Raw(r#""private_key_id"\s*:\s*"([a-f0-9]{40})""#), &["private_key_id"], 3.0),
    def("gcp-oauth-client-secret", "Google OAuth client secret", Raw(r"\b(GOCSPX-[A-Za-z0-9_-]{28})(?:[^A-Za-z0-9_-]|$)"), &["gocspx-"], 3.0),
    def("google-oauth-access-token", "Google OAuth access token", Raw(r"\b(ya29\.[A-Za-z0-9_-]{30,})"), &["ya29."], 3.0),
    def("google-oauth-refresh-token", "Google OAuth refresh token", Raw(r"(?:^|[^A-Za-z0-9+/_-])(1//0[A-Za-z0-9_-]{40,})(?:[^A-Za-z0-9+/=_-]|$)"), &["1//0"], 3.0),
    def("azure-storage-account-key", "Azure storage account key", Raw(r"(?i)AccountKey=(?-i:([A-Za-z0-9+/]{86}==))"), &["accountkey="], 3.0),
    def("azure-ad-client-secret", "Azure AD (Entra ID) client secret", Raw(r"(?:^|[^A-Za-z0-9_~.-])([A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34})(?:[^A-Za-z0-9_~.-]|$)"), &["q~"], 3.0),
    def("azure-sas-token", "Azure shared access signature", Raw(r#"(?i)\bsv=\d{4}-\d\d-\d\d&[^\s"'<>]{0,300}?\bsig=(?-i:([A-Za-z0-9%+/]{40,100}))"#), &["sig="], 3.0),
    def("azure-devops-pat", "Azure DevOps personal access token", Raw(r"\b([A-Za-z0-9]{52}JQQJ99[A-Za-z0-9]{3}AZDO[A-Za-z0-9]{4})\b"), &["azdo"], 3.0),
    def("digitalocean-token", "DigitalOcean token", Raw(r"\b(do[por]_v1_[a-f0-9]{64})\b"), &["dop_v1_", "doo_v1_", "dor_v1_"], 3.0),
    def("alibaba-access-key-id", "Alibaba Cloud AccessKey ID", Raw(r"\b(LTAI[A-Za-z0-9]{20})\b"), &["ltai"], 3.0),
    def("heroku-api-key", "Heroku API key", Raw(r"\b(HRKU-AA[A-Za-z0-9_-]{58})(?:[^A-Za-z0-9_-]|$)"), &["hrku-"], 3.0),
    def("hashicorp-vault-token", "HashiCorp Vault token", Raw(r"\b(hv[sb]\.[A-Za-z0-9_-]{90,200})"), &["hvs.", "hvb."], 3.0),
    def("terraform-cloud-token", "Terraform Cloud / Enterprise API token", Raw(r"\b([A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70})"), &[".atlasv1."], 3.0),
    def("doppler-token", "Doppler token", Raw(r"\b(dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44})\b"), &["dp.pt.", "dp.st.", "dp.sa.", "dp.ct.", "dp.scim.", "dp.audit."], 3.0),
    def("cloudflare-origin-ca-key", "Cloudflare Origin CA key", Raw(r"\b(v1\.0-[a-f0-9]{24}-[a-f0-9]{146})\b"), &["v1.0-"], 3.0),
    def("databricks-token", "Databricks personal access token", Raw(r"\b(dapi[a-f0-9]{32}(?:-\d)?)\b"), &["dapi"], 3.0),
    def("pulumi-access-token", "Pulumi access token", Raw(r"\b(pul-[a-f0-9]{40})\b"), &["pul-"], 3.0),
    def("supabase-secret", "Supabase access token or secret key", Raw(r"\b(sbp_[a-f0-9]{40}|sb_secret_[A-Za-z0-9_-]{31,})"), &["sbp_", "sb_secret_"], 3.0),
    def("planetscale-token", "PlanetScale token or password", Raw(r"\b(pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_.=-]{32,64})"), &["pscale_"], 3.0),
    // ---- Code hosting and CI
    def("github-pat", "GitHub personal access token (classic)", Raw(r"\b(ghp_[A-Za-z0-9]{36})\b"), &["ghp_"], 3.0),
    def("github-oauth-token", "GitHub OAuth access token", Raw(r"\b(gho_[A-Za-z0-9]{36})\b"), &["gho_"], 3.0),
    def("github-user-to-server-token", "GitHub App user-to-server token", Raw(r"\b(ghu_[A-Za-z0-9]{36})\b"), &["ghu_"], 3.0),
    def("github-server-to-server-token", "GitHub App installation (server-to-server) token", Raw(r"\b(ghs_[A-Za-z0-9]{36})\b"), &["ghs_"], 3.0),
    def("github-refresh-token", "GitHub App refresh token", Raw(r"\b(ghr_[A-Za-z0-9]{36,76})\b"), &["ghr_"], 3.0),
    def("github-fine-grained-pat", "GitHub fine-grained personal access token", Raw(r"\b(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b"), &["github_pat_"], 3.0),
    def("gitlab-pat", "GitLab personal, project or group access token", Raw(r"\b(glpat-[A-Za-z0-9_-]{20}[A-Za-z0-9_.-]{0,300})"), &["glpat-"], 3.0),
    def("gitlab-pipeline-trigger-token", "GitLab pipeline trigger token", Raw(r"\b(glptt-[a-f0-9]{40})\b"), &["glptt-"], 3.0),
    def("gitlab-runner-token", "GitLab runner authentication or registration token", Raw(r"\b(glrt-[A-Za-z0-9_-]{20}[A-Za-z0-9_.-]{0,300}|GR1348941[A-Za-z0-9_-]{20})"), &["glrt-", "gr1348941"], 3.0),
    def("gitlab-deploy-token", "GitLab deploy token", Raw(r"\b(gldt-[A-Za-z0-9_-]{20}[A-Za-z0-9_.-]{0,300})"), &["gldt-"], 3.0),
    def("gitlab-ci-job-token", "GitLab CI/CD job token", Raw(r"\b(glcbt-[A-Za-z0-9_-]{20}[A-Za-z0-9_.-]{0,300})"), &["glcbt-"], 3.0),
    def("gitlab-feed-token", "GitLab feed token", Raw(r"\b(glft-[A-Za-z0-9_-]{20}[A-Za-z0-9_.-]{0,300})"), &["glft-"], 3.0),
    def("gitlab-oauth-app-secret", "GitLab OAuth application secret", Raw(r"\b(gloas-[a-f0-9]{64})\b"), &["gloas-"], 3.0),
    def("gitlab-other-token", "GitLab SCIM, feature-flag, agent, incoming-mail or workspace token", Raw(r"\b((?:glsoat|glffct|glagent|glimt|glwt|glrtr)-[A-Za-z0-9_-]{20}[A-Za-z0-9_.-]{0,300})"), &["glsoat-", "glffct-", "glagent-", "glimt-", "glwt-", "glrtr-"], 3.0),
    def("bitbucket-app-password", "Bitbucket app password", Raw(r"\b(ATBB[A-Za-z0-9_=.-]{28,60})\b"), &["atbb"], 3.0),
    def("atlassian-api-token", "Atlassian (Jira, Confluence, Bitbucket) API token", Raw(r"\b(ATATT3[A-Za-z0-9_=.-]{150,250})"), &["atatt3"], 3.0),
    def("bitbucket-access-token", "Bitbucket repository, project or workspace access token", Raw(r"\b(ATCTT3[A-Za-z0-9_=.-]{150,250})"), &["atctt3"], 3.0),
    // ---- Package registries
    def("npm-access-token", "npm access token", Raw(r"\b(npm_[A-Za-z0-9]{36})\b"), &["npm_"], 3.0),
    def("pypi-upload-token", "PyPI upload token", Raw(r"\b(pypi-Ag(?:EIcHlwaS5vcmc|ENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,})"), &["pypi-ag"], 3.0),
    def("crates-io-api-token", "crates.io API token", Raw(r"(?:^|[^A-Za-z0-9+/_-])(cio[A-Za-z0-9]{32})(?:[^A-Za-z0-9+/=_-]|$)"), &["cio"], 3.0),
    def("dockerhub-token", "Docker Hub personal or organization access token", Raw(r"\b(dckr_(?:pat|oat)_[A-Za-z0-9_-]{27,})"), &["dckr_pat_", "dckr_oat_"], 3.0),
    def("rubygems-api-key", "RubyGems API key", Raw(r"\b(rubygems_[a-f0-9]{48})\b"), &["rubygems_"], 3.0),
    def("nuget-api-key", "NuGet API key", Raw(r"\b(oy2[a-z0-9]{43})\b"), &["oy2"], 3.0),
    // ---- Chat and messaging
    def("slack-bot-token", "Slack bot token", Raw(r"\b(xoxb-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24,34})\b"), &["xoxb-"], 3.0),
    def("slack-user-token", "Slack user token", Raw(r"\b(xox[pe](?:-[0-9]{10,13}){3}-[A-Za-z0-9]{28,34})\b"), &["xoxp-", "xoxe-"], 3.0),
    def("slack-app-token", "Slack app-level token", Raw(r"\b(xapp-\d-[A-Z0-9]{6,}-\d{6,}-[A-Za-z0-9]{32,})\b"), &["xapp-"], 3.0),
    def("slack-config-token", "Slack configuration access or refresh token", Raw(r"\b(xoxe\.xox[bp]-\d-[A-Z0-9]{100,200}|xoxe-\d-[A-Z0-9]{100,200})\b"), &["xoxe"], 3.0),
    def("slack-legacy-token", "Slack legacy, workspace or session token", Raw(r"\b(xox[aors]-(?:\d+-){1,3}[A-Za-z0-9]{8,48})\b"), &["xoxa-", "xoxo-", "xoxr-", "xoxs-"], 3.0),
    def("slack-webhook-url", "Slack incoming webhook or workflow trigger URL", Raw(r"(https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{40,120})"), &["hooks.slack.com"], 3.0),
    def("discord-webhook-url", "Discord webhook URL", Raw(r"(https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{17,20}/[A-Za-z0-9_-]{60,70})"), &["/api/webhooks/"], 3.0),
    def("discord-bot-token", "Discord bot token", Assign("discord", r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}"), &["discord"], 3.0),
    def("telegram-bot-token", "Telegram bot token", Raw(r"\b(\d{8,10}:AA[A-Za-z0-9_-]{33})(?:[^A-Za-z0-9_-]|$)"), &[":aa"], 3.0),
    def("twilio-api-key", "Twilio API key SID with its secret nearby", Assign("twilio", r"SK[a-f0-9]{32}"), &["twilio"], 3.0),
    def("sendgrid-api-key", "SendGrid API key", Raw(r"\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)"), &["sg."], 3.0),
    def("mailgun-api-key", "Mailgun private API key", Raw(r"\b(key-[a-f0-9]{32})\b"), &["key-"], 3.0),
    def("mailchimp-api-key", "Mailchimp API key", Raw(r"\b([a-f0-9]{32}-us\d{1,2})\b"), &["-us"], 3.0),
    // ---- Payments and commerce
    def("stripe-secret-key", "Stripe secret or restricted key", Raw(r"\b((?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{20,247})\b"), &["sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_"], 3.0),
    def("stripe-webhook-secret", "Stripe webhook signing secret", Raw(r"\b(whsec_[A-Za-z0-9+/=]{32,})"), &["whsec_"], 3.0),
    def("square-access-token", "Square access token", Raw(r"\b(EAAA[A-Za-z0-9_-]{60}|sq0atp-[A-Za-z0-9_-]{22})(?:[^A-Za-z0-9_-]|$)"), &["eaaa", "sq0atp-"], 3.0),
    def("square-oauth-secret", "Square OAuth application secret", Raw(r"\b(sq0csp-[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)"), &["sq0csp-"], 3.0),
    def("shopify-token", "Shopify access token or shared secret", Raw(r"\b(shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})\b"), &["shpat_", "shpca_", "shppa_", "shpss_"], 3.0),
    def("braintree-access-token", "Braintree / PayPal production access token", Raw(r"(access_token\$production\$[0-9a-z]{16}\$[0-9a-f]{32})"), &["access_token$production$"], 3.0),
    // ---- Private keys
    def("private-key", "Private key (PEM: PKCS#1, PKCS#8, SEC1, DSA, encrypted)", Raw(r"-----BEGIN (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----[\s\S]{64,}?-----END (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----"), &["private key-----"], 0.0),
    def("openssh-private-key", "OpenSSH private key", Raw(r"-----BEGIN OPENSSH PRIVATE KEY-----[\s\S]{64,}?-----END OPENSSH PRIVATE KEY-----"), &["begin openssh private key"], 0.0),
    def("pgp-private-key", "PGP private key block", Raw(r"-----BEGIN PGP PRIVATE KEY BLOCK-----[\s\S]{64,}?-----END PGP PRIVATE KEY BLOCK-----"), &["begin pgp private key block"], 0.0),
    def("putty-private-key", "PuTTY private key file", Raw(r"(PuTTY-User-Key-File-\d: [\s\S]{0,400}?Private-Lines: \d+)"), &["putty-user-key-file-"], 0.0),
    def("age-secret-key", "age secret key", Raw(r"\b(AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58})\b"), &["age-secret-key-1"], 3.0),
    // ---- Tokens, URLs and assignments of any provider
    def("jwt", "JSON Web Token (signed)", Raw(r"\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})"), &["eyj"], 3.0),
    def_generic("database-url-password", "Database connection URL with a password", Raw(r#"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|cockroachdb|clickhouse|jdbc:[a-z]+)://[^\s:@/'"<>]{1,100}:([^\s@/'"<>]{3,200})@[A-Za-z0-9.\[\]_-]+"#), &["postgres", "mysql", "mariadb", "mongodb", "redis", "amqp", "mssql", "sqlserver", "cockroach", "clickhouse", "jdbc"], 0.0),
    def_generic("url-credentials", "Credentials inside a URL", Raw(r#"(?i)\b(?:https?|ftps?|sftp|ssh|git|svn|smtps?|imaps?|pop3s?|ldaps?|wss?|socks5h?|nntp)://[^\s:@/'"<>]{1,100}:([^\s@/'"<>]{3,200})@[A-Za-z0-9.\[\]_-]+"#), &["://"], 0.0),
    def_generic("generic-secret-assignment", "Password, secret, token or API key assigned a high-entropy value", Raw(r#"(?i)[\w.-]{0,40}?(?:passw(?:or)?d|passphrase|pwd|secret|token|api[_.-]?key|access[_.-]?key|auth[_.-]?key|private[_.-]?key|credentials?)[\w.-]{0,20}["']?[ \t]*(?:=|:=|:|=>|\?=|\|\|=)[ \t]*(?:["'`](?-i:([A-Za-z0-9_./+=~!@#$%^&*:-]{12,200}))["'`]|(?-i:([A-Za-z0-9_./+=~!@#$%^&*-]{12,200}))[ \t]*(?:\r?\n|$))"#), &["passw", "passphrase", "pwd", "secret", "token", "key", "credential"], 3.5),
    def_generic("authorization-bearer-token", "Bearer token in an Authorization header", Raw(r#"(?i)\bauthorization["']?[ \t]*[:=][ \t]*["']?(?:bearer|token)[ \t]+(?-i:([A-Za-z0-9._~+/=-]{20,500}))"#), &["authorization"], 3.5),
    def_generic("authorization-basic-credentials", "Basic credentials in an Authorization header", Raw(r#"(?i)\bauthorization["']?[ \t]*[:=][ \t]*["']?basic[ \t]+(?-i:([A-Za-z0-9+/]{12,300}={0,2}))"#), &["authorization"], 3.0),
    // ---- More SaaS
    def("linear-api-key", "Linear API key", Raw(r"\b(lin_api_[A-Za-z0-9]{40})\b"), &["lin_api_"], 3.0),
    def("notion-token", "Notion integration token", Raw(r"\b(ntn_[0-9]{11}[A-Za-z0-9]{35})\b"), &["ntn_"], 3.0),
    def("postman-api-key", "Postman API key", Raw(r"\b(PMAK-[a-f0-9]{24}-[a-f0-9]{34})\b"), &["pmak-"], 3.0),
    def("sentry-token", "Sentry auth token", Raw(r"\b(sntrys_[A-Za-z0-9+/=_]{60,}|sntryu_[a-f0-9]{64})"), &["sntrys_", "sntryu_"], 3.0),
    def("newrelic-user-api-key", "New Relic user API key", Raw(r"\b(NRAK-[A-Z0-9]{27})\b"), &["nrak-"], 3.0),
    def("grafana-token", "Grafana Cloud or service account token", Raw(r"\b(glc_[A-Za-z0-9+/]{32,400}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})"), &["glc_", "glsa_"], 3.0),
    def("figma-token", "Figma personal access token", Raw(r"\b(figd_[A-Za-z0-9_-]{40,})"), &["figd_"], 3.0),
    def("onepassword-service-account-token", "1Password service account token", Raw(r"\b(ops_eyJ[A-Za-z0-9+/=_-]{100,})"), &["ops_eyj"], 3.0),
    def("datadog-api-key", "Datadog API or application key", Assign("datadog|dd_api_|dd_app_|dd_application_", r"[a-f0-9]{40}|[a-f0-9]{32}"), &["datadog", "dd_api_key", "dd_app_key", "dd_application_key"], 3.0),
    def("okta-api-token", "Okta API token", Assign("okta", r"00[A-Za-z0-9_-]{40}"), &["okta"], 3.0),
];

fn assign_regex(names: &str, value: &str) -> String {
    format!(
        r#"(?i)[\w.-]{{0,40}}?(?:{names})[\w.-]{{0,20}}?(?:key|token|secret|passw|auth|cred)[\w.-]{{0,10}}["']?[ \t]*(?:=|:=|:|=>|\?=)[ \t]*["'`]?(?-i:({value}))(?:["'`\s;,)]|\\[nrt]|$)"#
    )
}

pub(crate) fn specs() -> Vec<RuleSpec> {
    DEFS.iter()
        .map(|d| RuleSpec {
            id: d.id.to_string(),
            description: d.description.to_string(),
            regex: Some(match d.pat {
                Raw(p) => p.to_string(),
                Assign(names, value) => assign_regex(names, value),
            }),
            secret_group: Some(1).filter(|_| matches!(d.pat, Assign(..))),
            entropy: Some(d.entropy).filter(|e| *e > 0.0),
            keywords: d.keywords.iter().map(|k| k.to_string()).collect(),
            path: None,
            allowlists: if d.allow.is_empty() && d.stop.is_empty() {
                Vec::new()
            } else {
                vec![AllowlistSpec {
                    regexes: d.allow.iter().map(|s| s.to_string()).collect(),
                    stopwords: d.stop.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }]
            },
            skip_report: false,
            generic: matches!(
                d.id,
                "url-credentials"
                    | "authorization-bearer-token"
                    | "authorization-basic-credentials"
            ) || d.id.starts_with("generic"),
        })
        .collect()
}

/// Ids of the builtin rules, for documentation and tests.
pub fn ids() -> Vec<&'static str> {
    DEFS.iter().map(|d| d.id).collect()
}
