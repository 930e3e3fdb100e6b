//! Traffic statistics kept on the hot path without locks: per route and
//! upstream, requests and errors in ten 6-second windows (the last minute)
//! and a latency histogram (4 buckets per power of two of microseconds)
//! per window, for requests per second, error rate and p99.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const WINDOWS: usize = 10;
const WINDOW_SECS: u64 = 6;
const SUB: u32 = 4;
const BUCKETS: usize = 26 * SUB as usize;

#[derive(Debug)]
struct Window {
    /// Which 6-second period this window holds.
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// A cell's counts since start (requests, 5xx, latency histogram).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cumulative {
    pub requests: u64,
    pub errors: u64,
    latency: Vec<u64>,
}

/// What happened between two cumulative readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Span {
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

impl Span {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl Cumulative {
    /// The window from `base` to this reading; `None` when the counts went
    /// backwards (the process restarted since `base`).
    pub fn since(&self, base: &Cumulative) -> Option<Span> {
        if self.requests < base.requests || self.errors < base.errors {
            return None;
        }
        let hist: Vec<u64> = self
            .latency
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(base.latency.get(i).copied().unwrap_or(0)))
            .collect();
        let requests: u64 = hist.iter().sum();
        let mut p99_ms = 0.0;
        if requests > 0 {
            let target = (requests as f64 * 0.99).ceil() as u64;
            let mut cum = 0;
            for (b, &n) in hist.iter().enumerate() {
                cum += n;
                if cum >= target {
                    p99_ms = bucket_upper_us(b) / 1000.0;
                    break;
                }
            }
        }
        Some(Span {
            requests,
            errors: self.errors - base.errors,
            p99_ms,
        })
    }
}

/// The statistics of one (route, upstream) pair.
#[derive(Debug)]
pub struct Cell {
    windows: [Window; WINDOWS],
    total: AtomicU64,
    /// Since start, by status class: 1xx..5xx at 1..=5 (0 unused).
    classes: [AtomicU64; 6],
    /// Since start, the latency histogram and the sum of latencies.
    latency_total: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
}

/// What a cell says about the last minute.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Snapshot {
    /// Requests since start.
    pub requests: u64,
    /// Requests per second over the last minute.
    pub rps: f64,
    /// Share of 5xx answers and proxy errors over the last minute (0..1).
    pub error_rate: f64,
    /// 99th percentile latency to response headers over the last minute.
    pub p99_ms: f64,
}

fn now_secs() -> u64 {
    secs_at(Instant::now())
}

/// Seconds since the epoch at `now`, read off the monotonic clock from an
/// anchor taken once: a request's latency and its second then come from one
/// clock read, and a wall-clock step cannot move the windows.
fn secs_at(now: Instant) -> u64 {
    static ANCHOR: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();
    let &(at, secs) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (Instant::now(), wall)
    });
    secs + now.saturating_duration_since(at).as_secs()
}

