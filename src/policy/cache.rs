//! Per-route response cache (`cache = { ttl, max_entries, max_bytes }`),
//! a shared cache after RFC 9111's basics, on moka. GET and HEAD only.
//! Stored: answers with a cacheable status, no `no-store`, `private` or
//! `no-cache`, no `Set-Cookie`, and not `Vary: *`; for requests with
//! Authorization only answers marked `public` or with `s-maxage`.
//! Freshness is the answer's own `s-maxage` / `max-age`, capped by `ttl`,
//! or `ttl` when the answer gives none. The key holds the upstream the
//! split chose, so a shift or a rollback never serves one side's answer
//! for the other; `Vary` headers pick among variants (comparing every value
//! of a header, so a header sent twice never matches on its first alone). Bodies are stored
//! while they stream to the client, never buffered first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use moka::sync::Cache;
use strangler_rules::config::CacheSpec;
use strangler_rules::split::UpstreamId;

use crate::http1::headers::joined_values;
use crate::upstream::body::ProxyBody;

/// Variants kept per key (one per combination of Vary header values).
const MAX_VARIANTS: usize = 8;

/// What an entry costs besides its key's text and its variants: moka's
/// own entry (its node, deque links, frequency slot, timestamps), the
/// `Arc<Vec>` holding the variants and the key's tuple.
const ENTRY_OVERHEAD: usize = 256;

/// What a variant costs besides its headers' and body's bytes: the
/// `Stored` itself behind its `Arc`, its header map's tables, the body's
/// `Bytes` and its Vary list.
const VARIANT_OVERHEAD: usize = std::mem::size_of::<Stored>() + 128;

/// What one header costs besides its name's and value's bytes (the
/// header map's bucket and index slot, the value's `Bytes`).
const HEADER_OVERHEAD: usize = 64;

/// The bytes an entry is weighed at against `max_bytes`: the key, every
/// variant's headers, Vary values and body, and the fixed costs above, so
/// many small answers cannot hold many times `max_bytes`.
fn weight(key: &Key, variants: &Variants) -> u32 {
    let headers = |h: &HeaderMap| -> usize {
        h.iter()
            .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum()
    };
    let bytes: usize = ENTRY_OVERHEAD
        + key.1.len()
        + variants
            .iter()
            .map(|s| {
                VARIANT_OVERHEAD
                    + headers(&s.headers)
                    + s.body.len()
                    + s.vary
                        .iter()
                        .map(|(n, v)| {
                            n.as_str().len()
                                + v.as_ref().map_or(0, HeaderValue::len)
                                + HEADER_OVERHEAD
                        })
                        .sum::<usize>()
            })
            .sum::<usize>();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// One stored answer.
#[derive(Debug)]
pub struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The request header values its Vary names, as they were.
    vary: Vec<(header::HeaderName, Option<HeaderValue>)>,
    stored_at: Instant,
    fresh_for: Duration,
}

/// A stored answer's key: the upstream, and the host with the path and query.
pub type Key = (UpstreamId, String);
type Variants = Arc<Vec<Arc<Stored>>>;

/// A route's cache.
pub struct RouteCache {
    spec: CacheSpec,
    entries: Cache<Key, Variants>,
    /// Largest body stored.
    max_body: usize,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("spec", &self.spec)
            .finish()
    }
}

/// What a request may do with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Look up, and store the answer.
    Full,
    /// The client asked for a fresh answer (`no-cache`): store it, do not
    /// serve a stored one.
    StoreOnly,
    /// Neither (not GET/HEAD, or `no-store`).
    None,
}

/// Parsed `Cache-Control` directives that matter here.
#[derive(Debug, Default)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    public: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part.trim(), None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "max-age" => d.max_age = value.and_then(|v| v.parse().ok()),
                "s-maxage" => d.s_maxage = value.and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
    }
    d
}

