//! The real `strangler` binary: `check` and `explain` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strangler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run strangler")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_passes_check() {
    let files = examples();
    assert!(files.len() >= 3, "examples: {files:?}");
    for f in files {
        let out = strangler(&["check", "--config", f.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(": ok ("),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn check_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[upstreams.monolith]\nurls = [\"http://127.0.0.1:3000\"]\n[default]\nupstream = \"monolith\"\n\
         [[routes]]\nname = \"a\"\nsplit = { orders = 10, monolith = 90 }\n\
         [[routes]]\nname = \"a\"\nmatch.path_regex = \"([\"\n",
    )
    .expect("write config");
    let p = path.to_str().expect("utf-8 path");
    let out = strangler(&["check", "--config", p]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{p}:7: routes[0].split.orders: unknown upstream \"orders\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:9: routes[1].name: duplicate route name \"a\" (first defined on line 6)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:10: routes[1].match.path_regex: invalid regex"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{p}: 3 problems")), "{err}");
}

#[test]
fn check_names_unknown_keys_with_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[listen]\nproxy = \"127.0.0.1:8080\"\nworkrs = 2\n")
        .expect("write config");
    let p = path.to_str().expect("utf-8 path");
    let out = strangler(&["check", "--config", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{p}:3:1: listen.workrs: unknown field `workrs`")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_of_a_missing_file_is_one_line() {
    let out = strangler(&["check", "--config", "does-not-exist.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("cannot read config does-not-exist.toml:"),
        "{err}"
    );
}

#[test]
fn explain_shows_route_rejections_bucket_and_upstream() {
    let out = strangler(&[
        "explain",
        "GET",
        "http://shop.example.com/api/orders/7",
        "-H",
        "x-user-id: 42",
        "--config",
        "examples/strangler.toml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("orders-beta  skipped: header x-beta missing, want = \"1\""),
        "{s}"
    );
    assert!(s.contains("route:    orders (#2 in the file)"), "{s}");
    assert!(
        s.contains("matched:  path prefix /api/orders, method in [GET, POST]"),
        "{s}"
    );
    assert!(
        s.contains("sticky:   header:x-user-id = \"42\" -> bucket 3138 of 0-9999 (salt \"shop\")"),
        "{s}"
    );
    assert!(s.contains("upstream: monolith"), "{s}");
}

#[test]
fn explain_without_sticky_key_gives_probabilities() {
    let out = strangler(&[
        "explain",
        "GET",
        "/api/orders/7",
        "--config",
        "examples/strangler.toml",
    ]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.contains("upstream: random: orders with probability 10%, monolith with probability 90%"),
        "{s}"
    );
}

#[test]
fn explain_json_is_machine_readable() {
    let out = strangler(&[
        "explain",
        "GET",
        "/api/orders/1",
        "-H",
        "x-beta: 1",
        "--config",
        "examples/strangler.toml",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["matched"]["name"], "orders-beta");
    assert_eq!(v["upstream"], "orders");
    assert_eq!(v["tried"][0]["kind"], "aggregate");
}

#[test]
fn explain_unmatched_goes_to_default() {
    let out = strangler(&[
        "explain",
        "DELETE",
        "/legacy/thing",
        "--config",
        "examples/strangler.toml",
    ]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(
        s.contains("none matched; the default upstream serves it"),
        "{s}"
    );
    assert!(s.contains("upstream: monolith"), "{s}");
}

#[test]
fn explain_rejects_a_bad_url() {
    let out = strangler(&[
        "explain",
        "GET",
        "orders",
        "--config",
        "examples/strangler.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid url \"orders\""));
}

#[test]
fn usage_errors_exit_1_not_2() {
    let out = strangler(&["check", "--bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unexpected argument '--bogus'"));
    assert_eq!(strangler(&["--help"]).status.code(), Some(0));
}
