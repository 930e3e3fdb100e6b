//! Property tests of the rule engine: the indexed lookup agrees with a naive
//! linear scan on random tables, sticky splits are monotonic, and splits
//! hand out exactly their share of buckets.

use std::sync::Arc;

use proptest::prelude::*;
use strangler_rules::split::{BUCKETS, bucket, salt_seed};
use strangler_rules::{Config, RouteTable, SimpleRequest, Split, UpstreamId};

const LITERALS: [&str; 4] = ["a", "b", "c", ""];
const REGEXES: [&str; 5] = ["/a/.*", "/[ab]/c", "/b(/.*)?", "/.*/c/?", "/c+"];

#[derive(Debug, Clone)]
enum PathKind {
    None,
    Exact(Vec<usize>, bool),
    Prefix(Vec<usize>, bool),
    Template(Vec<Option<usize>>, bool),
    Regex(usize),
}

#[derive(Debug, Clone)]
struct RouteGen {
    path: PathKind,
    method: Option<usize>,
    header: Option<usize>,
    host: Option<usize>,
}

fn literal_path(segs: &[usize], trailing: bool) -> String {
    let mut p: String = segs.iter().map(|&s| format!("/{}", LITERALS[s])).collect();
    if p.is_empty() || trailing {
        p.push('/');
    }
    p
}

fn route_strategy() -> impl Strategy<Value = RouteGen> {
    let segs = prop::collection::vec(0usize..4, 0..4);
    let tsegs = prop::collection::vec(prop::option::weighted(0.6, 0usize..3), 0..4);
    let path = prop_oneof![
        1 => Just(PathKind::None),
        3 => (segs.clone(), any::<bool>()).prop_map(|(s, t)| PathKind::Exact(s, t)),
        4 => (segs, any::<bool>()).prop_map(|(s, t)| PathKind::Prefix(s, t)),
        4 => (tsegs, any::<bool>()).prop_map(|(s, c)| PathKind::Template(s, c)),
        2 => (0usize..REGEXES.len()).prop_map(PathKind::Regex),
    ];
    (
        path,
        prop::option::weighted(0.3, 0usize..2),
        prop::option::weighted(0.3, 0usize..3),
        prop::option::weighted(0.15, 0usize..2),
    )
        .prop_map(|(path, method, header, host)| RouteGen {
            path,
            method,
            header,
            host,
        })
}

fn config_toml(routes: &[RouteGen]) -> String {
    let mut s = String::from(
        "[upstreams.monolith]\nurls = [\"http://127.0.0.1:1\"]\n[default]\nupstream = \"monolith\"\n",
    );
    for (i, r) in routes.iter().enumerate() {
        s.push_str(&format!("[[routes]]\nname = \"r{i}\"\n"));
        match &r.path {
            PathKind::None => {}
            PathKind::Exact(segs, t) => {
                s.push_str(&format!("match.path = \"{}\"\n", literal_path(segs, *t)))
            }
            PathKind::Prefix(segs, t) => s.push_str(&format!(
                "match.path_prefix = \"{}\"\n",
                literal_path(segs, *t)
            )),
            PathKind::Template(segs, catch_all) => {
                let mut p = String::new();
                for (j, seg) in segs.iter().enumerate() {
                    match seg {
                        Some(l) => p.push_str(&format!("/{}", LITERALS[*l])),
                        None => p.push_str(&format!("/{{p{j}}}")),
                    }
                }
                if *catch_all {
                    p.push_str("/{*rest}");
                }
                if p.is_empty() {
                    p.push('/');
                }
                s.push_str(&format!("match.path_template = \"{p}\"\n"));
            }
            PathKind::Regex(i) => s.push_str(&format!("match.path_regex = \"{}\"\n", REGEXES[*i])),
        }
        if let Some(m) = r.method {
            s.push_str(&format!("match.methods = [\"{}\"]\n", ["GET", "POST"][m]));
        }
        if let Some(h) = r.header {
            s.push_str(&format!(
                "match.headers = {{ \"x-h\" = \"{}\" }}\n",
                ["1", "*", "~[0-9]+"][h]
            ));
        }
        if let Some(h) = r.host {
            s.push_str(&format!(
                "match.host = \"{}\"\n",
                ["a.example", "*.example"][h]
            ));
        }
    }
    s
}

