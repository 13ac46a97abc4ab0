//! DLP, placeholders, holds and the cred-proxy hand-off, end to end.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use http::Request;

const KNOWN: &str = "KNOWN-SECRET-VALUE-7f3a9c21";
const CANARY: &str = "bb-canary-5e1d77aa0c";
const BROKER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn dlp_config(env: &TestEnv, route_extra: &str, top_extra: &str) -> String {
    let known = env.dir.path().join("known-secrets");
    std::fs::write(&known, format!("\n{KNOWN}\n\n")).unwrap();
    format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{top_extra}\n[dlp]\nmax_body_bytes = 4096\nknown_secrets_file = {:?}\ncanary = \"{CANARY}\"\n{}[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{}, {}]\n{route_extra}\n[[route]]\nid = \"other\"\nhost = \"other.example.test\"\nports = [{}]\nplaceholder = \"bb-placeholder-other-0001\"\n",
        env.head(),
        known,
        env.resolves(&["api.example.test", "other.example.test", "auth.example.test"]),
        env.tls_port,
        env.plain_port,
        env.tls_port,
    )
}

/// The DLP route's host.
const API: &str = "api.example.test";

/// A test environment and an egress over [`dlp_config`].
async fn dlp_proxy(route_extra: &str, top_extra: &str) -> (TestEnv, RunningProxy) {
    let env = TestEnv::new().await;
    let p = start_proxy(&dlp_config(&env, route_extra, top_extra)).await;
    (env, p)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn assert_no_secret(env: &TestEnv) {
    let audit = env.audit();
    assert!(!audit.is_empty());
    assert!(!audit.contains(KNOWN), "secret in the audit log: {audit}");
    assert!(!audit.contains(CANARY), "canary in the audit log: {audit}");
}

#[tokio::test]
async fn block_in_url_header_body_and_gzip_body() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);

    let r = https(
        &env,
        p.addr,
        h,
        port,
        get(h, port, &format!("/q?token={KNOWN}")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("dlp: "), "{}", r.block());
    assert!(
        !r.text().contains(KNOWN) && !r.block().contains(KNOWN),
        "the refusal echoes the secret"
    );

    let mut req = get(h, port, "/h");
    req.headers_mut()
        .insert("x-data", format!("prefix {KNOWN}").parse().unwrap());
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("header x-data"), "{}", r.block());

    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/b", format!("{{\"k\":\"{KNOWN}\"}}")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("body"));

    let mut req = post(h, port, "/gz", gzip(format!("data={KNOWN}").as_bytes()));
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "gzip body");

    // The canary is a known secret too, also over plain HTTP.
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{h}:{}/c", env.plain_port))
        .body(body(format!("x={CANARY}")))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 403);

    // A clean request passes.
    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/clean", "nothing to see"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        env.seen().len(),
        1,
        "only the clean request reached upstream"
    );
    assert_no_secret(&env);
}

#[tokio::test]
async fn redact_in_url_header_and_body_but_never_inside_gzip() {
    let (env, p) = dlp_proxy("dlp = { outbound_on_match = \"redact\" }", "").await;
    let (h, port) = (API, env.tls_port);
    let mut req = post(
        h,
        port,
        &format!("/r?a=1&t={KNOWN}"),
        format!("before {KNOWN} after"),
    );
    req.headers_mut()
        .insert("x-data", format!("v={KNOWN}").parse().unwrap());
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(!s.path.contains(KNOWN), "{}", s.path);
    assert!(s.path.starts_with("/r?a=1&t=%5BREDACTED:"), "{}", s.path);
    assert!(
        s.headers["x-data"].starts_with("v=[REDACTED:"),
        "{:?}",
        s.headers
    );
    assert_eq!(
        String::from_utf8_lossy(&s.body),
        "before [REDACTED:known-secret] after"
    );
    assert_eq!(
        s.headers["content-length"].parse::<usize>().unwrap(),
        s.body.len()
    );
    let audit = env.audit();
    assert!(audit.contains("\"decision\":\"redact\""), "{audit}");

    // Inside a gzip body the bytes as sent cannot be edited: refused, never sent decoded.
    let mut req = post(
        h,
        port,
        "/gz",
        gzip(format!("before {KNOWN} after").as_bytes()),
    );
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.block().contains("cannot be redacted in place"),
        "{}",
        r.block()
    );
    // A clean gzip body goes as it came, still encoded.
    let clean = gzip(b"nothing to see");
    let mut req = post(h, port, "/gz", clean.clone());
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last = env.seen().last().unwrap().clone();
    assert_eq!(last.body, clean);
    assert_eq!(last.headers["content-encoding"], "gzip");
    assert_eq!(env.seen().len(), 2);
    assert_no_secret(&env);
}

