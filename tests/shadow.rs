//! Shadow traffic and diffing through the real binary: real backends on
//! 127.0.0.1:0, the real sled store in a temp dir, the CLI and admin API.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Answer, Proxy, RawBackend, RawReply, ScriptedBackend, Seen, client, get, send};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One route `orders` on /api, all traffic to the monolith, shadowed to
/// `orders` with `extra` route lines.
fn config(mono: &str, orders: &str, extra: &str, top: &str) -> String {
    format!(
        r#"{top}
[upstreams.monolith]
urls = ["{mono}"]
[upstreams.orders]
urls = ["{orders}"]
[default]
upstream = "monolith"
[[routes]]
name = "orders"
match.path_prefix = "/api"
split = {{ monolith = 100 }}
shadow = {{ upstream = "orders", percent = 100 }}
{extra}
"#
    )
}

async fn admin_json(p: &Proxy, path: &str) -> Value {
    let r = get(&client(), &format!("{}{path}", p.admin_url()), &[]).await;
    assert_eq!(r.status, 200, "{path}: {}", text(&r.body));
    r.json()
}

async fn summary(p: &Proxy, route: &str) -> Value {
    let s = admin_json(p, "/api/v1/diffs/summary").await;
    s["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["route"] == route).cloned())
        .unwrap_or(Value::Null)
}

/// Polls the summary until `done` holds (the condition is what is awaited).
async fn wait_summary(p: &Proxy, route: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = summary(p, route).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "summary never got there: {s:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

async fn diffs(p: &Proxy) -> Vec<Value> {
    admin_json(p, "/api/v1/diffs?limit=1000").await["diffs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn order(total: Value) -> Answer {
    Answer::json(json!({"id": 7, "total": total}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_is_never_delayed_by_a_held_shadow() {
    let (mono, _) = ScriptedBackend::start(|_| order(json!(10))).await;
    let (shadow, mut arrivals) = ScriptedBackend::start(|_| order(json!("10"))).await;
    shadow.hold();
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), "", ""));
    let c = client();
    for i in 0..5 {
        let r = get(&c, &proxy.url(&format!("/api/orders/{i}")), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["total"], 10, "the client gets the primary answer");
        // The shadow copy of this request is out and held at the shadow.
        arrivals.recv().await.expect("shadow request arrives");
    }
    // Every primary answer came back while all five shadow calls were held.
    assert_eq!(shadow.seen().len(), 5);
    let s = summary(&proxy, "orders").await;
    assert_eq!(n(&s, "compared"), 0, "nothing compared while held: {s}");
    shadow.release();
    let s = wait_summary(&proxy, "orders", |s| n(s, "compared") == 5).await;
    assert_eq!(n(&s, "mismatched"), 5);
    assert_eq!(s["fields"][0]["path"], "/total");
    assert_eq!(s["fields"][0]["count"], 5);
    assert_eq!(s["mismatch_rate"], 1.0);
    // Shadow requests are marked; the primary never sees the mark.
    assert!(
        shadow
            .seen()
            .iter()
            .all(|r| r.headers["x-strangler-shadow"] == "1")
    );
    assert!(
        mono.seen()
            .iter()
            .all(|r| !r.headers.contains_key("x-strangler-shadow"))
    );
    // Otherwise both got the same request, header for header.
    let (m, mut s) = (mono.seen().remove(0), shadow.seen().remove(0));
    s.headers.remove("x-strangler-shadow");
    assert_eq!((m.method, m.path, m.headers), (s.method, s.path, s.headers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_failures_are_recorded_and_never_reach_the_client() {
    let (mono, _) = ScriptedBackend::start(|_| order(json!(10))).await;
    let (hung, mut hung_arrivals) = ScriptedBackend::start(|_| order(json!(10))).await;
    hung.hold();
    let (failing, _) = ScriptedBackend::start(|_| order(json!(10)).status(500)).await;
    // A port nothing listens on: bind, note it, close.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let body = format!(
        r#"[shadow]
timeout = "300ms"
[upstreams.monolith]
urls = ["{}"]
[upstreams.refused]
urls = ["http://{refused}"]
[upstreams.hung]
urls = ["{}"]
[upstreams.failing]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "refused"
match.path_prefix = "/refused"
split = {{ monolith = 100 }}
shadow = {{ upstream = "refused" }}
[[routes]]
name = "hung"
match.path_prefix = "/hung"
split = {{ monolith = 100 }}
shadow = {{ upstream = "hung" }}
[[routes]]
name = "failing"
match.path_prefix = "/failing"
split = {{ monolith = 100 }}
shadow = {{ upstream = "failing" }}
"#,
        mono.url(),
        hung.url(),
        failing.url()
    );
    let proxy = Proxy::start(&body);
    let c = client();
    for path in [
        "/refused/1",
        "/hung/1",
        "/failing/1",
        "/refused/2",
        "/failing/2",
    ] {
        let r = get(&c, &proxy.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["total"], 10);
    }
    hung_arrivals
        .recv()
        .await
        .expect("the hung shadow got its request");
    let s = wait_summary(&proxy, "refused", |s| n(s, "shadow_errors") == 2).await;
    assert_eq!(n(&s, "compared"), 2);
    assert_eq!(s["mismatch_rate"], 1.0);
    let s = wait_summary(&proxy, "hung", |s| n(s, "shadow_timeouts") == 1).await;
    assert_eq!(n(&s, "shadow_errors"), 0);
    let shown = text(&proxy.cli(&["diffs", "--route", "hung"]).stdout);
    assert!(
        shown.contains("0 shadow errors, 1 timeout: 100.0% really differ or failed"),
        "{shown}"
    );
    let s = wait_summary(&proxy, "failing", |s| n(s, "shadow_errors") == 2).await;
    assert_eq!(s["fields"][0]["kind"], "status");
    hung.release();

    let records = diffs(&proxy).await;
    let by_route = |r: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|d| d["route"] == r)
            .cloned()
            .collect()
    };
    let refused_rec = &by_route("refused")[0];
    assert_eq!(refused_rec["outcome"], "shadow_error");
    assert_eq!(refused_rec["shadow"]["status"], Value::Null);
    assert!(
        refused_rec["shadow"]["note"]
            .as_str()
            .is_some_and(|n| n.to_lowercase().contains("refused")),
        "{refused_rec}"
    );
    assert_eq!(by_route("hung")[0]["outcome"], "shadow_timeout");
    let failing_rec = &by_route("failing")[0];
    assert_eq!(failing_rec["outcome"], "shadow_error");
    assert_eq!(failing_rec["differences"][0]["kind"], "status");
    assert_eq!(failing_rec["differences"][0]["shadow"], 500);

    // Metrics count every outcome.
    let metrics = get(&c, &format!("{}/metrics", proxy.admin_url()), &[]).await;
    let m = text(&metrics.body);
    for line in [
        "strangler_shadow_total{route=\"refused\",outcome=\"shadow_error\"} 2",
        "strangler_shadow_total{route=\"hung\",outcome=\"shadow_timeout\"} 1",
        "strangler_shadow_total{route=\"failing\",outcome=\"shadow_error\"} 2",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    assert!(m.contains("strangler_shadow_latency_delta_seconds_count{route=\"failing\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_shadowed_only_when_allowed_and_never_to_the_same_upstream() {
    let (mono, _) = ScriptedBackend::start(|s: &Seen| {
        Answer::json(json!({"method": s.method, "body_len": s.body.len()}))
    })
    .await;
    let (shadow, _) = ScriptedBackend::start(|s: &Seen| {
        Answer::json(json!({"method": s.method, "body_len": s.body.len()}))
    })
    .await;
    let body = format!(
        r#"[upstreams.monolith]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "reads"
match.path_prefix = "/reads"
split = {{ monolith = 100 }}
shadow = {{ upstream = "orders" }}
[[routes]]
name = "writes"
match.path_prefix = "/writes"
split = {{ monolith = 100 }}
shadow = {{ upstream = "orders", methods = ["POST"], allow_writes = true }}
[[routes]]
name = "moved"
match.path_prefix = "/moved"
split = {{ orders = 100 }}
shadow = {{ upstream = "orders" }}
"#,
        mono.url(),
        shadow.url()
    );
    let proxy = Proxy::start(&body);
    let c = client();
    // A POST on a read-only shadow: not copied. Then a GET, which is.
    assert_eq!(
        send(&c, "POST", &proxy.url("/reads/1"), &[], "x=1")
            .await
            .status,
        200
    );
    assert_eq!(get(&c, &proxy.url("/reads/1"), &[]).await.status, 200);
    let s = wait_summary(&proxy, "reads", |s| n(s, "compared") == 1).await;
    assert_eq!(n(&s, "matched"), 1);
    // A POST where writes are allowed: copied with its body.
    let r = send(&c, "POST", &proxy.url("/writes/1"), &[], "hello=world").await;
    assert_eq!(r.json()["body_len"], 11);
    let s = wait_summary(&proxy, "writes", |s| n(s, "compared") == 1).await;
    assert_eq!(n(&s, "matched"), 1, "{s}");
    // The split already chose the shadow upstream: nothing to compare.
    for _ in 0..3 {
        get(&c, &proxy.url("/moved/1"), &[]).await;
    }
    let s = summary(&proxy, "moved").await;
    assert_eq!(n(&s, "skipped_same_upstream"), 3);
    assert_eq!(n(&s, "compared"), 0);
    let seen: Vec<(String, String, usize)> = shadow
        .seen()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.body.len()))
        .collect();
    assert_eq!(
        seen.iter().filter(|s| s.1 == "/reads/1").count(),
        1,
        "{seen:?}"
    );
    assert!(seen.contains(&("GET".into(), "/reads/1".into(), 0)));
    assert!(seen.contains(&("POST".into(), "/writes/1".into(), 11)));
    // The three /moved requests went to `orders` once each, as primaries.
    assert_eq!(seen.iter().filter(|s| s.1 == "/moved/1").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparison_rules_apply_end_to_end() {
    use std::io::Write;
    let (mono, _) = ScriptedBackend::start(|s: &Seen| {
        let body = json!({
            "items": [{"sku": "a", "updated_at": 1}, {"sku": "b", "updated_at": 2}],
            "meta": {"request_id": s.path.clone()},
            "total": 10
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.to_string().as_bytes()).expect("gzip");
        Answer {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-encoding".into(), "gzip".into()),
                ("cache-control".into(), "max-age=60".into()),
                ("x-trace".into(), "primary".into()),
            ],
            body: gz.finish().expect("gzip"),
        }
    })
    .await;
    let (shadow, _) = ScriptedBackend::start(|_| {
        Answer::json(json!({
            "items": [{"sku": "b", "updated_at": 9}, {"sku": "a", "updated_at": 8}],
            "meta": {"request_id": "something else"},
            "total": "10"
        }))
        .header("cache-control", "no-store")
        .header("x-trace", "shadow")
    })
    .await;
    let extra = r#"compare.headers = ["cache-control", "x-trace"]
compare.ignore_headers = ["x-trace"]
compare.ignore_fields = ["/meta/request_id", "/items/*/updated_at"]
compare.unordered_arrays = ["/items"]"#;
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), extra, ""));
    let c = client();
    let r = get(&c, &proxy.url("/api/orders/7"), &[]).await;
    assert_eq!(
        r.headers["content-encoding"], "gzip",
        "the client gets the primary untouched"
    );
    let s = wait_summary(&proxy, "orders", |s| n(s, "compared") == 1).await;
    let fields: Vec<&str> = s["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(fields, ["/total", "cache-control"], "{s:#}");

    // The CLI shows the same record, as JSON and side by side.
    let out = proxy.cli(&["diffs", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rec = &listed["diffs"][0];
    assert_eq!(rec["path"], "/api/orders/7");
    assert_eq!(rec["primary"]["body"]["total"], 10, "stored decoded: {rec}");
    let id = rec["id"].as_str().expect("id");
    let out = proxy.cli(&["diffs", "show", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let marked: Vec<&str> = shown.lines().filter(|l| l.starts_with("* ")).collect();
    assert!(
        marked
            .iter()
            .any(|l| l.contains("\"total\": 10") && l.contains("\"total\": \"10\"")),
        "{shown}"
    );
    assert!(!shown.contains("\x1b["), "plain when piped");
    let out = proxy.cli(&["diffs"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("/total") && listing.contains(id),
        "{listing}"
    );
    let out = proxy.cli(&["diffs", "show", "not-an-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid diff id"),
        "{}",
        text(&out.stderr)
    );
    let out = proxy.cli(&["diffs", "show", "01a218b9-7c93-73d3-9f6f-0803d437f98b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no diff"),
        "{}",
        text(&out.stderr)
    );
    let out = proxy.cli(&["diffs", "--route", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown route"),
        "{}",
        text(&out.stderr)
    );
    // Bad input to the API gets a 4xx and a JSON error.
    for (path, status) in [
        ("/api/v1/diffs?route=nope", 404),
        ("/api/v1/diffs/summary?route=nope", 404),
        ("/api/v1/diffs?before=nope", 400),
        ("/api/v1/diffs?limit=0", 400),
        ("/api/v1/diffs/summary/extra", 404),
    ] {
        let r = get(&c, &format!("{}{path}", proxy.admin_url()), &[]).await;
        assert_eq!(r.status, status, "{path}: {}", text(&r.body));
        assert!(r.json()["error"].is_string());
    }
    let only = admin_json(&proxy, "/api/v1/diffs/summary?route=orders").await;
    assert_eq!(only["routes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_store() {
    const SECRETS: [&str; 6] = [
        "Bearer tok-4f9a1c",
        "sid=cookie-77e1b2",
        "set-9c2d3e",
        "key-0b8a7f",
        "mail-5e4d3c@example.com",
        "card-4111222233334444",
    ];
    let answer = |who: &'static str| {
        move |s: &Seen| {
            let h = |n: &str| {
                s.headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            Answer::json(json!({
                "echo": {"authorization": h("authorization"), "cookie": h("cookie"), "key": h("x-api-key")},
                "customer": {"email": "mail-5e4d3c@example.com", "cards": [{"pan": "card-4111222233334444"}]},
                "served_by": who
            }))
            .header("set-cookie", "session=set-9c2d3e; HttpOnly")
            .header("x-api-key", "key-0b8a7f")
        }
    };
    let (mono, _) = ScriptedBackend::start(answer("monolith")).await;
    let (shadow, _) = ScriptedBackend::start(answer("orders")).await;
    let extra = r#"compare.headers = ["x-api-key", "set-cookie"]
compare.redact = ["x-api-key", "/echo", "/customer/email", "/customer/cards/*/pan"]"#;
    let mut proxy = Proxy::start(&config(&mono.url(), &shadow.url(), extra, ""));
    let c = client();
    for _ in 0..3 {
        let r = get(
            &c,
            &proxy.url("/api/me"),
            &[
                ("authorization", SECRETS[0]),
                ("cookie", SECRETS[1]),
                ("x-api-key", SECRETS[3]),
            ],
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            text(&r.body).contains(SECRETS[4]),
            "the client's answer is untouched"
        );
    }
    let s = wait_summary(&proxy, "orders", |s| n(s, "compared") == 3).await;
    // Equal secrets still compare equal: only served_by differs.
    let fields: Vec<&str> = s["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(fields, ["/served_by"], "{s:#}");
    let rec = &diffs(&proxy).await[0];
    assert!(
        rec["primary"]["headers"]["set-cookie"]
            .as_str()
            .is_some_and(|v| v.starts_with("redacted:")),
        "{rec}"
    );
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(), Some(0));

    let mut needles: Vec<Vec<u8>> = Vec::new();
    for s in SECRETS {
        needles.push(s.as_bytes().to_vec());
        needles.push(strangler_shadow::capture::sha256_hex(s.as_bytes()).into_bytes());
    }
    // The cookie and bearer values on their own too.
    needles.push(b"tok-4f9a1c".to_vec());
    needles.push(b"cookie-77e1b2".to_vec());
    let mut files = 0;
    let mut stack = vec![proxy.dir.path().join("data")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read store dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).expect("read store file");
            for needle in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} contains {}",
                    path.display(),
                    text(needle)
                );
            }
        }
    }
    assert!(files > 0, "the store has files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_holds_and_diffs_survive_a_restart() {
    let (mono, _) = ScriptedBackend::start(|_| order(json!(10))).await;
    let (shadow, _) = ScriptedBackend::start(|_| order(json!("10"))).await;
    // [store] is read at start; the harness writes it, so add to it.
    let dir = tempfile::tempdir().expect("dir");
    let config_path = dir.path().join("strangler.toml");
    let body = config(&mono.url(), &shadow.url(), "", "");
    let text_config = support::config_with(dir.path(), "", &body)
        .replace("[store]\n", "[store]\nmax_diffs = 5\n");
    std::fs::write(&config_path, text_config).expect("write");
    let proxy = Proxy::spawn(dir, config_path, Vec::new(), Vec::new()).expect("start");
    let c = client();
    // Each compared before the next is sent: a record's age is when its
    // comparison finished, so this is also the records' order.
    for i in 0..12 {
        get(&c, &proxy.url(&format!("/api/orders/{i}")), &[]).await;
        wait_summary(&proxy, "orders", |s| n(s, "compared") == i + 1).await;
    }
    let s = summary(&proxy, "orders").await;
    assert_eq!(s["fields"][0]["count"], 12, "aggregates keep counting");
    let kept = diffs(&proxy).await;
    assert_eq!(kept.len(), 5, "at most max_diffs records");
    // The newest are kept.
    let mut paths: Vec<&str> = kept.iter().filter_map(|d| d["path"].as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/api/orders/10",
            "/api/orders/11",
            "/api/orders/7",
            "/api/orders/8",
            "/api/orders/9"
        ],
        "the newest records are kept"
    );
    let ids: Vec<Value> = kept.iter().map(|d| d["id"].clone()).collect();

    let proxy = proxy.stop_and_restart();
    let s = summary(&proxy, "orders").await;
    assert_eq!(n(&s, "compared"), 12, "counts survive: {s}");
    assert_eq!(n(&s, "mismatched"), 12);
    let after: Vec<Value> = diffs(&proxy)
        .await
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(after, ids, "records survive");
    let one = admin_json(
        &proxy,
        &format!("/api/v1/diffs/{}", ids[0].as_str().expect("id")),
    )
    .await;
    assert_eq!(one["differences"][0]["path"], "/total");
    let status = admin_json(&proxy, "/api/v1/status").await;
    assert_eq!(status["routes"][0]["mismatch_rate"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts() {
    let (mono, _) = ScriptedBackend::start(|_| order(json!(10))).await;
    let (shadow, mut arrivals) = ScriptedBackend::start(|_| order(json!(10))).await;
    shadow.hold();
    let top = "[shadow]\nconcurrency = 1\nqueue = 1\n";
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), "", top));
    let c = client();
    get(&c, &proxy.url("/api/1"), &[]).await;
    arrivals
        .recv()
        .await
        .expect("the first shadow call is running");
    for i in 2..=5 {
        assert_eq!(
            get(&c, &proxy.url(&format!("/api/{i}")), &[]).await.status,
            200
        );
    }
    // One running, one queued, three dropped: counted when dropped.
    let s = summary(&proxy, "orders").await;
    assert_eq!(n(&s, "dropped"), 3, "{s}");
    shadow.release();
    let s = wait_summary(&proxy, "orders", |s| n(s, "compared") == 2).await;
    assert_eq!(n(&s, "matched"), 2);
    assert_eq!(shadow.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_cap_is_not_shadowed() {
    let (mono, _) =
        ScriptedBackend::start(|s: &Seen| Answer::json(json!({"body_len": s.body.len()}))).await;
    let (shadow, _) =
        ScriptedBackend::start(|s: &Seen| Answer::json(json!({"body_len": s.body.len()}))).await;
    let top = "[shadow]\nmax_request_body = 1024\n";
    let extra = "";
    let body = config(&mono.url(), &shadow.url(), extra, top).replace(
        "shadow = { upstream = \"orders\", percent = 100 }",
        "shadow = { upstream = \"orders\", percent = 100, methods = [\"POST\"], allow_writes = true }",
    );
    let proxy = Proxy::start(&body);
    let c = client();
    // Declared too large: skipped before anything is sent.
    let r = send(&c, "POST", &proxy.url("/api/big"), &[], vec![b'a'; 4096]).await;
    assert_eq!(
        r.json()["body_len"],
        4096,
        "the primary gets the whole body"
    );
    let s = summary(&proxy, "orders").await;
    assert_eq!(n(&s, "skipped_too_large"), 1);
    // Streamed without a length: found too large while teeing.
    let url: http::Uri = proxy.url("/api/streamed").parse().expect("uri");
    let streamed =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<support::Chunks>();
    let resp = streamed
        .request(
            http::Request::post(url)
                .body(support::Chunks::new(200 * 1024))
                .expect("request"),
        )
        .await
        .expect("streamed POST");
    assert_eq!(resp.status(), 200);
    let s = wait_summary(&proxy, "orders", |s| n(s, "skipped_too_large") == 2).await;
    assert_eq!(n(&s, "compared"), 0);
    // A small one is compared.
    send(&c, "POST", &proxy.url("/api/small"), &[], vec![b'a'; 100]).await;
    wait_summary(&proxy, "orders", |s| n(s, "matched") == 1).await;
    assert!(shadow.seen().iter().all(|r| r.body.len() <= 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_overrides_show_and_keep_their_percent() {
    let (mono, _) = ScriptedBackend::start(|_| order(json!(10))).await;
    let (shadow, _) = ScriptedBackend::start(|_| order(json!(10))).await;
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), "", ""));
    let shadow_status = |p: &Proxy| -> Value {
        let out = p.cli(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["routes"][0]["shadow"].clone()
    };
    let s = shadow_status(&proxy);
    assert_eq!(
        (s["override"].clone(), s["percent"].clone()),
        (json!(false), json!(100.0))
    );
    let out = proxy.cli(&["shadow", "orders", "on", "--percent", "10"]);
    assert!(
        text(&out.stdout).contains("shadow on (10%)"),
        "{}",
        text(&out.stdout)
    );
    let s = shadow_status(&proxy);
    assert_eq!(s["override"], true);
    assert_eq!(s["percent"], 10.0);
    assert_eq!(s["file"]["percent"], 100.0);
    assert!(proxy.cli(&["shadow", "orders", "off"]).status.success());
    assert_eq!(shadow_status(&proxy)["enabled"], false);
    // Back on without a percent: the 10 % in force stays.
    assert!(proxy.cli(&["shadow", "orders", "on"]).status.success());
    let s = shadow_status(&proxy);
    assert_eq!(
        (s["enabled"].clone(), s["percent"].clone()),
        (json!(true), json!(10.0))
    );
    let out = proxy.cli(&["status"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("(override; file: on, 100%)")
            && shown.contains("mismatch 0.0% of 0 compared"),
        "{shown}"
    );
}

/// A header an upstream names in Connection is hop-by-hop: the client never
/// gets it, and neither side's capture compares it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_named_in_connection_are_never_compared() {
    let (mono, _) = ScriptedBackend::start(|_| {
        order(json!(10))
            .header("connection", "x-hop")
            .header("x-hop", "primary")
    })
    .await;
    let (shadow, _) = ScriptedBackend::start(|_| {
        order(json!(10))
            .header("connection", "x-hop")
            .header("x-hop", "shadow")
    })
    .await;
    let extra = r#"compare.headers = ["x-hop"]"#;
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), extra, ""));
    let r = get(&client(), &proxy.url("/api/orders/1"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-hop"), "{:?}", r.headers);
    let s = wait_summary(&proxy, "orders", |s| n(s, "compared") == 1).await;
    assert_eq!(n(&s, "mismatched"), 0, "{s:#}");
}

const PLAIN_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

/// Sends bursts of 16 concurrent GETs (`/api/0` to `/api/15`) until the
/// shadow has read two copies off the wire together (a pipelined batch),
/// each burst settled (`settled` of its copies counted) before the next.
/// Returns how many requests were sent.
async fn bursts_until_pipelined(
    proxy: &Proxy,
    shadow: &RawBackend,
    settled: impl Fn(&Value) -> u64,
) -> u64 {
    let mut sent = 0;
    for _ in 0..100 {
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..16 {
            let url = proxy.url(&format!("/api/{i}"));
            burst.spawn(async move { get(&client(), &url, &[]).await.status });
        }
        while let Some(status) = burst.join_next().await {
            assert_eq!(status.expect("request task"), 200);
        }
        sent += 16;
        wait_summary(proxy, "orders", |s| settled(s) == sent).await;
        if shadow.pipelined() > 0 {
            return sent;
        }
    }
    panic!("copies queued together never shared a connection");
}

/// Shadow copies queued together share a connection (HTTP/1.1
/// pipelining). A shadow that answers one request per connection and then
/// closes it leaves the copies behind the first unanswered: each is sent
/// again alone, and every copy is compared: none is lost, none is counted
/// as the shadow's failure.
#[tokio::test]
async fn pipelined_copies_a_closed_connection_left_unanswered_are_sent_again() {
    let mono = RawBackend::start_with(|_| RawReply::keep(PLAIN_OK)).await;
    let shadow = RawBackend::start_with(|_| RawReply::close(PLAIN_OK)).await;
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), "", ""));
    let sent = bursts_until_pipelined(&proxy, &shadow, |s| n(s, "compared")).await;
    let s = summary(&proxy, "orders").await;
    assert_eq!(n(&s, "matched"), sent, "{s:#}");
    assert_eq!(
        n(&s, "shadow_errors") + n(&s, "shadow_timeouts"),
        0,
        "{s:#}"
    );
    // Each copy answered once (the backend records the heads it answers).
    assert_eq!(shadow.request_lines().len() as u64, sent);
}

/// A pipelined copy whose answer never comes times out alone: the copies
/// behind it on its connection are sent again alone and answered, so a
/// hung request costs exactly its own outcome.
#[tokio::test]
async fn a_hung_pipelined_copy_times_out_alone() {
    let mono = RawBackend::start_with(|_| RawReply::keep(PLAIN_OK)).await;
    // Never opened: /api/0 is never answered.
    let never = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let shadow = RawBackend::start_with(move |head| {
        if head.starts_with("GET /api/0 ") {
            RawReply::gated(PLAIN_OK, &never)
        } else {
            RawReply::keep(PLAIN_OK)
        }
    })
    .await;
    let top = "[shadow]\ntimeout = \"300ms\"";
    let proxy = Proxy::start(&config(&mono.url(), &shadow.url(), "", top));
    // `compared` counts every outcome, timeouts included.
    let sent = bursts_until_pipelined(&proxy, &shadow, |s| n(s, "compared")).await;
    let s = summary(&proxy, "orders").await;
    let bursts = sent / 16;
    assert_eq!(n(&s, "shadow_timeouts"), bursts, "{s:#}");
    assert_eq!(n(&s, "matched"), sent - bursts, "{s:#}");
    assert_eq!(n(&s, "shadow_errors"), 0, "{s:#}");
}
