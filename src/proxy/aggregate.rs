//! Response aggregation (`[[aggregates]]`, tried before routes): the parts
//! are fetched in parallel, each within its own `timeout`, and merged into
//! one JSON object keyed by part name. Template variables from the matched
//! path fill each part's path, percent-encoded. A part goes through the
//! route table like any request (splits, sticky keys from the client's
//! headers, rollbacks), unless it pins an `upstream`. A part that fails,
//! times out or does not answer 2xx JSON becomes `null` and is named in
//! `x-strangler-partial`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use std::sync::Arc;
use strangler_rules::Target;
use strangler_rules::config::AggregatePart;
use strangler_rules::matcher::PathMatch;

use crate::http1::headers::strip_hop_by_hop;
use crate::proxy::headers::RequestHead;
use crate::state::Live;
use crate::upstream::body::ProxyBody;

/// Largest part body read.
const MAX_PART_BODY: usize = 8 << 20;

/// Answers a request that matched aggregate `i`.
pub async fn serve(
    live: Arc<Live>,
    i: usize,
    parts: &http::request::Parts,
    host: Option<&str>,
    client: std::net::IpAddr,
) -> Response<ProxyBody> {
    let agg = &live.config().aggregates[i];
    if parts.method != http::Method::GET && parts.method != http::Method::HEAD {
        return crate::proxy::error::ProxyError::MethodNotAllowed(parts.method.to_string())
            .response(Some(agg.name.as_str()), None);
    }
    let vars: Vec<(String, String)> = match &agg.matcher.path {
        Some(PathMatch::Template(t)) => t
            .captures(parts.uri.path())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect(),
        _ => Vec::new(),
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, h);
    }
    let mut tasks = Vec::new();
    for part in agg.parts.clone() {
        let path = fill(&part.path, &vars);
        let (live, headers) = (live.clone(), headers.clone());
        tasks.push((
            part.name.clone(),
            tokio::spawn(async move { fetch(&live, &part, &path, headers, client).await }),
        ));
    }
    let mut merged = Map::new();
    let mut partial = Vec::new();
    for (name, task) in tasks {
        match task.await {
            Ok(Ok(v)) => {
                merged.insert(name, v);
            }
            Ok(Err(why)) => {
                tracing::debug!(aggregate = %agg.name, part = %name, "part failed: {why}");
                merged.insert(name.clone(), Value::Null);
                partial.push(name);
            }
            Err(_) => {
                merged.insert(name.clone(), Value::Null);
                partial.push(name);
            }
        }
    }
    let body = Value::Object(merged).to_string();
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if !partial.is_empty()
        && let Ok(v) = HeaderValue::from_str(&partial.join(", "))
    {
        resp.headers_mut().insert("x-strangler-partial", v);
    }
    resp
}

/// The part's path with the template's variables filled in.
fn fill(template: &str, vars: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(
            &format!("{{{k}}}"),
            &crate::proxy::headers::percent_encode(v),
        );
    }
    out
}

/// Undoes percent-encoding (the path's value, as the client meant it).
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), b.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One part: routed, sent, read whole, parsed.
async fn fetch(
    live: &Live,
    part: &AggregatePart,
    path: &str,
    headers: HeaderMap,
    client: std::net::IpAddr,
) -> Result<Value, String> {
    // A variable of `.` or `..` would make a path the route table reads one
    // way and the upstream another.
    if crate::proxy::headers::ambiguous_path(path.split('?').next().unwrap_or(path)) {
        return Err(format!("ambiguous part path {path}"));
    }
    let uri: Uri = path
        .parse()
        .map_err(|e| format!("bad part path {path}: {e}"))?;
    let mut head = Request::get(uri.clone())
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts()
        .0;
    head.headers = headers;
    let config = live.config();
    let upstream = match part.upstream {
        Some(u) => u,
        None => {
            let host = head
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let view = RequestHead {
                parts: &head,
                host: host.as_deref(),
            };
            let d = live.table.decide(&view, || {
                rand::random_range(0..strangler_rules::split::BUCKETS)
            });
            if let Target::Route(r) = d.target {
                // The part's route's policies apply as to any request:
                // an aggregate is no way around auth or a rate limit.
                let route = &config.routes[r];
                if let Some(auth) = &live.route(r).auth {
                    let claims = auth
                        .verify(&head.headers)
                        .await
                        .map_err(|e| e.to_string())?;
                    crate::policy::auth::forward_claims(
                        &claims,
                        &route.forward_claims,
                        &mut head.headers,
                    );
                }
                if let Some(limit) = &live.route(r).limit {
                    let key =
                        crate::policy::ratelimit::key_of(&limit.spec, client, &head.headers, None);
                    if let crate::policy::ratelimit::Verdict::Limited { .. } = limit.check(key) {
                        return Err(format!("rate limited by route {}", route.name));
                    }
                }
            }
            match d.target {
                Target::Aggregate(_) => return Err("a part may not match an aggregate".into()),
                _ => d.upstream.unwrap_or(config.default_upstream),
            }
        }
    };
    let pool = &live.pools[upstream.index()];
    let timeout = part.timeout.unwrap_or(pool.config.timeout);
    let call = async {
        let mut req = Request::new(ProxyBody::Empty);
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = uri;
        *req.headers_mut() = head.headers;
        let resp = pool.send_once(req).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_PART_BODY)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok::<(StatusCode, Bytes), String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_encodes() {
        let vars = vec![("user".to_string(), "a b/c".to_string())];
        assert_eq!(
            fill("/api/orders?user={user}", &vars),
            "/api/orders?user=a%20b%2Fc"
        );
        assert_eq!(fill("/api/users/{user}", &vars), "/api/users/a%20b%2Fc");
        assert_eq!(decode("a%20b%2fc%"), "a b/c%");
    }
}
