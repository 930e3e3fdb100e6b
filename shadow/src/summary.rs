//! The diff summary (`GET /api/v1/diffs/summary`): per route, the outcome
//! counts and one line per differing field with its rate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counters::{CountSnapshot, Outcome};
use crate::store::FieldAgg;
use crate::time::rfc3339_ms;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSummary {
    pub route: String,
    /// Comparisons finished: matched + mismatched + shadow errors + timeouts.
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub shadow_errors: u64,
    pub shadow_timeouts: u64,
    pub dropped: u64,
    pub skipped_too_large: u64,
    pub skipped_same_upstream: u64,
    pub primary_errors: u64,
    /// (compared - matched) / compared.
    pub mismatch_rate: f64,
    pub fields: Vec<FieldSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSummary {
    pub path: String,
    pub kind: String,
    pub count: u64,
    /// count / compared.
    pub raw_rate: f64,
    pub noise_rate: f64,
    /// Whether the field is noise. Without a noise check on the route every
    /// difference is taken as real (`false`).
    pub noise: Option<bool>,
    pub first_seen: String,
    pub last_seen: String,
    pub examples: Vec<String>,
}

/// Builds the summary of every route with counts or fields, plus `routes`
/// (e.g. every route with a shadow) even when they have none yet.
pub fn summarize(
    counts: &BTreeMap<String, CountSnapshot>,
    fields: Vec<FieldAgg>,
    routes: &[String],
) -> Vec<RouteSummary> {
    let mut by_route: BTreeMap<String, Vec<FieldAgg>> = BTreeMap::new();
    for r in routes.iter().chain(counts.keys()) {
        by_route.entry(r.clone()).or_default();
    }
    for f in fields {
        by_route.entry(f.route.clone()).or_default().push(f);
    }
    let empty = CountSnapshot::default();
    by_route
        .into_iter()
        .map(|(route, mut fields)| {
            let c = counts.get(&route).unwrap_or(&empty);
            let compared = c.compared();
            fields.sort_by(|a, b| b.count.cmp(&a.count).then(a.field.cmp(&b.field)));
            let fields = fields
                .into_iter()
                .map(|f| FieldSummary {
                    raw_rate: if compared == 0 {
                        0.0
                    } else {
                        (f.count as f64 / compared as f64).min(1.0)
                    },
                    noise_rate: 0.0,
                    noise: Some(false),
                    path: f.field,
                    kind: f.kind,
                    count: f.count,
                    first_seen: rfc3339_ms(f.first_seen_ms),
                    last_seen: rfc3339_ms(f.last_seen_ms),
                    examples: f.examples,
                })
                .collect();
            RouteSummary {
                compared,
                matched: c.get(Outcome::Match),
                mismatched: c.get(Outcome::Mismatch),
                shadow_errors: c.get(Outcome::ShadowError),
                shadow_timeouts: c.get(Outcome::ShadowTimeout),
                dropped: c.get(Outcome::Dropped),
                skipped_too_large: c.get(Outcome::SkippedTooLarge),
                skipped_same_upstream: c.get(Outcome::SkippedSameUpstream),
                primary_errors: c.get(Outcome::PrimaryError),
                mismatch_rate: c.mismatch_rate(),
                route,
                fields,
            }
        })
        .collect()
}
