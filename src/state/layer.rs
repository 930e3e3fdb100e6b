//! The runtime layer: per-route overrides made while running (split, shadow,
//! extra ignore fields, ramps). Every change and every reload is a version
//! `{version, time, actor, reason, route, change}` with the whole layer
//! after it, so `revert V` can restore it; versions are kept by a
//! `state::versions::VersionStore` (sled's), which makes a change durable
//! before it is acknowledged, so it survives `kill -9`. The live state is the
//! file's config with this layer on top, rebuilt off the hot path and
//! swapped atomically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strangler_rules::config::percent_to_bp;
use strangler_rules::split::{BUCKETS, fmt_bp};
use strangler_rules::{Config, Split, UpstreamId};
use strangler_shadow::time::{now_ms, rfc3339};

/// Overrides of one route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteOverride {
    /// Rolled back: everything to the default upstream, whatever the
    /// default upstream is after later reloads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    /// Percent by upstream name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowOverride>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_fields_add: Vec<String>,
    /// A progressive rollout in progress (or ended) on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Ramp>,
}

/// A ramp: the route's share to `to` walks through `steps`, each held for
/// `every_ms` while the gates hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ramp {
    pub to: String,
    /// Percent to `to` at each step.
    pub steps: Vec<f64>,
    pub every_ms: u64,
    pub gates: Gates,
    /// `rollback` or `pause`.
    pub on_fail: String,
    /// The step in force (index into `steps`).
    pub step: usize,
    /// When the step began (ms since the epoch): its window.
    pub step_started_ms: u64,
    /// Times the window was extended for lack of requests.
    #[serde(default)]
    pub extensions: u32,
    /// `running`, `paused`, `done`, `rolled_back` or `stopped`.
    pub state: String,
    /// Why it is where it is: the last gate figures or the failure.
    #[serde(default)]
    pub note: String,
}

/// What must hold for a ramp to take its next step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Largest error rate (0..1) of the new upstream.
    pub max_error_rate: f64,
    /// ...or at most this many times the default upstream's, when higher.
    pub max_error_ratio: f64,
    /// The new upstream's p99 at most this many times the default's.
    pub max_p99_ratio: f64,
    /// The route's real shadow mismatch rate (0..1), when shadowing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mismatch_rate: Option<f64>,
    /// Requests the new side must see in a window.
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowOverride {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// Every route's overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeLayer {
    #[serde(default)]
    pub routes: BTreeMap<String, RouteOverride>,
}

/// One version of the runtime layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub time: String,
    pub actor: String,
    pub reason: String,
    pub route: Option<String>,
    pub change: Change,
    /// The whole layer right after this version (not shown in history).
    #[serde(default)]
    pub layer: RuntimeLayer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub before: Value,
    pub after: Value,
}

/// Why a control operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown route \"{0}\"")]
    UnknownRoute(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the state moved on: current version is {current}, If-Match asked for {asked}")]
    Conflict { current: u64, asked: u64 },
    #[error("unknown version {0}")]
    UnknownVersion(u64),
    #[error("{0}")]
    NotFound(String),
    #[error("store error: {0}")]
    Store(String),
}

impl ControlError {
    pub fn status(&self) -> u16 {
        match self {
            ControlError::UnknownRoute(_)
            | ControlError::UnknownVersion(_)
            | ControlError::NotFound(_) => 404,
            ControlError::Invalid(_) => 400,
            ControlError::Conflict { .. } => 409,
            ControlError::Store(_) => 500,
        }
    }
}

/// The upstream named `name`, or an error that lists the known ones.
pub fn upstream_id(config: &Config, name: &str) -> Result<UpstreamId, ControlError> {
    config.upstream_id(name).ok_or_else(|| {
        let known: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        ControlError::Invalid(format!(
            "unknown upstream \"{name}\" (known: {})",
            known.join(", ")
        ))
    })
}

