//! The request path: validate the head, route it with the live table, pick
//! an instance, rewrite headers, start a shadow copy when the route samples
//! this request, forward with streaming bodies both ways, retry only where
//! it is safe, and map every failure to its JSON error.

pub mod aggregate;
pub mod error;
pub mod headers;
pub mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use strangler_rules::Target;
use strangler_rules::split::{BUCKETS, bucket};
use strangler_shadow::Outcome;

use crate::http1::client::KeepHeaders;
use crate::http1::headers::{
    append_via, client_ip, idempotent, joined_values, set_forwarded, strip_hop_by_hop,
};
use crate::http1::server::{HeadError, Service};
use crate::mirror::{Dispatch, NOISE_METHODS, SHADOW_HEADER, TeeBody};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{RequestHead, request_host};
use crate::state::Shared;
use crate::upstream::SendError;
use crate::upstream::body::PooledBody;
use crate::upstream::body::ProxyBody;

/// The proxy as the service the HTTP/1.1 server (and hyper's) serves.
pub struct Proxy {
    pub shared: Arc<Shared>,
}

impl Service for Proxy {
    type Body = ProxyBody;

    #[inline]
    fn call(
        &self,
        req: Request<ProxyBody>,
        peer: SocketAddr,
        peer_ip: &HeaderValue,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<> {
        let answer = handle(self.shared.clone(), peer, peer_ip.clone(), req);
        async move {
            let Ok(resp) = answer.await;
            resp
        }
    }

    fn refuse(&self, err: HeadError) -> Response<ProxyBody> {
        ProxyError::from(err).response(None, None)
    }
}

/// Serves one request. Never fails: errors become JSON responses.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    peer_ip: HeaderValue,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let live = shared.live.load_full();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let client = client_ip(&parts.headers, peer.ip(), live.config().listen.trusted_hops);
    // Answers strangler gives itself before an upstream is chosen: an
    // error's, or a response made here.
    macro_rules! refuse {
        ($route:expr, response $resp:expr) => {
            return Ok(finish(
                &shared,
                &parts,
                client,
                start,
                $route,
                None,
                None,
                Dispatch::None,
                $resp,
            ))
        };
        ($route:expr, $err:expr) => {
            refuse!($route, response $err.response($route, None))
        };
    }

    let host_value = match request_host(&parts) {
        // The Host header's own value when that is the host (no copy).
        Ok(h) => h.and_then(|h| match parts.headers.get(header::HOST) {
            Some(v) if v.as_bytes() == h.as_bytes() => Some(v.clone()),
            _ => HeaderValue::from_str(h).ok(),
        }),
        Err(e) => refuse!(None, e),
    };
    if method == http::Method::CONNECT {
        refuse!(None, ProxyError::MethodNotAllowed("CONNECT".into()));
    }
    if crate::proxy::headers::ambiguous_path(parts.uri.path()) {
        refuse!(
            None,
            ProxyError::BadRequest(
                "ambiguous path: dot segments and empty segments are refused".into()
            )
        );
    }
    // An absolute-form target (`GET http://host/path`): its host replaces Host.
    if parts.version != Version::HTTP_2
        && parts.uri.authority().is_some()
        && let Some(h) = &host_value
    {
        parts.headers.insert(header::HOST, h.clone());
    }
    let config = live.config();
    let (decision, shadow_bucket) = {
        let view = RequestHead {
            parts: &parts,
            host: host_value.as_ref().and_then(|v| v.to_str().ok()),
        };
        let decision = live.table.decide(&view, || rand::random_range(0..BUCKETS));
        // Shadow sampling: its own seed, sticky on the route's key.
        let shadow_bucket = match decision.target {
            Target::Route(i) if live.route(i).shadow.is_some() => {
                let r = &config.routes[i];
                Some(
                    r.sticky
                        .as_ref()
                        .and_then(|k| k.value(&view))
                        .map(|key| bucket(r.shadow_seed, key))
                        .unwrap_or_else(|| rand::random_range(0..BUCKETS)),
                )
            }
            _ => None,
        };
        (decision, shadow_bucket)
    };
    // The stats slot: 0 for "no route", route index + 1 otherwise.
    let (route, slot) = match decision.target {
        Target::Route(i) => (Some(&config.routes[i]), i + 1),
        Target::Default => (None, 0),
        Target::Aggregate(i) => {
            let host = host_value.as_ref().and_then(|v| v.to_str().ok());
            // Boxed here and below: rare or costly anyway, and inline their
            // state would grow every request's future (which hyper moves).
            let resp = Box::pin(crate::proxy::aggregate::serve(
                live.clone(),
                i,
                &parts,
                host,
                client,
            ))
            .await;
            refuse!(Some(config.aggregates[i].name.as_str()), response resp);
        }
    };
    let route_name = route.map(|r| r.name.as_str());

