//! One test per kind of config problem, asserting the exact message with
//! file, line and key; and that all semantic problems come at once.

use strangler_rules::{Config, ConfigError};

const BASE: &str = r#"[upstreams.monolith]
urls = ["http://127.0.0.1:3000"]

[upstreams.orders]
urls = ["http://127.0.0.1:4000"]

[default]
upstream = "monolith"
"#;

/// Parses BASE plus `extra` (which starts on line 9) and returns every line.
fn errors(extra: &str) -> Vec<String> {
    let src = format!("{BASE}{extra}");
    match Config::parse(&src, "test.toml") {
        Ok(_) => panic!("expected problems in:\n{src}"),
        Err(e) => e.lines(),
    }
}

fn one(extra: &str) -> String {
    let lines = errors(extra);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines.into_iter().next().unwrap_or_default()
}

#[test]
fn base_config_is_valid() {
    Config::parse(BASE, "test.toml").expect("base config is valid");
}

#[test]
fn syntax_error_names_line_and_column() {
    let msg = one("[[routes]\nname = \"x\"\n");
    assert!(msg.starts_with("test.toml:9:"), "{msg}");
    assert!(msg.contains("expected `]]`") || msg.contains("]"), "{msg}");
}

#[test]
fn unknown_key_names_the_key_path() {
    let msg = one("[[routes]]\nname = \"a\"\nmatch.path_prefx = \"/a\"\n");
    assert!(
        msg.starts_with("test.toml:11:7: routes[0].match.path_prefx: unknown field `path_prefx`, expected one of `path`, `path_prefix`"),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let msg = one("[shadow]\nconcurrency = \"lots\"\n");
    assert!(
        msg.starts_with("test.toml:10:15: shadow.concurrency: invalid type: string \"lots\""),
        "{msg}"
    );
}

/// `[listen] lean` is a bool, true unless set: a string or a number is
/// refused with file, line and key, as any mistyped key is.
#[test]
fn listen_lean_is_a_bool_defaulting_to_true() {
    let parsed = |extra: &str| {
        Config::parse(&format!("{BASE}{extra}"), "test.toml")
            .unwrap_or_else(|e| panic!("{:#?}", e.lines()))
    };
    assert!(parsed("").listen.lean);
    assert!(!parsed("[listen]\nlean = false\n").listen.lean);
    assert!(parsed("[listen]\nlean = true\n").listen.lean);
    let msg = one("[listen]\nlean = \"no\"\n");
    assert!(
        msg.starts_with(
            "test.toml:10:8: listen.lean: invalid type: string \"no\", expected a boolean"
        ),
        "{msg}"
    );
    let msg = one("[listen]\nlean = 0\n");
    assert!(
        msg.starts_with(
            "test.toml:10:8: listen.lean: invalid type: integer `0`, expected a boolean"
        ),
        "{msg}"
    );
    let msg = one("[listen]\nleen = false\n");
    assert!(
        msg.starts_with("test.toml:10:1: listen.leen: unknown field `leen`"),
        "{msg}"
    );
}

#[test]
fn unknown_upstream() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nsplit = { billing = 10, monolith = 90 }\n"),
        "test.toml:11: routes[0].split.billing: unknown upstream \"billing\" (known: monolith, orders)"
    );
}

#[test]
fn unknown_default_upstream() {
    let src = BASE.replace("upstream = \"monolith\"", "upstream = \"mono\"");
    let err = Config::parse(&src, "test.toml").unwrap_err();
    assert_eq!(
        err.lines(),
        vec!["test.toml:8: default.upstream: unknown upstream \"mono\" (known: monolith, orders)"]
    );
}

#[test]
fn missing_default() {
    let src = BASE.replace("[default]\nupstream = \"monolith\"\n", "");
    let err = Config::parse(&src, "test.toml").unwrap_err();
    assert_eq!(err.lines().len(), 1);
    assert!(
        err.lines()[0].starts_with("test.toml: default: missing [default] upstream"),
        "{:?}",
        err.lines()
    );
}

#[test]
fn weights_must_sum_to_100() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nsplit = { orders = 10, monolith = 85.5 }\n"),
        "test.toml:11: routes[0].split: weights sum to 95.5, they must sum to 100"
    );
}

#[test]
fn weights_have_a_resolution_of_one_hundredth() {
    assert_eq!(
        errors("[[routes]]\nname = \"a\"\nsplit = { orders = 10.005, monolith = 89.995 }\n"),
        vec![
            "test.toml:11: routes[0].split.monolith: weight 89.995 is not a percentage between 0 and 100 with at most two decimals",
            "test.toml:11: routes[0].split.orders: weight 10.005 is not a percentage between 0 and 100 with at most two decimals",
        ]
    );
}

#[test]
fn fractional_weights_are_fine() {
    let src =
        format!("{BASE}[[routes]]\nname = \"a\"\nsplit = {{ orders = 0.01, monolith = 99.99 }}\n");
    Config::parse(&src, "test.toml").expect("0.01 resolution is allowed");
}

