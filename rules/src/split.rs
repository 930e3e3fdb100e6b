//! Weighted choice between upstreams: splits in basis points (0.01 %),
//! sticky buckets from xxh3, and the bucket layout that makes raising a
//! percentage move users only towards the new side.

use std::fmt;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::matcher::{RequestView, cookie_value};

/// Number of buckets: one per 0.01 %.
pub const BUCKETS: u16 = 10_000;

/// Index of an upstream in [`crate::Config::upstreams`]. Ids follow name
/// order, so they are stable for a given set of upstream names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(pub u32);

impl UpstreamId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A split: weights in basis points over upstreams, summing to 10 000.
///
/// Buckets are laid out with the non-default upstreams first, in id (name)
/// order, and the default upstream last. With one new service, raising its
/// share only grows its range `[0, w)` into the default's, so a sticky user
/// never flips back while a rollout grows. With several new services, raising
/// one moves users from the default to it and may move users between the new
/// services after it in name order, never back to the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// (upstream, weight in basis points, end of its bucket range).
    shares: Vec<(UpstreamId, u16, u16)>,
    default: UpstreamId,
}

impl Split {
    /// Builds a split from weights in basis points. The caller has checked
    /// that they sum to [`BUCKETS`]; zero weights are kept so status can show
    /// them.
    pub fn new(weights: &[(UpstreamId, u16)], default: UpstreamId) -> Self {
        let mut ordered: Vec<(UpstreamId, u16)> = weights.to_vec();
        ordered.sort_by_key(|&(id, _)| (id == default, id));
        ordered.dedup_by_key(|&mut (id, _)| id);
        let mut end = 0u16;
        let shares = ordered
            .into_iter()
            .map(|(id, w)| {
                end = end.saturating_add(w).min(BUCKETS);
                (id, w, end)
            })
            .collect();
        Split { shares, default }
    }

    /// All traffic to one upstream.
    pub fn single(upstream: UpstreamId, default: UpstreamId) -> Self {
        Split::new(&[(upstream, BUCKETS)], default)
    }

    /// The upstream that owns `bucket` (0..10 000). Buckets past the last
    /// range (weights summing to less than 100 %) go to the default.
    #[inline]
    pub fn choose(&self, bucket: u16) -> UpstreamId {
        for &(id, _, end) in &self.shares {
            if bucket < end {
                return id;
            }
        }
        self.default
    }

    /// (upstream, weight in basis points), in bucket order.
    pub fn weights(&self) -> impl Iterator<Item = (UpstreamId, u16)> + '_ {
        self.shares.iter().map(|&(id, w, _)| (id, w))
    }

    /// The bucket range `[start, end)` of `upstream`, if it has a share.
    pub fn range_of(&self, upstream: UpstreamId) -> Option<(u16, u16)> {
        let mut start = 0;
        for &(id, _, end) in &self.shares {
            if id == upstream {
                return Some((start, end));
            }
            start = end;
        }
        None
    }

    /// Weight of `upstream` in basis points.
    pub fn weight_of(&self, upstream: UpstreamId) -> u16 {
        self.shares
            .iter()
            .find(|&&(id, _, _)| id == upstream)
            .map_or(0, |&(_, w, _)| w)
    }

    pub fn default_upstream(&self) -> UpstreamId {
        self.default
    }

    /// Whether every request goes to one upstream.
    pub fn is_single(&self) -> Option<UpstreamId> {
        let mut nonzero = self.shares.iter().filter(|s| s.1 > 0);
        match (nonzero.next(), nonzero.next()) {
            (Some(&(id, _, _)), None) => Some(id),
            _ => None,
        }
    }
}

/// Formats basis points as a percentage: 1000 -> "10", 1250 -> "12.5".
pub fn fmt_bp(bp: u16) -> String {
    let whole = bp / 100;
    let frac = bp % 100;
    if frac == 0 {
        whole.to_string()
    } else if frac.is_multiple_of(10) {
        format!("{whole}.{}", frac / 10)
    } else {
        format!("{whole}.{frac:02}")
    }
}

/// Where a sticky key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// `header:NAME` (stored lowercase).
    Header(String),
    /// `cookie:NAME`
    Cookie(String),
    /// `claim:NAME`, a verified JWT claim.
    Claim(String),
}

impl StickyKey {
    /// Parses `header:NAME`, `cookie:NAME` or `claim:NAME`.
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "header" => Some(StickyKey::Header(name.to_ascii_lowercase())),
            "cookie" => Some(StickyKey::Cookie(name.to_string())),
            "claim" => Some(StickyKey::Claim(name.to_string())),
            _ => None,
        }
    }

    /// The key's value in `req`; empty values count as absent.
    pub fn value<'r, R: RequestView + ?Sized>(&self, req: &'r R) -> Option<&'r str> {
        let v = match self {
            StickyKey::Header(name) => req.header(name),
            StickyKey::Claim(name) => req.claim(name),
            // The proxy joins HTTP/2's split cookie headers into one.
            StickyKey::Cookie(name) => req.header("cookie").and_then(|h| cookie_value(h, name)),
        };
        v.filter(|v| !v.is_empty())
    }
}

impl fmt::Display for StickyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StickyKey::Header(n) => write!(f, "header:{n}"),
            StickyKey::Cookie(n) => write!(f, "cookie:{n}"),
            StickyKey::Claim(n) => write!(f, "claim:{n}"),
        }
    }
}

/// The seed for a salt: `xxh3_64(salt)`. Computed once per route.
pub fn salt_seed(salt: &str) -> u64 {
    xxh3_64(salt.as_bytes())
}

/// The seed shadow sampling uses for a salt, independent of the split's.
pub fn shadow_seed(salt: &str) -> u64 {
    xxh3_64_with_seed(salt.as_bytes(), 0x5348_4144_4f57) // "SHADOW"
}

/// The bucket of a sticky key: `xxh3_64_with_seed(key, xxh3_64(salt)) % 10000`.
/// Stable across processes, restarts, machines and versions.
#[inline]
pub fn bucket(seed: u64, key: &str) -> u16 {
    (xxh3_64_with_seed(key.as_bytes(), seed) % u64::from(BUCKETS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONO: UpstreamId = UpstreamId(0);
    const NEW: UpstreamId = UpstreamId(1);

    #[test]
    fn new_side_takes_the_low_buckets() {
        let s = Split::new(&[(MONO, 9000), (NEW, 1000)], MONO);
        assert_eq!(s.choose(0), NEW);
        assert_eq!(s.choose(999), NEW);
        assert_eq!(s.choose(1000), MONO);
        assert_eq!(s.choose(9999), MONO);
        assert_eq!(s.range_of(NEW), Some((0, 1000)));
        assert_eq!(s.range_of(MONO), Some((1000, 10000)));
    }

    #[test]
    fn buckets_are_stable_known_values() {
        // Pinned: these must never change, or sticky users would move.
        let seed = salt_seed("orders");
        assert_eq!(
            bucket(seed, "user-42"),
            bucket(salt_seed("orders"), "user-42")
        );
        assert_ne!(salt_seed("orders"), shadow_seed("orders"));
        assert_eq!(fmt_bp(1250), "12.5");
        assert_eq!(fmt_bp(1), "0.01");
        assert_eq!(fmt_bp(10000), "100");
    }
}
