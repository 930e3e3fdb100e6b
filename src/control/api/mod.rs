//! The admin API on `[listen].admin`: the server, the bearer token
//! (compared in constant time; without a token the API serves only on
//! loopback), the JSON reply and error shapes, and the routing of a request
//! to its handler (405 with `Allow` on a known path, else 404). The
//! handlers live next door, one file per concern:
//!
//! - `changes`: runtime changes (split, shift, rollback, reset, shadow,
//!   noise marks), history, revert and reload;
//! - `ramp`: starting, pausing, resuming and aborting ramps, and the list;
//! - `diffs`: the shadow diffs, one, a page, and the summary;
//! - `status`: status with traffic stats, and health and readiness;
//! - `metrics`: `/metrics` in Prometheus text;
//! - `explain`: explain against the live routing table;
//! - `body`: the JSON request body they all read from.

mod body;
mod changes;
mod diffs;
mod explain;
mod metrics;
mod ramp;
mod status;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::state::Shared;
use crate::state::layer::ControlError;
use body::Body;

pub(crate) use diffs::looks_like_id;

/// The token the admin API requires, if any.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub token: Option<String>,
}

/// Serves the admin API until the process ends. A client must send each
/// request head within `[listen].header_read_timeout` (the proxy
/// listener's, read at start), so partial heads cannot hold connections
/// open; nor can a connection that sends nothing at all.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, auth: AdminAuth) {
    let auth = Arc::new(auth);
    let header_read_timeout = shared.live.load().config().listen.header_read_timeout;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let auth = auth.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            // hyper's auto builder starts the HTTP/1 header timer only once
            // bytes came (it waits for them to tell HTTP/1 from HTTP/2): a
            // connection that sends nothing is closed after the same time.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let auth = auth.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &auth, req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(ADMIN_MARKER, http::HeaderValue::from_static("1"));
    r
}

/// Every admin answer carries this header, so the CLI can tell strangler's
/// admin API from anything else that answers on that address.
pub use strangler_api::ADMIN_MARKER;

/// The method a known admin path takes (the 405's `Allow`); None for a
/// path that is no endpoint. Mirrors the routing in `handle`.
fn allowed_methods(segs: &[&str]) -> Option<&'static str> {
    Some(match segs {
        ["healthz" | "readyz" | "metrics"]
        | ["api", "v1", "status" | "history" | "diffs" | "ramps"]
        | ["api", "v1", "diffs", _] => "GET",
        ["api", "v1", "reload" | "rollback" | "explain"]
        | ["api", "v1", "revert", _]
        | [
            "api",
            "v1",
            "routes",
            _,
            "shift" | "rollback" | "ramp" | "reset",
        ]
        | ["api", "v1", "routes", _, "ramp", _] => "POST",
        ["api", "v1", "routes", _, "split" | "shadow" | "compare"] => "PUT",
        _ => return None,
    })
}

fn error(status: u16, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"error": msg.to_string()}),
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

fn authorized(auth: &AdminAuth, req: &Request<Incoming>) -> bool {
    let Some(token) = &auth.token else {
        return true;
    };
    let Some(got) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let got = match got.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => "",
    };
    ct_eq(got.as_bytes(), token.as_bytes())
}

