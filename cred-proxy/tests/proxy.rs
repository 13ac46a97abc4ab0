//! cred-proxy end to end on loopback: signed hand-off in, real token out to a
//! TLS upstream trusted through `upstream_ca`.

mod common;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use test_support::client::{body_string, read_until};

const TOKEN_ONE: &str = "tok-one-REAL-5f2a9c";
const TOKEN_TWO: &str = "tok-two-REAL-88b1e0";

fn two_routes() -> String {
    "[[route]]\nid = \"one\"\nhost = \"api.one.test\"\nscheme = \"Bearer\"\ntoken_ref = \"ONE\"\n\
     [[route]]\nid = \"two\"\nhost = \"api.two.test\"\nscheme = \"Bearer\"\ntoken_ref = \"TWO\"\n"
        .to_owned()
}

fn two_env() -> cred_proxy::tokens::EnvLookup {
    env_of(&[("ONE", TOKEN_ONE), ("TWO", TOKEN_TWO)])
}

#[tokio::test]
async fn each_scheme_reaches_upstream_with_the_real_token_and_no_agent_credentials() {
    let pki = Pki::new();
    let up = Upstream::start(&pki, "api.one.test", &[b"http/1.1"], ok_handler()).await;
    let routes = "\
[[route]]\nid = \"bearer\"\nhost = \"api.one.test\"\nscheme = \"Bearer\"\ntoken_ref = \"T_BEARER\"\n\
[[route]]\nid = \"token\"\nhost = \"api.one.test\"\nscheme = \"token\"\ntoken_ref = \"T_TOKEN\"\n\
[[route]]\nid = \"apikey\"\nhost = \"api.one.test\"\nscheme = \"x-api-key\"\ntoken_ref = \"T_KEY\"\n\
[[route]]\nid = \"custom\"\nhost = \"api.one.test\"\nscheme = \"header\"\nheader = \"X-Custom-Auth\"\ntemplate = \"Key={token};v=1\"\ntoken_ref = \"T_CUSTOM\"\n";
    let env = env_of(&[
        ("T_BEARER", "bearer-real-111"),
        ("T_TOKEN", "token-real-222"),
        ("T_KEY", "apikey-real-333"),
        ("T_CUSTOM", "custom-real-444"),
    ]);
    let proxy = Proxy::start(&pki, routes, env).await;
    let cases = [
        ("bearer", "authorization", "Bearer bearer-real-111"),
        ("token", "authorization", "token token-real-222"),
        ("apikey", "x-api-key", "apikey-real-333"),
        ("custom", "x-custom-auth", "Key=custom-real-444;v=1"),
    ];
    for (route, header, want) in cases {
        let resp = Handoff::get(route, up.addr, "/v1/things?page=2")
            .header("authorization", "Bearer PLACEHOLDER")
            .header("x-api-key", "PLACEHOLDER")
            .header("x-custom-auth", "PLACEHOLDER")
            .header("cookie", "session=agent")
            .header("proxy-authorization", "Basic agent")
            .header("x-bottle-extra", "1")
            .header("accept", "application/json")
            .send(proxy.addr)
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "route {route}");
        assert_eq!(body_string(resp).await, "upstream ok");
        let seen = up.seen().pop().unwrap();
        assert_eq!(seen.header(header), Some(want), "route {route}");
        assert_eq!(
            seen.uri.path_and_query().unwrap().as_str(),
            "/v1/things?page=2"
        );
        let host = format!("api.one.test:{}", up.addr.port());
        assert_eq!(seen.header("host"), Some(host.as_str()));
        assert_eq!(seen.header("accept"), Some("application/json"));
        assert!(seen.header("cookie").is_none());
        assert!(seen.header("proxy-authorization").is_none());
        assert!(seen
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-bottle-")));
        for v in seen.headers.values() {
            assert!(
                !v.to_str().unwrap().contains("PLACEHOLDER"),
                "{route}: {v:?}"
            );
        }
        // Only the route's own credential goes up.
        let credential_headers = ["authorization", "x-api-key", "x-custom-auth"]
            .iter()
            .filter(|h| seen.headers.contains_key(**h))
            .count();
        assert_eq!(credential_headers, 1, "route {route}: {:?}", seen.headers);
    }
}

