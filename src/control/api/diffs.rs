//! The shadow diffs through the admin API: a page of records (newest
//! first, noise and ignored differences hidden unless `all`), one record by
//! id, and the per-route summary.

use std::sync::Arc;

use serde_json::{Value, json};
use strangler_shadow::summary::Judge;

use crate::mirror::ShadowRuntime;
use crate::state::Shared;
use crate::state::layer::ControlError;

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
pub(super) async fn list(shared: &Arc<Shared>, query: &str) -> Result<Value, ControlError> {
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
pub(crate) fn looks_like_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The largest page of diffs one request returns.
const MAX_DIFFS_PAGE: usize = 1000;

/// `GET /api/v1/diffs/{id}`.
pub(super) async fn get(shared: &Arc<Shared>, id: &str) -> Result<Value, ControlError> {
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
pub(super) async fn summary(shared: &Arc<Shared>, query: &str) -> Result<Value, ControlError> {
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