#[tokio::test]
async fn opaque_and_oversized_bodies() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/bin", &b"\x00\x01binary\x00"[..]),
    )
    .await;
    assert_eq!(r.status, 403, "binary body");
    assert!(env.seen().is_empty());
    // Larger than max_body_bytes: scanned in windows, not refused.
    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/big", vec![b'a'; 10_000]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.seen()[0].body.len(), 10_000);

    let (env2, p2) = dlp_proxy("dlp = { opaque_bodies = true }", "").await;
    let port = env2.tls_port;
    let r = https(
        &env2,
        p2.addr,
        h,
        port,
        post(h, port, "/bin", &b"\x00\x01binary\x00"[..]),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = https(
        &env2,
        p2.addr,
        h,
        port,
        post(h, port, "/big", vec![b'a'; 10_000]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        env2.seen()[1].body.len(),
        10_000,
        "the opted-in large body arrives whole"
    );
}

#[tokio::test]
async fn placeholder_of_another_route_is_refused() {
    let (env, p) = dlp_proxy("dlp = { outbound_detectors = false }", "").await;
    let (h, port) = (API, env.tls_port);
    let mut req = get(h, port, "/p");
    req.headers_mut().insert(
        "authorization",
        "Bearer bb-placeholder-other-0001".parse().unwrap(),
    );
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403);
    assert!(
        r.block().starts_with("dlp: ") && r.block().contains("other"),
        "{}",
        r.block()
    );
    // Its own route may carry it.
    let mut req = get("other.example.test", port, "/p");
    req.headers_mut().insert(
        "authorization",
        "Bearer bb-placeholder-other-0001".parse().unwrap(),
    );
    let r = https(&env, p.addr, "other.example.test", port, req).await;
    assert_eq!(r.status, 200);

    // The api route has no DLP, yet its request bodies are watched for the
    // placeholder too, even split across chunks; nothing of it leaves.
    let r = https(
        &env,
        p.addr,
        h,
        port,
        post_chunks(h, port, "/p", &["token=bb-placeholder-ot", "her-0001&x=1"]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.block().starts_with("dlp: ") && r.block().contains("other"),
        "{}",
        r.block()
    );
    assert!(
        env.seen()
            .iter()
            .all(|s| !String::from_utf8_lossy(&s.body).contains("bb-placeholder-other-0001")),
        "the placeholder reached the upstream"
    );
    assert!(env.audit().contains("\"rule\":\"placeholder\""));
    // A body that only looks like a placeholder's start at a chunk boundary
    // arrives whole and unchanged.
    let filler = "y".repeat(10_000);
    let chunks = [
        "a=bb-placeholder-oth",
        "ER-0001&b=",
        filler.as_str(),
        "bb-pl",
    ];
    let r = https(&env, p.addr, h, port, post_chunks(h, port, "/q", &chunks)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last = env.seen().last().unwrap().clone();
    assert_eq!(last.path, "/q");
    assert_eq!(last.body, chunks.concat().into_bytes());
}

/// A POST whose body arrives in these chunks (chunked transfer encoding).
fn post_chunks(host: &str, port: u16, path: &str, chunks: &[&str]) -> Request<TBody> {
    use http_body_util::BodyExt;
    let frames: Vec<
        Result<http_body::Frame<bytes::Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    > = chunks
        .iter()
        .map(|c| Ok(http_body::Frame::data(bytes::Bytes::from(c.to_string()))))
        .collect();
    Request::builder()
        .method("POST")
        .uri(path)
        .header("host", format!("{host}:{port}"))
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap()
}

async fn wait_for_hold(dir: &std::path::Path) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".hold.json"))
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.trim_end_matches(".hold.json").to_string();
            let text = std::fs::read_to_string(e.path()).unwrap();
            return (id, text);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hold file appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn supervise_holds_until_decision() {
    let env = TestEnv::new().await;
    let holds = env.dir.path().join("holds");
    std::fs::create_dir(&holds).unwrap();
    let cfg = dlp_config(
        &env,
        "dlp = { outbound_on_match = \"supervise\" }",
        &format!("holds_dir = {holds:?}\nhold_timeout_secs = 20"),
    );
    let p = start_proxy(&cfg).await;
    let (h, port) = (API, env.tls_port);
    for (decision, status) in [("allow", 200), ("deny", 403)] {
        let req = post(h, port, "/held?x=1", format!("s={KNOWN}"));
        let send = https(&env, p.addr, h, port, req);
        tokio::pin!(send);
        let (id, summary) = tokio::select! {
            r = &mut send => panic!("answered before a decision: {}", r.status),
            x = wait_for_hold(&holds) => x,
        };
        assert!(!summary.contains(KNOWN), "{summary}");
        assert!(summary.contains("\"route\": \"api\""), "{summary}");
        std::fs::write(
            holds.join(format!("{id}.decision")),
            format!("{decision}\n"),
        )
        .unwrap();
        let r = send.await;
        assert_eq!(r.status, status, "decision {decision}");
    }
    let seen = env.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        format!("s={KNOWN}").into_bytes(),
        "allowed hold forwards the original"
    );
}

