//! The request path: validate the head, route it with the live table, pick
//! an instance, rewrite headers, forward with streaming bodies both ways,
//! retry only where it is safe, and map every failure to its JSON error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use strangler_rules::Target;

use crate::body::{ProxyBody, ReclaimableBody};
use crate::error::ProxyError;
use crate::headers::{
    RequestHead, append_via, client_ip, idempotent, request_host, set_forwarded, strip_hop_by_hop,
};
use crate::state::Shared;

/// Serves one request. Never fails: errors become JSON responses.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let live = shared.live.load_full();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let client = client_ip(&parts.headers, peer.ip(), live.config().listen.trusted_hops);

    let host_value = match request_host(&parts) {
        Ok(h) => h.and_then(|h| HeaderValue::from_str(h).ok()),
        Err(e) => {
            return Ok(finish(
                &shared,
                &parts,
                client,
                start,
                None,
                None,
                None,
                e.response(None, None),
            ));
        }
    };
    if method == http::Method::CONNECT {
        let e = ProxyError::MethodNotAllowed("CONNECT".into());
        return Ok(finish(
            &shared,
            &parts,
            client,
            start,
            None,
            None,
            None,
            e.response(None, None),
        ));
    }
    // An absolute-form target (`GET http://host/path`): its host replaces Host.
    if parts.version != Version::HTTP_2
        && parts.uri.authority().is_some()
        && let Some(h) = &host_value
    {
        parts.headers.insert(header::HOST, h.clone());
    }
    let decision = {
        let view = RequestHead {
            parts: &parts,
            host: host_value.as_ref().and_then(|v| v.to_str().ok()),
        };
        live.table
            .decide(&view, || rand::random_range(0..10_000u16))
    };
    let config = live.config();
    let route = match decision.target {
        Target::Route(i) => Some(&config.routes[i]),
        Target::Default => None,
        Target::Aggregate(i) => {
            let name = config.aggregates[i].name.as_str();
            let resp = ProxyError::AggregateNotSupported.response(Some(name), None);
            return Ok(finish(
                &shared,
                &parts,
                client,
                start,
                Some(name),
                None,
                None,
                resp,
            ));
        }
    };
    let route_name = route.map(|r| r.name.as_str());
    let upstream_id = decision.upstream.unwrap_or(config.default_upstream);
    let pool = &live.pools[upstream_id.index()];
    let slot = match decision.target {
        Target::Route(i) => i + 1,
        _ => 0,
    };
    let cell: &crate::stats::Cell = &live.cells[slot][upstream_id.index()];
    let upstream_name = Some(pool.name.as_str());

    // Headers for the upstream.
    let trusted_hops = config.listen.trusted_hops;
    let client_version = parts.version;
    strip_hop_by_hop(&mut parts.headers);
    set_forwarded(
        &mut parts.headers,
        peer.ip(),
        shared.tls,
        host_value.as_ref().and_then(|v| v.to_str().ok()),
        trusted_hops,
        client_version,
    );
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
    let mut body = Some(body);
    let mut tried: Vec<usize> = Vec::with_capacity(2);
    // Headers are needed again only if another attempt is possible.
    let can_retry = pool.instances.len() > 1 || retries_left > 0;

    loop {
        let i = match pool.pick(&tried) {
            Ok(i) => i,
            Err(_) => {
                let resp = ProxyError::NoHealthyInstance.response(route_name, upstream_name);
                return Ok(finish(
                    &shared,
                    &parts,
                    client,
                    start,
                    route_name,
                    upstream_name,
                    Some(cell),
                    resp,
                ));
            }
        };
        tried.push(i);
        let instance = &pool.instances[i];
        let uri = Uri::builder()
            .scheme(instance.scheme.clone())
            .authority(instance.authority.clone())
            .path_and_query(path_and_query.clone())
            .build();
        let Ok(uri) = uri else {
            let resp = ProxyError::BadRequest("cannot build the upstream URI".into())
                .response(route_name, upstream_name);
            return Ok(finish(
                &shared,
                &parts,
                client,
                start,
                route_name,
                upstream_name,
                Some(cell),
                resp,
            ));
        };
        let (req_body, reclaim) = if body_empty {
            (ProxyBody::Empty, None)
        } else {
            match body.take() {
                Some(b) => {
                    let (rb, reclaim) = ReclaimableBody::new(b);
                    (ProxyBody::Reclaimable(rb), Some(reclaim))
                }
                None => {
                    let resp = ProxyError::UpstreamBroken("request body already sent".into())
                        .response(route_name, upstream_name);
                    return Ok(finish(
                        &shared,
                        &parts,
                        client,
                        start,
                        route_name,
                        upstream_name,
                        Some(cell),
                        resp,
                    ));
                }
            }
        };
        let mut up = Request::new(req_body);
        *up.method_mut() = method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = if can_retry {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };

        pool.start_request(i);
        let result = tokio::time::timeout(timeout, pool.client.request(up)).await;
        pool.end_request(i);
        match result {
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                if matches!(status, 502..=504) {
                    pool.record_failure(i);
                } else {
                    pool.record_success(i);
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                append_via(&mut rparts.headers, rparts.version);
                rparts.version = client_version;
                let resp = Response::from_parts(rparts, ProxyBody::Incoming(rbody));
                return Ok(finish(
                    &shared,
                    &parts,
                    client,
                    start,
                    route_name,
                    upstream_name,
                    Some(cell),
                    resp,
                ));
            }
            Ok(Err(e)) if e.is_connect() => {
                pool.record_failure(i);
                // Nothing was sent: try one other instance, with the body back.
                if !connect_retry_used && pool.has_other(&tried) {
                    connect_retry_used = true;
                    if let Some(r) = &reclaim {
                        body = r.take();
                    }
                    if body_empty || body.is_some() {
                        continue;
                    }
                }
                let resp =
                    ProxyError::ConnectFailed(error_chain(&e)).response(route_name, upstream_name);
                return Ok(finish(
                    &shared,
                    &parts,
                    client,
                    start,
                    route_name,
                    upstream_name,
                    Some(cell),
                    resp,
                ));
            }
            Ok(Err(e)) => {
                pool.record_failure(i);
                if may_retry_sent && retries_left > 0 {
                    retries_left -= 1;
                    if !pool.has_other(&tried) {
                        tried.clear();
                    }
                    continue;
                }
                let resp =
                    ProxyError::UpstreamBroken(error_chain(&e)).response(route_name, upstream_name);
                return Ok(finish(
                    &shared,
                    &parts,
                    client,
                    start,
                    route_name,
                    upstream_name,
                    Some(cell),
                    resp,
                ));
            }
            Err(_) => {
                pool.record_failure(i);
                let resp = ProxyError::UpstreamTimeout(timeout).response(route_name, upstream_name);
                return Ok(finish(
                    &shared,
                    &parts,
                    client,
                    start,
                    route_name,
                    upstream_name,
                    Some(cell),
                    resp,
                ));
            }
        }
    }
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
    cell: Option<&crate::stats::Cell>,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let status = resp.status().as_u16();
    if let Some(cell) = cell {
        cell.record(start.elapsed().as_micros() as u64, status);
    }
    if shared.access_log {
        tracing::info!(
            target: "strangler::access",
            method = %parts.method,
            path = parts.uri.path(),
            status,
            route = route.unwrap_or("-"),
            upstream = upstream.unwrap_or("-"),
            latency_ms = start.elapsed().as_secs_f64() * 1000.0,
            client = %client,
            shadow = "none",
        );
    }
    resp
}
