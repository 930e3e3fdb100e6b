//! The admin API on `[listen].admin`: health, status with traffic stats,
//! runtime changes (split, shift, rollback, reset, shadow), history, revert,
//! reload and explain. JSON over HTTP with a bearer token compared in
//! constant time; without a token the API serves only on loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Value, json};
use strangler_rules::split::BUCKETS;
use tokio::net::TcpListener;

use crate::mirror::ShadowRuntime;
use crate::state::Shared;
use crate::state::layer::{self, ControlError, RouteOverride, ShadowOverride};
use strangler_shadow::summary::{Judge, RouteSummary};

/// The token the admin API requires, if any.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub token: Option<String>,
}

/// Serves the admin API until the process ends.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, auth: AdminAuth) {
    let auth = Arc::new(auth);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                let auth = auth.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &auth, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
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

#[derive(Debug, Default, Clone, Deserialize)]
struct GatesBody {
    #[serde(default)]
    max_error_rate: Option<f64>,
    #[serde(default)]
    max_error_ratio: Option<f64>,
    #[serde(default)]
    max_p99_ratio: Option<f64>,
    #[serde(default)]
    max_mismatch_rate: Option<f64>,
    #[serde(default)]
    min_requests: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct Body {
    #[serde(default)]
    steps: Option<Vec<f64>>,
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    gates: Option<GatesBody>,
    #[serde(default)]
    on_fail: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    weights: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    ignore_fields_add: Option<Vec<String>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
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
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, json!({"ok": true})),
        (&Method::GET, "/readyz") => {
            let ready = shared.store.is_some() || shared.versions.is_none();
            return if ready {
                reply(
                    StatusCode::OK,
                    json!({"ready": true, "version": shared.live.load().version}),
                )
            } else {
                error(503, "not ready")
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
        (&Method::GET, ["metrics"]) => return metrics(shared),
        (&Method::GET, ["api", "v1", "status"]) => Ok(status(shared)),
        (&Method::GET, ["api", "v1", "history"]) => history(shared, &query),
        (&Method::GET, ["api", "v1", "diffs"]) => diffs_list(shared, &query).await,
        (&Method::GET, ["api", "v1", "diffs", "summary"]) => diffs_summary(shared, &query).await,
        (&Method::GET, ["api", "v1", "diffs", id]) => diff_get(shared, id).await,
        (&Method::POST, ["api", "v1", "reload"]) => match shared.reload(&actor).await {
            Ok(v) => Ok(json!({"version": v})),
            Err(lines) => Err(ControlError::Invalid(lines.join("\n"))),
        },
        (&Method::POST, ["api", "v1", "revert", v]) => match v.parse::<u64>() {
            Ok(v) => shared.revert(&actor, v, if_match).await.map(version_json),
            Err(_) => Err(ControlError::Invalid(format!("invalid version \"{v}\""))),
        },
        (&Method::POST, ["api", "v1", "rollback"]) => {
            rollback_all(shared, &actor, &reason, if_match).await
        }
        (&Method::POST, ["api", "v1", "explain"]) => explain(shared, &body),
        (&Method::PUT, ["api", "v1", "routes", name, "split"]) => match &body.weights {
            Some(w) => set_split(shared, &actor, &reason, if_match, name, w.clone()).await,
            None => Err(ControlError::Invalid("missing \"weights\"".into())),
        },
        (&Method::POST, ["api", "v1", "routes", name, "shift"]) => {
            shift(
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
            let reason = ramp_note(shared, name, &or_default(&reason, "rollback"));
            route_change(shared, &actor, &reason, if_match, name, |_, o| {
                stop_ramp(o);
                o.rolled_back = true;
                o.split = None;
                Ok(())
            })
            .await
        }
        (&Method::POST, ["api", "v1", "routes", name, "ramp"]) => {
            start_ramp(shared, &actor, &reason, if_match, name, &body).await
        }
        (&Method::POST, ["api", "v1", "routes", name, "ramp", verb]) => {
            ramp_control(shared, &actor, if_match, name, verb).await
        }
        (&Method::GET, ["api", "v1", "ramps"]) => Ok(ramps(shared)),
        (&Method::POST, ["api", "v1", "routes", name, "reset"]) => {
            let reason = or_default(&reason, "reset to the file");
            route_change(shared, &actor, &reason, if_match, name, |_, o| {
                *o = RouteOverride::default();
                Ok(())
            })
            .await
        }
        (&Method::PUT, ["api", "v1", "routes", name, "shadow"]) => {
            set_shadow(
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
            if add.is_empty() || add.iter().any(|p| !(p.is_empty() || p.starts_with('/'))) {
                Err(ControlError::Invalid(
                    "ignore_fields_add must list JSON Pointers starting with /".into(),
                ))
            } else {
                let reason = or_default(&reason, &format!("mark as noise: {}", add.join(", ")));
                route_change(shared, &actor, &reason, if_match, name, |_, o| {
                    for p in add {
                        if !o.ignore_fields_add.contains(&p) {
                            o.ignore_fields_add.push(p);
                        }
                    }
                    Ok(())
                })
                .await
            }
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

fn or_default(reason: &str, default: &str) -> String {
    if reason.is_empty() {
        default.to_string()
    } else {
        reason.to_string()
    }
}

/// One route's change through `Shared::change_route`, as the API answers it.
async fn route_change(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
    edit: impl FnOnce(&strangler_rules::Config, &mut RouteOverride) -> Result<(), ControlError>,
) -> Result<Value, ControlError> {
    match shared
        .change_route(actor, reason, if_match, name, edit)
        .await?
    {
        Some(rec) => Ok(version_json(rec)),
        None => Ok(json!({
            "version": shared.live.load().version,
            "unchanged": true,
            "reason": "nothing to change",
            "route": name,
        })),
    }
}

fn version_json(rec: layer::VersionRecord) -> Value {
    json!({
        "version": rec.version, "time": rec.time, "actor": rec.actor, "reason": rec.reason,
        "route": rec.route, "change": rec.change,
    })
}

async fn set_split(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
    weights: BTreeMap<String, f64>,
) -> Result<Value, ControlError> {
    let reason = ramp_note(shared, name, reason);
    route_change(shared, actor, &reason, if_match, name, |config, o| {
        layer::validate_weights(config, &weights)?;
        stop_ramp(o);
        o.split = Some(weights);
        o.rolled_back = false;
        Ok(())
    })
    .await
}

/// A manual change stops the route's ramp first.
fn stop_ramp(o: &mut RouteOverride) {
    if let Some(r) = &mut o.ramp
        && (r.state == "running" || r.state == "paused")
    {
        r.state = "stopped".into();
        r.note = "stopped by a manual change".into();
    }
}

/// The reason, saying so when a manual change stops a ramp.
fn ramp_note(shared: &Arc<Shared>, name: &str, reason: &str) -> String {
    let ramping = shared
        .live
        .load()
        .layer
        .routes
        .get(name)
        .and_then(|o| o.ramp.as_ref())
        .is_some_and(|r| r.state == "running" || r.state == "paused");
    if ramping {
        shared.notify(crate::control::ramp::event(
            name, "stopped", None, None, reason, None,
        ));
        format!("{reason} (the route's ramp is stopped)")
    } else {
        reason.to_string()
    }
}

/// `POST /api/v1/routes/{name}/ramp`.
async fn start_ramp(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
    body: &Body,
) -> Result<Value, ControlError> {
    let live = shared.live.load_full();
    let config = live.config();
    let route = config
        .route(name)
        .ok_or_else(|| ControlError::UnknownRoute(name.to_string()))?;
    let default = config.upstream(config.default_upstream).name.clone();
    let file = route.ramp.as_ref();
    let to = match (&body.to, file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => config.upstream(f.to).name.clone(),
        (None, None) => config
            .shift_target(route)
            .map(|id| config.upstream(id).name.clone())
            .ok_or_else(|| {
                ControlError::Invalid(format!(
                    "route \"{name}\" has no single upstream besides the default; give \"to\""
                ))
            })?,
    };
    if config.upstream_id(&to).is_none() || to == default {
        return Err(ControlError::Invalid(format!(
            "\"{to}\" is not an upstream a ramp can move traffic to"
        )));
    }
    let steps: Vec<f64> = match (&body.steps, file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => f.steps_bp.iter().map(|b| f64::from(*b) / 100.0).collect(),
        (None, None) => return Err(ControlError::Invalid("missing \"steps\"".into())),
    };
    if steps.is_empty()
        || steps.windows(2).any(|w| w[1] <= w[0])
        || steps
            .iter()
            .any(|s| layer::percent_bp(*s).is_err() || *s <= 0.0)
    {
        return Err(ControlError::Invalid(
            "steps must be rising percentages above 0, e.g. [1, 5, 25, 50, 100]".into(),
        ));
    }
    let every = match (&body.every, file) {
        (Some(e), _) => strangler_rules::config::parse_duration(e)
            .map_err(|e| ControlError::Invalid(format!("every: {e}")))?,
        (None, Some(f)) => f.every,
        (None, None) => return Err(ControlError::Invalid("missing \"every\"".into())),
    };
    if every < std::time::Duration::from_secs(1) {
        return Err(ControlError::Invalid("every must be at least 1s".into()));
    }
    let g = body.gates.clone().unwrap_or_default();
    let gates = layer::Gates {
        max_error_rate: g
            .max_error_rate
            .or(file.map(|f| f.max_error_rate))
            .unwrap_or(0.01),
        max_error_ratio: g
            .max_error_ratio
            .or(file.map(|f| f.max_error_ratio))
            .unwrap_or(2.0),
        max_p99_ratio: g
            .max_p99_ratio
            .or(file.map(|f| f.max_p99_ratio))
            .unwrap_or(1.5),
        max_mismatch_rate: g.max_mismatch_rate.or(file.map(|f| f.max_mismatch_rate)),
        min_requests: g
            .min_requests
            .or(file.map(|f| f.min_requests))
            .unwrap_or(200),
    };
    let on_fail = body.on_fail.clone().unwrap_or_else(|| "rollback".into());
    if on_fail != "rollback" && on_fail != "pause" {
        return Err(ControlError::Invalid(format!(
            "on_fail \"{on_fail}\": give rollback or pause"
        )));
    }
    let reason = or_default(
        reason,
        &format!(
            "ramp started: {} to {to} in steps {:?} every {}",
            name,
            steps,
            humantime_secs(every)
        ),
    );
    let first = steps[0];
    let ramp = layer::Ramp {
        to: to.clone(),
        steps,
        every_ms: every.as_millis() as u64,
        gates,
        on_fail,
        step: 0,
        step_started_ms: strangler_shadow::time::now_ms(),
        extensions: 0,
        state: "running".into(),
        note: String::new(),
    };
    let (event_reason, event_route) = (reason.clone(), name.to_string());
    let result = route_change(shared, actor, &reason, if_match, name, move |_, o| {
        o.rolled_back = false;
        o.split = Some(crate::control::ramp::split_for(&to, &default, first));
        o.ramp = Some(ramp);
        Ok(())
    })
    .await;
    if result.is_ok() {
        shared.notify(crate::control::ramp::event(
            &event_route,
            "start",
            None,
            Some(first),
            &event_reason,
            None,
        ));
    }
    result
}

fn humantime_secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `POST /api/v1/routes/{name}/ramp/(pause|resume|abort)`.
async fn ramp_control(
    shared: &Arc<Shared>,
    actor: &str,
    if_match: Option<u64>,
    name: &str,
    verb: &str,
) -> Result<Value, ControlError> {
    let current = shared
        .live
        .load()
        .layer
        .routes
        .get(name)
        .and_then(|o| o.ramp.clone())
        .ok_or_else(|| ControlError::NotFound(format!("route \"{name}\" has no ramp")))?;
    let (from, to) = match verb {
        "pause" => ("running", "paused"),
        "resume" => ("paused", "running"),
        "abort" => ("", "rolled_back"),
        other => {
            return Err(ControlError::NotFound(format!(
                "no such ramp action \"{other}\": pause, resume or abort"
            )));
        }
    };
    let live_states = ["running", "paused"];
    if (from.is_empty() && !live_states.contains(&current.state.as_str()))
        || (!from.is_empty() && current.state != from)
    {
        return Err(ControlError::Invalid(format!(
            "the ramp of route \"{name}\" is {}, it cannot {verb}",
            current.state
        )));
    }
    let reason = match verb {
        "pause" => "ramp paused",
        "resume" => "ramp resumed",
        _ => "ramp aborted: rolled back to the default upstream",
    };
    let to = to.to_string();
    let share = current.steps.get(current.step).copied();
    let kind = match verb {
        "pause" => "pause",
        "resume" => "resume",
        _ => "abort",
    };
    shared.notify(crate::control::ramp::event(
        name,
        kind,
        share,
        if kind == "abort" { Some(0.0) } else { share },
        reason,
        Some(&current),
    ));
    route_change(shared, actor, reason, if_match, name, move |_, o| {
        if to == "rolled_back" {
            o.rolled_back = true;
            o.split = None;
        }
        if let Some(r) = &mut o.ramp {
            r.state = to.clone();
            if to == "running" {
                // A resumed step gets a whole new window.
                r.step_started_ms = strangler_shadow::time::now_ms();
                r.extensions = 0;
            }
            r.note = format!("{to} by hand");
        }
        Ok(())
    })
    .await
}

/// `GET /api/v1/ramps`.
fn ramps(shared: &Arc<Shared>) -> Value {
    let live = shared.live.load_full();
    let figures = shared
        .ramp_figures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let list: Vec<Value> = live
        .layer
        .routes
        .iter()
        .filter_map(|(name, o)| {
            let r = o.ramp.as_ref()?;
            Some(json!({
                "gates_now": (r.state == "running").then(|| figures.get(name).cloned()).flatten(),
                "route": name,
                "to": r.to,
                "steps": r.steps,
                "step": r.step + 1,
                "share": r.steps.get(r.step),
                "state": r.state,
                "every_ms": r.every_ms,
                "step_started": strangler_shadow::time::rfc3339_ms(r.step_started_ms),
                "extensions": r.extensions,
                "gates": r.gates,
                "on_fail": r.on_fail,
                "note": r.note,
            }))
        })
        .collect();
    json!({"ramps": list})
}

async fn shift(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
    percent: Option<f64>,
    to: Option<&str>,
) -> Result<Value, ControlError> {
    let live = shared.live.load_full();
    let config = live.config();
    let route = config
        .route(name)
        .ok_or_else(|| ControlError::UnknownRoute(name.to_string()))?;
    let Some(percent) = percent else {
        return Err(ControlError::Invalid("missing \"percent\"".into()));
    };
    let bp = layer::percent_bp(percent)?;
    let default = config.default_upstream;
    let target = match to {
        Some(t) => {
            let id = layer::upstream_id(config, t)?;
            if id == default {
                return Err(ControlError::Invalid(format!(
                    "\"{t}\" is the default upstream; shift moves traffic to a new service (use rollback to send everything to {t})"
                )));
            }
            id
        }
        None => config.shift_target(route).ok_or_else(|| {
            ControlError::Invalid(format!(
                "route \"{name}\" has no single upstream besides the default; give --to UPSTREAM"
            ))
        })?,
    };
    let mut weights = BTreeMap::new();
    weights.insert(config.upstream(target).name.clone(), f64::from(bp) / 100.0);
    weights.insert(
        config.upstream(default).name.clone(),
        f64::from(BUCKETS - bp) / 100.0,
    );
    let reason = if reason.is_empty() {
        format!(
            "shift {}% to {}",
            f64::from(bp) / 100.0,
            config.upstream(target).name
        )
    } else {
        reason.to_string()
    };
    set_split(shared, actor, &reason, if_match, name, weights).await
}

async fn rollback_all(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
) -> Result<Value, ControlError> {
    let reason = if reason.is_empty() {
        "rollback of every route"
    } else {
        reason
    };
    shared
        .change(actor, reason, if_match, |config, layer| {
            let before = layer::layer_json(layer);
            for r in &config.routes {
                let o = layer.routes.entry(r.name.clone()).or_default();
                stop_ramp(o);
                o.rolled_back = true;
                o.split = None;
            }
            Ok((None, before, layer::layer_json(layer)))
        })
        .await
        .map(version_json)
}

async fn set_shadow(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
    enabled: Option<bool>,
    percent: Option<f64>,
) -> Result<Value, ControlError> {
    let Some(enabled) = enabled else {
        return Err(ControlError::Invalid("missing \"enabled\"".into()));
    };
    if let Some(p) = percent {
        layer::percent_bp(p)?;
    }
    let live = shared.live.load_full();
    let route = live.config().route(name);
    if enabled && route.is_some_and(|r| r.shadow.is_none()) {
        return Err(ControlError::Invalid(format!(
            "route \"{name}\" has no shadow upstream in the config; add shadow = {{ upstream = \"...\" }}"
        )));
    }
    // Without a percent, the one in force stays (an override's, else the file's).
    let percent = percent.or_else(|| {
        live.layer
            .routes
            .get(name)
            .and_then(|o| o.shadow.as_ref())
            .and_then(|s| s.percent)
    });
    let shown = percent.or_else(|| {
        route
            .and_then(|r| r.shadow.as_ref())
            .map(|s| f64::from(s.percent_bp) / 100.0)
    });
    let reason = or_default(
        reason,
        &match (enabled, shown) {
            (true, Some(p)) => format!("shadow on ({p}%)"),
            (true, None) => "shadow on".to_string(),
            (false, _) => "shadow off".to_string(),
        },
    );
    route_change(shared, actor, &reason, if_match, name, move |_, o| {
        o.shadow = Some(ShadowOverride { enabled, percent });
        Ok(())
    })
    .await
}

fn history(shared: &Arc<Shared>, query: &str) -> Result<Value, ControlError> {
    let mut route = None;
    let mut limit = 1000usize;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "route" => route = Some(strangler_rules::matcher::form_decode(v).into_owned()),
            "limit" => {
                limit = v.parse().map_err(|_| {
                    ControlError::Invalid(format!("invalid limit \"{v}\": give a number"))
                })?
            }
            _ => {}
        }
    }
    let records = match &shared.versions {
        Some(v) => v.history(route.as_deref(), limit)?,
        None => Vec::new(),
    };
    // A route neither configured nor ever changed: a typo, said as such
    // (as diffs and every route action do).
    if let Some(r) = &route
        && records.is_empty()
        && !shared
            .live
            .load()
            .config()
            .routes
            .iter()
            .any(|x| &x.name == r)
    {
        return Err(ControlError::NotFound(format!("no route named \"{r}\"")));
    }
    Ok(json!({"versions": records.into_iter().map(version_json).collect::<Vec<_>>()}))
}

/// The diff pipeline, or why there is none.
fn shadow_runtime(shared: &Arc<Shared>) -> Result<Arc<ShadowRuntime>, ControlError> {
    shared
        .shadow
        .clone()
        .ok_or_else(|| ControlError::NotFound("this proxy runs without a diff store".into()))
}

/// Runs a blocking store read off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Store(e.to_string()))?
}

/// `GET /api/v1/diffs?route=&limit=&before=`: newest first.
async fn diffs_list(shared: &Arc<Shared>, query: &str) -> Result<Value, ControlError> {
    let rt = shadow_runtime(shared)?;
    let (mut route, mut limit, mut before, mut all) = (None, 50usize, None, false);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = strangler_rules::matcher::form_decode(v).into_owned();
        match k {
            "route" if !v.is_empty() => route = Some(v),
            "before" if !v.is_empty() => before = Some(v),
            "all" => all = matches!(v.as_str(), "" | "1" | "true" | "yes"),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_DIFFS_PAGE).contains(n))
                    .ok_or_else(|| {
                        ControlError::Invalid(format!(
                            "invalid limit \"{v}\": give a number from 1 to {MAX_DIFFS_PAGE}"
                        ))
                    })?
            }
            _ => {}
        }
    }
    if let Some(r) = &route {
        known_route(shared, &rt, r)?;
    }
    if let Some(b) = &before
        && !looks_like_id(b)
    {
        return Err(ControlError::Invalid(format!(
            "invalid before \"{b}\": give a diff id"
        )));
    }
    let judge = (!all).then(|| {
        let (summary, rules) = shared.shadow_summaries(&rt);
        Judge::new(&summary, rules)
    });
    let records = blocking(move || {
        let mut out = Vec::new();
        let mut before = before;
        // Records with only noise or ignored differences are skipped (the
        // page is filled from older ones), unless all=true.
        loop {
            let page = rt
                .pipeline
                .store
                .list(route.as_deref(), limit, before.as_deref())
                .map_err(|e| ControlError::Store(e.to_string()))?;
            let last = page.len() < limit;
            before = page.last().map(|r| r.id.clone());
            for mut rec in page {
                if let Some(j) = &judge {
                    let before = rec.differences.len();
                    rec.differences
                        .retain(|d| j.is_real(&rec.route, d.kind.as_str(), &d.field));
                    rec.hidden = before - rec.differences.len();
                    rec.differences_total = rec.differences_total.saturating_sub(rec.hidden);
                    let nothing_left = rec.differences.is_empty()
                        && rec.outcome == strangler_shadow::Outcome::Mismatch;
                    if nothing_left {
                        continue;
                    }
                }
                out.push(rec);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if last || before.is_none() {
                return Ok(out);
            }
        }
    })
    .await?;
    Ok(json!({"diffs": records}))
}