    // JWT auth: a route that asks for it gets no request without a valid token.
    let mut claims = None;
    if let Some(auth) = route.and_then(|_| live.routes[slot].auth.as_ref()) {
        match Box::pin(auth.verify(&parts.headers)).await {
            Ok(c) => claims = Some(c),
            Err(e) => {
                let mut resp = ProxyError::Unauthorized(e.to_string()).response(route_name, None);
                let challenge = match e {
                    crate::policy::auth::AuthError::Missing => HeaderValue::from_static("Bearer"),
                    crate::policy::auth::AuthError::Invalid(_) => {
                        HeaderValue::from_static("Bearer error=\"invalid_token\"")
                    }
                };
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
                refuse!(route_name, response resp);
            }
        }
    }
    let mut decided = decision.upstream;
    if let (Some(r), Some(c), Target::Route(i)) = (route, &claims, decision.target) {
        crate::policy::auth::forward_claims(c, &r.forward_claims, &mut parts.headers);
        // A verified claim as the sticky key.
        if let Some(strangler_rules::StickyKey::Claim(name)) = &r.sticky
            && let Some(v) = crate::policy::auth::claim_text(c, name)
        {
            decided = Some(live.table.split(i).choose(bucket(r.sticky_seed, &v)));
        }
    }
    let upstream_id = decided.unwrap_or(config.default_upstream);
    let pool = &live.pools[upstream_id.index()];
    let cell: &crate::state::stats::Cell = &live.routes[slot].cells[upstream_id.index()];
    let upstream_name = Some(pool.name.as_str());

    // The route's rate limit, before anything is sent anywhere.
    let mut rate_headers = None;
    if let Some(limit) = route.and_then(|_| live.routes[slot].limit.as_ref()) {
        let key =
            crate::policy::ratelimit::key_of(&limit.spec, client, &parts.headers, claims.as_ref());
        let verdict = limit.check(&key);
        let headers = (limit.policy(), limit.state(&verdict));
        if let crate::policy::ratelimit::Verdict::Limited { retry_after } = verdict {
            let mut resp = ProxyError::RateLimited(retry_after).response(route_name, None);
            let h = resp.headers_mut();
            let secs = (retry_after.as_secs_f64().ceil() as u64).max(1);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert(RATELIMIT_POLICY, headers.0);
            h.insert(RATELIMIT, headers.1);
            refuse!(route_name, response resp);
        }
        rate_headers = Some(headers);
    }

    // Headers for the upstream.
    let trusted_hops = config.listen.trusted_hops;
    let client_version = parts.version;
    // A WebSocket handshake on a route that allows it: the split is decided
    // now, and the tunnel opens when the upstream switches protocols.
    let mut client_upgrade = if route.is_some_and(|r| r.websocket)
        && crate::proxy::tunnel::wants_websocket(&parts.headers)
    {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let websocket = client_upgrade.is_some();
    strip_hop_by_hop(&mut parts.headers);
    if websocket {
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // Only strangler marks shadow requests.
    parts.headers.remove(SHADOW_HEADER);
    // Cookies split over several fields (HTTP/2 does) become one header, as
    // HTTP/1.1 upstreams expect (RFC 9113 section 8.2.3).
    if parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .nth(1)
        .is_some()
        && let Some(v) = joined_values(&parts.headers, &header::COOKIE)
    {
        parts.headers.insert(header::COOKIE, v);
    }
    // The forwarding headers: written with the head when the request has
    // none of its own, merged into the map when it has.
    let forwarding = crate::http1::headers::Forwarding::new(
        &parts.headers,
        &peer_ip,
        shared.tls,
        host_value.as_ref(),
        client_version,
    );
    if forwarding.is_none() {
        set_forwarded(
            &mut parts.headers,
            &peer_ip,
            shared.tls,
            host_value.as_ref(),
            trusted_hops,
            client_version,
        );
    }
    match route.and_then(|r| r.host_rewrite.as_deref()) {
        Some(rewrite) => {
            if let Ok(v) = HeaderValue::from_str(rewrite) {
                parts.headers.insert(header::HOST, v);
            }
        }
        None => {
            if !parts.headers.contains_key(header::HOST)
                && let Some(h) = host_value.clone()
            {
                parts.headers.insert(header::HOST, h);
            }
        }
    }
    let timeout = route.and_then(|r| r.timeout).unwrap_or(pool.config.timeout);
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));

    let body_empty = body.is_end_stream();
    let may_retry_sent = idempotent(&method) && body_empty;
    let mut retries_left = route.map_or(0, |r| r.retries);
    let mut connect_retry_used = false;
    let mut tried = Tried::default();
    let mut request_body = if body_empty { ProxyBody::Empty } else { body };

