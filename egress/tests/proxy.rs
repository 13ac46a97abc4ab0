//! End-to-end behaviour of the proxy against in-process upstreams on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn api_route(env: &TestEnv, extra: &str) -> String {
    format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{}, {}]\nmethods = [\"GET\", \"POST\"]\npaths = [\"/allowed/\", \"/redirect\", \"/slow\", \"/big\"]\n{extra}",
        env.head(),
        env.resolves(&["api.example.test", "other.example.test", "a.wild.test", "b.a.wild.test", "wild.test"]),
        env.tls_port,
        env.plain_port
    )
}

#[tokio::test]
async fn allows_and_denies_by_host_port_method_path() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let port = env.tls_port;

    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        get("api.example.test", port, "/allowed/x"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok GET /allowed/x");

    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        post("api.example.test", port, "/allowed/y", "hello"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.seen().last().unwrap().body, b"hello");

    let del = Request::builder()
        .method("DELETE")
        .uri("/allowed/x")
        .header("host", format!("api.example.test:{port}"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = https(&env, p.addr, "api.example.test", port, del).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("route: "), "{}", r.block());
    // No supervise sidecar in this bottle: the text names no tool.
    assert!(!r.text().contains("request_egress_route"), "{}", r.text());
    assert!(r.text().contains("tell the operator"), "{}", r.text());

    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        get("api.example.test", port, "/other"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("route: "));

    // Dot segments cannot escape the allowed prefix.
    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        get("api.example.test", port, "/allowed/%2e%2e/secret"),
    )
    .await;
    assert_eq!(r.status, 403);

    // Another host, and the right host on another port: refused at CONNECT.
    let (status, head, _) = connect(p.addr, &format!("other.example.test:{port}")).await;
    assert_eq!(status, 403);
    assert!(head.contains("x-bottle-block: route: "), "{head}");
    let (status, _, _) = connect(p.addr, "api.example.test:9").await;
    assert_eq!(status, 403);

    let seen: Vec<String> = env.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        seen,
        vec!["/allowed/x", "/allowed/y"],
        "only allowed requests reached upstream"
    );
    let audit = env.audit();
    assert!(audit.lines().count() >= 6, "{audit}");
    let first: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(first["bottle"], "test-bottle");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["route"], "api");
    assert_eq!(first["status"], 200);
    assert!(
        audit.contains("\"decision\":\"deny\",\"kind\":\"route\""),
        "{audit}"
    );
}

#[tokio::test]
async fn wildcard_hosts() {
    let env = TestEnv::new().await;
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}[[route]]\nid = \"wild\"\nhost = \"*.wild.test\"\nports = [{}]\n",
        env.head(),
        env.resolves(&["a.wild.test", "b.a.wild.test", "wild.test"]),
        env.tls_port
    );
    let p = start_proxy(&cfg).await;
    let port = env.tls_port;
    for h in ["a.wild.test", "b.a.wild.test"] {
        let r = https(&env, p.addr, h, port, get(h, port, "/any")).await;
        assert_eq!(r.status, 200, "{h}");
    }
    let (status, _, _) = connect(p.addr, &format!("wild.test:{port}")).await;
    assert_eq!(status, 403, "the bare suffix is not covered by *.wild.test");
}

#[tokio::test]
async fn plain_http_absolute_form() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let port = env.plain_port;
    let req = Request::builder()
        .uri(format!("http://api.example.test:{port}/allowed/plain"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok GET /allowed/plain");

    // Host header naming another host than the absolute URI: fronting.
    let req = Request::builder()
        .uri(format!("http://api.example.test:{port}/allowed/plain"))
        .header("host", "other.example.test")
        .body(body(Bytes::new()))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("fronting: "), "{}", r.block());

    // Origin-form to the proxy itself is not a proxy request.
    let req = Request::builder()
        .uri("/allowed/plain")
        .header("host", "api.example.test")
        .body(body(Bytes::new()))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("protocol: "));
}