#[tokio::test]
async fn missing_or_bad_signature_is_refused_before_any_upstream_contact() {
    let pki = Pki::new();
    let up = Upstream::start(&pki, "api.one.test", &[b"http/1.1"], ok_handler()).await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;

    let mut unsigned = Handoff::get("one", up.addr, "/x");
    unsigned.omit_handoff = true;
    let resp = unsigned.send(proxy.addr).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(body_string(resp).await.contains("no signed hand-off"));

    let mut forged = Handoff::get("one", up.addr, "/x");
    forged.sig = Some("00".repeat(32));
    let resp = forged.send(proxy.addr).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = body_string(resp).await;
    assert!(body.contains("signature does not verify"), "{body}");
    assert!(!body.contains(TOKEN_ONE));

    // A valid signature for another path, method or route does not carry over.
    let dial = up.addr.to_string();
    let key = test_key();
    for (route, method, path) in [
        ("one", "GET", "/other"),
        ("one", "POST", "/x"),
        ("two", "GET", "/x"),
    ] {
        let mut replay = Handoff::get("one", up.addr, "/x");
        replay.sig = Some(cred_proxy::handoff::sign(&key, route, &dial, method, path));
        assert_eq!(
            replay.send(proxy.addr).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    // Signed with another bottle's key.
    let mut other_key = Handoff::get("one", up.addr, "/x");
    other_key.sig = Some(cred_proxy::handoff::sign(
        &cred_proxy::handoff::BrokerKey::from_bytes([9; 32]),
        "one",
        &dial,
        "GET",
        "/x",
    ));
    assert_eq!(
        other_key.send(proxy.addr).await.status(),
        StatusCode::FORBIDDEN
    );

    assert!(
        up.seen().is_empty(),
        "upstream was contacted: {:?}",
        up.seen()
    );
}

#[tokio::test]
async fn routing_follows_the_signed_route_never_the_host_header() {
    let pki = Pki::new();
    let one = Upstream::start(&pki, "api.one.test", &[b"http/1.1"], ok_handler()).await;
    let two = Upstream::start(&pki, "api.two.test", &[b"http/1.1"], ok_handler()).await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;

    let two_host = format!("api.two.test:{}", two.addr.port());
    let resp = Handoff::get("one", one.addr, "/whoami")
        .header("host", &two_host)
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = one.seen();
    assert_eq!(seen.len(), 1);
    let one_host = format!("api.one.test:{}", one.addr.port());
    assert_eq!(seen[0].header("host"), Some(one_host.as_str()));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN_ONE}").as_str())
    );
    assert!(two.seen().is_empty());

    // Route one signed with route two's address: the certificate there is not
    // for api.one.test, so nothing is sent at all.
    let resp = Handoff::get("one", two.addr, "/steal")
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = body_string(resp).await;
    assert!(!body.contains(TOKEN_ONE));
    assert!(two.seen().is_empty());

    // An unknown route id is refused even when correctly signed.
    let resp = Handoff::get("api.one.test", one.addr, "/")
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(one.seen().len(), 1);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let pki = Pki::new();
    let target = Upstream::start(&pki, "api.two.test", &[b"http/1.1"], ok_handler()).await;
    let location = format!("https://api.two.test:{}/collect", target.addr.port());
    let loc = location.clone();
    let redirecting = Upstream::start(
        &pki,
        "api.one.test",
        &[b"http/1.1"],
        handler(move |_| {
            let loc = loc.clone();
            async move {
                Response::builder()
                    .status(StatusCode::FOUND)
                    .header("location", loc)
                    .body(full("moved"))
                    .unwrap()
            }
        }),
    )
    .await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    let resp = Handoff::get("one", redirecting.addr, "/start")
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], location.as_str());
    assert_eq!(body_string(resp).await, "moved");
    assert_eq!(redirecting.seen().len(), 1);
    assert!(target.seen().is_empty(), "the redirect was followed");
}

