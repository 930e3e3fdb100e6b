//! `GET /metrics`: Prometheus text format, rendered from the same lock-free
//! counters the proxy keeps anyway (nothing extra on the hot path).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;

use crate::state::Shared;

/// `GET /metrics`.
pub(super) fn metrics(shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    use std::fmt::Write;
    const BOUNDS: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let live = shared.live.load_full();
    let config = live.config();
    let mut out = String::new();
    metric_head(
        &mut out,
        "strangler_config_version",
        "gauge",
        "Version of the runtime layer.",
    );
    let _ = writeln!(out, "strangler_config_version {}", live.version);
    let names: Vec<&str> = std::iter::once(crate::state::stats::DEFAULT_ROUTE)
        .chain(config.routes.iter().map(|r| r.name.as_str()))
        .collect();
    metric_head(
        &mut out,
        "strangler_requests_total",
        "counter",
        "Requests by route, upstream and status class.",
    );
    for (route, cells) in names.iter().zip(live.routes.iter().map(|r| &r.cells)) {
        for (u, cell) in config.upstreams.iter().zip(cells) {
            for (class, n) in cell.by_class() {
                let _ = writeln!(
                    out,
                    "strangler_requests_total{{route=\"{route}\",upstream=\"{}\",status=\"{class}\"}} {n}",
                    u.name
                );
            }
        }
    }
    metric_head(
        &mut out,
        "strangler_request_duration_seconds",
        "histogram",
        "Time to response headers by route and upstream.",
    );
    for (route, cells) in names.iter().zip(live.routes.iter().map(|r| &r.cells)) {
        for (u, cell) in config.upstreams.iter().zip(cells) {
            let (cumulative, sum, count) = cell.histogram(&BOUNDS);
            if count == 0 {
                continue;
            }
            let labels = format!("route=\"{route}\",upstream=\"{}\"", u.name);
            for (le, n) in BOUNDS.iter().zip(&cumulative) {
                let _ = writeln!(
                    out,
                    "strangler_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "strangler_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "strangler_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "strangler_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
    }
    metric_head(
        &mut out,
        "strangler_route_weight_percent",
        "gauge",
        "Live weight per route and upstream.",
    );
    for (i, r) in config.routes.iter().enumerate() {
        for (id, bp) in live.table.split(i).weights() {
            let _ = writeln!(
                out,
                "strangler_route_weight_percent{{route=\"{}\",upstream=\"{}\"}} {}",
                r.name,
                config.upstream(id).name,
                f64::from(bp) / 100.0
            );
        }
    }
    metric_head(
        &mut out,
        "strangler_upstream_instance_up",
        "gauge",
        "Whether an instance takes traffic (healthy and not ejected).",
    );
    for pool in &live.pools {
        for (i, inst) in pool.instances.iter().enumerate() {
            let _ = writeln!(
                out,
                "strangler_upstream_instance_up{{upstream=\"{}\",instance=\"{}\"}} {}",
                pool.name,
                inst.authority,
                u8::from(pool.is_available(i))
            );
        }
    }
    if let Some(rt) = &shared.shadow {
        shadow_metrics(&mut out, &rt.counters().snapshot());
    }
    if let Some(n) = shared.notifier.get() {
        metric_head(
            &mut out,
            "strangler_notify_total",
            "counter",
            "Ramp webhook events by result.",
        );
        for (result, count) in n.counts() {
            let _ = writeln!(out, "strangler_notify_total{{result=\"{result}\"}} {count}");
        }
    }
    let caches = shared.caches.all();
    if !caches.is_empty() {
        metric_head(
            &mut out,
            "strangler_cache_total",
            "counter",
            "Cache lookups by route and result.",
        );
        for (route, c) in caches {
            for (result, n) in [("hit", &c.hits), ("miss", &c.misses)] {
                let _ = writeln!(
                    out,
                    "strangler_cache_total{{route=\"{route}\",result=\"{result}\"}} {}",
                    n.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    }
    let limits = shared.limits.all();
    if !limits.is_empty() {
        metric_head(
            &mut out,
            "strangler_rate_limited_total",
            "counter",
            "Requests refused with 429 by a route's rate limit.",
        );
        for (route, l) in limits {
            let _ = writeln!(
                out,
                "strangler_rate_limited_total{{route=\"{route}\"}} {}",
                l.limited.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// A metric's `# HELP` and `# TYPE` lines.
fn metric_head(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `strangler_shadow_total{route, outcome}` and the histogram of shadow
/// latency minus primary latency.
fn shadow_metrics(
    out: &mut String,
    counts: &BTreeMap<String, strangler_shadow::counters::CountSnapshot>,
) {
    use std::fmt::Write;
    use strangler_shadow::Outcome;
    use strangler_shadow::counters::DELTA_BUCKETS_MS;
    metric_head(
        out,
        "strangler_shadow_total",
        "counter",
        "Shadowed requests by route and outcome.",
    );
    for (route, c) in counts {
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "strangler_shadow_total{{route=\"{route}\",outcome=\"{}\"}} {}",
                o.as_str(),
                c.get(o)
            );
        }
    }
    metric_head(
        out,
        "strangler_shadow_latency_delta_seconds",
        "histogram",
        "Shadow latency minus primary latency, to response headers.",
    );
    for (route, c) in counts {
        let count: u64 = c.delta.iter().sum();
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (le, n) in DELTA_BUCKETS_MS.iter().zip(&c.delta) {
            cumulative += n;
            let _ = writeln!(
                out,
                "strangler_shadow_latency_delta_seconds_bucket{{route=\"{route}\",le=\"{}\"}} {cumulative}",
                le / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "strangler_shadow_latency_delta_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "strangler_shadow_latency_delta_seconds_sum{{route=\"{route}\"}} {}",
            c.delta_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "strangler_shadow_latency_delta_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
}
