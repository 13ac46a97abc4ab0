//! 1,000 concurrent intercepted connections complete, and memory stays bounded.
#![allow(unsafe_code)]

mod common;

use common::*;

fn raise_nofile(want: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = want.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections_complete_with_bounded_memory() {
    const N: usize = 1000;
    raise_nofile(16384);
    let env = TestEnv::new().await;
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{}]\n",
        env.head(),
        env.resolves(&["api.example.test"]),
        env.tls_port
    );
    let p = start_proxy(&cfg).await;
    let port = env.tls_port;
    let before = rss_kib();
    // Open all N intercepted TLS connections first, so they are concurrent, then use each.
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..N {
        let ca = env.ca_der.clone();
        let addr = p.addr;
        opens.spawn(async move {
            let (status, head, s) = connect(addr, &format!("api.example.test:{port}")).await;
            assert_eq!(status, 200, "{head}");
            let name = rustls_pki_types::ServerName::try_from("api.example.test").unwrap();
            client_tls(&ca, &[b"http/1.1"])
                .connect(name, s)
                .await
                .unwrap()
        });
    }
    let mut conns = Vec::with_capacity(N);
    while let Some(c) = opens.join_next().await {
        conns.push(c.unwrap());
    }
    assert_eq!(conns.len(), N);
    let mut reqs = tokio::task::JoinSet::new();
    for (i, tls) in conns.into_iter().enumerate() {
        reqs.spawn(async move {
            h1(tls, get("api.example.test", port, &format!("/c/{i}")))
                .await
                .status
        });
    }
    let mut ok = 0;
    while let Some(s) = reqs.join_next().await {
        if s.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, N);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    println!("RSS growth for {N} connections (proxy, upstream and clients in one process): {grown_mib} MiB");
    assert!(grown_mib < 256, "memory grew by {grown_mib} MiB");
}

/// Several large bodies being decoded and scanned on a DLP route: a small request still gets
/// through promptly (scanning runs on the bounded scan pool, not on the async threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_bodies_in_flight_do_not_stall_a_small_request() {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const UPLOADS: usize = 3;
    // More than the socket buffers between the client and egress can hold: egress has read
    // (and so scanned) most of it.
    const IN_FLIGHT: usize = 12 << 20;
    let env = TestEnv::new().await;
    let h = "api.example.test";
    let port = env.tls_port;
    let cfg = format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}[dlp]\nmax_body_bytes = 4096\n[[route]]\nid = \"api\"\nhost = \"{h}\"\nports = [{port}]\n",
        env.head(),
        env.resolves(&[h]),
    );
    let p = start_proxy(&cfg).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut counters = Vec::new();
    let mut uploads = Vec::new();
    for i in 0..UPLOADS {
        let sent = Arc::new(AtomicUsize::new(0));
        counters.push(sent.clone());
        let stop = stop.clone();
        let chunk = bytes::Bytes::from(
            b"{\"role\":\"user\",\"content\":\"turn\\n\"},"
                .iter()
                .copied()
                .cycle()
                .take(64 << 10)
                .collect::<Vec<u8>>(),
        );
        let stream = futures_util::stream::unfold((), move |()| {
            let (stop, sent, chunk) = (stop.clone(), sent.clone(), chunk.clone());
            async move {
                if stop.is_cancelled() {
                    return None;
                }
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
                Some((
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(
                        chunk,
                    )),
                    (),
                ))
            }
        });
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("/upload/{i}"))
            .header("host", format!("{h}:{port}"))
            .body(http_body_util::StreamBody::new(stream).boxed())
            .unwrap();
        let (ca_env, addr) = (&env, p.addr);
        let tls = tls_through(ca_env, addr, &format!("{h}:{port}"), h, &[b"http/1.1"])
            .await
            .unwrap();
        uploads.push(tokio::spawn(async move { h1(tls, req).await.status }));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while counters
        .iter()
        .any(|c| c.load(Ordering::SeqCst) < IN_FLIGHT)
    {
        assert!(
            uploads.iter().all(|u| !u.is_finished()),
            "an upload ended before it was in flight (refused?)"
        );
        assert!(Instant::now() < deadline, "uploads did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let r = https(&env, p.addr, h, port, get(h, port, "/small")).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    println!("a small request took {took:?} with {UPLOADS} large bodies being scanned");
    assert!(
        uploads.iter().all(|u| !u.is_finished()),
        "the large bodies were still in flight"
    );
    assert!(
        took < Duration::from_secs(10),
        "small request took {took:?}"
    );
    stop.cancel();
    for u in uploads {
        assert_eq!(u.await.unwrap(), 200, "a large clean upload passes whole");
    }
}
