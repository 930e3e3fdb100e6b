//! Ramps through the admin API: start one on a route (what the request
//! leaves out comes from the route's `ramp` in the file), pause, resume or
//! abort it, and list them with the gate figures of the running ones. The
//! engine that moves the steps is `control::ramp`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::control::api::body::Body;
use crate::control::api::changes::{or_default, route_change};
use crate::control::ramp as engine;
use crate::state::Shared;
use crate::state::layer::{self, ControlError};

/// `POST /api/v1/routes/{name}/ramp`.
pub(super) async fn start(
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
        o.split = Some(engine::split_for(&to, &default, first));
        o.ramp = Some(ramp);
        Ok(())
    })
    .await;
    if result.is_ok() {
        shared.notify(engine::event(
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
pub(super) async fn control(
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
    shared.notify(engine::event(
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
pub(super) fn list(shared: &Arc<Shared>) -> Value {
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
