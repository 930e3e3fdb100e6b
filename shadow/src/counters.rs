//! Outcome counters per route: every sampled request ends in exactly one
//! outcome. Increments are lock-free atomics (some happen on the hot path:
//! skips and drops); the pipeline thread persists a snapshot to the store,
//! so counts survive restarts. Also the histogram of shadow-minus-primary
//! latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What became of one sampled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Both answered, no difference.
    Match,
    /// Both answered, with differences.
    Mismatch,
    /// The shadow refused, broke, or answered 5xx where the primary did not.
    ShadowError,
    /// The shadow did not answer within `[shadow].timeout`.
    ShadowTimeout,
    /// Not compared: the shadow queue or the diff queue was full.
    Dropped,
    /// Not sent: the request body is over `[shadow].max_request_body`.
    SkippedTooLarge,
    /// Not sent: the split already chose the shadow upstream.
    SkippedSameUpstream,
    /// Not compared: the primary failed or its client went away mid-body.
    PrimaryError,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Match,
        Outcome::Mismatch,
        Outcome::ShadowError,
        Outcome::ShadowTimeout,
        Outcome::Dropped,
        Outcome::SkippedTooLarge,
        Outcome::SkippedSameUpstream,
        Outcome::PrimaryError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::ShadowError => "shadow_error",
            Outcome::ShadowTimeout => "shadow_timeout",
            Outcome::Dropped => "dropped",
            Outcome::SkippedTooLarge => "skipped_too_large",
            Outcome::SkippedSameUpstream => "skipped_same_upstream",
            Outcome::PrimaryError => "primary_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (ms) of the shadow-minus-primary latency histogram.
pub const DELTA_BUCKETS_MS: [f64; 21] = [
    -1000.0, -500.0, -250.0, -100.0, -50.0, -25.0, -10.0, -5.0, -2.5, -1.0, 0.0, 1.0, 2.5, 5.0,
    10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];

/// One route's counters.
#[derive(Debug, Default)]
pub struct RouteCounts {
    outcomes: [AtomicU64; 8],
    /// Cumulative is computed on read; these are per-bucket, last is +Inf.
    delta: [AtomicU64; 22],
    delta_sum_us: AtomicI64,
    /// Requests sent a second time to the primary's upstream (Diffy's
    /// noise check) and compared with the first answer.
    noise_checked: AtomicU64,
}

impl RouteCounts {
    pub fn add(&self, o: Outcome) {
        self.outcomes[o.index()].fetch_add(1, Relaxed);
    }

    pub fn get(&self, o: Outcome) -> u64 {
        self.outcomes[o.index()].load(Relaxed)
    }

    /// Records shadow latency minus primary latency.
    pub fn observe_delta(&self, ms: f64) {
        let i = DELTA_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(DELTA_BUCKETS_MS.len());
        self.delta[i].fetch_add(1, Relaxed);
        self.delta_sum_us.fetch_add((ms * 1000.0) as i64, Relaxed);
    }

    pub fn add_noise_checked(&self) {
        self.noise_checked.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> CountSnapshot {
        let mut outcomes = BTreeMap::new();
        for o in Outcome::ALL {
            outcomes.insert(o, self.get(o));
        }
        CountSnapshot {
            outcomes,
            delta: self.delta.iter().map(|c| c.load(Relaxed)).collect(),
            delta_sum_us: self.delta_sum_us.load(Relaxed),
            noise_checked: self.noise_checked.load(Relaxed),
        }
    }

    fn restore(&self, s: &CountSnapshot) {
        for (o, n) in &s.outcomes {
            self.outcomes[o.index()].store(*n, Relaxed);
        }
        for (c, n) in self.delta.iter().zip(&s.delta) {
            c.store(*n, Relaxed);
        }
        self.delta_sum_us.store(s.delta_sum_us, Relaxed);
        self.noise_checked.store(s.noise_checked, Relaxed);
    }
}

/// A route's counters at one moment, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountSnapshot {
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Per bucket of [`DELTA_BUCKETS_MS`], then +Inf.
    #[serde(default)]
    pub delta: Vec<u64>,
    #[serde(default)]
    pub delta_sum_us: i64,
    #[serde(default)]
    pub noise_checked: u64,
}

impl CountSnapshot {
    pub fn get(&self, o: Outcome) -> u64 {
        self.outcomes.get(&o).copied().unwrap_or(0)
    }

    /// Requests whose comparison finished: match, mismatch, shadow error
    /// and shadow timeout.
    pub fn compared(&self) -> u64 {
        [
            Outcome::Match,
            Outcome::Mismatch,
            Outcome::ShadowError,
            Outcome::ShadowTimeout,
        ]
        .iter()
        .map(|&o| self.get(o))
        .sum()
    }

    /// Share of compared requests whose shadow answer differed, failed or
    /// timed out.
    pub fn mismatch_rate(&self) -> f64 {
        let compared = self.compared();
        if compared == 0 {
            return 0.0;
        }
        (compared - self.get(Outcome::Match)) as f64 / compared as f64
    }
}

/// Every route's counters, by route name.
#[derive(Debug, Default)]
pub struct Counters {
    routes: Mutex<BTreeMap<String, Arc<RouteCounts>>>,
}

impl Counters {
    /// The counters of `route`, made on first use.
    pub fn route(&self, route: &str) -> Arc<RouteCounts> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(route.to_string())
            .or_insert_with(|| Arc::new(RouteCounts::default()))
            .clone()
    }

    pub fn snapshot(&self) -> BTreeMap<String, CountSnapshot> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect()
    }

    /// Loads persisted counts (at start, before traffic).
    pub fn restore(&self, saved: &BTreeMap<String, CountSnapshot>) {
        for (route, s) in saved {
            self.route(route).restore(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_buckets() {
        let c = RouteCounts::default();
        for _ in 0..3 {
            c.add(Outcome::Match);
        }
        c.add(Outcome::Mismatch);
        c.add(Outcome::Dropped);
        c.observe_delta(-3.0);
        c.observe_delta(5000.0);
        let s = c.snapshot();
        assert_eq!(s.compared(), 4);
        assert!((s.mismatch_rate() - 0.25).abs() < 1e-9);
        assert_eq!(s.delta[8], 1);
        assert_eq!(s.delta[21], 1);
        let json = serde_json::to_string(&s).unwrap();
        let back: CountSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let all = Counters::default();
        all.restore(&BTreeMap::from([("orders".to_string(), s.clone())]));
        assert_eq!(all.route("orders").snapshot(), s);
    }
}