/// Checks a weights map against `config` and turns it into basis points.
pub fn validate_weights(
    config: &Config,
    weights: &BTreeMap<String, f64>,
) -> Result<Vec<(UpstreamId, u16)>, ControlError> {
    if weights.is_empty() {
        return Err(ControlError::Invalid("weights are empty".into()));
    }
    let mut out = Vec::new();
    let mut total: u32 = 0;
    for (name, &w) in weights {
        let id = upstream_id(config, name)?;
        let bp = percent_to_bp(w).ok_or_else(|| {
            ControlError::Invalid(format!(
                "weight {w} for \"{name}\" is not a percentage between 0 and 100 with at most two decimals"
            ))
        })?;
        total += u32::from(bp);
        out.push((id, bp));
    }
    if total != u32::from(BUCKETS) {
        return Err(ControlError::Invalid(format!(
            "weights sum to {}, they must sum to 100",
            fmt_bp(total.min(u32::from(u16::MAX)) as u16)
        )));
    }
    Ok(out)
}

/// A percentage 0..100 with at most two decimals, as basis points.
pub fn percent_bp(p: f64) -> Result<u16, ControlError> {
    percent_to_bp(p).ok_or_else(|| {
        ControlError::Invalid(format!(
            "percent {p} is not between 0 and 100 with at most two decimals"
        ))
    })
}

/// The live splits: the file's, with valid overrides on top.
pub fn live_splits(config: &Config, layer: &RuntimeLayer) -> Vec<Split> {
    config
        .routes
        .iter()
        .map(|r| {
            let o = layer.routes.get(&r.name);
            if o.is_some_and(|o| o.rolled_back) {
                return Split::single(config.default_upstream, config.default_upstream);
            }
            // Overrides are checked against the config whenever either
            // changes (see `prune`), so an invalid one never gets here.
            o.and_then(|o| o.split.as_ref())
                .and_then(|w| validate_weights(config, w).ok())
                .map(|w| Split::new(&w, config.default_upstream))
                .unwrap_or_else(|| r.split.clone())
        })
        .collect()
}

/// A split as a percent map by upstream name.
pub fn split_json(config: &Config, split: &Split) -> BTreeMap<String, f64> {
    split
        .weights()
        .map(|(id, bp)| (config.upstream(id).name.clone(), f64::from(bp) / 100.0))
        .collect()
}

/// Makes the layer fit `config`: drops the overrides of routes that no
/// longer exist, split overrides that name upstreams the config no longer
/// has, and shadow overrides of routes without a shadow. Returns a line per
/// dropped thing, for the version's reason.
pub fn prune(config: &Config, layer: &mut RuntimeLayer) -> Vec<String> {
    let mut dropped = Vec::new();
    layer.routes.retain(|name, o| {
        let Some(route) = config.route(name) else {
            dropped.push(format!("{name} (route removed)"));
            return false;
        };
        if let Some(w) = &o.split
            && let Err(e) = validate_weights(config, w)
        {
            dropped.push(format!("{name} split ({e})"));
            o.split = None;
        }
        if o.shadow.is_some() && route.shadow.is_none() {
            dropped.push(format!("{name} shadow (no shadow in the config)"));
            o.shadow = None;
        }
        if let Some(r) = &o.ramp
            && config.upstream_id(&r.to).is_none()
        {
            dropped.push(format!("{name} ramp (upstream {} removed)", r.to));
            o.ramp = None;
        }
        o.rolled_back
            || o.split.is_some()
            || o.shadow.is_some()
            || !o.ignore_fields_add.is_empty()
            || o.ramp.is_some()
    });
    dropped
}

/// The override of a route as JSON (null when none).
pub fn override_json(layer: &RuntimeLayer, route: &str) -> Value {
    layer.routes.get(route).map_or(Value::Null, |o| {
        serde_json::to_value(o).unwrap_or(Value::Null)
    })
}

/// A version for `layer`, numbered after `last`.
pub fn record(
    last: u64,
    actor: &str,
    reason: &str,
    route: Option<&str>,
    before: Value,
    after: Value,
    layer: &RuntimeLayer,
) -> VersionRecord {
    VersionRecord {
        version: last + 1,
        // Whole seconds, e.g. `2026-11-26T14:05:09Z`.
        time: rfc3339(now_ms() / 1000),
        actor: actor.to_string(),
        reason: reason.to_string(),
        route: route.map(str::to_string),
        change: Change { before, after },
        layer: layer.clone(),
    }
}

/// The whole layer as JSON keyed by route, for all-route changes.
pub fn layer_json(layer: &RuntimeLayer) -> Value {
    json!(layer.routes)
}