#[tokio::test]
async fn auth_route_is_handed_to_cred_proxy_signed_and_stripped() {
    // SAFETY of set_var: every test in this binary sets the same value.
    std::env::set_var("BOT_BOTTLE_BROKER_KEY", BROKER_KEY);
    let env = TestEnv::new().await;
    // The plain upstream stands in for cred-proxy: it records what it receives.
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\ncred_proxy = \"127.0.0.1:{}\"\n{}[[route]]\nid = \"gh\"\nhost = \"auth.example.test\"\nports = [{}]\nauth = {{ scheme = \"Bearer\", token_ref = \"GH_TOKEN\" }}\nplaceholder = \"bb-placeholder-gh-0001\"\n",
        env.head(),
        env.plain_port,
        env.resolves(&["auth.example.test"]),
        env.tls_port
    );
    let p = start_proxy(&cfg).await;
    let port = env.tls_port;
    let h = "auth.example.test";
    let mut req = post(h, port, "/repos/x?page=2", "body");
    for (k, v) in [
        ("authorization", "Bearer bb-placeholder-gh-0001"),
        ("x-api-key", "k"),
        ("cookie", "c=1"),
        ("proxy-authorization", "Basic Zm9v"),
        ("x-bottle-route", "evil"),
        ("x-bottle-sig", "00"),
        ("x-keep", "yes"),
    ] {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = env.seen();
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/repos/x?page=2");
    assert_eq!(s.body, b"body");
    for gone in [
        "authorization",
        "x-api-key",
        "cookie",
        "proxy-authorization",
    ] {
        assert!(!s.headers.contains_key(gone), "{gone} reached cred-proxy");
    }
    assert_eq!(s.headers["x-keep"], "yes");
    assert_eq!(s.headers["x-bottle-route"], "gh");
    let dial = format!("127.0.0.1:{port}");
    assert_eq!(s.headers["x-bottle-dial"], dial);
    let key = contract::handoff::BrokerKey::from_hex(BROKER_KEY).unwrap();
    assert!(contract::handoff::verify(
        &key,
        "gh",
        &dial,
        "POST",
        "/repos/x?page=2",
        &s.headers["x-bottle-sig"]
    ));
}

/// A realistic-looking GitHub token (random, not a real credential).
const GH_PAT: &str = "ghp_R4nd0mT3stT0k3nXq9Lm2Zp8Wv5Yk7Hs1Dj6";

