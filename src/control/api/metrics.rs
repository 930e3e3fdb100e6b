//! `GET /metrics`: Prometheus text format, rendered from the same lock-free
//! counters the proxy keeps anyway (nothing extra on the hot path). Every
//! family is written through [`Family`].

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use strangler_shadow::Outcome;
use strangler_shadow::counters::{CountSnapshot, DELTA_BUCKETS_MS};

use crate::state::Shared;

/// The request-duration histogram's buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `GET /metrics`.
pub(super) fn metrics(shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(render(shared))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn render(shared: &Shared) -> String {
    let live = shared.live.load_full();
    let config = live.config();
    let mut out = String::new();
    Family::start(
        &mut out,
        "strangler_config_version",
        "gauge",
        "Version of the runtime layer.",
    )
    .sample(&[], live.version);
    let names: Vec<&str> = std::iter::once(crate::state::stats::DEFAULT_ROUTE)
        .chain(config.routes.iter().map(|r| r.name.as_str()))
        .collect();
    let mut f = Family::start(
        &mut out,
        "strangler_requests_total",
        "counter",
        "Requests by route, upstream and status class.",
    );
    for (route, cells) in names.iter().zip(live.routes.iter().map(|r| &r.cells)) {
        for (u, cell) in config.upstreams.iter().zip(cells) {
            for (class, n) in cell.by_class() {
                f.sample(
                    &[("route", route), ("upstream", &u.name), ("status", class)],
                    n,
                );
            }
        }
    }
    let mut f = Family::start(
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
            f.histogram(
                &[("route", route), ("upstream", &u.name)],
                BOUNDS.iter().zip(cumulative),
                sum,
                count,
            );
        }
    }
    let mut f = Family::start(
        &mut out,
        "strangler_route_weight_percent",
        "gauge",
        "Live weight per route and upstream.",
    );
    for (i, r) in config.routes.iter().enumerate() {
        for (id, bp) in live.table.split(i).weights() {
            f.sample(
                &[("route", &r.name), ("upstream", &config.upstream(id).name)],
                f64::from(bp) / 100.0,
            );
        }
    }
    let mut f = Family::start(
        &mut out,
        "strangler_upstream_instance_up",
        "gauge",
        "Whether an instance takes traffic (healthy and not ejected).",
    );
    for pool in &live.pools {
        for (i, inst) in pool.instances.iter().enumerate() {
            f.sample(
                &[
                    ("upstream", &pool.name),
                    ("instance", inst.authority.as_str()),
                ],
                u8::from(pool.is_available(i)),
            );
        }
    }
    if let Some(rt) = &shared.shadow {
        shadow_metrics(&mut out, &rt.counters().snapshot());
    }
    if let Some(n) = shared.notifier.get() {
        let mut f = Family::start(
            &mut out,
            "strangler_notify_total",
            "counter",
            "Ramp webhook events by result.",
        );
        for (result, count) in n.counts() {
            f.sample(&[("result", result)], count);
        }
    }
    let caches = shared.caches.all();
    if !caches.is_empty() {
        let mut f = Family::start(
            &mut out,
            "strangler_cache_total",
            "counter",
            "Cache lookups by route and result.",
        );
        for (route, c) in &caches {
            for (result, n) in [("hit", &c.hits), ("miss", &c.misses)] {
                f.sample(&[("route", route), ("result", result)], n.load(Relaxed));
            }
        }
    }
    let limits = shared.limits.all();
    if !limits.is_empty() {
        let mut f = Family::start(
            &mut out,
            "strangler_rate_limited_total",
            "counter",
            "Requests refused with 429 by a route's rate limit.",
        );
        for (route, l) in &limits {
            f.sample(&[("route", route)], l.limited.load(Relaxed));
        }
    }
    out
}

/// `strangler_shadow_total{route, outcome}` and the histogram of shadow
/// latency minus primary latency.
fn shadow_metrics(out: &mut String, counts: &BTreeMap<String, CountSnapshot>) {
    let mut f = Family::start(
        out,
        "strangler_shadow_total",
        "counter",
        "Shadowed requests by route and outcome.",
    );
    for (route, c) in counts {
        for o in Outcome::ALL {
            f.sample(&[("route", route), ("outcome", o.as_str())], c.get(o));
        }
    }
    let mut f = Family::start(
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
        let cumulative = c.delta.iter().scan(0, |total, n| {
            *total += n;
            Some(*total)
        });
        f.histogram(
            &[("route", route)],
            DELTA_BUCKETS_MS
                .iter()
                .map(|le| le / 1000.0)
                .zip(cumulative),
            c.delta_sum_us as f64 / 1e6,
            count,
        );
    }
}

/// One metric family being written: its `# HELP` and `# TYPE` lines, then
/// one `name{label="value",...} value` line per sample (labels unescaped:
/// route, upstream and instance names are config names).
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    /// Writes the family's head.
    fn start(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// `name{labels} value`; `name value` without labels.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        self.line("", labels, None, value);
    }

    /// One label set's histogram: a `_bucket` line per upper bound with the
    /// cumulative count, `+Inf`, `_sum` and `_count`.
    fn histogram<L: Display>(
        &mut self,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (L, u64)>,
        sum: impl Display,
        count: u64,
    ) {
        for (le, n) in buckets {
            self.line("_bucket", labels, Some(&le), n);
        }
        self.line("_bucket", labels, Some(&"+Inf"), count);
        self.line("_sum", labels, None, sum);
        self.line("_count", labels, None, count);
    }

    fn line(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&dyn Display>,
        value: impl Display,
    ) {
        let out = &mut *self.out;
        let _ = write!(out, "{}{suffix}", self.name);
        let mut sep = '{';
        for (k, v) in labels {
            let _ = write!(out, "{sep}{k}=\"{v}\"");
            sep = ',';
        }
        if let Some(le) = le {
            let _ = write!(out, "{sep}le=\"{le}\"");
            sep = ',';
        }
        if sep == ',' {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::Family;

    #[test]
    fn a_family_writes_its_head_then_one_line_per_sample() {
        let mut out = String::new();
        let mut f = Family::start(&mut out, "x_total", "counter", "Xs.");
        f.sample(&[], 3);
        f.sample(&[("route", "a"), ("upstream", "b")], 0.5);
        f.histogram(&[("route", "a")], [(0.5, 1), (1.0, 2)], 1.25, 3);
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total 3\n\
             x_total{route=\"a\",upstream=\"b\"} 0.5\n\
             x_total_bucket{route=\"a\",le=\"0.5\"} 1\n\
             x_total_bucket{route=\"a\",le=\"1\"} 2\n\
             x_total_bucket{route=\"a\",le=\"+Inf\"} 3\n\
             x_total_sum{route=\"a\"} 1.25\n\
             x_total_count{route=\"a\"} 3\n"
        );
    }
}