fn bucket(us: u64) -> usize {
    let us = us.max(1);
    let log = 63 - us.leading_zeros();
    let sub = if log >= 2 {
        ((us >> (log - 2)) & 3) as u32
    } else {
        0
    };
    ((log * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in microseconds.
fn bucket_upper_us(b: usize) -> f64 {
    let log = b as u32 / SUB;
    let sub = b as u32 % SUB;
    let base = (1u64 << log) as f64;
    if log < 2 {
        // Below 4 us there are no sub-buckets.
        return base * 2.0;
    }
    base + base * f64::from(sub + 1) / f64::from(SUB)
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            windows: std::array::from_fn(|_| Window {
                epoch: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                latency: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
            total: AtomicU64::new(0),
            classes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_total: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

impl Cell {
    /// Records one request that finished at `now`: its latency to response
    /// headers and its status (5xx, including the proxy's own errors, count
    /// as errors).
    #[inline]
    pub fn record(&self, latency_us: u64, status: u16, now: Instant) {
        let class = usize::from(status / 100).min(5);
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.latency_total[bucket(latency_us)].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(latency_us, Ordering::Relaxed);
        self.record_at(secs_at(now), latency_us, status >= 500);
    }

    /// Requests since start by status class (`"2xx"`...), for /metrics.
    pub fn by_class(&self) -> Vec<(&'static str, u64)> {
        const NAMES: [&str; 6] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx"];
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| (NAMES[i], c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Cumulative counts at Prometheus-style bounds (seconds), the sum in
    /// seconds and the count, since start. A bucket of ours counts towards a
    /// bound when its upper edge is within it.
    pub fn histogram(&self, bounds: &[f64]) -> (Vec<u64>, f64, u64) {
        let counts: Vec<u64> = self
            .latency_total
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let cumulative = bounds
            .iter()
            .map(|&le| {
                counts
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| bucket_upper_us(*b) / 1e6 <= le)
                    .map(|(_, n)| n)
                    .sum()
            })
            .collect();
        (
            cumulative,
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            total,
        )
    }

    fn record_at(&self, now: u64, latency_us: u64, error: bool) {
        let period = now / WINDOW_SECS;
        let w = &self.windows[(period % WINDOWS as u64) as usize];
        let seen = w.epoch.load(Ordering::Relaxed);
        if seen != period
            && w.epoch
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // A new period reuses this window: start it empty. A record racing
            // with the reset may be lost; the stats are approximate by design.
            w.requests.store(0, Ordering::Relaxed);
            w.errors.store(0, Ordering::Relaxed);
            for b in &w.latency {
                b.store(0, Ordering::Relaxed);
            }
        }
        w.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            w.errors.fetch_add(1, Ordering::Relaxed);
        }
        w.latency[bucket(latency_us)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(now_secs())
    }

    /// Counts since start, to measure a window of any length by difference.
    pub fn cumulative(&self) -> Cumulative {
        let latency: Vec<u64> = self
            .latency_total
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Cumulative {
            requests: latency.iter().sum(),
            errors: self.classes[5].load(Ordering::Relaxed),
            latency,
        }
    }

    fn snapshot_at(&self, now: u64) -> Snapshot {
        let period = now / WINDOW_SECS;
        let mut requests = 0u64;
        let mut errors = 0u64;
        let mut hist = [0u64; BUCKETS];
        for w in &self.windows {
            let e = w.epoch.load(Ordering::Relaxed);
            if e + WINDOWS as u64 > period && e <= period {
                requests += w.requests.load(Ordering::Relaxed);
                errors += w.errors.load(Ordering::Relaxed);
                for (h, b) in hist.iter_mut().zip(&w.latency) {
                    *h += b.load(Ordering::Relaxed);
                }
            }
        }
        let p99_ms = if requests == 0 {
            0.0
        } else {
            let target = (requests as f64 * 0.99).ceil() as u64;
            let mut cum = 0;
            let mut p = 0.0;
            for (b, &n) in hist.iter().enumerate() {
                cum += n;
                if cum >= target {
                    p = bucket_upper_us(b) / 1000.0;
                    break;
                }
            }
            p
        };
        Snapshot {
            requests: self.total.load(Ordering::Relaxed),
            rps: requests as f64 / (WINDOWS as u64 * WINDOW_SECS) as f64,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99_ms,
        }
    }
}

/// Cells by (route, upstream) name, kept across reloads; the live state
/// resolves them once per generation, so the hot path only indexes.
#[derive(Debug, Default)]
pub struct Registry {
    cells: Mutex<HashMap<(String, String), Arc<Cell>>>,
}

/// The route name used for requests that matched no route.
pub const DEFAULT_ROUTE: &str = "(default)";

impl Registry {
    pub fn cell(&self, route: &str, upstream: &str) -> Arc<Cell> {
        let mut map = match self.cells.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((route.to_string(), upstream.to_string()))
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_p99_over_the_last_minute() {
        let c = Cell::default();
        for i in 0..100u64 {
            c.record_at(1000, 1000 + i, i % 10 == 0);
        }
        c.record_at(1000, 50_000, false);
        let s = c.snapshot_at(1001);
        assert_eq!(s.requests, 101);
        assert!((s.error_rate - 10.0 / 101.0).abs() < 1e-9);
        assert!(s.p99_ms >= 1.0 && s.p99_ms < 1.5, "{}", s.p99_ms);
        // A minute later the window has aged out.
        let later = c.snapshot_at(1000 + 61);
        assert_eq!(later.rps, 0.0);
        assert_eq!(later.requests, 101);
    }

    #[test]
    fn buckets_grow_monotonically() {
        let mut last = 0;
        for us in [1, 2, 3, 5, 8, 100, 1000, 10_000, 1_000_000] {
            let b = bucket(us);
            assert!(b >= last);
            assert!(bucket_upper_us(b) >= us as f64);
            last = b;
        }
    }
}
