//! `strangler tui` end to end: the real binary in a real pseudo-terminal
//! (tmux), against the real proxy with a shadowed route. The test reads the
//! screen, rolls the route back with the keys an operator would press, and
//! checks through the admin API that it happened.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Answer, Proxy, ScriptedBackend, client, get};

/// A tmux server of the test's own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).env_remove("TMUX");
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "tui"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows all of `needles`.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if needles.iter().all(|n| s.contains(n)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {needles:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "tui", keys])
            .status()
            .expect("tmux send-keys")
            .success();
        assert!(ok, "send-keys {keys}");
    }

    fn running(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", "tui"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_a_route_back_from_the_tui() {
    let (mono, _) = ScriptedBackend::start(|_| Answer::json(json!({"total": 10}))).await;
    let (orders, _) = ScriptedBackend::start(|_| Answer::json(json!({"total": "10"}))).await;
    let proxy = Proxy::start(&format!(
        r#"[upstreams.monolith]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "orders"
match.path_prefix = "/api/orders"
split = {{ orders = 50, monolith = 50 }}
sticky = "header:x-user-id"
shadow = {{ upstream = "orders" }}
"#,
        mono.url(),
        orders.url()
    ));
    let c = client();
    for u in 0..20 {
        get(
            &c,
            &proxy.url("/api/orders/1"),
            &[("x-user-id", &u.to_string())],
        )
        .await;
    }

    let tmux = Tmux {
        socket: format!("strangler-test-{}", std::process::id()),
    };
    let command = format!(
        "{} --admin {} tui --refresh 200ms",
        env!("CARGO_BIN_EXE_strangler"),
        proxy.admin_url()
    );
    let ok = tmux
        .cmd()
        .args(["new-session", "-d", "-s", "tui", "-x", "100", "-y", "30"])
        .arg(format!("env -u STRANGLER_ADMIN_TOKEN NO_COLOR=1 {command}"))
        .status()
        .expect("tmux new-session (is tmux installed?)")
        .success();
    assert!(ok, "tmux new-session");
    let screen = tmux.wait_for(&["connected", "orders", "50%"]);
    assert!(screen.contains("Routes"), "{screen}");

    // The mismatches view shows the shadow's difference.
    tmux.keys("2");
    tmux.wait_for(&["/total", "real"]);
    tmux.keys("1");

    // r asks first and says what will happen; y does it.
    tmux.keys("r");
    tmux.wait_for(&["Confirm", "Roll back route orders"]);
    tmux.keys("y");
    tmux.wait_for(&["ROLLED BACK"]);
    let status = get(&c, &format!("{}/api/v1/status", proxy.admin_url()), &[])
        .await
        .json();
    assert_eq!(status["routes"][0]["rolled_back"], true, "{status}");
    assert_eq!(status["routes"][0]["split"]["monolith"], 100.0);
    let history = get(&c, &format!("{}/api/v1/history", proxy.admin_url()), &[])
        .await
        .json();
    assert!(
        history["versions"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Roll back route orders")),
        "{history}"
    );

    // q quits and gives the terminal back.
    tmux.keys("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.running() {
        assert!(Instant::now() < deadline, "the TUI did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
