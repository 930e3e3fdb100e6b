//! The control plane through the real binary: the admin API, the runtime
//! layer in sled and the CLI (shift, rollback, reset, history, revert,
//! reload, explain --live, status), tokens, If-Match, crash safety.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::{Backend, Proxy, cli_at, client, get};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn two_backends() -> (Backend, Backend) {
    (
        Backend::start("monolith").await,
        Backend::start("orders").await,
    )
}

fn config(mono: &Backend, orders: &Backend, file_split: &str) -> String {
    format!(
        r#"[upstreams.monolith]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "orders"
match.path_prefix = "/api/orders"
split = {{ {file_split} }}
sticky = "header:x-user-id"
"#,
        mono.url(),
        orders.url()
    )
}

fn status(p: &Proxy) -> serde_json::Value {
    let out = p.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_changes_the_observed_distribution() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 0, monolith = 100"));
    let c = client();
    for _ in 0..50 {
        assert_eq!(
            get(&c, &proxy.url("/api/orders/1"), &[]).await.backend(),
            "monolith"
        );
    }
    let out = proxy.cli(&["shift", "orders", "50", "--reason", "canary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("version 2: canary"),
        "{}",
        text(&out.stdout)
    );
    let mut on_orders = 0;
    for u in 0..400 {
        let r = get(
            &c,
            &proxy.url("/api/orders/1"),
            &[("x-user-id", &format!("u{u}"))],
        )
        .await;
        if r.backend() == "orders" {
            on_orders += 1;
        }
    }
    assert!(
        (140..=260).contains(&on_orders),
        "{on_orders} of 400 on orders after shift 50"
    );
    let s = status(&proxy);
    assert_eq!(s["routes"][0]["split"]["orders"], 50.0);
    assert_eq!(s["routes"][0]["file_split"]["orders"], 0.0);
    assert_eq!(s["routes"][0]["override"], true);
    assert!(
        s["routes"][0]["upstreams"]["orders"]["rps"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_under_load_loses_nothing_and_applies_to_the_next_request() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 50, monolith = 50"));
    let rolled_back = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn in 0..4 {
        let url = proxy.url("/api/orders/1");
        let (rolled_back, stop) = (rolled_back.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client(); // one keep-alive connection per task
            let mut after = Vec::new();
            let mut sent = 0u32;
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let was_rolled_back = rolled_back.load(Ordering::SeqCst);
                let user = format!("user-{conn}-{}", n % 20);
                let r = get(&c, &url, &[("x-user-id", &user)]).await;
                assert_eq!(r.status, 200, "a request failed during the rollback");
                sent += 1;
                if was_rolled_back {
                    after.push(r.backend());
                }
                n += 1;
            }
            (sent, after)
        }));
    }
    // Let traffic flow on both sides first.
    while orders.requests() < 50 {
        tokio::task::yield_now().await;
    }
    let admin = proxy.admin_url();
    let out = tokio::task::spawn_blocking(move || {
        cli_at(&admin, &["rollback", "orders", "--reason", "errors"], None)
    })
    .await
    .expect("cli");
    assert!(out.status.success(), "{}", text(&out.stderr));
    rolled_back.store(true, Ordering::SeqCst);
    let orders_at_rollback = orders.requests();
    while mono.requests() < orders_at_rollback + 400 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut after_total = 0;
    for t in tasks {
        let (sent, after) = t.await.expect("load task");
        assert!(sent > 0);
        after_total += after.len();
        assert!(
            after.iter().all(|b| b == "monolith"),
            "a request sent after the rollback reached orders"
        );
    }
    assert!(after_total > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_revert_reset_and_reload_keep_an_exact_record() {
    let (mono, orders) = two_backends().await;
    let body = config(&mono, &orders, "orders = 10, monolith = 90");
    let mut proxy = Proxy::start(&body);
    assert!(
        proxy
            .cli(&[
                "--actor", "ana", "shift", "orders", "25", "--reason", "canary"
            ])
            .status
            .success()
    );
    let v2 = status(&proxy);
    assert!(
        proxy
            .cli(&["--actor", "bo", "shift", "orders", "60"])
            .status
            .success()
    );
    assert!(
        proxy
            .cli(&["--actor", "cy", "rollback", "orders", "--reason", "p99 up"])
            .status
            .success()
    );
    let shown = text(&proxy.cli(&["status"]).stdout);
    assert!(shown.contains("(ROLLED BACK; file: "), "{shown}");

    let out = proxy.cli(&["history", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history JSON");
    let versions = h["versions"].as_array().expect("versions");
    let nums: Vec<u64> = versions
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(nums, vec![4, 3, 2, 1], "newest first, strictly increasing");
    assert_eq!(versions[0]["actor"], "cy");
    assert_eq!(versions[0]["reason"], "p99 up");
    assert_eq!(versions[0]["route"], "orders");
    assert_eq!(versions[0]["change"]["after"]["rolled_back"], true);
    assert_eq!(versions[2]["actor"], "ana");
    assert_eq!(versions[2]["change"]["before"], serde_json::Value::Null);
    assert!(versions[0]["time"].as_str().unwrap_or("").ends_with('Z'));
    let table = text(&proxy.cli(&["history", "--route", "orders"]).stdout);
    assert!(table.contains("ana") && table.contains("canary"), "{table}");

    // Revert to version 2: exactly the state right after it.
    let out = proxy.cli(&["revert", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let now = status(&proxy);
    assert_eq!(now["routes"][0]["split"], v2["routes"][0]["split"]);
    assert_eq!(now["version"], 5);

    // A reload that changes the file keeps the override and is a version.
    proxy.reload(&body.replace("orders = 10, monolith = 90", "orders = 5, monolith = 95"));
    proxy.wait_for_log("config reloaded");
    let s = status(&proxy);
    assert_eq!(s["version"], 6);
    assert_eq!(s["routes"][0]["split"]["orders"], 25.0);
    assert_eq!(s["routes"][0]["file_split"]["orders"], 5.0);

    // Reset: the file applies again.
    assert!(proxy.cli(&["reset", "orders"]).status.success());
    let s = status(&proxy);
    assert_eq!(s["routes"][0]["split"]["orders"], 5.0);
    assert_eq!(s["routes"][0]["override"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_when_set_and_nothing_changes_without_one() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start_env(
        "",
        &config(&mono, &orders, "orders = 10, monolith = 90"),
        &[],
        &[("STRANGLER_ADMIN_TOKEN", "s3cret")],
    );
    let admin = proxy.admin_url();
    for token in [None, Some("wrong")] {
        let out = cli_at(&admin, &["shift", "orders", "50"], token);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("missing or wrong admin token"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = cli_at(&admin, &["status", "--json"], Some("s3cret"));
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["version"], 1, "nothing changed");
    assert_eq!(s["routes"][0]["split"]["orders"], 10.0);
    // Health endpoints need no token.
    let c = client();
    assert_eq!(get(&c, &format!("{admin}/healthz"), &[]).await.status, 200);
    assert_eq!(get(&c, &format!("{admin}/readyz"), &[]).await.status, 200);
    assert_eq!(
        get(&c, &format!("{admin}/api/v1/status"), &[]).await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_address_without_token_refuses_to_start() {
    let (mono, orders) = two_backends().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("strangler.toml");
    let cfg = support::config_with(
        dir.path(),
        "",
        &config(&mono, &orders, "orders = 10, monolith = 90"),
    )
    .replace("admin = \"127.0.0.1:0\"", "admin = \"0.0.0.0:0\"");
    std::fs::write(&path, cfg).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("STRANGLER_ADMIN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is not loopback and STRANGLER_ADMIN_TOKEN is not set"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_survives_kill_9() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 100"));
    let c = client();
    assert_eq!(
        get(&c, &proxy.url("/api/orders/1"), &[]).await.backend(),
        "orders"
    );
    assert!(
        proxy
            .cli(&["rollback", "orders", "--reason", "bad deploy"])
            .status
            .success()
    );
    let proxy = proxy.crash_and_restart();
    for u in 0..20 {
        let r = get(
            &c,
            &proxy.url("/api/orders/1"),
            &[("x-user-id", &u.to_string())],
        )
        .await;
        assert_eq!(r.backend(), "monolith", "the rollback was lost");
    }
    let out = proxy.cli(&["history", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let reasons: Vec<&str> = h["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"bad deploy"), "{reasons:?}");
    assert_eq!(h["versions"][0]["version"], 3, "start, rollback, restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_if_match_one_gets_409() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 10, monolith = 90"));
    let c = client();
    let url = format!("{}/api/v1/routes/orders/split", proxy.admin_url());
    let mut tasks = Vec::new();
    for pct in [30, 40] {
        let url = url.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!(
                "{{\"weights\": {{\"orders\": {pct}, \"monolith\": {}}}, \"reason\": \"w{pct}\"}}",
                100 - pct
            );
            support::send(
                &c,
                "PUT",
                &url,
                &[("if-match", "1"), ("content-type", "application/json")],
                body,
            )
            .await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task").status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 409]);
    let s = status(&proxy);
    assert_eq!(s["version"], 2, "exactly one write landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_and_explain_live() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 10, monolith = 90"));
    for (args, code, msg) in [
        (vec!["shift", "orders", "150"], 1, "invalid percent \"150\""),
        (vec!["shift", "orders", "-5"], 1, "invalid percent \"-5\""),
        (vec!["shift", "nope", "10"], 1, "unknown route \"nope\""),
        (
            vec!["history", "--route", "nope"],
            1,
            "no route named \"nope\"",
        ),
        (
            vec!["shift", "orders", "10", "--to", "ghost"],
            1,
            "unknown upstream \"ghost\" (known: monolith, orders)",
        ),
        (
            vec!["shift", "orders", "10", "--to", "monolith"],
            1,
            "is the default upstream",
        ),
        (vec!["revert", "99"], 1, "unknown version 99"),
    ] {
        let out = proxy.cli(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(msg),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        status(&proxy)["version"],
        1,
        "refused commands changed nothing"
    );

    assert!(proxy.cli(&["shift", "orders", "100"]).status.success());
    let out = proxy.cli(&["explain", "GET", "/api/orders/3", "--live"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("upstream: orders"),
        "{}",
        text(&out.stdout)
    );

    drop(proxy);
    let out = cli_at("http://127.0.0.1:9", &["status"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim(),
        "cannot reach strangler admin at http://127.0.0.1:9: connection refused"
    );
    // An empty STRANGLER_ADMIN is no address: the default is used.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .arg("status")
        .env("STRANGLER_ADMIN", "")
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert!(!err.contains("invalid --admin URL"), "{err}");
    assert!(
        out.status.success() || err.contains("http://127.0.0.1:9901"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_in_prometheus_text() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 0, monolith = 100"));
    let c = client();
    for _ in 0..7 {
        get(&c, &proxy.url("/api/orders/1"), &[]).await;
    }
    get(&c, &proxy.url("/status/503"), &[]).await;
    assert!(proxy.cli(&["shift", "orders", "30"]).status.success());
    let m = get(&c, &format!("{}/metrics", proxy.admin_url()), &[]).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body).into_owned();
    for line in [
        "strangler_config_version 2",
        "strangler_requests_total{route=\"orders\",upstream=\"monolith\",status=\"2xx\"} 7",
        "strangler_requests_total{route=\"(default)\",upstream=\"monolith\",status=\"5xx\"} 1",
        "strangler_request_duration_seconds_count{route=\"orders\",upstream=\"monolith\"} 7",
        "strangler_request_duration_seconds_bucket{route=\"orders\",upstream=\"monolith\",le=\"+Inf\"} 7",
        "strangler_route_weight_percent{route=\"orders\",upstream=\"orders\"} 30",
        "strangler_route_weight_percent{route=\"orders\",upstream=\"monolith\"} 70",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains(&format!(
        "strangler_upstream_instance_up{{upstream=\"orders\",instance=\"{}\"}} 1",
        orders.addr
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_that_no_longer_fit_are_dropped_and_recorded() {
    let (mono, orders) = two_backends().await;
    let body = config(&mono, &orders, "orders = 20, monolith = 80");
    let mut proxy = Proxy::start(&body);
    // A rollback follows the default upstream, whatever it is renamed to.
    assert!(proxy.cli(&["rollback", "orders"]).status.success());
    let renamed = body
        .replace("[upstreams.monolith]", "[upstreams.legacy]")
        .replace("upstream = \"monolith\"", "upstream = \"legacy\"")
        .replace("monolith = 80", "legacy = 80");
    proxy.reload(&renamed);
    proxy.wait_for_log("config reloaded");
    let c = client();
    for u in 0..30 {
        let r = get(
            &c,
            &proxy.url("/api/orders/1"),
            &[("x-user-id", &u.to_string())],
        )
        .await;
        assert_eq!(
            r.backend(),
            "monolith",
            "the rolled-back route left the (renamed) default upstream"
        );
    }
    let s = status(&proxy);
    assert_eq!(s["routes"][0]["rolled_back"], true);
    assert_eq!(s["routes"][0]["split"]["legacy"], 100.0);

    // A shift to an upstream that the file then removes is dropped, and history says so.
    assert!(
        proxy
            .cli(&["shift", "orders", "50", "--to", "orders"])
            .status
            .success()
    );
    let without_orders = renamed
        .replace(
            &format!("[upstreams.orders]\nurls = [\"{}\"]\n", orders.url()),
            "",
        )
        .replace("orders = 20, legacy = 80", "legacy = 100");
    proxy.reload(&without_orders);
    proxy.wait_for_log("dropped overrides that no longer fit the config");
    let s = status(&proxy);
    assert_eq!(s["routes"][0]["override"], false, "{s}");
    let out = proxy.cli(&["history", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let reason = h["versions"][0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("orders split (unknown upstream \"orders\""),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_anything_but_the_admin_api() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start_env(
        "",
        &config(&mono, &orders, "orders = 20, monolith = 80"),
        &[],
        &[("STRANGLER_ADMIN_TOKEN", "s3cret")],
    );
    // The proxy port answers 200 from the monolith: that is not a rollback.
    let out = cli_at(
        &format!("http://{}", proxy.addr),
        &["rollback", "orders"],
        Some("s3cret"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("is not a strangler admin API"), "{err}");
    assert_eq!(err.lines().count(), 1);
    // The bearer scheme is case-insensitive.
    let c = client();
    let r = get(
        &c,
        &format!("{}/api/v1/status", proxy.admin_url()),
        &[("authorization", "bearer s3cret")],
    )
    .await;
    assert_eq!(r.status, 200);
    // A known endpoint with the wrong method: 405 with Allow; no endpoint: 404.
    let auth = [("authorization", "Bearer s3cret")];
    for (method, path, code, allow) in [
        ("DELETE", "/api/v1/status", 405, Some("GET")),
        ("GET", "/api/v1/routes/orders/shift", 405, Some("POST")),
        ("GET", "/api/v1/nothing", 404, None),
    ] {
        let url = format!("{}{path}", proxy.admin_url());
        let r = support::send(&c, method, &url, &auth, "").await;
        assert_eq!(r.status, code, "{method} {path}");
        assert_eq!(
            r.headers.get("allow").and_then(|v| v.to_str().ok()),
            allow,
            "{method} {path}"
        );
        if let Some(allow) = allow {
            let error = r.json()["error"].as_str().unwrap_or("").to_string();
            assert!(error.contains(&format!("use {allow}")), "{error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_change_nothing_write_no_version() {
    let (mono, orders) = two_backends().await;
    let proxy = Proxy::start(&config(&mono, &orders, "orders = 10, monolith = 90"));
    assert!(proxy.cli(&["rollback", "orders"]).status.success());
    assert_eq!(status(&proxy)["version"], 2);
    let again = proxy.cli(&["rollback", "orders"]);
    assert!(again.status.success());
    assert_eq!(
        status(&proxy)["version"],
        2,
        "a second rollback wrote a version"
    );
    assert!(proxy.cli(&["reset", "orders"]).status.success());
    assert!(proxy.cli(&["reset", "orders"]).status.success());
    assert_eq!(status(&proxy)["version"], 3);
}

/// Reads until the server closes; None when it is still open after 10 s
/// (a safety bound on the test, not the behaviour tested).
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_a_partial_head_after_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let (a, b) = two_backends().await;
    let proxy = Proxy::start_with(
        "header_read_timeout = \"300ms\"",
        &config(&a, &b, "orders = 100"),
        &[],
    );

    let mut partial = tokio::net::TcpStream::connect(proxy.admin)
        .await
        .expect("connect");
    partial
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: admin\r\nX-Slow: ")
        .await
        .expect("write");
    let got = read_until_closed(&mut partial)
        .await
        .expect("the admin listener kept a partial head's connection open");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A connection that sends nothing at all is closed too.
    let mut silent = tokio::net::TcpStream::connect(proxy.admin)
        .await
        .expect("connect");
    let got = read_until_closed(&mut silent)
        .await
        .expect("the admin listener kept a silent connection open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));

    // A whole request is still answered.
    let r = get(&client(), &format!("{}/healthz", proxy.admin_url()), &[]).await;
    assert_eq!(r.status, 200);
}