/// An upstream that sends one event, waits for the test's signal, then sends
/// the second.
async fn sse_upstream(
    pki: &Pki,
    alpn: &[&[u8]],
) -> (Upstream, std::sync::Arc<tokio::sync::Notify>) {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let up = Upstream::start(
        pki,
        "api.one.test",
        alpn,
        handler(move |_| {
            let release = r.clone();
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
                tokio::spawn(async move {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(
                            b"event: a\ndata: 1\n\n",
                        ))))
                        .await;
                    release.notified().await;
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(
                            b"event: b\ndata: 2\n\n",
                        ))))
                        .await;
                });
                let stream = tokio_stream_from(rx);
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap()
            }
        }),
    )
    .await;
    (up, release)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn assert_event_by_event(proxy: &Proxy, up: &Upstream, release: &tokio::sync::Notify) {
    let resp = Handoff::get("one", up.addr, "/stream")
        .header("accept", "text/event-stream")
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // Event 1 must arrive while the upstream is still waiting to send event 2.
    let got = read_until(
        &mut body,
        b"data: 1\n\n",
        "event 1 did not arrive before event 2 was released",
    )
    .await;
    assert_eq!(got, b"event: a\ndata: 1\n\n");
    release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"event: b\ndata: 2\n\n");
}

#[tokio::test]
async fn server_sent_events_stream_event_by_event() {
    let pki = Pki::new();
    let (up, release) = sse_upstream(&pki, &[b"http/1.1"]).await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    assert_event_by_event(&proxy, &up, &release).await;
}

#[tokio::test]
async fn http2_upstream_is_used_when_offered_and_streams() {
    let pki = Pki::new();
    let (up, release) = sse_upstream(&pki, &[b"h2", b"http/1.1"]).await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    assert_event_by_event(&proxy, &up, &release).await;
    let seen = up.seen();
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(
        seen[0].uri.authority().map(|a| a.as_str().to_owned()),
        Some(format!("api.one.test:{}", up.addr.port()))
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN_ONE}").as_str())
    );
    // Several requests share the connection and still carry the token.
    let plain = Upstream::start(&pki, "api.one.test", &[b"h2"], ok_handler()).await;
    for _ in 0..3 {
        let resp = Handoff::get("one", plain.addr, "/again")
            .send(proxy.addr)
            .await;
        assert_eq!(body_string(resp).await, "upstream ok");
    }
    assert!(plain.seen().iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(plain.seen().len(), 3);
}

#[tokio::test]
async fn an_echoed_token_is_redacted_in_headers_and_body() {
    let pki = Pki::new();
    let up = Upstream::start(
        &pki,
        "api.one.test",
        &[b"http/1.1", b"h2"],
        handler(|seen: Seen| async move {
            let auth = seen.header("authorization").unwrap_or("").to_owned();
            // The token split across two chunks, then whole again.
            let text = format!("you sent {auth}; again: {auth}\n");
            let cut = text.find("REAL").unwrap();
            let (a, b) = text.split_at(cut);
            let chunks = vec![
                Ok::<_, BoxError>(Frame::data(Bytes::from(a.to_owned()))),
                Ok(Frame::data(Bytes::from(b.to_owned()))),
            ];
            Response::builder()
                .header("x-echo", auth)
                .body(StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync())
                .unwrap()
        }),
    )
    .await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    let resp = Handoff::get("one", up.addr, "/echo").send(proxy.addr).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = resp.headers()["x-echo"].to_str().unwrap().to_owned();
    assert!(!echo.contains(TOKEN_ONE), "{echo}");
    assert_eq!(echo, format!("Bearer {}", "*".repeat(TOKEN_ONE.len())));
    let body = body_string(resp).await;
    assert!(!body.contains(TOKEN_ONE), "{body}");
    assert!(!body.contains("REAL"), "{body}");
    assert!(body.starts_with("you sent Bearer ***"), "{body}");
    // The upstream did get the real token.
    assert_eq!(
        up.seen()[0].header("authorization"),
        Some(format!("Bearer {TOKEN_ONE}").as_str())
    );
}

