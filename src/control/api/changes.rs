//! Runtime changes through the admin API: a route's split, shift,
//! rollback (one route or all), reset, shadow on/off and noise marks; the
//! history of versions, revert and reload. Each change is a version of the
//! runtime layer; a manual change stops the route's ramp.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use strangler_rules::split::BUCKETS;

use crate::control::ramp as engine;
use crate::state::Shared;
use crate::state::layer::{self, ControlError, RouteOverride, ShadowOverride};

pub(super) fn or_default(reason: &str, default: &str) -> String {
    if reason.is_empty() {
        default.to_string()
    } else {
        reason.to_string()
    }
}

/// One route's change through `Shared::change_route`, as the API answers it.
pub(super) async fn route_change(
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

/// `PUT /api/v1/routes/{name}/split`.
pub(super) async fn set_split(
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

/// `POST /api/v1/routes/{name}/rollback`.
pub(super) async fn rollback(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
) -> Result<Value, ControlError> {
    let reason = ramp_note(shared, name, &or_default(reason, "rollback"));
    route_change(shared, actor, &reason, if_match, name, |_, o| {
        stop_ramp(o);
        o.rolled_back = true;
        o.split = None;
        Ok(())
    })
    .await
}

/// `POST /api/v1/routes/{name}/reset`: the file applies again.
pub(super) async fn reset(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
) -> Result<Value, ControlError> {
    let reason = or_default(reason, "reset to the file");
    route_change(shared, actor, &reason, if_match, name, |_, o| {
        *o = RouteOverride::default();
        Ok(())
    })
    .await
}

/// `PUT /api/v1/routes/{name}/compare`: more JSON Pointers to ignore.
pub(super) async fn mark_noise(
    shared: &Arc<Shared>,
    actor: &str,
    reason: &str,
    if_match: Option<u64>,
    name: &str,
    add: Vec<String>,
) -> Result<Value, ControlError> {
    if add.is_empty() || add.iter().any(|p| !(p.is_empty() || p.starts_with('/'))) {
        return Err(ControlError::Invalid(
            "ignore_fields_add must list JSON Pointers starting with /".into(),
        ));
    }
    let reason = or_default(reason, &format!("mark as noise: {}", add.join(", ")));
    route_change(shared, actor, &reason, if_match, name, |_, o| {
        for p in add {
            if !o.ignore_fields_add.contains(&p) {
                o.ignore_fields_add.push(p);
            }
        }
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
        shared.notify(engine::event(name, "stopped", None, None, reason, None));
        format!("{reason} (the route's ramp is stopped)")
    } else {
        reason.to_string()
    }
}

/// `POST /api/v1/routes/{name}/shift`.
pub(super) async fn shift(
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

/// `POST /api/v1/rollback`: every route.
pub(super) async fn rollback_all(
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

/// `PUT /api/v1/routes/{name}/shadow`.
pub(super) async fn set_shadow(
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

/// `GET /api/v1/history?route=&limit=`.
pub(super) fn history(shared: &Arc<Shared>, query: &str) -> Result<Value, ControlError> {
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

/// `POST /api/v1/revert/{version}`.
pub(super) async fn revert(
    shared: &Arc<Shared>,
    actor: &str,
    if_match: Option<u64>,
    version: &str,
) -> Result<Value, ControlError> {
    match version.parse::<u64>() {
        Ok(v) => shared.revert(actor, v, if_match).await.map(version_json),
        Err(_) => Err(ControlError::Invalid(format!(
            "invalid version \"{version}\""
        ))),
    }
}

/// `POST /api/v1/reload`: the config file again.
pub(super) async fn reload(shared: &Arc<Shared>, actor: &str) -> Result<Value, ControlError> {
    match shared.reload(actor).await {
        Ok(v) => Ok(json!({"version": v})),
        Err(lines) => Err(ControlError::Invalid(lines.join("\n"))),
    }
}
