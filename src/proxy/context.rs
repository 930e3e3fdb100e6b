//! One request's context: what the phases of the request path read and add
//! to, from the head as it arrived to the answer, and the last phase,
//! logging (the access log line and the stats cell).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Response, request::Parts};
use strangler_rules::config::Route;
use strangler_rules::{Config, UpstreamId};

use crate::mirror::Dispatch;
use crate::proxy::error::ProxyError;
use crate::state::stats::Cell;
use crate::state::{Live, Shared};
use crate::upstream::UpstreamPool;
use crate::upstream::body::ProxyBody;

/// draft-ietf-httpapi-ratelimit-headers.
pub(super) const RATELIMIT_POLICY: header::HeaderName =
    header::HeaderName::from_static("ratelimit-policy");
pub(super) const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

/// One request on its way through the phases. Borrows the generation of
/// live state it started with, so it finishes on that state.
pub(super) struct RequestCtx<'a> {
    pub shared: &'a Shared,
    pub live: &'a Arc<Live>,
    pub config: &'a Config,
    pub start: Instant,
    /// The request head: the client's, then rewritten for the upstream.
    pub parts: Parts,
    pub client: IpAddr,
    /// The client's address as a header value (X-Forwarded-For).
    pub peer_ip: HeaderValue,
    /// The host the request is for: Host, or an absolute-form target's.
    pub host: Option<HeaderValue>,
    /// The route that matched, if one did.
    pub route: Option<&'a Route>,
    /// The route's slot in `Live::routes`: 0 for "no route", index + 1.
    pub slot: usize,
    /// What the access log names: the route's, or an aggregate's, name.
    pub label: Option<&'a str>,
    /// The upstream chosen, once the policies let the request through:
    /// from then on every answer counts in its stats cell.
    pub upstream: Option<(UpstreamId, &'a UpstreamPool, &'a Cell)>,
    /// The rate limit's headers, put on the answer.
    pub rate_headers: Option<(HeaderValue, HeaderValue)>,
    /// What the shadow side decided.
    pub dispatch: Dispatch,
}

impl<'a> RequestCtx<'a> {
    /// The name the JSON error of an answer made by strangler carries.
    pub fn upstream_name(&self) -> Option<&'a str> {
        self.upstream.map(|(_, pool, _)| pool.name.as_str())
    }

    /// `err` answered as JSON, naming the route and upstream.
    pub fn error(&self, err: ProxyError) -> Response<ProxyBody> {
        err.response(self.label, self.upstream_name())
    }

    /// The last phase: the rate-limit headers on the answer, its latency
    /// in the stats cell, the access log line.
    pub fn logging(&mut self, mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
        if let Some((policy, state)) = self.rate_headers.take() {
            resp.headers_mut().insert(RATELIMIT_POLICY, policy);
            resp.headers_mut().insert(RATELIMIT, state);
        }
        let status = resp.status().as_u16();
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.start);
        if let Some((_, _, cell)) = self.upstream {
            cell.record(latency.as_micros() as u64, status, now);
        }
        if self.shared.access_log {
            tracing::info!(
                target: "strangler::access",
                method = %self.parts.method,
                path = self.parts.uri.path(),
                status,
                route = self.label.unwrap_or("-"),
                upstream = self.upstream_name().unwrap_or("-"),
                latency_ms = (latency.as_micros() as f64) / 1000.0,
                client = %self.client,
                shadow = self.dispatch.as_str(),
            );
        }
        resp
    }
}