#[tokio::test]
async fn token_patterns_and_encoded_secrets_are_found() {
    use base64::Engine;
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/t", format!("token={GH_PAT}")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("github-pat"), "{}", r.block());

    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(
            h,
            port,
            "/t",
            format!("{{\"blob\":\"{}\"}}", b64(&format!("x {GH_PAT} y"))),
        ),
    )
    .await;
    assert_eq!(r.status, 403, "base64-encoded token in the body");

    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/k", b64(&format!("known={KNOWN}"))),
    )
    .await;
    assert_eq!(r.status, 403, "base64-encoded known secret in the body");

    let mut req = post(
        h,
        port,
        "/gzb64",
        gzip(b64(&format!("c={CANARY}")).as_bytes()),
    );
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "base64 inside gzip");

    let r = https(
        &env,
        p.addr,
        h,
        port,
        get(h, port, &format!("/u?x={}", b64(KNOWN).replace('=', "%3D"))),
    )
    .await;
    assert_eq!(r.status, 403, "base64 known secret in the query");

    assert!(env.seen().is_empty());
    let audit = env.audit();
    assert!(!audit.contains(GH_PAT) && !audit.contains(&b64(KNOWN)));
    assert_no_secret(&env);
}

#[tokio::test]
async fn supervise_without_decision_times_out_refused() {
    let env = TestEnv::new().await;
    let holds = env.dir.path().join("holds");
    std::fs::create_dir(&holds).unwrap();
    let cfg = dlp_config(
        &env,
        "dlp = { outbound_on_match = \"supervise\" }",
        &format!("holds_dir = {holds:?}\nhold_timeout_secs = 1"),
    );
    let p = start_proxy(&cfg).await;
    let (h, port) = (API, env.tls_port);
    let r = https(
        &env,
        p.addr,
        h,
        port,
        post(h, port, "/held", format!("s={KNOWN}")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("timed out"), "{}", r.block());
    assert!(env.seen().is_empty());
    assert_eq!(
        std::fs::read_dir(&holds).unwrap().count(),
        0,
        "hold file removed after the timeout"
    );
}

fn json_escaped(s: &str) -> String {
    s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

#[tokio::test]
async fn secrets_behind_json_html_and_utf16_escapes_are_found() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let html: String = KNOWN
        .chars()
        .map(|c| format!("&#x{:x};", c as u32))
        .collect();
    for (what, b) in [
        (
            "JSON \\u escapes",
            format!("{{\"k\":\"{}\"}}", json_escaped(KNOWN)).into_bytes(),
        ),
        ("HTML references", format!("<p>{html}</p>").into_bytes()),
        ("UTF-16", utf16le(&format!("token: {KNOWN} and more text"))),
    ] {
        let r = https(&env, p.addr, h, port, post(h, port, "/esc", b)).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert!(r.block().starts_with("dlp: "), "{what}: {}", r.block());
    }
    assert!(env.seen().is_empty(), "nothing reached upstream");
    // A clean UTF-16 body is text, scanned and passed unchanged.
    let clean = utf16le("nothing secret in here, just text");
    let r = https(&env, p.addr, h, port, post(h, port, "/u16", clean.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.seen()[0].body, clean);
    assert_no_secret(&env);
}

#[tokio::test]
async fn redacting_a_json_escaped_token_keeps_the_body_json() {
    let (env, p) = dlp_proxy("dlp = { outbound_on_match = \"redact\" }", "").await;
    let (h, port) = (API, env.tls_port);
    let body = format!("{{\"prompt\":\"use {} now\",\"n\":1}}", json_escaped(KNOWN));
    let r = https(&env, p.addr, h, port, post(h, port, "/j", body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = &env.seen()[0];
    let v: serde_json::Value =
        serde_json::from_slice(&s.body).expect("the forwarded body is still JSON");
    assert_eq!(v["prompt"], "use [REDACTED:known-secret] now");
    assert_eq!(v["n"], 1);
    assert_eq!(
        s.headers["content-length"].parse::<usize>().unwrap(),
        s.body.len()
    );
    assert!(env.audit().contains("\"decision\":\"redact\""));
}

#[tokio::test]
async fn the_method_and_header_names_are_scanned() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let mut req = get(h, port, "/n");
    req.headers_mut().insert(
        http::HeaderName::from_bytes(format!("x-{CANARY}").as_bytes()).unwrap(),
        "1".parse().unwrap(),
    );
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "canary as a header name");
    assert!(r.block().contains("header name"), "{}", r.block());
    // Upper case in the secret: the name arrives lower-cased, still the secret.
    let mut req = get(h, port, "/n");
    req.headers_mut().insert(
        http::HeaderName::from_bytes(KNOWN.to_ascii_lowercase().as_bytes()).unwrap(),
        "1".parse().unwrap(),
    );
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "known secret as a header name");
    let mut req = get(h, port, "/m");
    *req.method_mut() = http::Method::from_bytes(CANARY.as_bytes()).unwrap();
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "canary as the method");
    assert!(r.block().contains("request method"), "{}", r.block());
    assert!(env.seen().is_empty());
    assert_no_secret(&env);
}