fn request_strategy() -> impl Strategy<Value = SimpleRequest> {
    (
        prop::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("c"),
                Just(""),
                Just("d"),
                Just("ab")
            ],
            0..6,
        ),
        0usize..3,
        prop::option::of(prop_oneof![Just("1"), Just("22"), Just("x")]),
        prop::option::of(prop_oneof![
            Just("a.example"),
            Just("b.example:8080"),
            Just("example")
        ]),
    )
        .prop_map(|(segs, m, h, host)| {
            let mut path: String = segs.iter().map(|s| format!("/{s}")).collect();
            if path.is_empty() {
                path.push('/');
            }
            let mut req = SimpleRequest::new(["GET", "POST", "PUT"][m], &path);
            if let Some(h) = h {
                req = req.header("x-h", h);
            }
            if let Some(host) = host {
                req = req.host(host);
            }
            req
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The index plus first-match order picks exactly what a linear scan picks.
    #[test]
    fn indexed_lookup_matches_linear_scan(
        routes in prop::collection::vec(route_strategy(), 0..24),
        requests in prop::collection::vec(request_strategy(), 1..24),
    ) {
        let toml = config_toml(&routes);
        let config = Config::parse(&toml, "gen.toml").map_err(|e| TestCaseError::fail(format!("{e}\n{toml}")))?;
        let table = RouteTable::new(Arc::new(config));
        for req in &requests {
            prop_assert_eq!(table.find(req), table.find_linear(req), "request {:?}\nconfig:\n{}", req, toml);
        }
    }

    /// Raising the new side's share only moves buckets from the default to it.
    #[test]
    fn raising_a_share_never_moves_users_back(
        w1 in 0u16..=BUCKETS,
        extra in 0u16..=BUCKETS,
        keys in prop::collection::vec("[a-z0-9]{1,12}", 1..50),
        salt in "[a-z]{1,8}",
    ) {
        let mono = UpstreamId(0);
        let new = UpstreamId(1);
        let w2 = w1.saturating_add(extra).min(BUCKETS);
        let before = Split::new(&[(new, w1), (mono, BUCKETS - w1)], mono);
        let after = Split::new(&[(new, w2), (mono, BUCKETS - w2)], mono);
        let seed = salt_seed(&salt);
        for k in &keys {
            let b = bucket(seed, k);
            if before.choose(b) == new {
                prop_assert_eq!(after.choose(b), new);
            }
        }
        for b in 0..BUCKETS {
            if before.choose(b) == new {
                prop_assert_eq!(after.choose(b), new, "bucket {} moved back", b);
            }
        }
    }

    /// With several new services, raising one at the default's expense keeps
    /// all its buckets and never sends anyone back to the default.
    #[test]
    fn raising_one_of_several_never_moves_users_to_the_default(
        wa in 0u16..3000, wb in 0u16..3000, raise in 0u16..3000, which in 0usize..2,
    ) {
        let (d, a, b) = (UpstreamId(0), UpstreamId(1), UpstreamId(2));
        let (wa2, wb2) = if which == 0 { (wa + raise, wb) } else { (wa, wb + raise) };
        let before = Split::new(&[(a, wa), (b, wb), (d, BUCKETS - wa - wb)], d);
        let after = Split::new(&[(a, wa2), (b, wb2), (d, BUCKETS - wa2 - wb2)], d);
        let raised = if which == 0 { a } else { b };
        for bucket in 0..BUCKETS {
            let (x, y) = (before.choose(bucket), after.choose(bucket));
            if x == raised { prop_assert_eq!(y, raised); }
            if x != d { prop_assert_ne!(y, d); }
        }
    }

    /// Every upstream owns exactly its weight in buckets.
    #[test]
    fn splits_hand_out_exactly_their_share(cuts in prop::collection::vec(0u16..=BUCKETS, 0..4)) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut weights = Vec::new();
        let mut last = 0;
        for (i, c) in cuts.iter().enumerate() {
            weights.push((UpstreamId(i as u32 + 1), c - last));
            last = *c;
        }
        weights.push((UpstreamId(0), BUCKETS - last));
        let split = Split::new(&weights, UpstreamId(0));
        for (id, w) in &weights {
            let owned = (0..BUCKETS).filter(|&b| split.choose(b) == *id).count();
            prop_assert_eq!(owned, usize::from(*w));
        }
    }
}

/// Sticky hashing spreads real keys to within half a point of the weight.
#[test]
fn sticky_keys_follow_the_split() {
    let mono = UpstreamId(0);
    let new = UpstreamId(1);
    let split = Split::new(&[(new, 1000), (mono, 9000)], mono);
    let seed = salt_seed("orders");
    let n = 100_000;
    let hits = (0..n)
        .filter(|i| split.choose(bucket(seed, &format!("user-{i}"))) == new)
        .count();
    let share = hits as f64 / n as f64;
    assert!((share - 0.10).abs() < 0.005, "share {share}");
}

/// Buckets are part of the contract: a user must land in the same bucket
/// after a restart, an upgrade, or on another machine.
#[test]
fn sticky_buckets_are_pinned() {
    assert_eq!(bucket(salt_seed("shop"), "42"), 3138);
}
