//! Gateway policies through the real binary: per-route rate limits.

mod support;

use support::{Backend, Proxy, client, get};

/// A slow refill (one request every 5 s) so the test never races it.
fn config(b: &Backend, key: &str) -> String {
    format!(
        r#"[upstreams.app]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ app = 100 }}
rate_limit = {{ per_second = 0.2, burst = 3, key = "{key}" }}
"#,
        b.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_then_429_with_the_headers_and_keys_are_isolated() {
    let b = Backend::start("app").await;
    let proxy = Proxy::start(&config(&b, "header:x-user-id"));
    let c = client();
    let ana = [("x-user-id", "ana")];
    for left in [2, 1, 0] {
        let r = get(&c, &proxy.url("/api/x"), &ana).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-policy"], "\"default\";q=3;w=15");
        let state = r.headers["ratelimit"].to_str().expect("ascii");
        assert!(
            state.starts_with(&format!("\"default\";r={left};")),
            "{state}"
        );
    }
    let r = get(&c, &proxy.url("/api/x"), &ana).await;
    assert_eq!(
        r.status, 429,
        "the fourth within 5 s is over the burst of 3"
    );
    assert_eq!(r.headers["retry-after"], "5");
    assert_eq!(r.headers["ratelimit"], "\"default\";r=0;t=5");
    assert_eq!(r.headers["ratelimit-policy"], "\"default\";q=3;w=15");
    let body = r.json();
    assert_eq!(body["route"], "api");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("rate limit")),
        "{body}"
    );
    // Another user has a budget of their own; a path outside the route has no limit.
    assert_eq!(
        get(&c, &proxy.url("/api/x"), &[("x-user-id", "bo")])
            .await
            .status,
        200
    );
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/other"), &ana).await.status, 200);
    }
    assert_eq!(
        b.requests(),
        3 + 1 + 5,
        "the refused request never reached the upstream"
    );
    let metrics = get(&c, &format!("{}/metrics", proxy.admin_url()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("strangler_rate_limited_total{route=\"api\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_key_and_a_reload_keep_the_count() {
    let b = Backend::start("app").await;
    let mut proxy = Proxy::start(&config(&b, "ip"));
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &proxy.url("/api/x"), &[]).await.status, 200);
    }
    // A reload with the same limit keeps its state: still over the burst.
    proxy.reload(&config(&b, "ip"));
    proxy.wait_for_log("config reloaded");
    assert_eq!(get(&c, &proxy.url("/api/x"), &[]).await.status, 429);
    // Any client header does not matter with the ip key.
    assert_eq!(
        get(&c, &proxy.url("/api/x"), &[("x-user-id", "bo")])
            .await
            .status,
        429
    );
}