impl RouteCache {
    pub fn new(spec: &CacheSpec) -> Self {
        let entries = Cache::builder()
            .max_capacity(spec.max_bytes.max(1))
            .weigher(weight)
            .time_to_live(spec.ttl.max(Duration::from_secs(1)))
            .build();
        RouteCache {
            spec: spec.clone(),
            entries,
            max_body: usize::try_from(spec.max_bytes / 16)
                .unwrap_or(usize::MAX)
                .clamp(1, 8 << 20),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// What this request may do with the cache.
    pub fn usage(&self, method: &Method, headers: &HeaderMap) -> Use {
        if method != Method::GET && method != Method::HEAD {
            return Use::None;
        }
        let d = directives(headers);
        if d.no_store {
            Use::None
        } else if d.no_cache
            || headers
                .get(header::PRAGMA)
                .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            Use::StoreOnly
        } else {
            Use::Full
        }
    }

    /// The cache key of a request to `upstream`.
    pub fn key(upstream: UpstreamId, host: Option<&str>, path_and_query: &str) -> Key {
        (upstream, format!("{}{path_and_query}", host.unwrap_or("")))
    }

    /// A fresh stored answer for this request, with `Age` and `x-cache: HIT`.
    pub fn lookup(
        &self,
        key: &Key,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<ProxyBody>> {
        let variants = self.entries.get(key)?;
        let hit = variants.iter().find(|s| {
            s.stored_at.elapsed() < s.fresh_for
                && s.vary.iter().all(|(n, v)| joined_values(headers, n) == *v)
        })?;
        self.hits.fetch_add(1, Relaxed);
        let mut resp = Response::new(if method == Method::HEAD {
            ProxyBody::Empty
        } else {
            ProxyBody::full(hit.body.clone())
        });
        *resp.status_mut() = hit.status;
        *resp.headers_mut() = hit.headers.clone();
        let age = hit.stored_at.elapsed().as_secs();
        resp.headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        resp.headers_mut()
            .insert(X_CACHE, HeaderValue::from_static("HIT"));
        Some(resp)
    }

    /// Drops what is stored for this URL on every upstream: after a
    /// successful unsafe request (RFC 9111 section 4.4).
    pub fn invalidate(&self, upstreams: usize, host: Option<&str>, path_and_query: &str) {
        for u in 0..upstreams {
            let key = Self::key(UpstreamId(u as u32), host, path_and_query);
            self.entries.invalidate(&key);
        }
    }

    /// Counts a miss.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    /// How long an answer may be served, if it may be stored at all.
    pub fn storable(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        authorized: bool,
    ) -> Option<Duration> {
        let heuristic = matches!(
            status.as_u16(),
            200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
        );
        if !heuristic || headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        if headers.get_all(header::VARY).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim() == "*"))
        }) {
            return None;
        }
        let d = directives(headers);
        if d.no_store || d.private || d.no_cache {
            return None;
        }
        if authorized && !(d.public || d.s_maxage.is_some()) {
            return None;
        }
        let own = d.s_maxage.or(d.max_age).map(Duration::from_secs);
        let fresh = own.map_or(self.spec.ttl, |o| o.min(self.spec.ttl));
        (!fresh.is_zero()).then_some(fresh)
    }

    /// Largest body stored.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Stores an answer whose body arrived whole.
    pub fn insert(&self, fill: Fill, body: Bytes) {
        if self.entries.entry_count() >= self.spec.max_entries {
            return;
        }
        let stored = Arc::new(Stored {
            status: fill.status,
            headers: fill.headers,
            body,
            vary: fill.vary,
            stored_at: Instant::now(),
            fresh_for: fill.fresh_for,
        });
        let mut list: Vec<Arc<Stored>> = self
            .entries
            .get(&fill.key)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        list.retain(|s| {
            s.stored_at.elapsed() < s.fresh_for
                && s.vary
                    .iter()
                    .map(|(_, v)| v)
                    .ne(stored.vary.iter().map(|(_, v)| v))
        });
        list.insert(0, stored);
        list.truncate(MAX_VARIANTS);
        self.entries.insert(fill.key, Arc::new(list));
    }
}

/// An answer on its way into the cache, waiting for its body.
#[derive(Debug)]
pub struct Fill {
    key: Key,
    status: StatusCode,
    headers: HeaderMap,
    vary: Vec<(header::HeaderName, Option<HeaderValue>)>,
    fresh_for: Duration,
}

impl Fill {
    /// What to store for this answer to this request.
    pub fn new(
        key: Key,
        status: StatusCode,
        headers: &HeaderMap,
        request: &HeaderMap,
        fresh_for: Duration,
    ) -> Fill {
        let vary = headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| header::HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .map(|n| {
                let v = joined_values(request, &n);
                (n, v)
            })
            .collect();
        Fill {
            key,
            status,
            headers: headers.clone(),
            vary,
            fresh_for,
        }
    }
}

/// `x-cache: HIT | MISS`.
pub const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

/// Every route's cache, kept across reloads while its settings stay.
pub type Caches = crate::policy::registry::PerRoute<RouteCache>;

