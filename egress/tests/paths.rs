//! Request paths through a running egress: prefixes match on a segment
//! boundary, and the path forms servers disagree on are refused outright.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn route(env: &TestEnv, paths: &str) -> String {
    format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{}]\n{paths}",
        env.head(),
        env.resolves(&["api.example.test"]),
        env.tls_port,
    )
}

/// Sends `GET target` byte for byte (no client library between the test and
/// egress that could normalise or refuse the target); returns status and the
/// `X-Bottle-Block` header.
async fn raw_get(env: &TestEnv, p: &RunningProxy, target: &str) -> (u16, String) {
    let port = env.tls_port;
    let mut tls = tls_through(
        env,
        p.addr,
        &format!("api.example.test:{port}"),
        "api.example.test",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    tls.write_all(
        format!(
            "GET {target} HTTP/1.1\r\nHost: api.example.test:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let block = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-bottle-block:")
                .then(|| l["x-bottle-block:".len()..].trim().to_string())
        })
        .unwrap_or_default();
    (status, block)
}

/// `/repos/me/app` allows the repository and what is under it, never a
/// sibling whose name merely starts the same; a prefix ending in `/` matches
/// whatever starts with it.
#[tokio::test]
async fn prefix_matches_on_a_segment_boundary() {
    let env = TestEnv::new().await;
    let p = start_proxy(&route(&env, "paths = [\"/repos/me/app\", \"/docs/\"]\n")).await;

    for ok in [
        "/repos/me/app",
        "/repos/me/app/",
        "/repos/me/app/issues/1",
        "/repos/me/app?per_page=1",
        "/docs/",
        "/docs/guide",
    ] {
        let (status, block) = raw_get(&env, &p, ok).await;
        assert_eq!(status, 200, "{ok}: {block}");
    }
    for refused in [
        "/repos/me/app-infra/issues",
        "/repos/me/apps",
        "/repos/me/app.git/info/refs",
        "/repos/me/app%2Dinfra",
        // Matched on the path as it is forwarded: an encoded spelling of the
        // prefix is not the prefix.
        "/repos/me/%61pp/issues",
        "/docs",
    ] {
        let (status, block) = raw_get(&env, &p, refused).await;
        assert_eq!(status, 403, "{refused} must be refused: {block}");
        assert!(block.starts_with("route: "), "{refused}: {block}");
    }
    let seen: Vec<String> = env.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        seen,
        vec![
            "/repos/me/app",
            "/repos/me/app/",
            "/repos/me/app/issues/1",
            "/repos/me/app?per_page=1",
            "/docs/",
            "/docs/guide"
        ]
    );
}

/// Each path form that means different things to different servers is
/// refused with a `protocol` refusal naming what was wrong, on a route that
/// allows every path (so nothing but the form itself can be the reason).
#[tokio::test]
async fn ambiguous_path_forms_are_refused_by_name() {
    let env = TestEnv::new().await;
    let p = start_proxy(&route(&env, "")).await;
    let cases = [
        ("/repos/me/app%2Fother", "an encoded '/' (%2F)"),
        ("/repos/me/app%2f..%2fother", "an encoded '/' (%2F)"),
        ("/repos/me/app%5Cother", "an encoded backslash (%5C)"),
        ("/repos/me/app%5c..%5cother", "an encoded backslash (%5C)"),
        ("/repos/me/app\\..\\other", "a backslash"),
        ("/repos/me/app/../other", "a dot segment"),
        ("/repos/me/app/./x", "a dot segment"),
        ("/repos/me/app/%2e%2E/other", "a dot segment"),
        ("/repos/me/app/%2E/x", "a dot segment"),
        ("/repos/me/app/..;/other", "a dot segment"),
        ("/repos/me/app/.%2e;x=1/other", "a dot segment"),
        ("/repos/me/app/..%3B/other", "a dot segment"),
        ("/repos/me//app", "an empty segment ('//')"),
        ("//repos/me/app", "an empty segment ('//')"),
        ("/repos/me/app;jsessionid=1/x", "a ';' parameter"),
        ("/repos/me/app%3bx/y", "a ';' parameter"),
        ("/repos/me/app/%252e%252e/other", "percent-encoded twice"),
    ];
    for (target, why) in cases {
        let (status, block) = raw_get(&env, &p, target).await;
        assert_eq!(status, 403, "{target} must be refused: {block}");
        assert!(
            block.starts_with("protocol: path refused: "),
            "{target}: {block}"
        );
        assert!(block.contains(why), "{target}: {block} lacks {why:?}");
    }
    // The same route still serves clean paths, a query with any of those
    // characters included.
    let (status, block) = raw_get(&env, &p, "/repos/me/app/x?a=..%2F;b").await;
    assert_eq!(status, 200, "{block}");
    let seen: Vec<String> = env.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, vec!["/repos/me/app/x?a=..%2F;b"]);
    let audit = env.audit();
    assert_eq!(
        audit.matches("\"kind\":\"protocol\"").count(),
        cases.len(),
        "{audit}"
    );
}

/// An operator's bad prefix stops the config from loading, naming the route
/// and the value.
#[tokio::test]
async fn bad_prefix_in_a_config_file_names_route_and_value() {
    let env = TestEnv::new().await;
    let text = route(&env, "paths = [\"/repos/me/../admin\"]\n");
    let file = env.write_config("bad.toml", &text);
    let e = egress::config::Config::load(&file).unwrap_err().to_string();
    assert!(e.contains("route \"api\""), "{e}");
    assert!(e.contains("\"/repos/me/../admin\""), "{e}");
    assert!(e.contains("dot segment"), "{e}");
}
