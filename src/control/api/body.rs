//! The JSON body an admin request may carry: one object whose fields each
//! endpoint picks from (unknown fields are ignored, all are optional).

use std::collections::BTreeMap;

use serde::Deserialize;

/// A ramp's gates as a request gives them; what is missing comes from the
/// route's `ramp` in the file, else the defaults.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct GatesBody {
    #[serde(default)]
    pub(super) max_error_rate: Option<f64>,
    #[serde(default)]
    pub(super) max_error_ratio: Option<f64>,
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
    #[serde(default)]
    pub(super) max_mismatch_rate: Option<f64>,
    #[serde(default)]
    pub(super) min_requests: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Body {
    #[serde(default)]
    pub(super) steps: Option<Vec<f64>>,
    #[serde(default)]
    pub(super) every: Option<String>,
    #[serde(default)]
    pub(super) gates: Option<GatesBody>,
    #[serde(default)]
    pub(super) on_fail: Option<String>,
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) actor: Option<String>,
    #[serde(default)]
    pub(super) weights: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub(super) percent: Option<f64>,
    #[serde(default)]
    pub(super) to: Option<String>,
    #[serde(default)]
    pub(super) enabled: Option<bool>,
    #[serde(default)]
    pub(super) ignore_fields_add: Option<Vec<String>>,
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) headers: Option<BTreeMap<String, String>>,
}
