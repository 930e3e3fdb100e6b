//! The phases from the upstream chosen to the answer: the route's cache,
//! the shadow copy, the exchange with the upstream (pick an instance,
//! send, retry only where it is safe) and the response filter (tunnel,
//! cache fill, the tee for the shadow comparison, Via). Every answer from
//! here counts in the upstream's stats.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use strangler_rules::UpstreamId;
use strangler_rules::split::BUCKETS;
use strangler_shadow::Outcome;

use crate::http1::client::KeepHeaders;
use crate::http1::headers::{Forwarding, append_via, idempotent, lists_token, strip_hop_by_hop};
use crate::mirror::{Dispatch, NOISE_METHODS, Pending, TeeBody};
use crate::policy::cache::{self, RouteCache, Use};
use crate::proxy::client_body::{self, BodyWatch, ClientBody};
use crate::proxy::context::RequestCtx;
use crate::proxy::error::ProxyError;
use crate::proxy::request::Answered;
use crate::upstream::body::{PooledBody, ProxyBody};
use crate::upstream::{SendError, SendWith, UpstreamPool};

/// What the cache phase leaves for the response.
#[derive(Default)]
struct CacheStep {
    /// A miss to store on its way: the cache, the key, whether the request
    /// was authorized, and its headers (for Vary).
    fill: Option<(Arc<RouteCache>, cache::Key, bool, HeaderMap)>,
    /// A write to this URL: what is stored for it goes once it succeeds.
    invalidate: Option<Arc<RouteCache>>,
}

/// The request as the exchange sends it, and what the response filter
/// needs of the earlier phases.
pub(super) struct Exchange<'a> {
    pool: &'a UpstreamPool,
    request_body: ProxyBody,
    body_empty: bool,
    /// The client's body, watched: whose fault a failed exchange was.
    client_body: Option<BodyWatch>,
    method: Method,
    /// The upstream sees origin-form: path and query byte for byte.
    path_and_query: PathAndQuery,
    forwarding: Option<Forwarding>,
    /// The primary's request head, when the shadow copy's encoding made it.
    primary_head: Option<Vec<u8>>,
    /// The shadow call waiting for the primary's answer.
    primary_tx: Option<Pending>,
    /// The client's side of a WebSocket upgrade the route allows.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    client_version: Version,
    timeout: Duration,
    cache: CacheStep,
}

impl Exchange<'_> {
    /// The client's own share of a failed exchange, which never counts
    /// against the upstream: its body failed (400), or it was still due
    /// when the timeout fired (408: the client stalled).
    fn client_fault(&self, timed_out: bool) -> Option<ProxyError> {
        match self.client_body.as_ref()?.state() {
            ClientBody::Failed => Some(ProxyError::ClientBody),
            ClientBody::Due if timed_out => Some(ProxyError::ClientBodyTimeout(self.timeout)),
            _ => None,
        }
    }
}