/// A route the config has, or one with shadow counts (a route removed
/// from the file keeps its diffs).
fn known_route(shared: &Arc<Shared>, rt: &ShadowRuntime, name: &str) -> Result<(), ControlError> {
    let in_config = shared.live.load().config().route(name).is_some();
    if in_config || rt.counters().snapshot().contains_key(name) {
        Ok(())
    } else {
        Err(ControlError::UnknownRoute(name.to_string()))
    }
}

/// A diff id: a UUID in its usual text form.
pub fn looks_like_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The largest page of diffs one request returns.
const MAX_DIFFS_PAGE: usize = 1000;

/// `GET /api/v1/diffs/{id}`.
async fn diff_get(shared: &Arc<Shared>, id: &str) -> Result<Value, ControlError> {
    let rt = shadow_runtime(shared)?;
    if !looks_like_id(id) {
        return Err(ControlError::Invalid(format!(
            "invalid diff id \"{id}\": ids look like 01a218b9-7c93-73d3-9f6f-0803d437f98b"
        )));
    }
    let id = id.to_string();
    let found = {
        let id = id.clone();
        blocking(move || {
            rt.pipeline
                .store
                .get(&id)
                .map_err(|e| ControlError::Store(e.to_string()))
        })
        .await?
    };
    match found {
        Some(rec) => serde_json::to_value(rec).map_err(|e| ControlError::Store(e.to_string())),
        None => Err(ControlError::NotFound(format!("no diff with id \"{id}\""))),
    }
}

