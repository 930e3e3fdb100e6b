//! Route matching at 10, 1 000 and 10 000 routes of mixed kinds: prefix
//! (45 %), template (45 %), header-conditioned prefix (9 %) and regex (1 %).
//! For each size: the first route, the last route, and a request that
//! matches nothing. Run with `cargo bench --bench matching`; never in CI.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use strangler_rules::{Config, RouteTable, SimpleRequest};

fn config(n: usize) -> String {
    let mut s = String::from(
        "[upstreams.monolith]\nurls = [\"http://127.0.0.1:3000\"]\n\
         [upstreams.svc]\nurls = [\"http://127.0.0.1:4000\"]\n\
         [default]\nupstream = \"monolith\"\n",
    );
    for i in 0..n {
        s.push_str(&format!("[[routes]]\nname = \"r{i}\"\n"));
        match i % 100 {
            50 => s.push_str(&format!("match.path_regex = \"/re{i}/[0-9]+(/.*)?\"\n")),
            1..=9 => s.push_str(&format!(
                "match.path_prefix = \"/hdr{i}\"\nmatch.headers = {{ \"x-tenant\" = \"t{i}\" }}\n"
            )),
            x if x % 2 == 0 => s.push_str(&format!("match.path_prefix = \"/svc{i}/items\"\n")),
            _ => s.push_str(&format!(
                "match.path_template = \"/api/v1/t{i}/{{id}}/detail\"\n"
            )),
        }
        s.push_str("split = { svc = 10, monolith = 90 }\nsticky = \"header:x-user-id\"\n");
    }
    s
}

fn last_request(n: usize) -> SimpleRequest {
    let i = n - 1;
    // n is a multiple of 10, so n-1 ends in 9: a template route for 1000
    // and 10000 (x % 100 == 99); a header route for n = 10.
    match i % 100 {
        1..=9 => {
            SimpleRequest::new("GET", &format!("/hdr{i}/x")).header("x-tenant", &format!("t{i}"))
        }
        _ => SimpleRequest::new("GET", &format!("/api/v1/t{i}/42/detail")),
    }
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let cfg = Config::parse(&config(n), "bench.toml").expect("bench config is valid");
        let table = RouteTable::new(Arc::new(cfg));
        let first = SimpleRequest::new("GET", "/svc0/items/7").header("x-user-id", "u1");
        let last = last_request(n).header("x-user-id", "u1");
        let none = SimpleRequest::new("GET", "/nothing/matches/this").header("x-user-id", "u1");
        assert_eq!(table.find(&first), table.find_linear(&first));
        assert_eq!(table.find(&last), table.find_linear(&last));
        assert!(matches!(table.find(&last), strangler_rules::Target::Route(i) if i == n - 1));
        assert_eq!(table.find(&none), strangler_rules::Target::Default);
        for (case, req) in [("first", &first), ("last", &last), ("none", &none)] {
            group.bench_with_input(BenchmarkId::new(case, n), req, |b, req| {
                b.iter(|| table.decide(black_box(req), || 4242))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
