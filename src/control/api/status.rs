//! What the proxy is doing, through the admin API: `GET /api/v1/status`
//! (every route's live split, overrides, ramp, shadow and traffic), and the
//! unauthenticated `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use strangler_shadow::summary::RouteSummary;

use crate::state::Shared;
use crate::state::layer;

/// `GET /healthz`.
pub(super) fn health() -> Value {
    json!({"ok": true})
}

/// `GET /readyz`: why not, while not ready (no store yet, or draining
/// after SIGTERM/SIGINT, so that a load balancer stops sending).
pub(super) fn ready(shared: &Shared) -> Result<Value, &'static str> {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("draining: shutting down");
    }
    if shared.store.is_none() && shared.versions.is_some() {
        return Err("not ready");
    }
    Ok(json!({"ready": true, "version": shared.live.load().version}))
}

/// `GET /api/v1/status`.
pub(super) fn status(shared: &Arc<Shared>) -> Value {
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
