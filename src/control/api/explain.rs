//! `POST /api/v1/explain`: which route and upstream a request would get,
//! and why, against the live routing table (runtime layer applied).

use std::sync::Arc;

use serde_json::Value;

use crate::control::api::body::Body;
use crate::state::Shared;
use crate::state::layer::ControlError;

/// Explains the request the body describes (`method`, default GET; `url`;
/// `headers`).
pub(super) fn explain(shared: &Arc<Shared>, body: &Body) -> Result<Value, ControlError> {
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
