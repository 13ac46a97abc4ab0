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