/// An HTTP/2 connection to api.example.test through the proxy's CONNECT
/// (ALPN h2 asserted).
async fn h2_through(
    env: &TestEnv,
    proxy: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<TBody> {
    let port = env.tls_port;
    let tls = tls_through(
        env,
        proxy,
        &format!("api.example.test:{port}"),
        "api.example.test",
        &[b"h2"],
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn http2_client_and_second_authority_refused() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let port = env.tls_port;
    let mut send = h2_through(&env, p.addr).await;
    let ok = Request::builder()
        .uri(format!("https://api.example.test:{port}/allowed/h2"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = send.send_request(ok).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"ok GET /allowed/h2");
    assert_eq!(
        env.seen()[0].version,
        http::Version::HTTP_2,
        "upstream offered h2, egress used it"
    );

    // Same connection, a stream for another authority: domain fronting.
    let bad = Request::builder()
        .uri(format!("https://other.example.test:{port}/allowed/h2"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = send.send_request(bad).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["x-bottle-block"]
        .to_str()
        .unwrap()
        .starts_with("fronting: "));
    assert_eq!(env.seen().len(), 1);
}

/// RFC 8441: an HTTP/2 client may only use extended CONNECT (WebSocket over
/// h2) when the server sends SETTINGS_ENABLE_CONNECT_PROTOCOL. Egress never
/// does, so such clients open an HTTP/1.1 connection for the upgrade, where
/// the route's `upgrade` decides; a CONNECT stream sent anyway is refused.
#[tokio::test]
async fn http2_connect_streams_are_refused_even_on_upgrade_routes() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "upgrade = true\n")).await;
    let port = env.tls_port;
    let mut send = h2_through(&env, p.addr).await;

    // Extended CONNECT: the server never enabled it, so the request cannot
    // even be sent on this connection.
    let mut ext = Request::builder()
        .method("CONNECT")
        .uri(format!("https://api.example.test:{port}/allowed/ws"))
        .body(body(Bytes::new()))
        .unwrap();
    ext.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let sent = send.send_request(ext).await;
    assert!(
        sent.as_ref().map_or(true, |r| r.status() == 403),
        "extended CONNECT must not be accepted: {:?}",
        sent.map(|r| r.status())
    );

    // A plain CONNECT stream (a tunnel inside the intercepted connection).
    let tunnel = Request::builder()
        .method("CONNECT")
        .uri(format!("api.example.test:{port}"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = send.send_request(tunnel).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["x-bottle-block"]
        .to_str()
        .unwrap()
        .starts_with("protocol: "));

    // The connection still serves ordinary streams, and nothing above reached
    // the upstream.
    let ok = Request::builder()
        .uri(format!("https://api.example.test:{port}/allowed/after"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = send.send_request(ok).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = env.seen();
    assert_eq!(seen.len(), 1, "only the GET reached the upstream");
    assert_eq!(seen[0].path, "/allowed/after");
}

#[tokio::test]
async fn fronting_by_sni_or_host_is_refused() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let port = env.tls_port;
    // SNI names another host than CONNECT: the handshake is refused.
    let res = tls_through(
        &env,
        p.addr,
        &format!("api.example.test:{port}"),
        "other.example.test",
        &[b"http/1.1"],
    )
    .await;
    assert!(res.is_err(), "TLS with a mismatched SNI must fail");
    // Host header names another host than CONNECT and SNI.
    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        get("other.example.test", port, "/allowed/x"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("fronting: "));
    assert!(env.seen().is_empty());
    assert!(env.audit().contains("\"kind\":\"fronting\""));
}

#[tokio::test]
async fn raw_bytes_after_connect_are_refused() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let (status, _, mut s) = connect(p.addr, &format!("api.example.test:{}", env.tls_port)).await;
    assert_eq!(status, 200);
    s.write_all(b"GET /allowed/x HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("X-Bottle-Block: protocol: "));
    assert!(
        env.seen().is_empty(),
        "nothing may reach upstream without TLS"
    );
}

#[tokio::test]
async fn unrouted_name_causes_no_dns_query() {
    let env = TestEnv::new().await;
    // No [[resolve]] for the routed name: it goes through the counting resolver.
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{}, {}]\n",
        env.head(),
        env.tls_port,
        env.plain_port
    );
    let p = start_proxy(&cfg).await;
    let (status, _, _) = connect(p.addr, "secret-abc.exfil.example:443").await;
    assert_eq!(status, 403);
    let req = Request::builder()
        .uri("http://secret-def.exfil.example/")
        .body(body(Bytes::new()))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        p.resolver.queries.load(Ordering::SeqCst),
        0,
        "an unrouted name was resolved"
    );
    // A routed name is resolved (once per dial).
    let r = https(
        &env,
        p.addr,
        "api.example.test",
        env.tls_port,
        get("api.example.test", env.tls_port, "/x"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(p.resolver.queries.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn ssrf_refused_without_allow_entry() {
    let env = TestEnv::new().await;
    let cfg = format!(
        "{}{}[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{p}]\n[[route]]\nid = \"lit\"\nhost = \"127.0.0.1\"\nports = [{p}]\n",
        env.head(),
        env.resolves(&["api.example.test"]),
        p = env.tls_port
    );
    let p = start_proxy(&cfg).await;
    let port = env.tls_port;
    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        get("api.example.test", port, "/x"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.block().starts_with("ssrf: "), "{}", r.block());
    // An IP literal in another spelling matches the literal route and is refused the same way.
    let req = Request::builder()
        .uri(format!("http://0x7f.1:{port}/x"))
        .body(body(Bytes::new()))
        .unwrap();
    let r = plain(p.addr, req).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("ssrf: "), "{}", r.block());
    assert!(env.seen().is_empty());
}

#[tokio::test]
async fn ip_literal_route_gets_ip_san() {
    let env = TestEnv::new().await;
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n[[route]]\nid = \"lit\"\nhost = \"127.0.0.1\"\nports = [{}]\n",
        env.head(),
        env.tls_port
    );
    let p = start_proxy(&cfg).await;
    let port = env.tls_port;
    let r = https(
        &env,
        p.addr,
        "127.0.0.1",
        port,
        get("127.0.0.1", port, "/lit"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn upgrade_refused_unless_route_allows() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let port = env.tls_port;
    let req = Request::builder()
        .uri("/allowed/ws")
        .header("host", format!("api.example.test:{port}"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(body(Bytes::new()))
        .unwrap();
    let r = https(&env, p.addr, "api.example.test", port, req).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("protocol: "), "{}", r.block());
    assert!(env.seen().is_empty());
}

#[tokio::test]
async fn redirect_is_returned_not_followed() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "")).await;
    let port = env.tls_port;
    let r = https(
        &env,
        p.addr,
        "api.example.test",
        port,
        get("api.example.test", port, "/redirect"),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "https://elsewhere.example.test/");
    assert_eq!(env.seen().len(), 1);
}

#[tokio::test]
async fn tunnel_route_is_raw_and_port_restricted() {
    let env = TestEnv::new().await;
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}[[route]]\nid = \"pinned\"\nhost = \"api.example.test\"\nports = [{}]\ntunnel = true\n",
        env.head(),
        env.resolves(&["api.example.test"]),
        env.plain_port
    );
    let p = start_proxy(&cfg).await;
    // Raw bytes pass through a tunnel route unchanged (here: plain HTTP to the plain upstream).
    let (status, _, s) = connect(p.addr, &format!("api.example.test:{}", env.plain_port)).await;
    assert_eq!(status, 200);
    let r = h1(
        s,
        get("api.example.test", env.plain_port, "/through-tunnel"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok GET /through-tunnel");
    let (status, _, _) = connect(p.addr, &format!("api.example.test:{}", env.tls_port)).await;
    assert_eq!(status, 403, "other ports are not part of the tunnel route");
    // The tunnel's audit line is written when it closes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !env.audit().contains("\"decision\":\"tunnel\"") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no tunnel audit line: {}",
            env.audit()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// In a bottle with supervise-mcp the refusal tells the agent which tool to ask with.
#[tokio::test]
async fn refusal_names_the_supervise_tool_only_when_there_is_one() {
    let env = TestEnv::new().await;
    let p = start_proxy(&format!("{}supervise = true\n", env.head())).await;
    let (status, head, _) = connect(p.addr, "nowhere.example.test:443").await;
    assert_eq!(status, 403);
    assert!(head.contains("request_egress_route"), "{head}");
}

/// git-gate's tunnels to its upstreams' ssh ports live on a listener of their
/// own: the agent's listener has never heard of them.
#[tokio::test]
async fn gate_tunnels_are_served_only_on_the_gate_listener() {
    let env = TestEnv::new().await;
    let cfg = format!(
        "{}gate_listen = \"127.0.0.2:0\"\nssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}\
         [[route]]\nid = \"git-app\"\nhost = \"api.example.test\"\nports = [{}]\ntunnel = true\ngate_only = true\n\
         [[route]]\nid = \"web\"\nhost = \"web.example.test\"\nports = [{}]\n",
        env.head(),
        env.resolves(&["api.example.test", "web.example.test"]),
        env.plain_port,
        env.plain_port,
    );
    let p = start_proxy(&cfg).await;
    let gate = p.gate_addr.expect("gate listener bound");
    let target = format!("api.example.test:{}", env.plain_port);

    // The agent's listener: no such route, and no DNS lookup for it either.
    let (status, head, _) = connect(p.addr, &target).await;
    assert_eq!(status, 403, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-bottle-block: route: no route for api.example.test"),
        "{head}"
    );
    let absolute = |host: &str| {
        Request::builder()
            .uri(format!("http://{host}:{}/", env.plain_port))
            .body(body(Bytes::new()))
            .unwrap()
    };
    let r = plain(p.addr, absolute("api.example.test")).await;
    assert_eq!(r.status, 403, "nor as plain HTTP");

    // The gate's listener: the tunnel carries raw bytes.
    let (status, _, s) = connect(gate, &target).await;
    assert_eq!(status, 200);
    let r = h1(s, get("api.example.test", env.plain_port, "/via-gate")).await;
    assert_eq!(r.text(), "ok GET /via-gate");

    // ... and nothing else: not the agent's routes, not plain requests.
    let (status, _, _) = connect(gate, &format!("web.example.test:{}", env.plain_port)).await;
    assert_eq!(
        status, 403,
        "the agent's routes are not on the gate listener"
    );
    let r = plain(gate, absolute("web.example.test")).await;
    assert_eq!(r.status, 403);
    assert!(r.block().starts_with("protocol:"), "{}", r.block());
}

#[tokio::test]
async fn reload_adds_route_while_download_continues() {
    let env = TestEnv::new().await;
    let base = api_route(&env, "");
    let p = start_proxy(&base).await;
    let port = env.tls_port;
    // Start a long download (20 chunks released one by one).
    let tls = tls_through(
        &env,
        p.addr,
        &format!("api.example.test:{port}"),
        "api.example.test",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    env.upstream.slow_gate.add_permits(2);
    let resp = send
        .send_request(get("api.example.test", port, "/slow"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    while got < 2 * 65536 {
        let f = body.frame().await.unwrap().unwrap();
        got += f.data_ref().map(|d| d.len()).unwrap_or(0);
    }
    // other.example.test is refused, then a reload adds it.
    let (status, _, _) = connect(p.addr, &format!("other.example.test:{port}")).await;
    assert_eq!(status, 403);
    let bad = env.write_config(
        "bad.toml",
        &format!("{base}[[route]]\nid = \"x\"\nhost = \"nodot\"\n"),
    );
    assert!(
        p.handle.reload_from(&bad).is_err(),
        "a bad config must be refused"
    );
    let good = env.write_config(
        "good.toml",
        &format!(
            "{base}[[route]]\nid = \"other\"\nhost = \"other.example.test\"\nports = [{port}]\n"
        ),
    );
    p.handle.reload_from(&good).unwrap();
    let r = https(
        &env,
        p.addr,
        "other.example.test",
        port,
        get("other.example.test", port, "/new"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The download started before the reload finishes completely.
    env.upstream.slow_gate.add_permits(18);
    while let Some(f) = body.frame().await {
        got += f.unwrap().data_ref().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(got, 20 * 65536);
}

#[tokio::test]
async fn upgrade_passes_when_route_allows() {
    let env = TestEnv::new().await;
    let p = start_proxy(&api_route(&env, "upgrade = true\n")).await;
    let port = env.tls_port;
    let tls = tls_through(
        &env,
        p.addr,
        &format!("api.example.test:{port}"),
        "api.example.test",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .uri("/allowed/ws")
        .header("host", format!("api.example.test:{port}"))
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(body(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101, "{:?} {:?}", resp.headers(), env.seen());
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    io.write_all(b"ping through egress").await.unwrap();
    let mut buf = [0u8; 19];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through egress");
}

#[tokio::test]
async fn dns_answers_pass_the_ssrf_guard() {
    let env = TestEnv::new().await;
    // No [[resolve]] and no allow entry: the stub resolver's answers decide.
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n[[route]]\nid = \"meta\"\nhost = \"metadata.example.test\"\nports = [{p}]\n[[route]]\nid = \"private\"\nhost = \"private.example.test\"\nports = [{p}]\n",
        env.head(),
        p = env.tls_port
    );
    let p = start_proxy(&cfg).await;
    p.resolver.answers.lock().unwrap().insert(
        "metadata.example.test".into(),
        vec!["169.254.169.254".parse().unwrap()],
    );
    p.resolver.answers.lock().unwrap().insert(
        "private.example.test".into(),
        vec![
            "10.1.2.3".parse().unwrap(),
            "::ffff:192.168.0.1".parse().unwrap(),
        ],
    );
    let port = env.tls_port;
    for h in ["metadata.example.test", "private.example.test"] {
        let r = https(&env, p.addr, h, port, get(h, port, "/x")).await;
        assert_eq!(r.status, 403, "{h}: {}", r.text());
        assert!(r.block().starts_with("ssrf: "), "{}", r.block());
    }
    assert!(env.audit().contains("\"kind\":\"ssrf\""));
}