/// `GET /api/v1/diffs/summary`: per route, outcome counts and differing
/// fields with their rates.
async fn diffs_summary(shared: &Arc<Shared>, query: &str) -> Result<Value, ControlError> {
    let rt = shadow_runtime(shared)?;
    let only = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "route")
        .map(|(_, v)| strangler_rules::matcher::form_decode(v).into_owned())
        .filter(|v| !v.is_empty());
    if let Some(r) = &only {
        known_route(shared, &rt, r)?;
    }
    let (mut summary, _) = shared.shadow_summaries(&rt);
    if let Some(r) = &only {
        summary.retain(|s| &s.route == r);
    }
    Ok(json!({"routes": summary}))
}

/// `GET /api/v1/status`.
pub fn status(shared: &Arc<Shared>) -> Value {
    let live = shared.live.load_full();
    let config = live.config();
    let shadow_summaries: BTreeMap<String, RouteSummary> = shared
        .shadow
        .as_ref()
        .map(|rt| {
            shared
                .shadow_summaries(rt)
                .0
                .into_iter()
                .map(|s| (s.route.clone(), s))
                .collect()
        })
        .unwrap_or_default();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let split = live.table.split(i);
            let overridden = live.layer.routes.get(&r.name);
            let shadow_override = overridden.and_then(|o| o.shadow.as_ref());
            let shadow = r.shadow.as_ref().map(|s| {
                let file_percent = f64::from(s.percent_bp) / 100.0;
                json!({
                    "enabled": shadow_override.is_none_or(|o| o.enabled),
                    "upstream": config.upstream(s.upstream).name,
                    "percent": shadow_override.and_then(|o| o.percent).unwrap_or(file_percent),
                    "override": shadow_override.is_some(),
                    "file": {"enabled": true, "percent": file_percent},
                })
            });
            let mut upstreams = serde_json::Map::new();
            let mut requests = 0;
            for (u, cell) in config.upstreams.iter().zip(&live.route(i).cells) {
                let snap = cell.snapshot();
                requests += snap.requests;
                if split.weight_of(
                    config
                        .upstream_id(&u.name)
                        .unwrap_or(strangler_rules::UpstreamId(0)),
                ) > 0
                    || snap.requests > 0
                {
                    upstreams.insert(u.name.clone(), json!(snap));
                }
            }
            json!({
                "name": r.name,
                "match": r.matcher.describe().join(", "),
                "split": layer::split_json(config, split),
                "file_split": layer::split_json(config, &r.split),
                "override": overridden.is_some_and(|o| o.split.is_some() || o.rolled_back),
                "rolled_back": overridden.is_some_and(|o| o.rolled_back),
                "ramp": overridden.and_then(|o| o.ramp.as_ref()).map(|r| json!({
                    "state": r.state,
                    "to": r.to,
                    "step": r.step + 1,
                    "steps": r.steps.len(),
                    "share": r.steps.get(r.step),
                    "note": r.note,
                })),
                "sticky": r.sticky.as_ref().map(|s| s.to_string()),
                "shadow": shadow,
                "requests": requests,
                "mismatch_rate": shadow_summaries.get(&r.name).map_or(0.0, |c| c.mismatch_rate),
                "raw_mismatch_rate": shadow_summaries.get(&r.name).map_or(0.0, |c| c.raw_mismatch_rate),
                "shadow_compared": shadow_summaries.get(&r.name).map_or(0, |c| c.compared),
                "upstreams": upstreams,
            })
        })
        .collect();
    let mut default_upstreams = serde_json::Map::new();
    for (u, cell) in config.upstreams.iter().zip(&live.routes[0].cells) {
        let snap = cell.snapshot();
        if snap.requests > 0 {
            default_upstreams.insert(u.name.clone(), json!(snap));
        }
    }
    json!({
        "version": live.version,
        "proxy": shared.proxy_addr.get(),
        "default_upstream": config.upstream(config.default_upstream).name,
        "routes": routes,
        "unmatched": {"upstreams": default_upstreams},
    })
}

