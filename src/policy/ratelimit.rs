//! Per-route rate limits (`rate_limit = { per_second, burst, key }`):
//! governor's keyed GCRA limiter, one per route, kept across reloads and
//! runtime changes while its settings stay the same. Over the limit: 429
//! with `Retry-After` and the `RateLimit-Policy` / `RateLimit` headers of
//! draft-ietf-httpapi-ratelimit-headers; within it, the same headers say
//! what is left. Keys no longer limited are dropped every second
//! (`retain_recent`), so a flood of distinct keys cannot grow memory beyond
//! what the rate allows. Keys are stored as a 128-bit XXH3 hash under a
//! per-process random secret, never whole: each held key costs the same few
//! bytes however long the header or claim it came from, and a client who
//! cannot see the secret cannot pick values that share another's budget.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::HeaderValue;
use strangler_rules::config::{RateKey, RateLimitSpec};

type Keyed<C> = RateLimiter<Key, DefaultKeyedStateStore<Key>, C, StateInformationMiddleware>;

/// What a limiter stores per client: a keyed hash of the key's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u128);

/// XXH3's default secret size (at least its minimum of 136 bytes).
const SECRET_SIZE: usize = 192;

/// The per-process secret the keys are hashed under, drawn at first use.
fn secret() -> &'static [u8; SECRET_SIZE] {
    static SECRET: std::sync::OnceLock<[u8; SECRET_SIZE]> = std::sync::OnceLock::new();
    SECRET.get_or_init(rand::random)
}

impl Key {
    /// The key for `value` in the domain `tag` (client address, header,
    /// claim), so a header's value never shares a budget with an address
    /// spelled the same.
    pub fn new(tag: u8, value: &[u8]) -> Key {
        let h = xxhash_rust::xxh3::xxh3_128_with_secret(value, secret());
        Key(h ^ (u128::from(tag) << 120))
    }

    fn ip(ip: std::net::IpAddr) -> Key {
        match ip {
            std::net::IpAddr::V4(a) => Key::new(b'4', &a.octets()),
            std::net::IpAddr::V6(a) => Key::new(b'6', &a.octets()),
        }
    }
}

/// One route's limiter.
pub struct RouteLimit<C: Clock = DefaultClock> {
    limiter: Keyed<C>,
    clock: C,
    pub spec: RateLimitSpec,
    policy: HeaderValue,
    /// Requests refused so far.
    pub limited: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for RouteLimit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimit")
            .field("spec", &self.spec)
            .finish()
    }
}

/// A limiter's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allowed { remaining: u32 },
    Limited { retry_after: Duration },
}

fn quota(spec: &RateLimitSpec) -> Option<Quota> {
    if !(spec.per_second > 0.0 && spec.per_second.is_finite()) {
        return None;
    }
    let burst = NonZeroU32::new(spec.burst.max(1))?;
    Some(Quota::with_period(Duration::from_secs_f64(1.0 / spec.per_second))?.allow_burst(burst))
}