    // What the shadow side decided (below); every answer from here on is
    // logged with it and carries the rate-limit headers.
    let mut dispatch = Dispatch::None;
    macro_rules! answer {
        ($resp:expr) => {{
            let mut resp = $resp;
            if let Some((policy, state)) = rate_headers.take() {
                resp.headers_mut().insert(RATELIMIT_POLICY, policy);
                resp.headers_mut().insert(RATELIMIT, state);
            }
            return Ok(finish(
                &shared,
                &parts,
                client,
                start,
                route_name,
                upstream_name,
                Some(cell),
                dispatch,
                resp,
            ));
        }};
    }

    // The route's cache: a fresh stored answer is served without touching
    // an upstream (and is not shadowed); a miss may be stored on its way.
    let mut cache_fill = None;
    let mut invalidate_after = None;
    if let Some(cache) = route
        .filter(|_| !websocket)
        .and_then(|_| live.routes[slot].cache.as_ref())
    {
        use crate::policy::cache::{RouteCache, Use};
        let usage = cache.usage(&method, &parts.headers);
        if !matches!(
            method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        ) {
            // A write to this URL: what is stored for it goes once it succeeds.
            invalidate_after = Some(cache.clone());
        }
        // A GET with a body is not what other GETs would get.
        if usage != Use::None && body_empty {
            let host = host_value.as_ref().and_then(|v| v.to_str().ok());
            let key = RouteCache::key(upstream_id, host, path_and_query.as_str());
            if usage == Use::Full
                && let Some(hit) = cache.lookup(&key, &method, &parts.headers)
            {
                answer!(hit);
            }
            cache.miss();
            if method == http::Method::GET {
                let authorized = parts.headers.contains_key(header::AUTHORIZATION);
                cache_fill = Some((cache.clone(), key, authorized, parts.headers.clone()));
            }
        }
    }

    // The shadow copy: sampled, right method, another upstream, room left.
    let mut pending = None;
    // The primary's request head, when the shadow copy's encoding made it.
    let mut primary_head = None;
    if let (Some(b), Some(_), Some(rt), false) = (shadow_bucket, route, &shared.shadow, websocket)
        && let Some(plan) = live.routes[slot].shadow.as_ref()
        && b < plan.percent_bp
        && plan.methods.iter().any(|m| m == method.as_str())
    {
        if plan.upstream == upstream_id {
            plan.counts.add(Outcome::SkippedSameUpstream);
            dispatch = Dispatch::Skipped(Outcome::SkippedSameUpstream);
        } else {
            let content_length = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let shadow_pool = &live.pools[plan.upstream.index()];
            let noise_pool = (plan.noise_bp > 0
                && NOISE_METHODS.contains(&method.as_str())
                && rand::random_range(0..BUCKETS) < plan.noise_bp)
                .then(|| pool.clone());
            let request;
            (request, primary_head) = crate::mirror::ShadowRequest::new(
                &method,
                &path_and_query,
                &parts.headers,
                forwarding.as_ref(),
                !body_empty,
                pool,
                std::iter::once(&**shadow_pool).chain(noise_pool.as_deref()),
            );
            (dispatch, pending) = crate::mirror::launch(crate::mirror::Launch {
                runtime: rt.clone(),
                pool: shadow_pool.clone(),
                route: plan.route.clone(),
                method: method.clone(),
                path_and_query: path_and_query.clone(),
                request,
                comparator: plan.comparator.clone(),
                counts: plan.counts.clone(),
                primary: pool.clone(),
                noise_pool,
                has_body: !body_empty,
                content_length,
                sleeps: shared.sleeps.clone(),
            });
        }
    }
    let mut primary_tx = None;
    if let Some(mut p) = pending {
        if let Some(tx) = p.body_tx.take() {
            request_body = TeeBody::request(request_body, p.max_body, p.key(), tx);
        }
        primary_tx = Some(p);
    }
    // Headers are kept for a retry after sending only when one can happen.
    let retry_headers = (may_retry_sent && retries_left > 0).then(|| parts.headers.clone());
    let mut up = upstream_request(&method, std::mem::take(&mut parts.headers), request_body);