impl<'a> RequestCtx<'a> {
    /// Phases 4 to 6 for a request whose upstream is chosen: the exchange
    /// to run, or an answer from the cache. (Not async, so that `forward`'s
    /// future, the large one, is awaited by `handle` itself: each level of
    /// async calls moves its callee's future once per request.)
    pub(super) fn prepare_exchange(
        &mut self,
        body: ProxyBody,
        shadow_bucket: Option<u16>,
        (upstream_id, pool): (UpstreamId, &'a UpstreamPool),
    ) -> Result<Exchange<'a>, Answered> {
        // A WebSocket handshake on a route that allows it: the split is
        // decided now, and the tunnel opens when the upstream switches
        // protocols.
        let client_upgrade = if self.route.is_some_and(|r| r.websocket)
            && crate::proxy::tunnel::wants_websocket(&self.parts.headers)
        {
            self.parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let websocket = client_upgrade.is_some();
        let forwarding = self.upstream_request_filter(websocket);
        let path_and_query = self
            .parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let body_empty = body.is_end_stream();
        let mut x = Exchange {
            pool,
            request_body: ProxyBody::Empty,
            body_empty,
            client_body: None,
            method: self.parts.method.clone(),
            path_and_query,
            forwarding,
            primary_head: None,
            primary_tx: None,
            client_upgrade,
            client_version: self.parts.version,
            timeout: self
                .route
                .and_then(|r| r.timeout)
                .unwrap_or(pool.config.timeout),
            cache: CacheStep::default(),
        };
        if !websocket && let Some(hit) = self.cache_lookup(&mut x, upstream_id, body_empty) {
            return Err(Box::new(hit));
        }
        let mut request_body = if body_empty {
            ProxyBody::Empty
        } else {
            let (watched, watch) = client_body::watch(body);
            x.client_body = Some(watch);
            watched
        };
        if !websocket
            && let Some(mut p) = self.shadow(&mut x, shadow_bucket, upstream_id, pool, body_empty)
        {
            if let Some(tx) = p.body_tx.take() {
                request_body = TeeBody::request(request_body, p.max_body, p.key(), tx);
            }
            x.primary_tx = Some(p);
        }
        x.request_body = request_body;
        Ok(x)
    }

    /// Phase 5, the route's cache: a fresh stored answer is served without
    /// touching an upstream (and is not shadowed); a miss may be stored on
    /// its way.
    fn cache_lookup(
        &mut self,
        x: &mut Exchange<'a>,
        upstream_id: UpstreamId,
        body_empty: bool,
    ) -> Option<Response<ProxyBody>> {
        let cache = self.route.and(self.live.routes[self.slot].cache.as_ref())?;
        let usage = cache.usage(&x.method, &self.parts.headers);
        if !matches!(
            x.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            x.cache.invalidate = Some(cache.clone());
        }
        // A GET with a body is not what other GETs would get.
        if usage != Use::None && body_empty {
            let host = self.host.as_ref().and_then(|v| v.to_str().ok());
            let key = RouteCache::key(upstream_id, host, x.path_and_query.as_str());
            if usage == Use::Full
                && let Some(hit) = cache.lookup(&key, &x.method, &self.parts.headers)
            {
                return Some(hit);
            }
            cache.miss();
            if x.method == Method::GET {
                let authorized = self.parts.headers.contains_key(header::AUTHORIZATION);
                x.cache.fill = Some((cache.clone(), key, authorized, self.parts.headers.clone()));
            }
        }
        None
    }

    /// Phase 6, the shadow copy: sampled, right method, another upstream,
    /// room left. Returns the call waiting for the primary's answer.
    fn shadow(
        &mut self,
        x: &mut Exchange<'a>,
        shadow_bucket: Option<u16>,
        upstream_id: UpstreamId,
        pool: &UpstreamPool,
        body_empty: bool,
    ) -> Option<Pending> {
        let (Some(b), Some(_), Some(rt)) = (shadow_bucket, self.route, &self.shared.shadow) else {
            return None;
        };
        let live = self.live;
        let plan = live.routes[self.slot].shadow.as_ref()?;
        if b >= plan.percent_bp || !plan.methods.iter().any(|m| m == x.method.as_str()) {
            return None;
        }
        if plan.upstream == upstream_id {
            plan.counts.add(Outcome::SkippedSameUpstream);
            self.dispatch = Dispatch::Skipped(Outcome::SkippedSameUpstream);
            return None;
        }
        let content_length = self
            .parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let shadow_pool = &live.pools[plan.upstream.index()];
        let primary = &live.pools[upstream_id.index()];
        let noise_pool = (plan.noise_bp > 0
            && NOISE_METHODS.contains(&x.method.as_str())
            && rand::random_range(0..BUCKETS) < plan.noise_bp)
            .then(|| primary.clone());
        let request;
        (request, x.primary_head) = crate::mirror::ShadowRequest::new(
            &x.method,
            &x.path_and_query,
            &self.parts.headers,
            x.forwarding.as_ref(),
            !body_empty,
            pool,
            std::iter::once(&**shadow_pool).chain(noise_pool.as_deref()),
        );
        let pending;
        (self.dispatch, pending) = crate::mirror::launch(crate::mirror::Launch {
            runtime: rt.clone(),
            pool: shadow_pool.clone(),
            route: plan.route.clone(),
            method: x.method.clone(),
            path_and_query: x.path_and_query.clone(),
            request,
            comparator: plan.comparator.clone(),
            counts: plan.counts.clone(),
            primary: primary.clone(),
            noise_pool,
            has_body: !body_empty,
            content_length,
            sleeps: self.shared.sleeps.clone(),
        });
        pending
    }

    /// Phase 7, the exchange: an instance picked, the request sent within
    /// the timeout; a connect failure tries one other instance with the
    /// same request, a broken exchange is retried only for body-less
    /// idempotent requests, as many times as the route allows.
    pub(super) async fn forward(&mut self, mut x: Exchange<'a>) -> Response<ProxyBody> {
        let pool = x.pool;
        let request_body = std::mem::take(&mut x.request_body);
        let may_retry_sent = idempotent(&x.method) && x.body_empty;
        let mut retries_left = self.route.map_or(0, |r| r.retries);
        let mut connect_retry_used = false;
        let mut tried = Tried::default();
        // Headers are kept for a retry after sending only when one can happen.
        let retry_headers =
            (may_retry_sent && retries_left > 0).then(|| self.parts.headers.clone());
        let headers = std::mem::take(&mut self.parts.headers);
        // No Host by now (an HTTP/1.0 client sent none, and the route has
        // no host_rewrite): the upstream's HTTP/1.1 request gets the
        // instance's authority, as an HTTP/1.1 request must have a Host.
        let host_from_instance = !headers.contains_key(header::HOST);
        let mut up = upstream_request(&x.method, headers, request_body);
        loop {
            let Ok(i) = pool.pick(tried.as_slice()) else {
                return self.error(ProxyError::NoHealthyInstance);
            };
            tried.push(i);
            *up.uri_mut() = Uri::from(x.path_and_query.clone());
            if host_from_instance {
                set_instance_host(&mut up, pool, i);
            }
            pool.start_request(i);
            // A compared answer's headers also come raw, for the capture.
            let keep = if x.primary_tx.is_some() {
                KeepHeaders::Both
            } else {
                KeepHeaders::Map
            };
            let with = SendWith {
                // The head encoded for the shadow copy has no Host.
                head: x.primary_head.as_deref().filter(|_| !host_from_instance),
                keep,
                forwarding: x.forwarding.as_ref(),
            };
            let send = pool.send(i, up, with);
            let result = self.shared.sleeps.timeout(x.timeout, send).await;
            pool.end_request(i);
            match result {
                Ok(Ok(resp)) => return self.response_filter(&mut x, pool, i, resp),
                Ok(Err(SendError::Connect(msg, back))) => {
                    pool.record_failure(i);
                    // Nothing was sent: try one other instance with the same request.
                    if !connect_retry_used && pool.has_other(tried.as_slice()) {
                        connect_retry_used = true;
                        up = *back;
                        continue;
                    }
                    return self.error(ProxyError::ConnectFailed(msg));
                }
                Ok(Err(SendError::Broken(e))) => {
                    if let Some(fault) = x.client_fault(false) {
                        tracing::debug!(error = %innermost_cause(&*e), "the client's request body failed");
                        return self.error(fault);
                    }
                    pool.record_failure(i);
                    if may_retry_sent && retries_left > 0 {
                        retries_left -= 1;
                        if !pool.has_other(tried.as_slice()) {
                            tried.clear();
                        }
                        // Only body-less requests get here, so nothing is lost.
                        up = upstream_request(
                            &x.method,
                            retry_headers.clone().unwrap_or_default(),
                            ProxyBody::Empty,
                        );
                        continue;
                    }
                    return self.error(ProxyError::UpstreamBroken(innermost_cause(&*e)));
                }
                Err(_) => {
                    if let Some(fault) = x.client_fault(true) {
                        return self.error(fault);
                    }
                    pool.record_failure(i);
                    return self.error(ProxyError::UpstreamTimeout(x.timeout));
                }
            }
        }
    }

    /// Phase 8, the upstream's answer on its way to the client: passive
    /// health, hop-by-hop headers out, a WebSocket tunnel opened, the
    /// cache invalidated or filled, the tee for the shadow comparison,
    /// strangler's own headers (after the capture, which has the
    /// upstream's only).
    fn response_filter(
        &mut self,
        x: &mut Exchange<'a>,
        pool: &UpstreamPool,
        instance: usize,
        mut resp: Response<PooledBody>,
    ) -> Response<ProxyBody> {
        let raw_headers = match resp.body_mut() {
            PooledBody::Lean(b) => b.take_raw_headers(),
            PooledBody::Hyper(_) => None,
        };
        // RFC 9110 section 15.2.2: a 101 switches to the protocol the
        // client asked for (a WebSocket handshake on a route that allows
        // it) and names it; any other 101 is the upstream's fault, never a
        // tunnel past routing and policies.
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && !(x.client_upgrade.is_some()
                && resp
                    .headers()
                    .get_all(header::UPGRADE)
                    .iter()
                    .any(|v| lists_token(v, "websocket")))
        {
            pool.record_failure(instance);
            return self.error(ProxyError::UpstreamBroken(
                "101 Switching Protocols to a protocol not asked for".to_string(),
            ));
        }
        // Transfer codings besides `chunked` (the exchange left only those
        // in Transfer-Encoding) stay applied to the body and go on with it:
        // an HTTP/1.0 client cannot be sent any (RFC 9112 section 6.1), and
        // `chunked` may come only last, once.
        let codings = resp.headers_mut().remove(header::TRANSFER_ENCODING);
        if let Some(c) = &codings
            && (x.client_version == Version::HTTP_10 || lists_token(c, "chunked"))
        {
            pool.record_failure(instance);
            return self.error(ProxyError::UpstreamBroken(format!(
                "transfer coding {:?} cannot be passed on to this client",
                String::from_utf8_lossy(c.as_bytes())
            )));
        }
        let upstream_upgrade = (resp.status() == http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| hyper::upgrade::on(&mut resp));
        let status = resp.status().as_u16();
        if matches!(status, 502..=504) {
            pool.record_failure(instance);
        } else {
            pool.record_success(instance);
        }
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        if let (Some(up), Some(down), Some(r)) =
            (upstream_upgrade, x.client_upgrade.take(), self.route)
        {
            rparts
                .headers
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            rparts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            crate::proxy::tunnel::spawn(down, up, r.idle_timeout, r.name.clone());
        }
        let mut rbody = ProxyBody::Pooled(rbody);
        let mut cache_missed = false;
        if let Some(cache) = x.cache.invalidate.take()
            && status < 400
        {
            let host = self.host.as_ref().and_then(|v| v.to_str().ok());
            cache.invalidate(self.live.pools.len(), host, x.path_and_query.as_str());
        }
        // A body still coded for transfer is not stored.
        if let Some((cache, key, authorized, request)) = x.cache.fill.take()
            && codings.is_none()
        {
            if let Some(fresh) = cache.storable(rparts.status, &rparts.headers, authorized) {
                let fill = cache::Fill::new(key, rparts.status, &rparts.headers, &request, fresh);
                rbody = cache::CacheBody::wrap(rbody, cache, fill);
            }
            cache_missed = true;
        }
        if let Some(p) = x.primary_tx.take() {
            let latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
            let runtime = p.runtime.clone();
            let key = runtime.pipeline.redactor.key();
            rbody = TeeBody::response(
                rbody,
                p.max_body,
                key,
                p.primary_tx,
                status,
                raw_headers.ok_or(&rparts.headers),
                latency_ms,
            );
        }
        if cache_missed {
            rparts
                .headers
                .insert(cache::X_CACHE, HeaderValue::from_static("MISS"));
        }
        if let Some(c) = codings {
            rparts.headers.insert(header::TRANSFER_ENCODING, c);
        }
        append_via(&mut rparts.headers, rparts.version);
        rparts.version = x.client_version;
        Response::from_parts(rparts, rbody)
    }
}

/// The instances tried for one request: inline while there are few (no
/// allocation per request), on the heap beyond that.
#[derive(Default)]
struct Tried {
    inline: [usize; 4],
    len: usize,
    spilled: Vec<usize>,
}

impl Tried {
    fn push(&mut self, i: usize) {
        if self.spilled.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = i;
            self.len += 1;
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline[..self.len]);
            }
            self.spilled.push(i);
        }
    }

    fn as_slice(&self) -> &[usize] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spilled.clear();
    }
}

/// A request for an upstream: HTTP/1.1, its URI set per attempt.
fn upstream_request(method: &Method, headers: HeaderMap, body: ProxyBody) -> Request<ProxyBody> {
    let mut up = Request::new(body);
    *up.method_mut() = method.clone();
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;
    up
}

/// Sets Host to instance `i`'s authority (without any userinfo).
fn set_instance_host(up: &mut Request<ProxyBody>, pool: &UpstreamPool, i: usize) {
    let Some(inst) = pool.instances.get(i) else {
        return;
    };
    let authority = inst.authority.as_str();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Ok(v) = HeaderValue::from_str(host) {
        up.headers_mut().insert(header::HOST, v);
    }
}

/// The innermost cause, which says what actually happened ("connection refused").
/// (The CLI's `strangler_api` words its own errors the same way, trimmed.)
fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn tried_spills_past_four_and_clears() {
        let mut t = Tried::default();
        for i in 0..6 {
            t.push(i);
            assert_eq!(t.as_slice(), (0..=i).collect::<Vec<_>>().as_slice());
        }
        t.clear();
        assert!(t.as_slice().is_empty());
        t.push(9);
        assert_eq!(t.as_slice(), &[9]);
    }
}