#[tokio::test]
async fn every_content_encoding_is_undone_within_bounds() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let with = |b: Vec<u8>, codings: &[&str]| {
        let mut req = post(h, port, "/ce", b);
        for c in codings {
            req.headers_mut()
                .append("content-encoding", c.parse().unwrap());
        }
        req
    };
    // Two lines, applied in order: gzip, then br. Only the first was read before.
    let both = brotli(&gzip(format!("data={KNOWN}").as_bytes()));
    let r = https(&env, p.addr, h, port, with(both, &["gzip", "br"])).await;
    assert_eq!(r.status, 403, "gzip then br: {}", r.text());
    assert!(r.block().contains("known-secret"), "{}", r.block());

    let r = https(
        &env,
        p.addr,
        h,
        port,
        with(b"x".to_vec(), &["gzip, compress"]),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("compress"), "{}", r.block());

    let four = gzip(&gzip(&gzip(&gzip(b"clean"))));
    let r = https(
        &env,
        p.addr,
        h,
        port,
        with(four, &["gzip, gzip, gzip, gzip"]),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("content-encodings"), "{}", r.block());

    let bomb = gzip(&vec![b'a'; 64 << 20]);
    let r = https(&env, p.addr, h, port, with(bomb, &["gzip"])).await;
    assert_eq!(r.status, 403);
    assert!(r.block().contains("bomb"), "{}", r.block());

    // Clean and encoded twice: forwarded as sent, encoded.
    let clean = brotli(&gzip(b"nothing to see"));
    let r = https(&env, p.addr, h, port, with(clean.clone(), &["gzip", "br"])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.seen()[0].body, clean);
    assert_eq!(env.seen().len(), 1);
}

#[tokio::test]
async fn compressed_bytes_sent_as_plain_are_refused() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    // Compressed bytes with no NUL byte in them: they look like text to a NUL check.
    let without_nul = |compress: &dyn Fn(&[u8]) -> Vec<u8>| {
        (0..10_000u64)
            .map(|i| {
                // Varied letters compress with dynamic Huffman codes, which rarely need a NUL.
                let mut x = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let filler: String = (0..300)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        b"abcdefghijklmnopqrstuvwxyz "[(x >> 33) as usize % 27] as char
                    })
                    .collect();
                compress(format!("data={KNOWN} {filler}").as_bytes())
            })
            .find(|c| !c.contains(&0))
            .expect("a compressed form without NUL")
    };
    // One Finish call: no sync-flush block (whose empty stored block is all NULs).
    let deflate_with = |t: &[u8], zlib_header: bool| {
        let mut c = flate2::Compress::new(flate2::Compression::default(), zlib_header);
        let mut out = Vec::with_capacity(t.len() * 2 + 64);
        c.compress_vec(t, &mut out, flate2::FlushCompress::Finish)
            .unwrap();
        out
    };
    let zlib = |t: &[u8]| deflate_with(t, true);
    let deflate = |t: &[u8]| deflate_with(t, false);
    for (what, b) in [
        ("zlib", without_nul(&zlib)),
        ("raw deflate", without_nul(&deflate)),
        (
            "brotli",
            brotli(format!("data={KNOWN} and text").as_bytes()),
        ),
    ] {
        let r = https(&env, p.addr, h, port, post(h, port, "/z", b)).await;
        assert_eq!(r.status, 403, "{what} without a content-encoding");
        assert!(
            r.block().contains("cannot be scanned"),
            "{what}: {}",
            r.block()
        );
    }
    assert!(env.seen().is_empty());
}