    loop {
        let i = match pool.pick(tried.as_slice()) {
            Ok(i) => i,
            Err(_) => answer!(ProxyError::NoHealthyInstance.response(route_name, upstream_name)),
        };
        tried.push(i);
        // The upstream sees origin-form: path and query byte for byte.
        *up.uri_mut() = Uri::from(path_and_query.clone());
        pool.start_request(i);
        // A compared answer's headers also come raw, for the capture.
        let keep = if primary_tx.is_some() {
            KeepHeaders::Both
        } else {
            KeepHeaders::Map
        };
        let with = crate::upstream::SendWith {
            head: primary_head.as_deref(),
            keep,
            forwarding: forwarding.as_ref(),
        };
        let send = pool.send(i, up, with);
        let result = shared.sleeps.timeout(timeout, send).await;
        pool.end_request(i);
        match result {
            Ok(Ok(mut resp)) => {
                let raw_headers = match resp.body_mut() {
                    PooledBody::Lean(b) => b.take_raw_headers(),
                    PooledBody::Hyper(_) => None,
                };
                let upstream_upgrade = (websocket
                    && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| hyper::upgrade::on(&mut resp));
                let status = resp.status().as_u16();
                if matches!(status, 502..=504) {
                    pool.record_failure(i);
                } else {
                    pool.record_success(i);
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                if let (Some(up), Some(down), Some(r)) =
                    (upstream_upgrade, client_upgrade.take(), route)
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
                if let Some(cache) = invalidate_after.take()
                    && status < 400
                {
                    let host = host_value.as_ref().and_then(|v| v.to_str().ok());
                    cache.invalidate(live.pools.len(), host, path_and_query.as_str());
                }
                if let Some((cache, key, authorized, request)) = cache_fill.take() {
                    if let Some(fresh) = cache.storable(rparts.status, &rparts.headers, authorized)
                    {
                        let fill = crate::policy::cache::Fill::new(
                            key,
                            rparts.status,
                            &rparts.headers,
                            &request,
                            fresh,
                        );
                        rbody = crate::policy::cache::CacheBody::wrap(rbody, cache, fill);
                    }
                    cache_missed = true;
                }
                if let Some(p) = primary_tx.take() {
                    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
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
                // strangler's own headers: after the capture, which has
                // the upstream's only.
                if cache_missed {
                    rparts.headers.insert(
                        crate::policy::cache::X_CACHE,
                        HeaderValue::from_static("MISS"),
                    );
                }
                append_via(&mut rparts.headers, rparts.version);
                rparts.version = client_version;
                answer!(Response::from_parts(rparts, rbody));
            }
            Ok(Err(SendError::Connect(msg, back))) => {
                pool.record_failure(i);
                // Nothing was sent: try one other instance with the same request.
                if !connect_retry_used && pool.has_other(tried.as_slice()) {
                    connect_retry_used = true;
                    up = *back;
                    continue;
                }
                answer!(ProxyError::ConnectFailed(msg).response(route_name, upstream_name));
            }
            Ok(Err(SendError::Broken(e))) => {
                pool.record_failure(i);
                if may_retry_sent && retries_left > 0 {
                    retries_left -= 1;
                    if !pool.has_other(tried.as_slice()) {
                        tried.clear();
                    }
                    // Only body-less requests get here, so nothing is lost.
                    up = upstream_request(
                        &method,
                        retry_headers.clone().unwrap_or_default(),
                        ProxyBody::Empty,
                    );
                    continue;
                }
                answer!(
                    ProxyError::UpstreamBroken(error_chain(&*e))
                        .response(route_name, upstream_name)
                );
            }
            Err(_) => {
                pool.record_failure(i);
                answer!(ProxyError::UpstreamTimeout(timeout).response(route_name, upstream_name));
            }
        }
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

/// draft-ietf-httpapi-ratelimit-headers.
const RATELIMIT_POLICY: header::HeaderName = header::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

/// A request for an upstream: HTTP/1.1, its URI set per attempt.
fn upstream_request(
    method: &http::Method,
    headers: http::HeaderMap,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let mut up = Request::new(body);
    *up.method_mut() = method.clone();
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;
    up
}

/// The innermost cause, which says what actually happened ("connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

/// Writes the access log line and returns the response.
#[allow(clippy::too_many_arguments)]
fn finish(
    shared: &Shared,
    parts: &http::request::Parts,
    client: std::net::IpAddr,
    start: Instant,
    route: Option<&str>,
    upstream: Option<&str>,
    cell: Option<&crate::state::stats::Cell>,
    shadow: Dispatch,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let status = resp.status().as_u16();
    let now = Instant::now();
    let latency = now.saturating_duration_since(start);
    if let Some(cell) = cell {
        cell.record(latency.as_micros() as u64, status, now);
    }
    if shared.access_log {
        tracing::info!(
            target: "strangler::access",
            method = %parts.method,
            path = parts.uri.path(),
            status,
            route = route.unwrap_or("-"),
            upstream = upstream.unwrap_or("-"),
            latency_ms = (latency.as_micros() as f64) / 1000.0,
            client = %client,
            shadow = shadow.as_str(),
        );
    }
    resp
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
