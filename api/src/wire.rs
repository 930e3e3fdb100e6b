//! The admin API's JSON answers (SPEC section 5) as the clients read them:
//! only what they use, every field defaulted so an older or newer proxy
//! still parses.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The proxy's listening address.
    pub proxy: String,
    pub version: u64,
    pub default_upstream: String,
    pub routes: Vec<RouteView>,
}

/// One route in `status`: its split now and in the file, overrides, shadow
/// and traffic.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RouteView {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: String,
    pub split: BTreeMap<String, f64>,
    pub file_split: BTreeMap<String, f64>,
    #[serde(rename = "override")]
    pub overridden: bool,
    pub rolled_back: bool,
    pub sticky: Option<String>,
    pub shadow: Option<ShadowView>,
    pub requests: u64,
    pub mismatch_rate: f64,
    pub shadow_compared: u64,
    pub upstreams: BTreeMap<String, UpstreamStats>,
    pub ramp: Option<RampView>,
}

/// A route's ramp, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RampView {
    pub state: String,
    pub to: String,
    pub step: u64,
    pub steps: u64,
    pub share: Option<f64>,
    pub note: String,
}

/// A route's shadow, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ShadowView {
    pub enabled: bool,
    pub upstream: String,
    pub percent: f64,
    #[serde(rename = "override")]
    pub overridden: bool,
}

/// One upstream's traffic on a route, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UpstreamStats {
    pub rps: f64,
    pub error_rate: f64,
    pub p99_ms: f64,
    pub requests: u64,
}

/// `GET /api/v1/diffs/summary`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub routes: Vec<RouteSummary>,
}

/// One route's comparison outcomes and differing fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RouteSummary {
    pub route: String,
    pub compared: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub shadow_errors: u64,
    pub shadow_timeouts: u64,
    pub mismatch_rate: f64,
    pub fields: Vec<FieldView>,
}

/// A field that differed on a route: how often, and whether it is noise.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FieldView {
    pub path: String,
    pub kind: String,
    pub count: u64,
    pub raw_rate: f64,
    pub noise_rate: f64,
    pub noise: Option<bool>,
    pub first_seen: String,
    pub last_seen: String,
    pub examples: Vec<String>,
}

/// `GET /api/v1/history`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct History {
    pub versions: Vec<VersionView>,
}

/// One version of the runtime layer: who changed what, when and why.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VersionView {
    pub version: u64,
    pub time: String,
    pub actor: String,
    pub reason: String,
    pub route: Option<String>,
    pub change: Value,
}

/// `GET /api/v1/diffs/{id}`: kept as JSON, shown as it is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct DiffRecord(pub Value);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_proxy_sends_and_ignores_the_rest() {
        let s: Status = serde_json::from_str(
            r#"{"version": 3, "default_upstream": "monolith", "extra": 1,
                "routes": [{"name": "orders", "match": "path prefix /api", "split": {"orders": 25, "monolith": 75},
                            "file_split": {"orders": 10, "monolith": 90}, "override": true,
                            "shadow": {"enabled": true, "upstream": "orders", "percent": 100},
                            "upstreams": {"orders": {"rps": 1.5, "error_rate": 0.0, "p99_ms": 3.0}}}]}"#,
        )
        .unwrap();
        assert_eq!(s.routes[0].split["orders"], 25.0);
        assert_eq!(s.routes[0].matcher, "path prefix /api");
        assert!(s.routes[0].overridden);
        assert!(!s.routes[0].rolled_back);
        let shadow = s.routes[0].shadow.as_ref().unwrap();
        assert!(shadow.enabled && !shadow.overridden);
        assert_eq!(s.routes[0].upstreams["orders"].requests, 0);
    }

    #[test]
    fn a_diff_record_is_kept_as_it_came() {
        let v = serde_json::json!({"id": "x", "differences": [{"path": "/total"}]});
        let d: DiffRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(d, DiffRecord(v));
    }
}
