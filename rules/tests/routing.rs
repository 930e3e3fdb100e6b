//! Routing through a compiled table built from a real config: first match
//! in file order across matcher kinds, defaults, splits and sticky choice.

use std::sync::Arc;

use strangler_rules::{Choice, Config, RouteTable, SimpleRequest, Target, explain};

const CONFIG: &str = r#"
[upstreams.monolith]
urls = ["http://127.0.0.1:3000"]
[upstreams.orders]
urls = ["http://127.0.0.1:4000"]
[upstreams.users]
urls = ["http://127.0.0.1:4100"]
[default]
upstream = "monolith"

[[aggregates]]
name = "dash"
match.path_template = "/api/dashboard/{user}"
parts.p = { path = "/api/users/{user}" }

[[routes]]
name = "regex-first"
match.path_regex = "/api/orders/[0-9]+/invoice"
upstream = "monolith"

[[routes]]
name = "beta"
match.path_prefix = "/api/orders"
match.headers = { "x-beta" = "1" }
upstream = "orders"

[[routes]]
name = "orders"
match.path_prefix = "/api/orders"
match.methods = ["GET"]
split = { orders = 10, monolith = 90 }
sticky = "header:x-user-id"

[[routes]]
name = "user-me"
match.path = "/api/users/me"
upstream = "users"

[[routes]]
name = "user"
match.path_template = "/api/users/{id}"
match.query = { "v" = "2" }
upstream = "users"

[[routes]]
name = "by-host"
match.host = "*.internal"
match.cookies = { "beta" = "1" }
upstream = "users"
"#;

fn table() -> RouteTable {
    RouteTable::new(Arc::new(
        Config::parse(CONFIG, "t.toml").expect("valid config"),
    ))
}

fn route_name(t: &RouteTable, req: &SimpleRequest) -> String {
    match t.find(req) {
        Target::Route(i) => t.config().routes[i].name.clone(),
        Target::Aggregate(i) => format!("aggregate:{}", t.config().aggregates[i].name),
        Target::Default => "default".into(),
    }
}

#[test]
fn first_match_in_file_order_across_matcher_kinds() {
    let t = table();
    let get = |p: &str| SimpleRequest::new("GET", p);
    assert_eq!(route_name(&t, &get("/api/orders/7/invoice")), "regex-first");
    assert_eq!(
        route_name(&t, &get("/api/orders/7/invoice").header("x-beta", "1")),
        "regex-first"
    );
    assert_eq!(
        route_name(&t, &get("/api/orders/7").header("x-beta", "1")),
        "beta"
    );
    assert_eq!(route_name(&t, &get("/api/orders/7")), "orders");
    assert_eq!(route_name(&t, &get("/api/orders")), "orders");
    assert_eq!(route_name(&t, &get("/api/ordersX")), "default");
    assert_eq!(
        route_name(&t, &SimpleRequest::new("POST", "/api/orders")),
        "default"
    );
    assert_eq!(route_name(&t, &get("/api/users/me?v=2")), "user-me");
    assert_eq!(route_name(&t, &get("/api/users/9?v=2")), "user");
    assert_eq!(route_name(&t, &get("/api/users/9?v=3")), "default");
    assert_eq!(route_name(&t, &get("/api/dashboard/9")), "aggregate:dash");
    assert_eq!(
        route_name(
            &t,
            &get("/x")
                .host("a.internal:80")
                .header("cookie", "a=b; beta=1")
        ),
        "by-host"
    );
    assert_eq!(
        route_name(&t, &get("/x").host("internal").header("cookie", "beta=1")),
        "default"
    );
}

#[test]
fn sticky_choice_is_deterministic_and_random_choice_uses_the_bucket_given() {
    let t = table();
    let req = SimpleRequest::new("GET", "/api/orders/1").header("x-user-id", "alice");
    let first = t.decide(&req, || unreachable!("sticky needs no random bucket"));
    for _ in 0..10 {
        assert_eq!(t.decide(&req, || 0), first);
    }
    assert!(matches!(first.choice, Choice::Sticky { .. }));

    let anon = SimpleRequest::new("GET", "/api/orders/1");
    let orders = t.config().upstream_id("orders");
    let monolith = t.config().upstream_id("monolith");
    assert_eq!(t.decide(&anon, || 0).upstream, orders);
    assert_eq!(t.decide(&anon, || 999).upstream, orders);
    assert_eq!(t.decide(&anon, || 1000).upstream, monolith);
    assert_eq!(
        t.decide(&SimpleRequest::new("GET", "/nothing"), || 0)
            .upstream,
        monolith
    );
}

#[test]
fn explain_lists_rejections_and_the_decision() {
    let t = table();
    let req = SimpleRequest::new("GET", "/api/orders/7").header("x-user-id", "42");
    let e = explain(&t, &req);
    assert_eq!(e.matched.as_ref().map(|m| m.name.as_str()), Some("orders"));
    let reasons: Vec<&str> = e.tried.iter().map(|a| a.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "path /api/orders/7 does not match path template /api/dashboard/{user}",
            "path /api/orders/7 does not match path regex /api/orders/[0-9]+/invoice",
            "header x-beta missing, want = \"1\"",
            "",
        ]
    );
    let sticky = e.sticky.as_ref().expect("route is sticky");
    assert_eq!(sticky.value.as_deref(), Some("42"));
    assert!(e.upstream.is_some());
    let text = e.to_string();
    assert!(
        text.contains("split:    orders 10% (buckets 0-999), monolith 90% (buckets 1000-9999)"),
        "{text}"
    );
}

/// Heavy regexes (large Unicode classes) must not disable the routes after them.
#[test]
fn many_heavy_regexes_keep_later_routes_reachable() {
    let mut cfg = String::from(
        "[upstreams.monolith]\nurls = [\"http://127.0.0.1:3000\"]\n[default]\nupstream = \"monolith\"\n",
    );
    for i in 0..12 {
        cfg.push_str(&format!(
            "[[routes]]\nname = \"re{i}\"\nmatch.path_regex = '/u{i}/[\\w.-]{{3,64}}/\\w+/profile'\n"
        ));
    }
    cfg.push_str("[[routes]]\nname = \"after\"\nmatch.path_prefix = \"/after\"\n");
    let table = RouteTable::new(Arc::new(Config::parse(&cfg, "t.toml").expect("valid")));
    for path in [
        "/after/x",
        "/u7/abc/def/profile",
        "/u11/ÄÖÜ.x/y/profile",
        "/nothing",
    ] {
        let req = SimpleRequest::new("GET", path);
        assert_eq!(table.find(&req), table.find_linear(&req), "{path}");
    }
    assert_eq!(
        route_name(&table, &SimpleRequest::new("GET", "/after/x")),
        "after"
    );
}

/// More candidates than the inline buffer holds: order is still kept.
#[test]
fn many_candidates_for_one_path() {
    let mut cfg = String::from(
        "[upstreams.monolith]\nurls = [\"http://127.0.0.1:3000\"]\n[default]\nupstream = \"monolith\"\n",
    );
    for i in 0..40 {
        cfg.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nmatch.path_prefix = \"/\"\nmatch.headers = {{ \"x-n\" = \"{i}\" }}\n"
        ));
    }
    let table = RouteTable::new(Arc::new(Config::parse(&cfg, "t.toml").expect("valid")));
    for n in [0, 15, 16, 17, 39] {
        let req = SimpleRequest::new("GET", "/a/b").header("x-n", &n.to_string());
        assert_eq!(table.find(&req), Target::Route(n));
    }
    assert_eq!(
        table.find(&SimpleRequest::new("GET", "/a")),
        Target::Default
    );
}
