//! Progressive rollouts through the real binary: steps advance while the
//! gates hold on real traffic, a failing new side is rolled back by the
//! proxy itself, a manual change stops a ramp, and a restart resumes it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Backend, Proxy, client, get};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(mono: &Backend, orders: &Backend) -> String {
    config_with(mono, orders, "")
}

fn config_with(mono: &Backend, orders: &Backend, top: &str) -> String {
    format!(
        r#"{top}
[upstreams.monolith]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ monolith = 100, orders = 0 }}
"#,
        mono.url(),
        orders.url()
    )
}

/// Requests through the proxy until dropped.
struct Traffic(Arc<AtomicBool>);

impl Traffic {
    fn start(proxy: &Proxy) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, url) = (stop.clone(), proxy.url("/api/x"));
        tokio::spawn(async move {
            let c = client();
            while !s.load(Ordering::Relaxed) {
                get(&c, &url, &[]).await;
            }
        });
        Traffic(stop)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn ramp_of(p: &Proxy) -> Value {
    let r = get(&client(), &format!("{}/api/v1/ramps", p.admin_url()), &[]).await;
    r.json()["ramps"][0].clone()
}

async fn wait_state(p: &Proxy, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = ramp_of(p).await;
        if r["state"] == state {
            return r;
        }
        assert!(Instant::now() < deadline, "ramp never got {state}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(p: &Proxy) -> Value {
    get(&client(), &format!("{}/api/v1/status", p.admin_url()), &[])
        .await
        .json()
}

async fn history(p: &Proxy) -> Vec<Value> {
    get(&client(), &format!("{}/api/v1/history", p.admin_url()), &[])
        .await
        .json()["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_advance_while_the_gates_hold() {
    let (mono, orders) = (
        Backend::start("monolith").await,
        Backend::start("orders").await,
    );
    let proxy = Proxy::start(&config(&mono, &orders));
    // Latency on loopback is noise at this scale: the p99 gate is unit-tested.
    let out = proxy.cli(&[
        "ramp",
        "api",
        "--steps",
        "20,100",
        "--every",
        "1s",
        "--min-requests",
        "5",
        "--max-p99-ratio",
        "50",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ramp started"),
        "{}",
        text(&out.stdout)
    );
    let s = status(&proxy).await;
    assert_eq!(
        s["routes"][0]["split"]["orders"], 20.0,
        "the first step at once"
    );
    let _traffic = Traffic::start(&proxy);
    let r = wait_state(&proxy, "done").await;
    assert_eq!(r["share"], 100.0);
    assert_eq!(status(&proxy).await["routes"][0]["split"]["orders"], 100.0);
    let ramp_versions: Vec<Value> = history(&proxy)
        .await
        .into_iter()
        .filter(|v| v["actor"] == "ramp")
        .collect();
    assert!(ramp_versions.len() >= 2, "{ramp_versions:?}");
    assert!(
        ramp_versions.iter().any(|v| v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("step 2/2") && r.contains("gates held"))),
        "{ramp_versions:?}"
    );
    let out = proxy.cli(&["ramp", "status"]);
    assert!(
        text(&out.stdout).contains("api: done to orders"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_new_side_is_rolled_back_by_the_proxy() {
    let (mono, orders) = (
        Backend::start("monolith").await,
        Backend::start("orders").await,
    );
    orders.set_failing(true);
    let proxy = Proxy::start(&config(&mono, &orders));
    let out = proxy.cli(&[
        "ramp",
        "api",
        "--steps",
        "50,100",
        "--every",
        "1h",
        "--min-requests",
        "4",
        "--max-error-rate",
        "1%",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _traffic = Traffic::start(&proxy);
    // The fast check does not wait for the hour-long window.
    let r = wait_state(&proxy, "rolled_back").await;
    assert!(
        r["note"].as_str().is_some_and(|n| n.contains("error rate")),
        "{r}"
    );
    let s = status(&proxy).await;
    assert_eq!(s["routes"][0]["rolled_back"], true);
    let last = &history(&proxy).await[0];
    assert_eq!(last["actor"], "ramp");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rolled back")),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_shift_stops_the_ramp_and_a_restart_resumes_one() {
    let (mono, orders) = (
        Backend::start("monolith").await,
        Backend::start("orders").await,
    );
    let proxy = Proxy::start(&config(&mono, &orders));
    assert!(
        proxy
            .cli(&["ramp", "api", "--steps", "5,50,100", "--every", "1h"])
            .status
            .success()
    );
    let before = ramp_of(&proxy).await;
    assert_eq!(before["state"], "running");
    // Status shows each gate's figure against its limit and the next decision.
    let deadline = Instant::now() + Duration::from_secs(20);
    let now = loop {
        let r = ramp_of(&proxy).await;
        if r["gates_now"].is_object() {
            break r;
        }
        assert!(Instant::now() < deadline, "no gate figures: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        now["gates_now"]["next_decision_in_s"]
            .as_u64()
            .is_some_and(|s| s > 3000),
        "{now}"
    );
    assert_eq!(now["gates_now"]["p99_ratio"]["limit"], 1.5);
    assert_eq!(now["gates_now"]["requests"]["min"], 200);
    let out = proxy.cli(&["ramp", "status", "api"]);
    assert!(
        text(&out.stdout).contains("next decision in"),
        "{}",
        text(&out.stdout)
    );
    // A crash and restart: the plan and the step's window are where they were.
    let proxy = proxy.crash_and_restart();
    let after = ramp_of(&proxy).await;
    assert_eq!(after["state"], "running");
    assert_eq!(after["step"], before["step"]);
    assert_eq!(after["step_started"], before["step_started"]);
    // Pause and resume by hand.
    assert!(proxy.cli(&["ramp", "pause", "api"]).status.success());
    assert_eq!(ramp_of(&proxy).await["state"], "paused");
    assert!(proxy.cli(&["ramp", "resume", "api"]).status.success());
    // A manual shift stops it, and says so.
    let out = proxy.cli(&["shift", "api", "30"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ramp is stopped"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(ramp_of(&proxy).await["state"], "stopped");
    assert_eq!(status(&proxy).await["routes"][0]["split"]["orders"], 30.0);
    // Bad requests are refused with a reason.
    let out = proxy.cli(&["ramp", "api", "--steps", "50,10", "--every", "1m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("rising"),
        "{}",
        text(&out.stderr)
    );
    let out = proxy.cli(&["ramp", "resume", "api"]);
    assert_eq!(out.status.code(), Some(1), "a stopped ramp does not resume");
    // Abort rolls back.
    assert!(
        proxy
            .cli(&["ramp", "api", "--steps", "10,100", "--every", "1h"])
            .status
            .success()
    );
    assert!(proxy.cli(&["ramp", "abort", "api"]).status.success());
    assert_eq!(ramp_of(&proxy).await["state"], "rolled_back");
    assert_eq!(status(&proxy).await["routes"][0]["rolled_back"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_requests_extend_the_window_then_pause() {
    let (mono, orders) = (
        Backend::start("monolith").await,
        Backend::start("orders").await,
    );
    let proxy = Proxy::start(&config(&mono, &orders));
    let out = proxy.cli(&[
        "ramp",
        "api",
        "--steps",
        "10,100",
        "--every",
        "1s",
        "--min-requests",
        "1000000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = wait_state(&proxy, "paused").await;
    assert!(
        r["note"]
            .as_str()
            .is_some_and(|n| n.contains("after 3 extensions")),
        "{r}"
    );
    assert_eq!(r["share"], 10.0, "held at the current step");
    let extended = history(&proxy)
        .await
        .iter()
        .filter(|v| {
            v["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("ramp window extended"))
        })
        .count();
    assert_eq!(extended, 3);
}

/// Monolith and new service answering the same total or not, and a
/// request id that differs on every call (noise).
async fn scripted(real_difference: bool) -> (support::ScriptedBackend, support::ScriptedBackend) {
    use serde_json::json;
    use support::{Answer, ScriptedBackend};
    let (mono, _) = ScriptedBackend::start(|_| {
        Answer::json(json!({"total": 10, "rid": rand::random::<u64>()}))
    })
    .await;
    let (orders, _) = ScriptedBackend::start(move |_| {
        let total = if real_difference {
            json!("10")
        } else {
            json!(10)
        };
        Answer::json(json!({"total": total, "rid": rand::random::<u64>()}))
    })
    .await;
    (mono, orders)
}

fn shadowed(mono: &str, orders: &str) -> String {
    format!(
        r#"[upstreams.monolith]
urls = ["{mono}"]
[upstreams.orders]
urls = ["{orders}"]
[default]
upstream = "monolith"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ monolith = 100, orders = 0 }}
shadow = {{ upstream = "orders" }}
compare.noise_check = {{ percent = 100 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_shadow_difference_blocks_the_ramp_and_noise_alone_does_not() {
    for (real, expected) in [(true, "rolled_back"), (false, "done")] {
        let (mono, orders) = scripted(real).await;
        let proxy = Proxy::start(&shadowed(&mono.url(), &orders.url()));
        // Let the noise check learn first (min_samples 20).
        let c = client();
        for _ in 0..40 {
            get(&c, &proxy.url("/api/x"), &[]).await;
        }
        let out = proxy.cli(&[
            "ramp",
            "api",
            "--steps",
            "20,100",
            "--every",
            "1s",
            "--min-requests",
            "3",
            "--max-mismatch-rate",
            "0.5%",
            "--max-p99-ratio",
            "50",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let _traffic = Traffic::start(&proxy);
        let r = wait_state(&proxy, expected).await;
        if real {
            assert!(
                r["note"].as_str().is_some_and(|n| n.contains("mismatch")),
                "{r}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_start_at_the_third_step_roll_back_at_once() {
    let (mono, orders) = (
        Backend::start("monolith").await,
        Backend::start("orders").await,
    );
    let proxy = Proxy::start(&config(&mono, &orders));
    let out = proxy.cli(&[
        "ramp",
        "api",
        "--steps",
        "10,20,50,100",
        "--every",
        "1s",
        "--min-requests",
        "3",
        "--max-p99-ratio",
        "50",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _traffic = Traffic::start(&proxy);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ramp_of(&proxy).await["step"] != 3 {
        assert!(Instant::now() < deadline, "never reached step 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    orders.set_failing(true);
    let r = wait_state(&proxy, "rolled_back").await;
    assert_eq!(
        r["step"], 3,
        "rolled back from the third step, not after it"
    );
    assert!(
        r["note"].as_str().is_some_and(|n| n.contains("error rate")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_new_side_fails_the_latency_gate() {
    use support::{Answer, ScriptedBackend};
    let (mono, _) = ScriptedBackend::start(|_| Answer::json(serde_json::json!({}))).await;
    let (orders, _) = ScriptedBackend::start(|_| Answer::json(serde_json::json!({}))).await;
    orders.set_delay(Duration::from_millis(40));
    let proxy = Proxy::start(&format!(
        r#"[upstreams.monolith]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ monolith = 100, orders = 0 }}
"#,
        mono.url(),
        orders.url()
    ));
    let out = proxy.cli(&[
        "ramp",
        "api",
        "--steps",
        "50,100",
        "--every",
        "1s",
        "--min-requests",
        "3",
        "--max-p99-ratio",
        "1.5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _traffic = Traffic::start(&proxy);
    let r = wait_state(&proxy, "rolled_back").await;
    assert!(r["note"].as_str().is_some_and(|n| n.contains("p99")), "{r}");
}