async fn handle(
    shared: &Arc<Shared>,
    auth: &AdminAuth,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, status::health()),
        (&Method::GET, "/readyz") => {
            return match status::ready(shared) {
                Ok(v) => reply(StatusCode::OK, v),
                Err(why) => error(503, why),
            };
        }
        _ => {}
    }
    if !authorized(auth, &req) {
        let mut r = error(
            401,
            format!(
                "missing or wrong admin token: send the proxy's ${} as a bearer token (the CLI sends $STRANGLER_ADMIN_TOKEN)",
                shared.live.load().config().admin.token_env
            ),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let if_match = match req.headers().get(header::IF_MATCH) {
        Some(v) => match v
            .to_str()
            .ok()
            .map(|s| s.trim().trim_matches('"'))
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(n) => Some(n),
            None => return error(400, "If-Match must be a version number"),
        },
        None => None,
    };
    let header_actor = req
        .headers()
        .get("x-strangler-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(400, format!("cannot read body: {e}")),
    };
    let body: Body = if body.is_empty() {
        Body::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(400, format!("invalid JSON body: {e}")),
        }
    };
    let actor = body
        .actor
        .clone()
        .or(header_actor)
        .unwrap_or_else(|| "admin-api".to_string());
    let reason = body.reason.clone().unwrap_or_default();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();

    let result: Result<Value, ControlError> = match (&method, segs.as_slice()) {
        (&Method::GET, ["metrics"]) => return metrics::metrics(shared),
        (&Method::GET, ["api", "v1", "status"]) => Ok(status::status(shared)),
        (&Method::GET, ["api", "v1", "history"]) => changes::history(shared, &query),
        (&Method::GET, ["api", "v1", "diffs"]) => diffs::list(shared, &query).await,
        (&Method::GET, ["api", "v1", "diffs", "summary"]) => diffs::summary(shared, &query).await,
        (&Method::GET, ["api", "v1", "diffs", id]) => diffs::get(shared, id).await,
        (&Method::POST, ["api", "v1", "reload"]) => changes::reload(shared, &actor).await,
        (&Method::POST, ["api", "v1", "revert", v]) => {
            changes::revert(shared, &actor, if_match, v).await
        }
        (&Method::POST, ["api", "v1", "rollback"]) => {
            changes::rollback_all(shared, &actor, &reason, if_match).await
        }
        (&Method::POST, ["api", "v1", "explain"]) => explain::explain(shared, &body),
        (&Method::PUT, ["api", "v1", "routes", name, "split"]) => match &body.weights {
            Some(w) => changes::set_split(shared, &actor, &reason, if_match, name, w.clone()).await,
            None => Err(ControlError::Invalid("missing \"weights\"".into())),
        },
        (&Method::POST, ["api", "v1", "routes", name, "shift"]) => {
            changes::shift(
                shared,
                &actor,
                &reason,
                if_match,
                name,
                body.percent,
                body.to.as_deref(),
            )
            .await
        }
        (&Method::POST, ["api", "v1", "routes", name, "rollback"]) => {
            changes::rollback(shared, &actor, &reason, if_match, name).await
        }
        (&Method::POST, ["api", "v1", "routes", name, "ramp"]) => {
            ramp::start(shared, &actor, &reason, if_match, name, &body).await
        }
        (&Method::POST, ["api", "v1", "routes", name, "ramp", verb]) => {
            ramp::control(shared, &actor, if_match, name, verb).await
        }
        (&Method::GET, ["api", "v1", "ramps"]) => Ok(ramp::list(shared)),
        (&Method::POST, ["api", "v1", "routes", name, "reset"]) => {
            changes::reset(shared, &actor, &reason, if_match, name).await
        }
        (&Method::PUT, ["api", "v1", "routes", name, "shadow"]) => {
            changes::set_shadow(
                shared,
                &actor,
                &reason,
                if_match,
                name,
                body.enabled,
                body.percent,
            )
            .await
        }
        (&Method::PUT, ["api", "v1", "routes", name, "compare"]) => {
            let add = body.ignore_fields_add.clone().unwrap_or_default();
            changes::mark_noise(shared, &actor, &reason, if_match, name, add).await
        }
        _ => {
            return match allowed_methods(&segs) {
                Some(allow) => {
                    let mut r = error(
                        405,
                        format!("{method} is not allowed on {path}: use {allow}"),
                    );
                    r.headers_mut()
                        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
                    r
                }
                None => error(404, format!("no such endpoint: {method} {path}")),
            };
        }
    };
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => error(e.status(), e),
    }
}