#[tokio::test]
async fn known_secrets_in_the_host_are_refused_on_every_route_before_resolution() {
    let env = TestEnv::new().await;
    // Wildcard routes without DLP: they scan nothing else.
    let cfg = format!(
        "{}[[route]]\nid = \"wild\"\nhost = \"*.wild.example.test\"\nports = [443]\ndlp = {{ outbound_detectors = false }}\n\
         [[route]]\nid = \"open\"\nhost = \"*.open.example.test\"\nports = [80]\ndlp = {{ outbound_detectors = false }}\n",
        dlp_config(&env, "", "")
    );
    let p = start_proxy(&cfg).await;
    for host in [
        format!("{CANARY}.wild.example.test"),
        format!("{KNOWN}.wild.example.test"),
        format!("x.{}.wild.example.test", KNOWN.to_ascii_lowercase()),
    ] {
        let (status, head, _) = connect(p.addr, &format!("{host}:443")).await;
        assert_eq!(status, 403, "{host}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("x-bottle-block: dlp"),
            "{head}"
        );
    }
    let req = Request::builder()
        .uri(format!("http://{CANARY}.open.example.test/x"))
        .body(body(bytes::Bytes::new()))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("dlp: "), "{}", r.block());
    assert_eq!(
        p.resolver.queries.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no name was resolved"
    );
    assert_no_secret(&env);
}

#[tokio::test]
async fn bodies_of_any_size_are_scanned_as_they_stream() {
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let line = b"{\"role\":\"user\",\"content\":\"a long conversation turn\\n\"},\n";
    let big: Vec<u8> = line.iter().copied().cycle().take(5 << 20).collect();
    let r = https(&env, p.addr, h, port, post(h, port, "/clean", big.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        env.seen()[0].body,
        big,
        "a clean 5 MB body arrives whole and unchanged"
    );

    // The secret near the end, JSON-escaped: refused, and never reaches upstream.
    let mut late = big.clone();
    let at = late.len() - 300_000;
    let esc = json_escaped(KNOWN);
    late.splice(at..at + esc.len(), esc.bytes());
    let r = https(&env, p.addr, h, port, post(h, port, "/late", late)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.block().contains("known-secret"), "{}", r.block());
    for s in env.seen() {
        assert!(
            !String::from_utf8_lossy(&s.body).contains(&esc),
            "the secret reached upstream"
        );
    }
    assert_no_secret(&env);
}

#[tokio::test]
async fn a_streamed_body_is_redacted_in_place() {
    let (env, p) = dlp_proxy("dlp = { outbound_on_match = \"redact\" }", "").await;
    let (h, port) = (API, env.tls_port);
    let mut big: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(3 << 20)
        .collect();
    let at = 2 << 20;
    big.splice(at..at + KNOWN.len(), KNOWN.bytes());
    let r = https(&env, p.addr, h, port, post(h, port, "/r", big.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = &env.seen()[0];
    let mut want = big.clone();
    want.splice(
        at..at + KNOWN.len(),
        b"[REDACTED:known-secret]".iter().copied(),
    );
    assert_eq!(s.body.len(), want.len());
    assert!(s.body == want, "only the secret's bytes changed");
    assert!(env.audit().contains("\"decision\":\"redact\""));
}

#[tokio::test]
async fn trailers_are_scanned() {
    use http_body_util::BodyExt;
    let (env, p) = dlp_proxy("", "").await;
    let (h, port) = (API, env.tls_port);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", format!("v={KNOWN}").parse().unwrap());
    let frames: Vec<
        Result<http_body::Frame<bytes::Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    > = vec![
        Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"clean body",
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let req = Request::builder()
        .method("POST")
        .uri("/t")
        .header("host", format!("{h}:{port}"))
        .header("trailer", "x-checksum")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap();
    let r = https(&env, p.addr, h, port, req).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.block().contains("trailer"), "{}", r.block());
    assert!(env.seen().is_empty());
    assert_no_secret(&env);
}