#[test]
fn bad_path_regex() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.path_regex = \"/x/([\"\n"),
        "test.toml:11: routes[0].match.path_regex: invalid regex \"/x/([\": unclosed character class"
    );
}

#[test]
fn bad_header_regex() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.headers = { \"x-v\" = \"~(\" }\n"),
        "test.toml:11: routes[0].match.headers.x-v: invalid regex \"(\": unclosed group"
    );
}

#[test]
fn duplicate_route_names() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"a\"\n"),
        "test.toml:13: routes[1].name: duplicate route name \"a\" (first defined on line 10)"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\ntimeout = \"10 parsecs\"\n"),
        "test.toml:11: routes[0].timeout: invalid duration \"10 parsecs\": unknown time unit \"parsecs\" (write e.g. \"500ms\", \"10s\", \"5m\", \"7d\")"
    );
}

#[test]
fn durations_accept_days() {
    let src = format!("{BASE}[store]\ndiff_ttl = \"7d\"\n");
    let config = Config::parse(&src, "test.toml").expect("7d is a duration");
    assert_eq!(config.store.diff_ttl.as_secs(), 7 * 86400);
}

#[test]
fn shadowing_writes_needs_allow_writes() {
    assert_eq!(
        one(
            "[[routes]]\nname = \"a\"\nshadow = { upstream = \"orders\", methods = [\"GET\", \"POST\"] }\n"
        ),
        "test.toml:11: routes[0].shadow.methods[1]: shadowing POST sends writes to the shadow upstream; set allow_writes = true to do it on purpose"
    );
    let ok = format!(
        "{BASE}[[routes]]\nname = \"a\"\nshadow = {{ upstream = \"orders\", methods = [\"POST\"], allow_writes = true }}\n"
    );
    Config::parse(&ok, "test.toml").expect("allow_writes permits it");
}

#[test]
fn empty_upstream_list() {
    assert_eq!(
        one("[upstreams.billing]\nurls = []\n"),
        "test.toml:10: upstreams.billing.urls: upstream has no urls; give at least one instance"
    );
}

#[test]
fn bad_upstream_url() {
    assert_eq!(
        one("[upstreams.billing]\nurls = [\"ftp://x\"]\n"),
        "test.toml:10: upstreams.billing.urls[0]: invalid upstream url \"ftp://x\": scheme ftp is not http or https"
    );
}

#[test]
fn shift_target_that_cannot_be_chosen() {
    assert_eq!(
        one(
            "[[routes]]\nname = \"a\"\nmatch.path_prefix = \"/a\"\nramp = { steps = [1, 50, 100] }\n"
        ),
        "test.toml:12: routes[0].ramp.to: ramp needs `to`: the route's split has no upstream besides the default"
    );
    assert_eq!(
        one(
            "[[routes]]\nname = \"a\"\nsplit = { orders = 10, monolith = 90 }\nramp = { to = \"monolith\", steps = [1, 50, 100] }\n"
        ),
        "test.toml:12: routes[0].ramp.to: ramp target \"monolith\" is the default upstream; ramp towards the new service"
    );
}

#[test]
fn bad_listen_address() {
    assert_eq!(
        one("[listen]\nproxy = \"localhost\"\n"),
        "test.toml:10: listen.proxy: invalid address \"localhost\": expected IP:PORT such as 127.0.0.1:8080"
    );
}

#[test]
fn bad_path_template() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.path_template = \"/users/x{id}\"\n"),
        "test.toml:11: routes[0].match.path_template: path template \"/users/x{id}\": parameters must be whole segments, found \"x{id}\""
    );
}

#[test]
fn bad_method() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.methods = [\"GE T\"]\n"),
        "test.toml:11: routes[0].match.methods[0]: invalid method \"GE T\": methods are HTTP tokens such as GET or POST"
    );
}

#[test]
fn bad_enum_value() {
    assert_eq!(
        one("[upstreams.billing]\nurls = [\"http://127.0.0.1:1\"]\nbalance = \"fastest\"\n"),
        "test.toml:11: upstreams.billing.balance: invalid balance \"fastest\": expected round_robin, least_requests or random"
    );
}

#[test]
fn two_path_matchers_conflict() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.path = \"/a\"\nmatch.path_prefix = \"/a\"\n"),
        "test.toml:12: routes[0].match.path_prefix: only one path matcher per route, found path and path_prefix"
    );
}

#[test]
fn jwt_mixing_key_families_is_refused() {
    let msg = one(
        "[[routes]]\nname = \"a\"\nauth.jwt = { algorithms = [\"HS256\", \"RS256\"], jwks_file = \"k.json\" }\n",
    );
    assert!(
        msg.starts_with("test.toml:11: routes[0].auth.jwt.algorithms: mixes HMAC (HS*) and public-key algorithms"),
        "{msg}"
    );
}

