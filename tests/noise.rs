//! Noise cancellation through the real binary: Diffy's method (the primary
//! asked twice), verdicts with thresholds, hidden noise in listings,
//! mark-as-noise as a versioned change with immediate re-evaluation.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Answer, Proxy, ScriptedBackend, Seen, client, get, send};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn admin(p: &Proxy, path: &str) -> Value {
    let r = get(&client(), &format!("{}{path}", p.admin_url()), &[]).await;
    assert_eq!(r.status, 200, "{path}: {}", text(&r.body));
    r.json()
}

async fn summary(p: &Proxy) -> Value {
    admin(p, "/api/v1/diffs/summary?route=orders").await["routes"][0].clone()
}

async fn wait_compared(p: &Proxy, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = summary(p).await;
        if s["compared"].as_u64() == Some(n) {
            return s;
        }
        assert!(Instant::now() < deadline, "never compared {n}: {s:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn field<'a>(s: &'a Value, path: &str) -> &'a Value {
    s["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["path"] == path))
        .unwrap_or(&Value::Null)
}

fn index(s: &Seen) -> u64 {
    s.path
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The monolith answers the noise check (the second, marked call) with
/// scripted differences from its first answer.
fn monolith(s: &Seen) -> Answer {
    let i = index(s);
    if s.headers.contains_key("x-strangler-shadow") {
        Answer::json(json!({
            "noisy": if i.is_multiple_of(2) { format!("n{i}") } else { "p".into() },
            "real": 1,
            "subtle": if i.is_multiple_of(20) { "n" } else { "p" },
            "tiny": "p",
        }))
    } else {
        Answer::json(json!({"noisy": "p", "real": 1, "subtle": "p", "tiny": "p"}))
    }
}

fn new_service(s: &Seen) -> Answer {
    let i = index(s);
    Answer::json(json!({
        "noisy": if i.is_multiple_of(2) { format!("s{i}") } else { "p".into() },
        "real": 2,
        "subtle": if i % 5 < 3 { "s" } else { "p" },
        "tiny": if i % 20 == 1 { "s" } else { "p" },
    }))
}

fn config(mono: &str, orders: &str) -> String {
    format!(
        r#"[upstreams.monolith]
urls = ["{mono}"]
[upstreams.orders]
urls = ["{orders}"]
[default]
upstream = "monolith"
[[routes]]
name = "orders"
match.path_prefix = "/api"
split = {{ monolith = 100 }}
shadow = {{ upstream = "orders", methods = ["GET", "POST"], allow_writes = true }}
compare.noise_check = {{ percent = 100, absolute = 10.0 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffy_tells_noise_from_real_differences() {
    let (mono, _) = ScriptedBackend::start(monolith).await;
    let (orders, _) = ScriptedBackend::start(new_service).await;
    let proxy = Proxy::start(&config(&mono.url(), &orders.url()));
    let c = client();
    for i in 0..10 {
        let r = get(&c, &proxy.url(&format!("/api/x/{i}")), &[]).await;
        assert_eq!(
            r.json()["real"],
            1,
            "the client gets the first primary answer"
        );
    }
    // Fewer than min_samples (20) noise-checked: not known yet.
    let s = wait_compared(&proxy, 10).await;
    assert_eq!(s["noise_checked"], 10);
    for f in s["fields"].as_array().expect("fields") {
        assert_eq!(f["noise"], Value::Null, "{f}");
    }
    for i in 10..40 {
        get(&c, &proxy.url(&format!("/api/x/{i}")), &[]).await;
    }
    let s = wait_compared(&proxy, 40).await;
    assert_eq!(s["noise_checked"], 40);
    let verdict = |p: &str| {
        let f = field(&s, p);
        (
            f["raw_rate"].as_f64().unwrap_or(-1.0),
            f["noise_rate"].as_f64().unwrap_or(-1.0),
            f["noise"].clone(),
        )
    };
    // 50 % against itself, 50 % against the new service: noise.
    assert_eq!(verdict("/noisy"), (0.5, 0.5, json!(true)));
    // Never against itself, always against the new service: real.
    assert_eq!(verdict("/real"), (1.0, 0.0, json!(false)));
    // 5 % against itself, 60 % against the new service: real.
    assert_eq!(verdict("/subtle"), (0.6, 0.05, json!(false)));
    // 5 % against the new service only, below the absolute threshold (10 %).
    assert_eq!(verdict("/tiny"), (0.05, 0.0, json!(true)));
    assert_eq!(s["mismatch_rate"], 1.0);
    // The monolith was asked twice per request, the new service once.
    assert_eq!(mono.seen().len(), 80);
    assert_eq!(orders.seen().len(), 40);

    // Listings show only real differences; all=true shows noise too.
    let listed = admin(&proxy, "/api/v1/diffs?limit=1000").await;
    for d in listed["diffs"].as_array().expect("diffs") {
        for diff in d["differences"].as_array().expect("differences") {
            assert!(
                diff["path"] == "/real" || diff["path"] == "/subtle",
                "noise listed: {diff}"
            );
        }
    }
    let all = admin(&proxy, "/api/v1/diffs?limit=1000&all=true").await;
    assert!(
        all["diffs"]
            .as_array()
            .expect("diffs")
            .iter()
            .any(|d| d["differences"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["path"] == "/noisy"))),
        "all=true shows noise"
    );
    let out = proxy.cli(&["diffs"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("recognised as noise") && shown.contains("/noisy"),
        "{shown}"
    );

    // Mark the real fields as noise: a versioned change, effective at once,
    // for every request already compared.
    let before = admin(&proxy, "/api/v1/status").await["version"]
        .as_u64()
        .expect("version");
    let r = send(
        &c,
        "PUT",
        &format!("{}/api/v1/routes/orders/compare", proxy.admin_url()),
        &[("content-type", "application/json")],
        json!({"ignore_fields_add": ["/real", "/subtle"], "reason": "new ids are fine"})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r.body));
    let s = summary(&proxy).await;
    assert_eq!(field(&s, "/real"), &Value::Null, "{s:#}");
    assert_eq!(field(&s, "/subtle"), &Value::Null);
    assert_eq!(s["mismatched_real"], 0);
    assert_eq!(s["mismatch_rate"], 0.0);
    let listed = admin(&proxy, "/api/v1/diffs").await;
    assert_eq!(
        listed["diffs"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let history = admin(&proxy, "/api/v1/history?route=orders").await;
    assert_eq!(history["versions"][0]["reason"], "new ids are fine");
    // Revert brings the fields back.
    let out = proxy.cli(&["revert", &before.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = summary(&proxy).await;
    assert_eq!(field(&s, "/real")["noise"], false);
    assert_eq!(s["mismatch_rate"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noise_check_never_sends_a_write_twice() {
    let (mono, _) = ScriptedBackend::start(monolith).await;
    let (orders, _) = ScriptedBackend::start(new_service).await;
    let proxy = Proxy::start(&config(&mono.url(), &orders.url()));
    let c = client();
    for i in 0..3 {
        send(&c, "POST", &proxy.url(&format!("/api/x/{i}")), &[], "order").await;
    }
    get(&c, &proxy.url("/api/x/3"), &[]).await;
    let s = wait_compared(&proxy, 4).await;
    assert_eq!(s["noise_checked"], 1, "only the GET is checked: {s}");
    let posts = mono.seen().iter().filter(|r| r.method == "POST").count();
    let gets = mono.seen().iter().filter(|r| r.method == "GET").count();
    assert_eq!((posts, gets), (3, 2));
    assert_eq!(orders.seen().len(), 4, "each request shadowed once");
}