impl crate::policy::registry::RoutePolicy for RouteCache {
    type Spec = CacheSpec;

    fn spec_of(route: &strangler_rules::config::Route) -> Option<&CacheSpec> {
        route.cache.as_ref()
    }

    fn spec(&self) -> &CacheSpec {
        &self.spec
    }

    fn build(spec: &CacheSpec) -> Option<Self> {
        Some(RouteCache::new(spec))
    }
}

/// A response body that fills the cache as it streams to the client: the
/// answer is stored when its body ends whole and within the size limit.
pub struct CacheBody {
    inner: ProxyBody,
    cache: Arc<RouteCache>,
    fill: Option<Fill>,
    buf: bytes::BytesMut,
}

impl std::fmt::Debug for CacheBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBody").finish_non_exhaustive()
    }
}

impl CacheBody {
    pub fn wrap(inner: ProxyBody, cache: Arc<RouteCache>, fill: Fill) -> ProxyBody {
        use http_body::Body as _;
        let mut body = CacheBody {
            inner,
            cache,
            fill: Some(fill),
            buf: bytes::BytesMut::new(),
        };
        if body.inner.is_end_stream() {
            body.done();
            return std::mem::replace(&mut body.inner, ProxyBody::Empty);
        }
        ProxyBody::Layered(Box::pin(body))
    }

    fn done(&mut self) {
        if let Some(fill) = self.fill.take() {
            let body = std::mem::take(&mut self.buf).freeze();
            self.cache.insert(fill, body);
        }
    }
}

impl http_body::Body for CacheBody {
    type Data = Bytes;
    type Error = crate::upstream::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, crate::upstream::body::BoxError>>>
    {
        use std::task::Poll;
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.buf.len() + data.len() > this.cache.max_body() {
                        // Too big to keep: stream on, store nothing.
                        this.fill = None;
                        this.buf = bytes::BytesMut::new();
                    } else if this.fill.is_some() {
                        this.buf.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Err(_))) => this.fill = None,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CacheBody {
    fn drop(&mut self) {
        use http_body::Body as _;
        if self.inner.is_end_stream() {
            self.done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_bytes: u64) -> CacheSpec {
        CacheSpec {
            ttl: Duration::from_secs(60),
            max_entries: u64::MAX,
            max_bytes,
        }
    }

    /// An answer as a typical API gives it: a few headers, a small body.
    fn fill(cache: &RouteCache, i: usize) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::DATE,
            HeaderValue::from_static("Mon, 02 Feb 2026 10:00:00 GMT"),
        );
        headers.insert(
            header::ETAG,
            HeaderValue::from_static("\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        headers.insert(
            "x-request-id",
            HeaderValue::from_static("0b6c1c7e-4f3a-4d8e-9a53-5c2f1e7d9a10"),
        );
        let key = RouteCache::key(
            UpstreamId(0),
            Some("api.example.com"),
            &format!("/v1/items/{i}?fields=id,name"),
        );
        let f = Fill::new(
            key,
            StatusCode::OK,
            &headers,
            &HeaderMap::new(),
            Duration::from_secs(60),
        );
        cache.insert(f, Bytes::from_static(b"{\"id\":1}"));
    }

    #[test]
    fn many_small_entries_are_weighed_whole_and_stay_within_max_bytes() {
        let max_bytes = 256 * 1024;
        let cache = RouteCache::new(&spec(max_bytes));
        for i in 0..20_000 {
            fill(&cache, i);
        }
        cache.entries.run_pending_tasks();
        let weighed = cache.entries.weighted_size();
        assert!(weighed <= max_bytes, "weighed {weighed} > {max_bytes}");
        // What the entries held hold at the least: the key's text, every
        // header's name and value, and the body.
        let held: u64 = cache
            .entries
            .iter()
            .map(|(k, v)| {
                let bytes = k.1.len()
                    + v.iter()
                        .map(|s| {
                            s.body.len()
                                + s.headers
                                    .iter()
                                    .map(|(n, v)| n.as_str().len() + v.len())
                                    .sum::<usize>()
                        })
                        .sum::<usize>();
                bytes as u64
            })
            .sum();
        let entries = cache.entries.entry_count();
        assert!(entries > 0);
        // Each entry also costs moka's node, the Arc'd Stored and the
        // header map's tables: at least 300 bytes beyond its text.
        let floor = held + entries * 300;
        assert!(
            floor <= max_bytes,
            "{entries} entries hold at least {floor} bytes, max_bytes is {max_bytes}"
        );
    }
}
