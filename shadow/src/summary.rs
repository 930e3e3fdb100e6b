//! The diff summary (`GET /api/v1/diffs/summary`) and the noise verdicts:
//! per route the outcome counts, and one line per differing field with its
//! raw rate (primary vs shadow) beside its noise rate (primary vs primary,
//! Diffy's method) and the verdict.
//!
//! Everything here is computed when asked, from counts kept since the
//! start: the route's ignore rules in force now hide the fields they cover,
//! and the real mismatch count is recomputed from the per-route field sets
//! ([`Signature`]s), so marking a field as noise (or reverting that) shows
//! its effect at once, for every request ever compared.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strangler_rules::config::NoiseCheck;

use crate::counters::{CountSnapshot, Outcome};
use crate::pointer::{self, Pattern};
use crate::store::{FieldAgg, Signature};
use crate::time::rfc3339_ms;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteSummary {
    pub route: String,
    /// Comparisons finished: matched + mismatched + shadow errors + timeouts.
    pub compared: u64,
    pub matched: u64,
    /// Requests whose answers differed in any field, noise included.
    pub mismatched: u64,
    /// Requests that differed in at least one real field: not ignored, not
    /// judged noise (a field whose verdict is not known yet counts as real).
    pub mismatched_real: u64,
    pub shadow_errors: u64,
    pub shadow_timeouts: u64,
    pub dropped: u64,
    pub skipped_too_large: u64,
    pub skipped_same_upstream: u64,
    pub primary_errors: u64,
    /// Requests also sent a second time to the primary (noise check).
    pub noise_checked: u64,
    /// (mismatched_real + shadow errors + timeouts) / compared.
    pub mismatch_rate: f64,
    /// (compared - matched) / compared: noise included.
    pub raw_mismatch_rate: f64,
    pub fields: Vec<FieldSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSummary {
    pub path: String,
    pub kind: String,
    pub count: u64,
    /// Primary-vs-shadow differences / requests compared.
    pub raw_rate: f64,
    /// Primary-vs-primary differences / requests noise-checked (0 without
    /// a noise check).
    pub noise_rate: f64,
    /// Whether the field is noise: `null` until the route has noise-checked
    /// `min_samples` requests; `false` for every field of a route without
    /// a noise check (every difference is taken as real).
    pub noise: Option<bool>,
    pub first_seen: String,
    pub last_seen: String,
    pub examples: Vec<String>,
}

/// What the summary needs to know of a route's config now.
#[derive(Debug, Clone, Default)]
pub struct RouteRules {
    /// `compare.ignore_fields` plus the runtime layer's additions.
    pub ignore: Vec<Pattern>,
    pub noise_check: Option<NoiseCheck>,
}

impl RouteRules {
    pub fn new(
        ignore: impl IntoIterator<Item = impl AsRef<str>>,
        noise_check: Option<NoiseCheck>,
    ) -> Self {
        RouteRules {
            ignore: ignore
                .into_iter()
                .map(|p| Pattern::parse(p.as_ref()))
                .collect(),
            noise_check,
        }
    }

    /// A body field an ignore rule covers (headers and status never are).
    pub fn ignores(&self, kind: &str, field: &str) -> bool {
        kind == "body" && field.starts_with('/') && {
            let segs = pointer::split(field);
            self.ignore.iter().any(|p| p.covers(&segs))
        }
    }
}

/// Diffy's verdict: `Some(true)` noise, `Some(false)` real, `None` not
/// known yet.
pub fn verdict(
    rules: &RouteRules,
    count: u64,
    noise_count: u64,
    compared: u64,
    noise_checked: u64,
) -> Option<bool> {
    let Some(n) = &rules.noise_check else {
        return Some(false);
    };
    if noise_checked < n.min_samples.max(1) {
        return None;
    }
    let raw = if compared == 0 {
        0.0
    } else {
        count as f64 / compared as f64
    };
    let noise = noise_count as f64 / noise_checked as f64;
    let real = raw > noise
        && (raw - noise) / (raw + noise) * 100.0 > n.relative
        && (raw - noise) * 100.0 > n.absolute;
    Some(!real)
}

/// Builds the summary of every route with counts or fields, plus `routes`
/// (e.g. every route with a shadow) even when they have none yet.
pub fn summarize(
    counts: &BTreeMap<String, CountSnapshot>,
    fields: Vec<FieldAgg>,
    signatures: &BTreeMap<String, Vec<Signature>>,
    rules: &BTreeMap<String, RouteRules>,
) -> Vec<RouteSummary> {
    let mut by_route: BTreeMap<String, Vec<FieldAgg>> = BTreeMap::new();
    for r in rules.keys().chain(counts.keys()) {
        by_route.entry(r.clone()).or_default();
    }
    for f in fields {
        by_route.entry(f.route.clone()).or_default().push(f);
    }
    let empty = CountSnapshot::default();
    let no_rules = RouteRules::default();
    by_route
        .into_iter()
        .map(|(route, mut fields)| {
            let c = counts.get(&route).unwrap_or(&empty);
            let r = rules.get(&route).unwrap_or(&no_rules);
            let compared = c.compared();
            let checked = c.noise_checked;
            let mut real: BTreeMap<(String, String), bool> = BTreeMap::new();
            for f in &fields {
                let is_real = !r.ignores(&f.kind, &f.field)
                    && verdict(r, f.count, f.noise_count, compared, checked) != Some(true);
                real.insert((f.kind.clone(), f.field.clone()), is_real);
            }
            let mismatched_real: u64 = signatures
                .get(&route)
                .map(|sigs| {
                    sigs.iter()
                        .filter(|s| {
                            s.fields
                                .iter()
                                .any(|k| real.get(k).copied().unwrap_or(true))
                        })
                        .map(|s| s.count)
                        .sum()
                })
                .unwrap_or(0);
            let failed = c.get(Outcome::ShadowError) + c.get(Outcome::ShadowTimeout);
            let rate = |n: u64| {
                if compared == 0 {
                    0.0
                } else {
                    (n as f64 / compared as f64).min(1.0)
                }
            };
            fields.retain(|f| f.count > 0 && !r.ignores(&f.kind, &f.field));
            fields.sort_by(|a, b| b.count.cmp(&a.count).then(a.field.cmp(&b.field)));
            let fields = fields
                .into_iter()
                .map(|f| FieldSummary {
                    raw_rate: rate(f.count),
                    noise_rate: if checked == 0 {
                        0.0
                    } else {
                        (f.noise_count as f64 / checked as f64).min(1.0)
                    },
                    noise: verdict(r, f.count, f.noise_count, compared, checked),
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
                mismatched_real,
                shadow_errors: c.get(Outcome::ShadowError),
                shadow_timeouts: c.get(Outcome::ShadowTimeout),
                dropped: c.get(Outcome::Dropped),
                skipped_too_large: c.get(Outcome::SkippedTooLarge),
                skipped_same_upstream: c.get(Outcome::SkippedSameUpstream),
                primary_errors: c.get(Outcome::PrimaryError),
                noise_checked: checked,
                mismatch_rate: rate(mismatched_real + failed),
                raw_mismatch_rate: c.mismatch_rate(),
                route,
                fields,
            }
        })
        .collect()
}

/// Which differences are real, from a summary: used to list records with
/// only their real differences.
#[derive(Debug, Default)]
pub struct Judge {
    hidden: BTreeMap<String, std::collections::BTreeSet<(String, String)>>,
    rules: BTreeMap<String, RouteRules>,
}

impl Judge {
    pub fn new(summaries: &[RouteSummary], rules: BTreeMap<String, RouteRules>) -> Self {
        let mut hidden: BTreeMap<String, std::collections::BTreeSet<(String, String)>> =
            BTreeMap::new();
        for s in summaries {
            for f in &s.fields {
                if f.noise == Some(true) {
                    hidden
                        .entry(s.route.clone())
                        .or_default()
                        .insert((f.kind.clone(), f.path.clone()));
                }
            }
        }
        Judge { hidden, rules }
    }

    /// A difference of this kind and field on this route is real: not
    /// ignored now, not judged noise.
    pub fn is_real(&self, route: &str, kind: &str, field: &str) -> bool {
        let ignored = self
            .rules
            .get(route)
            .is_some_and(|r| r.ignores(kind, field));
        let noise = self
            .hidden
            .get(route)
            .is_some_and(|h| h.contains(&(kind.to_string(), field.to_string())));
        !ignored && !noise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(min: u64) -> RouteRules {
        RouteRules::new(
            Vec::<String>::new(),
            Some(NoiseCheck {
                percent_bp: 10_000,
                relative: 20.0,
                absolute: 0.03,
                min_samples: min,
            }),
        )
    }

    #[test]
    fn diffy_verdicts() {
        let r = check(20);
        // 50 % against itself and 50 % against the shadow: noise.
        assert_eq!(verdict(&r, 50, 50, 100, 100), Some(true));
        // Never against itself, always against the shadow: real.
        assert_eq!(verdict(&r, 100, 0, 100, 100), Some(false));
        // 5 % against itself, 60 % against the shadow: real.
        assert_eq!(verdict(&r, 60, 5, 100, 100), Some(false));
        // Relative threshold: 55 % vs 50 % is within 20 %.
        assert_eq!(verdict(&r, 55, 50, 100, 100), Some(true));
        // Absolute threshold: 0.02 % raw, no noise.
        assert_eq!(verdict(&r, 2, 0, 10_000, 10_000), Some(true));
        assert_eq!(verdict(&r, 4, 0, 10_000, 10_000), Some(false));
        // Not enough samples: not known.
        assert_eq!(verdict(&check(20), 10, 0, 19, 19), None);
        // No noise check: every difference is real.
        assert_eq!(verdict(&RouteRules::default(), 1, 0, 1, 0), Some(false));
    }

    #[test]
    fn ignore_rules_cover_folded_fields() {
        let r = RouteRules::new(["/meta", "/items/*/at"], None);
        assert!(r.ignores("body", "/meta/ts"));
        assert!(r.ignores("body", "/items/*/at"));
        assert!(!r.ignores("body", "/items/*/id"));
        assert!(!r.ignores("header", "/meta"));
    }
}