impl RouteLimit<DefaultClock> {
    pub fn new(spec: &RateLimitSpec) -> Option<Self> {
        Self::with_clock(spec, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RouteLimit<C> {
    /// A limiter on `clock` (a fake one in tests).
    pub fn with_clock(spec: &RateLimitSpec, clock: C) -> Option<Self> {
        let quota = quota(spec)?;
        let plain: RateLimiter<
            Key,
            DefaultKeyedStateStore<Key>,
            C,
            governor::middleware::NoOpMiddleware<C::Instant>,
        > = RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone());
        let limiter = plain.with_middleware::<StateInformationMiddleware>();
        // The whole burst refills in burst / rate seconds.
        let window = (f64::from(spec.burst.max(1)) / spec.per_second)
            .ceil()
            .max(1.0);
        let policy =
            HeaderValue::from_str(&format!("\"default\";q={};w={window}", spec.burst.max(1)))
                .ok()?;
        Some(RouteLimit {
            limiter,
            clock,
            spec: spec.clone(),
            policy,
            limited: AtomicU64::new(0),
        })
    }

    /// Takes one request for `key`.
    pub fn check(&self, key: Key) -> Verdict {
        match self.limiter.check_key(&key) {
            Ok(state) => Verdict::Allowed {
                remaining: state.remaining_burst_capacity(),
            },
            Err(not_until) => {
                self.limited.fetch_add(1, Relaxed);
                Verdict::Limited {
                    retry_after: not_until.wait_time_from(self.clock.now()),
                }
            }
        }
    }

    /// `RateLimit-Policy`.
    pub fn policy(&self) -> HeaderValue {
        self.policy.clone()
    }

    /// `RateLimit` for a verdict: what is left and when the quota is whole
    /// again (or, when limited, when the next request may come).
    pub fn state(&self, v: &Verdict) -> HeaderValue {
        let (remaining, reset) = match v {
            Verdict::Allowed { remaining } => {
                let used = self.spec.burst.max(1).saturating_sub(*remaining);
                (
                    *remaining,
                    (f64::from(used) / self.spec.per_second).ceil() as u64,
                )
            }
            Verdict::Limited { retry_after } => (0, retry_after.as_secs_f64().ceil() as u64),
        };
        HeaderValue::from_str(&format!("\"default\";r={remaining};t={reset}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"default\";r=0;t=1"))
    }

    /// Forgets keys back at a full quota; returns how many are still held.
    pub fn retain(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}

/// The key a request is limited by: the client address, a header's value,
/// or a verified claim (the client address when the header or claim is
/// absent).
pub fn key_of(
    spec: &RateLimitSpec,
    client: std::net::IpAddr,
    headers: &http::HeaderMap,
    claims: Option<&crate::policy::auth::Claims>,
) -> Key {
    match &spec.key {
        RateKey::Ip => Key::ip(client),
        RateKey::Claim(name) => match claims.and_then(|c| crate::policy::auth::claim_text(c, name))
        {
            Some(v) => Key::new(b'c', v.as_bytes()),
            None => Key::ip(client),
        },
        RateKey::Header(name) => match headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            Some(v) => Key::new(b'h', v.as_bytes()),
            None => Key::ip(client),
        },
    }
}

/// Every route's limiter, reused while its settings stay.
pub type Limits = crate::policy::registry::PerRoute<RouteLimit>;

impl crate::policy::registry::RoutePolicy for RouteLimit {
    type Spec = RateLimitSpec;

    fn spec_of(route: &strangler_rules::config::Route) -> Option<&RateLimitSpec> {
        route.rate_limit.as_ref()
    }

    fn spec(&self) -> &RateLimitSpec {
        &self.spec
    }

    fn build(spec: &RateLimitSpec) -> Option<Self> {
        RouteLimit::new(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn k(s: &str) -> Key {
        Key::new(b'h', s.as_bytes())
    }

    fn spec(per_second: f64, burst: u32) -> RateLimitSpec {
        RateLimitSpec {
            per_second,
            burst,
            key: RateKey::Ip,
        }
    }

    #[test]
    fn exact_burst_then_limited_then_refilled() {
        let clock = FakeRelativeClock::default();
        let l = RouteLimit::with_clock(&spec(2.0, 3), clock.clone()).unwrap();
        assert_eq!(l.check(k("a")), Verdict::Allowed { remaining: 2 });
        assert_eq!(l.check(k("a")), Verdict::Allowed { remaining: 1 });
        assert_eq!(l.check(k("a")), Verdict::Allowed { remaining: 0 });
        let Verdict::Limited { retry_after } = l.check(k("a")) else {
            panic!("the fourth request is over the burst");
        };
        assert_eq!(retry_after, Duration::from_millis(500));
        assert_eq!(
            l.state(&Verdict::Limited { retry_after }).to_str().unwrap(),
            "\"default\";r=0;t=1"
        );
        assert_eq!(l.policy().to_str().unwrap(), "\"default\";q=3;w=2");
        // Another key has its own budget.
        assert_eq!(l.check(k("b")), Verdict::Allowed { remaining: 2 });
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check(k("a")), Verdict::Allowed { remaining: 0 });
        assert_eq!(l.limited.load(Relaxed), 1);
    }

    #[test]
    fn a_flood_of_distinct_keys_is_forgotten() {
        let clock = FakeRelativeClock::default();
        let l = RouteLimit::with_clock(&spec(100.0, 10), clock.clone()).unwrap();
        for i in 0..10_000 {
            l.check(k(&format!("k{i}")));
        }
        assert_eq!(l.retain(), 10_000, "all still within their window");
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.retain(), 0, "back at a full quota: forgotten");
    }
}