fn explain(shared: &Arc<Shared>, body: &Body) -> Result<Value, ControlError> {
    let method = body.method.clone().unwrap_or_else(|| "GET".into());
    let url = body
        .url
        .clone()
        .ok_or_else(|| ControlError::Invalid("missing \"url\"".into()))?;
    let headers: Vec<String> = body
        .headers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let req = strangler_rules::explain::build_request(&method, &url, &headers)
        .map_err(ControlError::Invalid)?;
    let live = shared.live.load_full();
    let e = strangler_rules::explain(&live.table, &req);
    serde_json::to_value(e).map_err(|e| ControlError::Store(e.to_string()))
}

/// `GET /metrics`: Prometheus text format, rendered from the same lock-free
/// counters the proxy keeps anyway (nothing extra on the hot path).
fn metrics(shared: &Arc<Shared>) -> Response<Full<Bytes>> {
    use std::fmt::Write;
    const BOUNDS: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let live = shared.live.load_full();
    let config = live.config();
    let mut out = String::new();
    metric_head(
        &mut out,
        "strangler_config_version",
        "gauge",
        "Version of the runtime layer.",
    );
    let _ = writeln!(out, "strangler_config_version {}", live.version);
    let names: Vec<&str> = std::iter::once(crate::state::stats::DEFAULT_ROUTE)
        .chain(config.routes.iter().map(|r| r.name.as_str()))
        .collect();
    metric_head(
        &mut out,
        "strangler_requests_total",
        "counter",
        "Requests by route, upstream and status class.",
    );
    for (route, cells) in names.iter().zip(live.routes.iter().map(|r| &r.cells)) {
        for (u, cell) in config.upstreams.iter().zip(cells) {
            for (class, n) in cell.by_class() {
                let _ = writeln!(
                    out,
                    "strangler_requests_total{{route=\"{route}\",upstream=\"{}\",status=\"{class}\"}} {n}",
                    u.name
                );
            }
        }
    }
    metric_head(
        &mut out,
        "strangler_request_duration_seconds",
        "histogram",
        "Time to response headers by route and upstream.",
    );
    for (route, cells) in names.iter().zip(live.routes.iter().map(|r| &r.cells)) {
        for (u, cell) in config.upstreams.iter().zip(cells) {
            let (cumulative, sum, count) = cell.histogram(&BOUNDS);
            if count == 0 {
                continue;
            }
            let labels = format!("route=\"{route}\",upstream=\"{}\"", u.name);
            for (le, n) in BOUNDS.iter().zip(&cumulative) {
                let _ = writeln!(
                    out,
                    "strangler_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "strangler_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "strangler_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "strangler_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
    }
    metric_head(
        &mut out,
        "strangler_route_weight_percent",
        "gauge",
        "Live weight per route and upstream.",
    );
    for (i, r) in config.routes.iter().enumerate() {
        for (id, bp) in live.table.split(i).weights() {
            let _ = writeln!(
                out,
                "strangler_route_weight_percent{{route=\"{}\",upstream=\"{}\"}} {}",
                r.name,
                config.upstream(id).name,
                f64::from(bp) / 100.0
            );
        }
    }
    metric_head(
        &mut out,
        "strangler_upstream_instance_up",
        "gauge",
        "Whether an instance takes traffic (healthy and not ejected).",
    );
    for pool in &live.pools {
        for (i, inst) in pool.instances.iter().enumerate() {
            let _ = writeln!(
                out,
                "strangler_upstream_instance_up{{upstream=\"{}\",instance=\"{}\"}} {}",
                pool.name,
                inst.authority,
                u8::from(pool.is_available(i))
            );
        }
    }
    if let Some(rt) = &shared.shadow {
        shadow_metrics(&mut out, &rt.counters().snapshot());
    }
    if let Some(n) = shared.notifier.get() {
        metric_head(
            &mut out,
            "strangler_notify_total",
            "counter",
            "Ramp webhook events by result.",
        );
        for (result, count) in n.counts() {
            let _ = writeln!(out, "strangler_notify_total{{result=\"{result}\"}} {count}");
        }
    }
    let caches = shared.caches.all();
    if !caches.is_empty() {
        metric_head(
            &mut out,
            "strangler_cache_total",
            "counter",
            "Cache lookups by route and result.",
        );
        for (route, c) in caches {
            for (result, n) in [("hit", &c.hits), ("miss", &c.misses)] {
                let _ = writeln!(
                    out,
                    "strangler_cache_total{{route=\"{route}\",result=\"{result}\"}} {}",
                    n.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    }
    let limits = shared.limits.all();
    if !limits.is_empty() {
        metric_head(
            &mut out,
            "strangler_rate_limited_total",
            "counter",
            "Requests refused with 429 by a route's rate limit.",
        );
        for (route, l) in limits {
            let _ = writeln!(
                out,
                "strangler_rate_limited_total{{route=\"{route}\"}} {}",
                l.limited.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// A metric's `# HELP` and `# TYPE` lines.
fn metric_head(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `strangler_shadow_total{route, outcome}` and the histogram of shadow
/// latency minus primary latency.
fn shadow_metrics(
    out: &mut String,
    counts: &BTreeMap<String, strangler_shadow::counters::CountSnapshot>,
) {
    use std::fmt::Write;
    use strangler_shadow::Outcome;
    use strangler_shadow::counters::DELTA_BUCKETS_MS;
    metric_head(
        out,
        "strangler_shadow_total",
        "counter",
        "Shadowed requests by route and outcome.",
    );
    for (route, c) in counts {
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "strangler_shadow_total{{route=\"{route}\",outcome=\"{}\"}} {}",
                o.as_str(),
                c.get(o)
            );
        }
    }
    metric_head(
        out,
        "strangler_shadow_latency_delta_seconds",
        "histogram",
        "Shadow latency minus primary latency, to response headers.",
    );
    for (route, c) in counts {
        let count: u64 = c.delta.iter().sum();
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (le, n) in DELTA_BUCKETS_MS.iter().zip(&c.delta) {
            cumulative += n;
            let _ = writeln!(
                out,
                "strangler_shadow_latency_delta_seconds_bucket{{route=\"{route}\",le=\"{}\"}} {cumulative}",
                le / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "strangler_shadow_latency_delta_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "strangler_shadow_latency_delta_seconds_sum{{route=\"{route}\"}} {}",
            c.delta_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "strangler_shadow_latency_delta_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
}