#[test]
fn aggregate_placeholder_must_be_a_parameter() {
    assert_eq!(
        one(
            "[[aggregates]]\nname = \"d\"\nmatch.path_template = \"/d/{user}\"\nparts.p = { path = \"/u/{id}\" }\n"
        ),
        "test.toml:12: aggregates[0].parts.p.path: placeholder {id} is not a parameter of the aggregate's path_template"
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let lines = errors(
        "[upstreams.empty]\nurls = []\n\n[[routes]]\nname = \"a\"\nmatch.path_regex = \"(\"\nsplit = { nope = 100 }\ntimeout = \"soon\"\n\n[[routes]]\nname = \"a\"\nsplit = { orders = 1 }\n",
    );
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        vec![
            "test.toml:10",
            "test.toml:14",
            "test.toml:15",
            "test.toml:16",
            "test.toml:19",
            "test.toml:20",
        ]
    );
}

#[test]
fn error_type_separates_syntax_from_semantics() {
    let err = Config::parse("x = ", "f.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }));
    assert!(err.problems().is_empty());
}

#[test]
fn host_with_port_is_refused() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.host = \"shop.example.com:8080\"\n"),
        "test.toml:11: routes[0].match.host: invalid host \"shop.example.com:8080\": expected a host name without port, such as shop.example.com or *.example.com (the request's port is ignored)"
    );
}

#[test]
fn impossible_ports_are_refused() {
    assert_eq!(
        errors("[upstreams.billing]\nurls = [\"http://x:99999\", \"http://x:0\"]\n"),
        vec![
            "test.toml:10: upstreams.billing.urls[0]: invalid upstream url \"http://x:99999\": invalid port \"99999\": expected 1-65535",
            "test.toml:10: upstreams.billing.urls[1]: invalid upstream url \"http://x:0\": invalid port \"0\": expected 1-65535",
        ]
    );
}

#[test]
fn names_must_fit_urls_and_command_lines() {
    assert_eq!(
        one("[[routes]]\nname = \"--all\"\n"),
        "test.toml:10: routes[0].name: invalid route \"--all\": expected a name of letters, digits, '.', '_' and '-', not starting with '-'"
    );
}

#[test]
fn problems_point_at_the_entry_as_written() {
    let lines = errors(
        "[[routes]]\nname = \"a\"\nshadow = { upstream = \"orders\", methods = [\n  \"GET\",\n  \"get\",\n  \"POST\",\n] }\n",
    );
    assert_eq!(
        lines,
        vec![
            "test.toml:14: routes[0].shadow.methods[2]: shadowing POST sends writes to the shadow upstream; set allow_writes = true to do it on purpose"
        ]
    );
}

#[test]
fn one_bad_value_does_not_hide_the_others() {
    let lines = errors(
        "[[routes]]\nname = \"a\"\nsplit = { orders = 10, monolith = 80 }\nhost_rewrite = \"bad host/x\"\nramp = { to = \"nope\", steps = [] }\n",
    );
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[0].contains("routes[0].split: weights sum to 90"),
        "{lines:#?}"
    );
    assert!(lines[1].contains("routes[0].host_rewrite"), "{lines:#?}");
    assert!(
        lines[2].contains("routes[0].ramp.to: unknown upstream \"nope\""),
        "{lines:#?}"
    );
    assert!(
        lines[3].contains("routes[0].ramp.steps: missing steps"),
        "{lines:#?}"
    );
}

#[test]
fn regex_cannot_escape_its_anchors() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nmatch.path_regex = \"/a)|(/b\"\n"),
        "test.toml:11: routes[0].match.path_regex: invalid regex \"/a)|(/b\": unopened group"
    );
}

#[test]
fn aggregate_needs_a_matcher() {
    let msg = one("[[aggregates]]\nname = \"all\"\nparts.x = { path = \"/x\" }\n");
    assert!(
        msg.starts_with("test.toml:9: aggregates[0].match: missing match"),
        "{msg}"
    );
}

#[test]
fn duplicate_keys_are_named() {
    let msg = one("[[routes]]\nname = \"a\"\nname = \"b\"\n");
    assert_eq!(msg, "test.toml:11:1: duplicate key `name`");
}

#[test]
fn weight_sums_are_rounded_for_display() {
    assert_eq!(
        one("[[routes]]\nname = \"a\"\nsplit = { orders = 0.1, monolith = 99.8 }\n"),
        "test.toml:11: routes[0].split: weights sum to 99.9, they must sum to 100"
    );
}

#[test]
fn gateway_settings_that_would_open_a_hole_or_do_nothing() {
    let lines = errors(
        r#"[[routes]]
name = "api"
match.path_prefix = "/api"
split = { monolith = 100 }
auth.jwt = { algorithms = ["HS256"], secret_env = "S", audience = [] }
auth.forward_claims = { sub = "host", role = "Content-Length", x = "x-user-id" }
cache = { ttl = "0s", max_entries = 0 }
"#,
    );
    let all = lines.join("\n");
    for needle in [
        "auth.jwt.audience",
        "auth.forward_claims.sub",
        "auth.forward_claims.role",
        "cache.ttl",
        "cache.max_entries",
    ] {
        assert!(all.contains(needle), "{needle} missing in:\n{all}");
    }
    assert!(!all.contains("forward_claims.x"), "{all}");
    assert_eq!(lines.len(), 5, "{all}");
}
