//! The real proxy (`strangler serve`) against real HTTP backends on
//! 127.0.0.1:0: routing, splits, headers, errors, health, reload, drain,
//! large bodies, HTTP/2 and TLS.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Backend, Proxy, RawBackend, RawReply, WireClient, client, get, raw, send};

fn upstreams(list: &[(&str, &Backend)]) -> String {
    list.iter()
        .map(|(name, b)| format!("[upstreams.{name}]\nurls = [\"{}\"]\n", b.url()))
        .collect()
}

/// A port nothing listens on, below Linux's ephemeral range so that no
/// server a parallel test binds to port 0 can take it.
fn closed_port() -> u16 {
    (20_000..30_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matcher_routes_end_to_end() {
    let (mono, a, b) = (
        Backend::start("mono").await,
        Backend::start("a").await,
        Backend::start("b").await,
    );
    let cfg = format!(
        r#"{}
[default]
upstream = "mono"

[[routes]]
name = "prefix"
match.path_prefix = "/api/orders"
upstream = "a"

[[routes]]
name = "template"
match.path_template = "/api/users/{{id}}"
upstream = "b"

[[routes]]
name = "regex"
match.path_regex = "/reports/[0-9]+"
upstream = "b"

[[routes]]
name = "method"
match.path = "/submit"
match.methods = ["POST"]
upstream = "a"

[[routes]]
name = "host"
match.host = "*.internal"
upstream = "b"

[[routes]]
name = "header"
match.path = "/h"
match.headers = {{ "x-beta" = "1" }}
upstream = "a"

[[routes]]
name = "query"
match.path = "/q"
match.query = {{ "v" = "2" }}
upstream = "a"

[[routes]]
name = "cookie"
match.path = "/c"
match.cookies = {{ "beta" = "1" }}
upstream = "b"
"#,
        upstreams(&[("mono", &mono), ("a", &a), ("b", &b)])
    );
    let proxy = Proxy::start(&cfg);
    let c = client();
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "/api/orders/7", vec![], "a"),
        ("GET", "/api/ordersX", vec![], "mono"),
        ("GET", "/api/users/42", vec![], "b"),
        ("GET", "/api/users/42/x", vec![], "mono"),
        ("GET", "/reports/2024", vec![], "b"),
        ("GET", "/reports/2024/x", vec![], "mono"),
        ("POST", "/submit", vec![], "a"),
        ("GET", "/submit", vec![], "mono"),
        ("GET", "/anything", vec![("host", "svc.internal:8080")], "b"),
        ("GET", "/h", vec![("x-beta", "1")], "a"),
        ("GET", "/h", vec![("x-beta", "2")], "mono"),
        ("GET", "/q?v=2", vec![], "a"),
        ("GET", "/q?v=3", vec![], "mono"),
        ("GET", "/c", vec![("cookie", "a=b; beta=1")], "b"),
        ("GET", "/c", vec![("cookie", "beta=0")], "mono"),
        ("GET", "/not/routed", vec![], "mono"),
    ];
    for (method, path, headers, want) in cases {
        let r = send(&c, method, &proxy.url(path), &headers, "").await;
        assert_eq!(r.status, 200, "{method} {path}");
        assert_eq!(r.backend(), want, "{method} {path} {headers:?}");
        assert_eq!(
            r.json()["path"],
            path.split('?').next().unwrap_or(path),
            "path forwarded as is"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_split_lands_within_two_points() {
    let (mono, new) = (Backend::start("mono").await, Backend::start("new").await);
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n[[routes]]\nname = \"s\"\nmatch.path_prefix = \"/s\"\nsplit = {{ new = 30, mono = 70 }}\n",
        upstreams(&[("mono", &mono), ("new", &new)])
    );
    let proxy = Proxy::start(&cfg);
    let url = proxy.url("/s");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..500 {
                let r = get(&c, &url, &[]).await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let share = new.requests() as f64 / 10_000.0;
    assert_eq!(new.requests() + mono.requests(), 10_000);
    assert!((share - 0.30).abs() <= 0.02, "new got {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_always_land_on_the_same_side() {
    let (mono, new) = (Backend::start("mono").await, Backend::start("new").await);
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n[[routes]]\nname = \"s\"\nmatch.path_prefix = \"/s\"\nsplit = {{ new = 50, mono = 50 }}\nsticky = \"header:x-user-id\"\n",
        upstreams(&[("mono", &mono), ("new", &new)])
    );
    let proxy = Proxy::start(&cfg);
    let c = client();
    let mut sides: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for user in 0..100 {
            let id = format!("user-{user}");
            let r = get(&c, &proxy.url("/s/x"), &[("x-user-id", &id)]).await;
            let side = r.backend();
            if round == 0 {
                sides.insert(id, side);
            } else {
                assert_eq!(sides[&id], side, "{id} flipped");
            }
        }
    }
    let on_new = sides.values().filter(|s| *s == "new").count();
    assert!((25..=75).contains(&on_new), "{on_new} of 100 users on new");
    // The same users land on the same sides in another process (stable hash).
    drop(proxy);
    let proxy = Proxy::start(&cfg);
    for (id, side) in &sides {
        let r = get(&c, &proxy.url("/s/x"), &[("x-user-id", id)]).await;
        assert_eq!(&r.backend(), side, "{id} moved after restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let (mono, other) = (Backend::start("mono").await, Backend::start("other").await);
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n[[routes]]\nname = \"rw\"\nmatch.path = \"/rw\"\nupstream = \"other\"\nhost_rewrite = \"other.internal\"\n",
        upstreams(&[("mono", &mono), ("other", &other)])
    );
    let proxy = Proxy::start(&cfg);
    let c = client();
    let r = get(
        &c,
        &proxy.url("/x?a=%20b&c"),
        &[
            ("host", "shop.example.com"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-forwarded-for", "9.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.json();
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(
            seen["headers"][gone].is_null(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(r.seen_header("x-end-to-end"), vec!["kept"]);
    assert_eq!(r.seen_header("host"), vec!["shop.example.com"]);
    assert_eq!(r.seen_header("x-forwarded-for"), vec!["9.9.9.9, 127.0.0.1"]);
    // Without trusted hops, the client's X-Forwarded-Proto is not believed.
    assert_eq!(r.seen_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.seen_header("x-forwarded-host"), vec!["shop.example.com"]);
    assert_eq!(r.seen_header("via"), vec!["1.1 strangler"]);
    assert_eq!(seen["query"], "a=%20b&c", "query forwarded byte for byte");

    let r = get(&c, &proxy.url("/hop"), &[]).await;
    assert!(
        r.headers.get("x-internal").is_none(),
        "Connection-listed response header leaked"
    );
    assert!(r.headers.get("keep-alive").is_none());
    assert_eq!(
        r.headers.get("x-kept").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(
        r.headers
            .get("via")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("strangler"))
    );

    let r = get(&c, &proxy.url("/rw"), &[("host", "shop.example.com")]).await;
    assert_eq!(r.backend(), "other");
    assert_eq!(r.seen_header("host"), vec!["other.internal"]);
    assert_eq!(r.seen_header("x-forwarded-host"), vec!["shop.example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_hops_find_the_client_and_keep_forwarded_proto() {
    let mono = Backend::start("mono").await;
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n",
        upstreams(&[("mono", &mono)])
    );
    let mut proxy = Proxy::start_with("trusted_hops = 1", &cfg, &[]);
    let c = client();
    let r = get(
        &c,
        &proxy.url("/who"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        r.seen_header("x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"]);
    let line = proxy.wait_for_log("path=\"/who\"");
    assert!(line.contains("client=203.0.113.7"), "{line}");
    assert!(
        line.contains("status=200") && line.contains("upstream=\"mono\""),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_and_431() {
    let mono = Backend::start("mono").await;
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n",
        upstreams(&[("mono", &mono)])
    );
    let proxy = Proxy::start_with("max_header_bytes = 8192", &cfg, &[]);
    let no_host = raw(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert!(
        no_host.contains("\"error\":\"missing Host header\""),
        "{no_host}"
    );
    let two_hosts = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert!(
        two_hosts.contains("more than one Host header"),
        "{two_hosts}"
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "y".repeat(20_000)
    );
    let too_large = raw(proxy.addr, big.as_bytes()).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let too_many = raw(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(too_many.starts_with("HTTP/1.1 431"), "{too_many}");
    assert!(too_many.contains("\"error\":"), "{too_many}");
    let malformed = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost a\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    assert!(malformed.contains("malformed request head"), "{malformed}");
    assert_eq!(mono.requests(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_are_502_503_504_with_json() {
    let slow = Backend::start("slow").await;
    let sick = Backend::start("sick").await;
    sick.set_healthy(false);
    let dead = closed_port();
    let cfg = format!(
        r#"[upstreams.dead]
urls = ["http://127.0.0.1:{dead}"]
[upstreams.slow]
urls = ["{}"]
[upstreams.sick]
urls = ["{}"]
health = {{ path = "/healthz", interval = "100ms", timeout = "1s" }}
[default]
upstream = "dead"
[[routes]]
name = "slow"
match.path = "/gate"
upstream = "slow"
timeout = "300ms"
[[routes]]
name = "sick"
match.path_prefix = "/sick"
upstream = "sick"
"#,
        slow.url(),
        sick.url()
    );
    let proxy = Proxy::start(&cfg);
    let c = client();

    let r = get(&c, &proxy.url("/x"), &[]).await;
    assert_eq!(r.status, 502);
    let j = r.json();
    assert_eq!(j["upstream"], "dead");
    assert!(j["route"].is_null());
    assert!(j["error"].as_str().unwrap_or("").contains("connect"), "{j}");
    assert_eq!(r.headers["content-type"], "application/json");

    let r = get(&c, &proxy.url("/gate"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["route"], "slow");
    assert_eq!(r.json()["upstream"], "slow");
    slow.open_gate();

    // The first health check runs at once; until it has, the instance counts as healthy.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = get(&c, &proxy.url("/sick"), &[]).await;
        if r.status == 503 || Instant::now() > deadline {
            break r;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "no healthy upstream instance");
    assert_eq!(r.json()["route"], "sick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_tries_another_instance() {
    let live = Backend::start("live").await;
    let dead = closed_port();
    let cfg = format!(
        "[upstreams.mono]\nurls = [\"http://127.0.0.1:{dead}\", \"{}\"]\neject_after = 1000\n[default]\nupstream = \"mono\"\n",
        live.url()
    );
    let proxy = Proxy::start(&cfg);
    let c = client();
    for i in 0..10 {
        let r = send(&c, "POST", &proxy.url("/p"), &[], format!("body {i}")).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.json()["body_len"],
            format!("body {i}").len(),
            "body reached the live instance"
        );
    }
    assert_eq!(live.requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_instance_is_ejected_and_returns() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_failing(true);
    let cfg = format!(
        "[upstreams.mono]\nurls = [\"{}\", \"{}\"]\neject_after = 3\neject_for = \"300ms\"\n[default]\nupstream = \"mono\"\n",
        a.url(),
        b.url()
    );
    let proxy = Proxy::start(&cfg);
    let c = client();
    // Round robin: a's failures are passed through until it is ejected.
    let mut failures = 0;
    for _ in 0..6 {
        if get(&c, &proxy.url("/x"), &[]).await.status == 503 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "a answered 503 three times, then was ejected");
    let before = a.requests();
    for _ in 0..10 {
        assert_eq!(get(&c, &proxy.url("/x"), &[]).await.backend(), "b");
    }
    assert_eq!(a.requests(), before, "ejected instance got no traffic");
    // Healthy again: after eject_for it gets traffic again.
    a.set_failing(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(&c, &proxy.url("/x"), &[]).await.backend() == "a" {
            break;
        }
        assert!(Instant::now() < deadline, "a never returned");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_streams_both_ways_in_bounded_memory() {
    use http_body_util::BodyExt;
    let mono = Backend::start("mono").await;
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n",
        upstreams(&[("mono", &mono)])
    );
    let proxy = Proxy::start(&cfg);
    const SIZE: usize = 100 * 1024 * 1024;

    // Upload and echo: the request streams up while the response streams back.
    let up: hyper_util::client::legacy::Client<_, support::Chunks> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::post(proxy.url("/echo"))
        .body(support::Chunks::new(SIZE))
        .expect("request");
    let resp = up.request(req).await.expect("echo");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            got += data.len();
        }
    }
    assert_eq!(got, SIZE);

    // Download.
    let c = client();
    let resp = c
        .request(
            http::Request::get(proxy.url(&format!("/bytes/{SIZE}")))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("download");
    let mut body = resp.into_body();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            got += data.len();
        }
    }
    assert_eq!(got, SIZE);
    let peak = proxy.peak_rss_kb();
    assert!(
        peak > 0 && peak < 64 * 1024,
        "proxy peak RSS {peak} kB: bodies were buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_table_and_keeps_in_flight_requests() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let body = |target: &str| {
        format!(
            "{}[default]\nupstream = \"a\"\n[[routes]]\nname = \"r\"\nmatch.path_prefix = \"/\"\nupstream = \"{target}\"\n",
            upstreams(&[("a", &a), ("b", &b)])
        )
    };
    let mut proxy = Proxy::start(&body("a"));
    let c = client();
    assert_eq!(get(&c, &proxy.url("/x"), &[]).await.backend(), "a");

    let mut arrived = a.watch_gate();
    let url = proxy.url("/gate");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    arrived.recv().await.expect("gated request reached a");

    proxy.reload(&body("b"));
    proxy.wait_for_log("config reloaded");
    assert_eq!(
        get(&c, &proxy.url("/x"), &[]).await.backend(),
        "b",
        "next request uses the new table"
    );

    a.open_gate();
    let r = in_flight.await.expect("in-flight request");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.backend(),
        "a",
        "the in-flight request finished where it started"
    );

    // An invalid config is refused; the old table keeps serving.
    std::fs::write(&proxy.config_path, "[[routes]]\nname = 1\n").expect("write");
    proxy.signal("HUP");
    let line = proxy.wait_for_log("config reload failed");
    assert!(line.contains("strangler.toml:2"), "{line}");
    assert_eq!(get(&c, &proxy.url("/x"), &[]).await.backend(), "b");
}

/// Once SIGTERM starts the drain, `/readyz` answers 503 (so that a load
/// balancer stops sending) while a slow request is still in flight; the
/// request still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_draining() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let mut proxy = Proxy::start(&cfg);
    let c = client();
    let readyz = format!("{}/readyz", proxy.admin_url());
    assert_eq!(get(&c, &readyz, &[]).await.status, 200, "ready before");
    let mut arrived = a.watch_gate();
    let url = proxy.url("/gate");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    arrived.recv().await.expect("gated request arrived");

    proxy.signal("TERM");
    proxy.wait_for_log("draining in-flight requests");
    // The gate is still shut: the proxy is draining.
    let r = get(&c, &readyz, &[]).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("draining")),
        "{:?}",
        r.body
    );

    a.open_gate();
    let r = in_flight.await.expect("in-flight");
    assert_eq!(
        r.status, 200,
        "in-flight request completed during the drain"
    );
    assert_eq!(
        tokio::task::spawn_blocking(move || proxy.wait_exit())
            .await
            .expect("join"),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let mut proxy = Proxy::start(&cfg);
    let mut arrived = a.watch_gate();
    let url = proxy.url("/gate");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    arrived.recv().await.expect("gated request arrived");

    proxy.signal("TERM");
    proxy.wait_for_log("draining in-flight requests");
    // No new connections once draining.
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting"
    );

    a.open_gate();
    let r = in_flight.await.expect("in-flight");
    assert_eq!(
        r.status, 200,
        "in-flight request completed during the drain"
    );
    assert_eq!(
        tokio::task::spawn_blocking(move || proxy.wait_exit())
            .await
            .expect("join"),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let proxy = Proxy::start(&cfg);
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let r = get(&h2, &proxy.url("/over-h2?x=1"), &[]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["path"], "/over-h2");
    assert_eq!(
        j["version"], "HTTP/1.1",
        "upstreams are spoken to in HTTP/1.1"
    );
    assert_eq!(
        r.seen_header("host"),
        vec![proxy.addr.to_string()],
        "Host from :authority"
    );
    assert_eq!(r.seen_header("via"), vec!["2 strangler"]);
}

/// A proxy listening with TLS (a certificate for `localhost` made here),
/// its upstream, and a client TLS config that trusts it.
fn tls_proxy(upstream: &str, listen_extra: &str) -> (Proxy, rustls::ClientConfig) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let cfg = format!("[upstreams.a]\nurls = [\"{upstream}\"]\n[default]\nupstream = \"a\"\n");
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\n{listen_extra}",
        cert_path.display(),
        key_path.display()
    );
    let proxy = Proxy::start_with(&tls, &cfg, &[]);
    // The files are read at start.
    drop(dir);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let tls_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (proxy, tls_config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_h2_by_alpn() {
    let a = Backend::start("a").await;
    let (proxy, tls_config) = tls_proxy(&a.url(), "");
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_only()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let url = format!("https://localhost:{}/secure", proxy.addr.port());
    let resp = client
        .request(
            http::Request::get(url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("https request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        http::Version::HTTP_2,
        "h2 negotiated by ALPN"
    );
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(j["headers"]["x-forwarded-proto"][0], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_use_is_one_line_and_exit_1() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let first = Proxy::start(&cfg);
    let data = first.dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["serve", "--config"])
        .arg(&first.config_path)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("in use by another strangler process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_and_answers() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading to the end, as a terminal would.
        let mut admin = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("strangler: admin listening on ") {
                admin = Some(a.trim().to_string());
            }
            if let Some(r) = line.trim().strip_prefix("proxy") {
                let _ = tx.send((
                    r.trim().trim_start_matches("http://").to_string(),
                    admin.clone(),
                ));
            }
        }
    });
    let (addr, admin) =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("join")
            .expect("demo printed the proxy address");
    let admin = admin.expect("demo printed the admin address");
    let c = client();
    let users = get(&c, &format!("http://{addr}/api/users"), &[]).await;
    assert_eq!(users.status, 200);
    assert_eq!(users.json()["served_by"], "monolith");
    let mut seen = std::collections::HashSet::new();
    for u in 0..40 {
        let r = get(
            &c,
            &format!("http://{addr}/api/orders/7"),
            &[("x-user-id", &u.to_string())],
        )
        .await;
        assert_eq!(r.status, 200);
        seen.insert(r.json()["served_by"].as_str().unwrap_or("").to_string());
    }
    assert!(
        seen.contains("monolith") && seen.contains("orders-service"),
        "{seen:?}"
    );
    // The monolith's answers were shadowed to the new service, whose one
    // real difference (the total as a string) is what the diffs show.
    // Once the noise check has seen enough requests, the request ids and
    // timestamps the toys stamp on every answer are known noise, and the
    // listing shows only the real difference.
    let listed = support::wait_until("a demo diff with only real differences", || {
        let out = support::cli_at(&admin, &["diffs", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let first = v["diffs"].as_array()?.first()?.clone();
        (first["hidden"].as_u64() == Some(2)).then_some(first)
    });
    let paths: Vec<&str> = listed["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| d["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(paths, ["/total"], "{listed}");
    // The CLI lines the demo prints work against it.
    let out = support::cli_at(&admin, &["rollback", "orders"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for u in 0..20 {
        let r = get(
            &c,
            &format!("http://{addr}/api/orders/7"),
            &[("x-user-id", &u.to_string())],
        )
        .await;
        assert_eq!(r.json()["served_by"], "monolith");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn demo_traffic_shows_the_mismatch_with_no_other_setup() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["demo", "--port", "0", "--admin-port", "0", "--traffic"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("strangler: admin listening on ") {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let admin = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("demo printed the admin address");
    let listing = support::wait_until("the demo's noise to be recognised", || {
        let out = support::cli_at(&admin, &["diffs"], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("recognised as noise").then_some(text)
    });
    assert!(listing.contains("/total"), "{listing}");
    assert!(
        listing.contains("/generated_at") && listing.contains("/request_id"),
        "{listing}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let proxy = Proxy::start_with("header_read_timeout = \"300ms\"", &cfg, &[]);

    // A client that never finishes its headers.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the proxy kept a slow client's connection open"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // An idle keep-alive connection is closed after the same time.
    let mut idle = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "idle keep-alive connection never closed");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert_eq!(
        a.requests(),
        1,
        "only the complete request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_as_json_or_off() {
    let a = Backend::start("a").await;
    let cfg = format!(
        "{}[default]\nupstream = \"a\"\n[[routes]]\nname = \"orders\"\nmatch.path_prefix = \"/api/orders\"\nupstream = \"a\"\n",
        upstreams(&[("a", &a)])
    );
    let mut proxy = Proxy::start_with("", &cfg, &["--log-format", "json"]);
    let c = client();
    get(&c, &proxy.url("/api/orders/7"), &[]).await;
    let line = proxy.wait_for_log("strangler::access");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "orders");
    assert_eq!(v["upstream"], "a");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/api/orders/7");
    assert!(v["latency_ms"].as_f64().is_some());

    let mut quiet = Proxy::start_with("", &cfg, &["--access-log", "off"]);
    get(&c, &quiet.url("/api/orders/7"), &[]).await;
    quiet.reload(&cfg);
    quiet.wait_for_log("config reloaded");
    assert!(
        !quiet.seen.iter().any(|l| l.contains("strangler::access")),
        "access log line written with --access-log off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_route_by_their_host_and_connect_is_refused() {
    let (mono, admin) = (Backend::start("mono").await, Backend::start("admin").await);
    let cfg = format!(
        "{}[default]\nupstream = \"mono\"\n[[routes]]\nname = \"adm\"\nmatch.host = \"admin.example\"\nupstream = \"admin\"\n",
        upstreams(&[("mono", &mono), ("admin", &admin)])
    );
    let proxy = Proxy::start(&cfg);
    let r = raw(
        proxy.addr,
        b"GET http://admin.example/x HTTP/1.1\r\nHost: www.example\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"backend\":\"admin\""), "{r}");
    assert!(
        r.contains("\"host\":[\"admin.example\"]"),
        "the upstream sees the target's host: {r}"
    );
    let r = raw(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.contains("CONNECT is not supported"), "{r}");
    assert_eq!(mono.requests() + admin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_closed_ones_replaced() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let proxy = Proxy::start(&cfg);
    let c = client();
    for _ in 0..50 {
        assert_eq!(get(&c, &proxy.url("/x"), &[]).await.status, 200);
    }
    assert_eq!(
        a.connections(),
        1,
        "sequential requests reuse one upstream connection"
    );
    // An upstream that closes after each answer: every request still succeeds.
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/close"), &[]).await.status, 200);
    }
    assert_eq!(get(&c, &proxy.url("/x"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_drain_short() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let mut proxy = Proxy::start_with("drain_timeout = \"10m\"", &cfg, &[]);
    let mut arrived = a.watch_gate();
    let url = proxy.url("/gate");
    let in_flight = tokio::spawn(async move {
        let req = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("req");
        client().request(req).await.map(|r| r.status())
    });
    arrived.recv().await.expect("gated request arrived");
    proxy.signal("TERM");
    proxy.wait_for_log("draining in-flight requests");
    proxy.signal("INT");
    proxy.wait_for_log("second shutdown signal");
    let code = tokio::task::spawn_blocking(move || proxy.wait_exit())
        .await
        .expect("join");
    assert_eq!(
        code,
        Some(0),
        "exits without waiting out the 10 minute drain"
    );
    let r = in_flight.await.expect("task");
    assert!(r.is_err(), "the cut-off request got an answer: {r:?}");
    a.open_gate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_get_origin_form_request_lines() {
    let primary = support::RawBackend::start().await;
    let shadow = support::RawBackend::start().await;
    let cfg = format!(
        r#"[upstreams.monolith]
urls = ["{}"]
health = {{ path = "/healthz?deep=1", interval = "50ms" }}
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "orders"
match.path_prefix = "/api"
split = {{ monolith = 100 }}
shadow = {{ upstream = "orders" }}
"#,
        primary.url(),
        shadow.url()
    );
    let proxy = Proxy::start(&cfg);
    let c = client();
    let r = get(&c, &proxy.url("/api/orders/7?x=1&y=%20z"), &[]).await;
    assert_eq!(r.status, 200);
    let shadow_lines = support::wait_until("the shadow request", || {
        let l = shadow.request_lines();
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(shadow_lines, ["GET /api/orders/7?x=1&y=%20z HTTP/1.1"]);
    let lines = support::wait_until("a health check", || {
        let l = primary.request_lines();
        l.iter().any(|l| l.contains("healthz")).then_some(l)
    });
    assert!(
        lines.contains(&"GET /api/orders/7?x=1&y=%20z HTTP/1.1".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"GET /healthz?deep=1 HTTP/1.1".to_string()),
        "{lines:?}"
    );
}

/// A route table with one upstream, the given raw backend.
fn raw_upstream_config(url: &str) -> String {
    format!(
        r#"[upstreams.monolith]
urls = ["{url}"]
[default]
upstream = "monolith"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_framings_pass_through_on_kept_alive_connections() {
    use support::RawReply;
    let backend = support::RawBackend::start_with(|head| {
        let path = head.split(' ').nth(1).unwrap_or("");
        match path {
            "/chunked" => RawReply::keep(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            ),
            "/early-hints" => RawReply::keep(
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nafter",
            ),
            "/no-content" => RawReply::keep(b"HTTP/1.1 204 No Content\r\nx-a: b\r\n\r\n"),
            "/split-head" => RawReply::keep(
                b"HTTP/1.1 200 OK\r\nx-long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\ncontent-length: 4\r\n\r\ndone",
            ),
            _ => RawReply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        }
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
    let c = client();
    for round in 0..3 {
        let r = get(&c, &proxy.url("/chunked"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"hello world", "round {round}");
        let r = get(&c, &proxy.url("/early-hints"), &[]).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"after"[..]));
        let r = get(&c, &proxy.url("/no-content"), &[]).await;
        assert_eq!(r.status, 204);
        assert_eq!(r.headers["x-a"], "b");
        assert!(r.body.is_empty());
        let r = get(&c, &proxy.url("/split-head"), &[]).await;
        assert_eq!(&r.body[..], b"done");
        let r = get(&c, &proxy.url("/plain"), &[]).await;
        assert_eq!(&r.body[..], b"ok");
    }
    // Every body was read to its end, so one connection served them all.
    assert_eq!(backend.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bodies_delimited_by_close_or_both_lengths_are_not_reused() {
    use support::RawReply;
    let backend = support::RawBackend::start_with(|head| {
        if head.contains(" /until-close ") {
            RawReply::close(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nread until the end")
        } else if head.contains(" /said-close ") {
            RawReply::close(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye")
        } else if head.contains(" /http10 ") {
            RawReply::close(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold")
        } else {
            // Transfer-Encoding wins over Content-Length, which is dropped.
            RawReply::keep(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
        }
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
    let c = client();
    let r = get(&c, &proxy.url("/until-close"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), &r.body[..]),
        (200, &b"read until the end"[..])
    );
    let r = get(&c, &proxy.url("/both"), &[]).await;
    assert_eq!(&r.body[..], b"abc");
    assert!(r.headers.get("content-length").is_none_or(|v| v == "3"));
    let r = get(&c, &proxy.url("/both"), &[]).await;
    assert_eq!(&r.body[..], b"abc");
    assert_eq!(
        backend.connections(),
        3,
        "no connection is reused after either"
    );
    // `Connection: close`, and HTTP/1.0 without keep-alive: answered, and
    // the next request opens a new connection (nothing stale is reused).
    for path in ["/said-close", "/http10", "/said-close"] {
        let r = get(&c, &proxy.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.headers.get("connection").is_none(), "{path}");
    }
    assert_eq!(backend.connections(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_responses_keep_their_length_and_carry_no_body() {
    use support::RawReply;
    let backend = support::RawBackend::start_with(|_| {
        RawReply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
    for _ in 0..2 {
        let text = support::raw(
            proxy.addr,
            b"HEAD /thing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("content-length: 10"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n"), "a body followed: {text:?}");
    }
    assert_eq!(backend.connections(), 1, "the connection was reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_idle_connections_costs_no_request() {
    use support::RawReply;
    // Answers as if keeping the connection, then closes it: the proxy finds
    // its pooled connection dead and opens another.
    let backend = support::RawBackend::start_with(|_| {
        RawReply::close(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
    let c = client();
    for i in 0..20 {
        let r = get(&c, &proxy.url("/again"), &[]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok"[..]),
            "request {i}"
        );
    }
    assert_eq!(backend.connections(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upstream_responses_are_502_with_json() {
    use support::RawReply;
    let backend = support::RawBackend::start_with(|head| {
        if head.contains(" /garbage ") {
            RawReply::keep(b"this is not http\r\n\r\n")
        } else if head.contains(" /bad-length ") {
            RawReply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok")
        } else {
            RawReply::close(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\ncut short")
        }
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
    let c = client();
    for path in ["/garbage", "/bad-length"] {
        let r = get(&c, &proxy.url(path), &[]).await;
        assert_eq!(r.status, 502, "{path}");
        let j = r.json();
        assert_eq!(j["upstream"], "monolith", "{path}");
        let msg = j["error"].as_str().unwrap_or("");
        assert!(
            msg.starts_with("upstream connection failed"),
            "{path}: {msg}"
        );
    }
    // A body cut short cannot be answered with a status any more: the
    // client's response is cut too (before or after its head), never passed
    // on as complete.
    let req = http::Request::get(proxy.url("/short"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    if let Ok(resp) = c.request(req).await {
        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert!(body.is_err(), "a truncated body was passed on as complete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_upstream_drops_unanswered_is_sent_again_at_most_once() {
    use support::RawReply;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let backend = support::RawBackend::start_with(move |head| {
        if head.contains(" /dies ") {
            // Read, then closed without an answer (a crashed handler).
            RawReply::close(b"")
        } else {
            RawReply::gated(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", &g)
        }
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
    // Three requests held at once: three upstream connections, idle after.
    let warm: Vec<_> = (0..3)
        .map(|_| {
            let url = proxy.url("/warm");
            tokio::spawn(async move { get(&client(), &url, &[]).await.status })
        })
        .collect();
    support::wait_until("three held requests", || {
        (backend.request_lines().len() == 3).then_some(())
    });
    gate.add_permits(3);
    for w in warm {
        assert_eq!(w.await.expect("task"), 200);
    }
    assert_eq!(backend.connections(), 3);
    let r = get(&client(), &proxy.url("/dies"), &[]).await;
    assert_eq!(r.status, 502);
    let sent = backend
        .request_lines()
        .iter()
        .filter(|l| l.contains("/dies"))
        .count();
    assert_eq!(sent, 2, "sent once, and again once on a new connection");
}

/// Everything a client connection carries, in order: pipelined requests,
/// requests with bodies (which hyper serves) between body-less ones (which
/// the lean path serves), HEAD, and Connection: close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_connection_serves_pipelined_requests_with_and_without_bodies_in_order() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let proxy = Proxy::start(&cfg);
    let mut c = WireClient::connect(proxy.addr).await;
    let json = |r: &support::WireResponse| -> serde_json::Value {
        serde_json::from_slice(&r.body).expect("json body")
    };
    // Two requests in one write: answered in order.
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    for path in ["/one", "/two"] {
        let r = c.response(false).await;
        assert!(r.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.head);
        assert_eq!(json(&r)["path"], path);
        assert!(r.header("date").is_some(), "{}", r.head);
    }
    // A request with a body, and one without right behind it.
    c.send(b"POST /three HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /four HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(
        (
            json(&r)["method"].clone(),
            json(&r)["path"].clone(),
            json(&r)["body_len"].clone()
        ),
        ("POST".into(), "/three".into(), 5.into())
    );
    let r = c.response(false).await;
    assert_eq!(json(&r)["path"], "/four");
    // HEAD: the length of the GET, no body.
    c.send(b"HEAD /five HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(true).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert!(
        r.header("content-length").is_some_and(|l| l != "0"),
        "{}",
        r.head
    );
    // The client's Connection: close is answered, then the connection closes.
    c.send(b"GET /six HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(json(&r)["path"], "/six");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(
        c.closed().await,
        "connection left open after Connection: close"
    );
    assert_eq!(a.requests(), 6);
}

/// HTTP/1.0 clients get HTTP/1.0 answers: closed after each unless they ask
/// for keep-alive, and a body of unknown length is delimited by the close
/// (HTTP/1.1 clients get it chunked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_http10_answers_and_unknown_lengths_are_framed_per_version() {
    use support::RawReply;
    let backend = support::RawBackend::start_with(|head| {
        if head.starts_with("GET /stream ") {
            RawReply::close(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nstreamed body")
        } else {
            RawReply::keep(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = Proxy::start(&raw_upstream_config(&backend.url()));

    let mut c = WireClient::connect(proxy.addr).await;
    c.send(b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.0 200 OK\r\n"), "{}", r.head);
    assert_eq!(r.body, b"ok");
    assert!(c.closed().await, "HTTP/1.0 without keep-alive left open");

    let mut c = WireClient::connect(proxy.addr).await;
    for path in ["/b", "/c"] {
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .await;
        let r = c.response(false).await;
        assert!(r.head.starts_with("HTTP/1.0 200 OK\r\n"), "{}", r.head);
        assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    }

    let mut c = WireClient::connect(proxy.addr).await;
    c.send(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(
        r.header("transfer-encoding").as_deref(),
        Some("chunked"),
        "{}",
        r.head
    );
    assert_eq!(r.body, b"streamed body");
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        c.response(false).await.body,
        b"ok",
        "kept alive after a chunked answer"
    );

    let mut c = WireClient::connect(proxy.addr).await;
    c.send(b"GET /stream HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.0 200 OK\r\n"), "{}", r.head);
    assert!(r.header("transfer-encoding").is_none() && r.header("content-length").is_none());
    // The body ran to the close, so the close came.
    assert_eq!(r.body, b"streamed body");
}

/// On SIGTERM an idle keep-alive connection is closed at once, while a
/// request in flight finishes, told that the connection closes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_idle_connections_and_finishes_busy_ones_with_connection_close() {
    let a = Backend::start("a").await;
    let cfg = format!("{}[default]\nupstream = \"a\"\n", upstreams(&[("a", &a)]));
    let mut proxy = Proxy::start(&cfg);
    let mut idle = WireClient::connect(proxy.addr).await;
    idle.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(idle.response(false).await.head.starts_with("HTTP/1.1 200"));

    let mut arrived = a.watch_gate();
    let mut busy = WireClient::connect(proxy.addr).await;
    busy.send(b"GET /gate HTTP/1.1\r\nHost: a\r\n\r\n").await;
    arrived.recv().await.expect("gated request arrived");

    proxy.signal("TERM");
    proxy.wait_for_log("draining in-flight requests");
    // The gate is still shut, so the proxy is still draining here.
    assert!(
        idle.closed().await,
        "idle connection kept open while draining"
    );
    a.open_gate();
    let r = busy.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(busy.closed().await);
    assert_eq!(
        tokio::task::spawn_blocking(move || proxy.wait_exit())
            .await
            .expect("join"),
        Some(0)
    );
}

/// Bytes in a [`big_body_backend`] answer: far more than the socket
/// buffers between the upstream and a client.
const BIG_BODY: usize = 32 << 20;

/// An upstream that answers every request with `BIG_BODY` bytes.
async fn big_body_backend() -> RawBackend {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {BIG_BODY}\r\n\r\n"
    )
    .into_bytes();
    answer.resize(answer.len() + BIG_BODY, b'x');
    RawBackend::start_with(move |_| RawReply::keep(&answer)).await
}

/// A client that stops reading its answer is cut off after `send_timeout`
/// (nginx's send_timeout): on the lean path (a GET) and on hyper's (a
/// request with a body), rather than holding its connection, and the
/// upstream's behind it, for as long as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let big = big_body_backend().await;
    let cfg = format!(
        "[upstreams.big]\nurls = [\"{}\"]\n[default]\nupstream = \"big\"\n",
        big.url()
    );
    let mut proxy = Proxy::start_with("send_timeout = \"300ms\"", &cfg, &[]);
    let requests = [
        "GET /big HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /big HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello",
    ];
    for (n, request) in requests.iter().enumerate() {
        let mut c = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        c.write_all(request.as_bytes()).await.expect("write");
        // Nothing read: the proxy's writes stall until it gives up.
        proxy.wait_for_logs("stopped reading its answer", n + 1);
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{request:?}: the connection stayed open");
        assert!(got.starts_with(b"HTTP/1.1 200"), "{request:?}");
        assert!(
            got.len() < BIG_BODY,
            "{request:?}: the whole answer went through ({} bytes)",
            got.len()
        );
    }
}

/// HTTP/1.1 over TLS takes the lean path as plain TCP does: keep-alive,
/// a request with a body (handed to hyper mid-connection), forwarding
/// headers saying https, and a malformed head answered with the JSON 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_http1_keeps_alive_and_answers_like_plain_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let (proxy, mut tls_config) = tls_proxy(&a.url(), "");
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        connector
            .connect(name.clone(), tcp)
            .await
            .expect("handshake")
    };

    let tls = connect().await;
    let mut c = WireClient::new(tls);
    for i in 0..3 {
        c.send(format!("GET /k/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await;
        let r = c.response(false).await;
        assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
        let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(j["path"], format!("/k/{i}"));
        assert_eq!(j["headers"]["x-forwarded-proto"][0], "https");
    }
    c.send(b"POST /body HTTP/1.1\r\nHost: localhost\r\ncontent-length: 5\r\n\r\nhello")
        .await;
    let r = c.response(false).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    assert_eq!(a.requests(), 4, "one connection carried every request");

    let mut bad = connect().await;
    bad.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nbad header\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    bad.read_to_end(&mut got).await.ok();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains(r#""error":"#), "a JSON error body: {text}");
}

/// A start that fails (the proxy's address is taken) is exit 1 and
/// leaves no store directory behind.
#[test]
fn an_address_in_use_is_exit_1_and_leaves_nothing_on_disk() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let config = dir.path().join("strangler.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nproxy = \"{addr}\"\nadmin = \"127.0.0.1:0\"\n[upstreams.a]\nurls = [\"http://127.0.0.1:9\"]\n[default]\nupstream = \"a\"\n"
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!data.exists(), "a failed start created the store");
}

/// Over TLS too, a client that stops reading is cut off after
/// `send_timeout` (the timer sits beneath TLS, on the socket's writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_stops_reading_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let big = big_body_backend().await;
    let (mut proxy, mut tls_config) = tls_proxy(&big.url(), "send_timeout = \"300ms\"");
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let mut c = connector.connect(name, tcp).await.expect("handshake");
    c.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    c.flush().await.expect("flush");
    proxy.wait_for_log("stopped reading its answer");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.len() < BIG_BODY, "the whole answer went through");
}

/// Issue 17: what an upstream's answer may not do to the framing or the
/// protocol of the client's connection, on both ways of sending (the lean
/// exchange for body-less requests, hyper's client for requests with bodies).
mod upstream_answers {
    use super::*;
    use support::{RawReply, WireClient};

    /// A chunked body's data, its chunk framing removed.
    fn dechunk(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = raw
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a chunk-size line");
            let size =
                usize::from_str_radix(std::str::from_utf8(&raw[..line]).expect("ascii").trim(), 16)
                    .expect("chunk size");
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&raw[line + 2..line + 2 + size]);
            assert_eq!(&raw[line + 2 + size..line + 4 + size], b"\r\n");
            raw = &raw[line + 4 + size..];
        }
    }

    const GET: &str = "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    const POST: &str =
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

    async fn ask(proxy: &Proxy, template: &str, path: &str) -> support::WireResponse {
        let mut c = WireClient::connect(proxy.addr).await;
        c.send(template.replace("{path}", path).as_bytes()).await;
        c.response(false).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_encoding_wins_over_content_length_on_both_paths() {
        let backend = support::RawBackend::start_with(|_| {
            RawReply::keep(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            )
        })
        .await;
        let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
        for template in [GET, POST] {
            let r = ask(&proxy, template, "/both").await;
            assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
            assert_ne!(
                r.header("content-length").as_deref(),
                Some("3"),
                "{}",
                r.head
            );
            assert_eq!(r.body, b"hello world", "{template}: {}", r.head);
        }
        // Neither connection was reused after such an answer.
        let r = ask(&proxy, POST, "/again").await;
        assert_eq!(r.body, b"hello world");
        assert_eq!(backend.connections(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unrequested_101_is_502_on_both_paths() {
        let backend = support::RawBackend::start_with(|_| {
            RawReply::keep(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            )
        })
        .await;
        let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
        for template in [GET, POST] {
            let r = ask(&proxy, template, "/switch").await;
            assert!(r.head.starts_with("HTTP/1.1 502"), "{template}: {}", r.head);
            let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            assert_eq!(j["upstream"], "monolith");
            assert!(
                j["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("101 Switching Protocols")),
                "{j}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfer_codings_besides_chunked_are_kept_on_responses() {
        let backend = support::RawBackend::start_with(|head| {
            if head.contains(" /until-close ") {
                RawReply::close(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nCODED")
            } else {
                RawReply::keep(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nCODED\r\n0\r\n\r\n",
                )
            }
        })
        .await;
        let proxy = Proxy::start(&raw_upstream_config(&backend.url()));
        for template in [GET, POST] {
            for path in ["/chunked", "/until-close"] {
                let r = ask(&proxy, template, path).await;
                assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
                assert_eq!(
                    r.header("transfer-encoding").as_deref(),
                    Some("gzip, chunked"),
                    "{template} {path}: {}",
                    r.head
                );
                assert!(r.header("content-length").is_none(), "{}", r.head);
                // Read to the close (the framing header is not plain
                // `chunked`), then de-chunked here.
                assert_eq!(dechunk(&r.body), b"CODED", "{template} {path}");
            }
        }
        // An HTTP/1.0 client cannot be sent a transfer coding: 502, not the
        // coded body passed off as plain.
        let r = ask(&proxy, "GET {path} HTTP/1.0\r\nHost: a\r\n\r\n", "/chunked").await;
        assert!(r.head.starts_with("HTTP/1.0 502"), "{}", r.head);
    }
}