/// A debug endpoint that answers with the request's Authorization header in
/// base64 (inside a larger base64 blob), hex and percent-escaped: none of
/// those forms of the token reaches the agent.
#[tokio::test]
async fn an_echoed_token_is_redacted_when_encoded() {
    use base64::Engine;
    let pki = Pki::new();
    let up = Upstream::start(
        &pki,
        "api.one.test",
        &[b"http/1.1"],
        handler(|seen: Seen| async move {
            let auth = seen.header("authorization").unwrap_or("").to_owned();
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(format!("{{\"authorization\":\"{auth}\"}}"));
            let hex = hex::encode(auth.as_bytes());
            let pct: String = auth.bytes().map(|b| format!("%{b:02X}")).collect();
            Response::builder()
                .header("x-debug", b64.clone())
                .body(full(format!("b64={b64}\nhex={hex}\npct={pct}\n")))
                .unwrap()
        }),
    )
    .await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    let resp = Handoff::get("one", up.addr, "/debug")
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let header = resp.headers()["x-debug"].to_str().unwrap().to_owned();
    let body = body_string(resp).await;
    // Decode what the agent got: the token must be gone from every form.
    let b64_line = body.lines().find_map(|l| l.strip_prefix("b64=")).unwrap();
    for blob in [header.as_str(), b64_line] {
        assert!(blob.contains('*'), "the base64 form was masked: {blob}");
        let cleaned: String = blob.chars().filter(|c| *c != '*').collect();
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(cleaned.trim_end_matches('='))
            .unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&decoded).contains(TOKEN_ONE),
            "token recoverable from {blob}"
        );
    }
    assert!(
        !body.contains(&hex::encode(TOKEN_ONE)),
        "hex form leaked: {body}"
    );
    let pct: String = TOKEN_ONE.bytes().map(|b| format!("%{b:02X}")).collect();
    assert!(!body.contains(&pct), "percent form leaked: {body}");
    assert!(body.contains("hex=") && body.contains("pct="), "{body}");
    // The upstream did get the real token.
    assert_eq!(
        up.seen()[0].header("authorization"),
        Some(format!("Bearer {TOKEN_ONE}").as_str())
    );
}

#[tokio::test]
async fn request_bodies_are_forwarded() {
    let pki = Pki::new();
    let up = Upstream::start(&pki, "api.one.test", &[b"http/1.1"], ok_handler()).await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    let mut post = Handoff::get("one", up.addr, "/v1/messages");
    post.method = http::Method::POST;
    post.body = Bytes::from_static(b"{\"prompt\":\"hi\"}");
    let resp = post.send(proxy.addr).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.method, http::Method::POST);
    assert_eq!(&seen.body[..], b"{\"prompt\":\"hi\"}");
}

#[tokio::test]
async fn token_files_are_reread_on_reload() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let up = Upstream::start(&pki, "api.one.test", &[b"http/1.1"], ok_handler()).await;
    let path = pki.dir.path().join("rotating.token");
    std::fs::write(&path, "rotating-token-v1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let routes = format!(
        "[[route]]\nid = \"one\"\nhost = \"api.one.test\"\nscheme = \"token\"\ntoken_file = \"{}\"\n",
        path.display()
    );
    let proxy = Proxy::start(&pki, &routes, env_of(&[])).await;
    Handoff::get("one", up.addr, "/a").send(proxy.addr).await;
    std::fs::write(&path, "rotating-token-v2\n").unwrap();
    proxy.reloader.reload().unwrap();
    Handoff::get("one", up.addr, "/b").send(proxy.addr).await;
    let seen = up.seen();
    assert_eq!(
        seen[0].header("authorization"),
        Some("token rotating-token-v1")
    );
    assert_eq!(
        seen[1].header("authorization"),
        Some("token rotating-token-v2")
    );
}

#[tokio::test]
async fn a_compressed_answer_that_could_hide_the_token_is_refused() {
    let pki = Pki::new();
    let up = Upstream::start(
        &pki,
        "api.one.test",
        &[b"http/1.1"],
        handler(|_| async {
            Response::builder()
                .header("content-encoding", "gzip")
                .body(full(&b"\x1f\x8b\x08\x00 pretend-gzip"[..]))
                .unwrap()
        }),
    )
    .await;
    let proxy = Proxy::start(&pki, &two_routes(), two_env()).await;
    let resp = Handoff::get("one", up.addr, "/gz")
        .header("accept-encoding", "gzip, br")
        .send(proxy.addr)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(body_string(resp).await.contains("compressed"));
    // cred-proxy asked the upstream for an uncompressed body.
    assert_eq!(up.seen()[0].header("accept-encoding"), Some("identity"));
}
