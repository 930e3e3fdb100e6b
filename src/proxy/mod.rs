//! The request path, as named phases over one per-request context
//! (`context::RequestCtx`), in the order a request meets them:
//!
//! 1. `request_filter`: the head's own checks (Host, CONNECT, ambiguous paths);
//! 2. `route_decision`: the route table's choice and the shadow sample;
//!    aggregates are answered here (`aggregate`);
//! 3. `policies`: JWT auth, claims, the rate limit (`crate::policy`); the
//!    upstream is chosen;
//! 4. `upstream_request_filter`: the head the upstream gets (hop-by-hop and
//!    forwarding headers: `crate::http1::headers`);
//! 5. `cache_lookup`: a fresh stored answer, or a fill on the way;
//! 6. `shadow`: the copy for the shadow upstream (`crate::mirror`);
//! 7. `forward`: pick an instance, send, retry only where it is safe;
//! 8. `response_filter`: tunnel (`tunnel`), cache fill, tee, Via;
//! 9. `logging`: the stats cell and the access log line.
//!
//! Phases 1-3 and 4's filter are in `request`, 5-8 in `forward`
//! (`prepare_exchange` runs 4 to 6). Every failure becomes its JSON error in one
//! place (`error`). A new policy goes in `crate::policy` and is called from
//! `policies` (a response-side one, as the cache, from `forward`); an
//! aggregate's parts pass the route policies again in `aggregate`.

pub mod aggregate;
mod client_body;
mod context;
pub mod error;
mod forward;
pub mod headers;
mod request;
pub mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response};

use crate::http1::headers::client_ip;
use crate::http1::server::{HeadError, Service};
use crate::mirror::Dispatch;
use crate::proxy::context::RequestCtx;
use crate::proxy::error::ProxyError;
use crate::proxy::forward::Exchange;
use crate::proxy::request::Answered;
use crate::state::Shared;
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
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + use<> {
        handle(self.shared.clone(), peer, peer_ip.clone(), req)
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
    let (parts, body) = req.into_parts();
    let config = live.config();
    let client = client_ip(&parts.headers, peer.ip(), config.listen.trusted_hops);
    let mut ctx = RequestCtx {
        shared: &shared,
        live: &live,
        config,
        start,
        parts,
        client,
        peer_ip,
        host: None,
        route: None,
        slot: 0,
        label: None,
        upstream: None,
        rate_headers: None,
        dispatch: Dispatch::None,
    };
    let resp = match before_upstream(&mut ctx, body).await {
        Ok(exchange) => ctx.forward(exchange).await,
        Err(answered) => *answered,
    };
    Ok(ctx.logging(resp))
}

/// Phases 1 to 6; an `Err` is an answer a phase gave itself (a refusal,
/// an aggregate's, a cached one).
async fn before_upstream<'a>(
    ctx: &mut RequestCtx<'a>,
    body: ProxyBody,
) -> Result<Exchange<'a>, Answered> {
    ctx.request_filter()?;
    let decided = ctx.route_decision().await?;
    let upstream = ctx.policies(&decided).await?;
    ctx.prepare_exchange(body, decided.shadow_bucket, upstream)
}
