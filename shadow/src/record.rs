//! A diff record (SPEC section 6): one shadowed request whose answers
//! differed, or whose shadow failed or timed out, as stored and served.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compare::{Difference, Prepared, stored_body};
use crate::counters::Outcome;

/// One side of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub upstream: String,
    /// None when the shadow never answered.
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    /// Lower-case names; repeated headers joined by `, `; secrets redacted.
    pub headers: BTreeMap<String, String>,
    /// JSON bodies as JSON, text as a string, cut to `[store].max_body_bytes`
    /// (then as a string); null for binary or empty bodies.
    pub body: Value,
    /// Length of the whole body as sent.
    pub body_bytes: u64,
    /// Keyed hash of the whole body as sent: HMAC-SHA256 under the run's
    /// in-memory key, so equal bodies of one run hash equal and nothing
    /// stored can be matched against a guessed body.
    pub body_hash: String,
    /// `body` is not the whole body.
    pub body_truncated: bool,
    /// Why the shadow has no answer, or why the body was not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Side {
    pub fn answered(upstream: &str, p: &Prepared, max_body: usize) -> Side {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (n, v) in &p.headers {
            headers
                .entry(n.clone())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let (body, body_truncated) = stored_body(p, max_body);
        Side {
            upstream: upstream.to_string(),
            status: Some(p.status),
            latency_ms: Some(round3(p.latency_ms)),
            headers,
            body,
            body_bytes: p.body_len,
            body_hash: p.body_hash.clone(),
            body_truncated,
            note: p.note.clone(),
        }
    }

    pub fn failed(upstream: &str, why: String, latency_ms: Option<f64>) -> Side {
        Side {
            upstream: upstream.to_string(),
            status: None,
            latency_ms: latency_ms.map(round3),
            headers: BTreeMap::new(),
            body: Value::Null,
            body_bytes: 0,
            body_hash: String::new(),
            body_truncated: false,
            note: Some(why),
        }
    }
}

/// One stored comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffRecord {
    /// A UUID v7: records sort by time.
    pub id: String,
    pub time: String,
    pub route: String,
    pub method: String,
    /// The request's path and query.
    pub path: String,
    pub primary: Side,
    pub shadow: Side,
    pub differences: Vec<Difference>,
    /// All differences found; `differences` keeps the first 100.
    pub differences_total: usize,
    /// Differences this listing leaves out as noise or ignored (listings
    /// without `all=true`); `differences_total` no longer counts them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden: usize,
    pub outcome: Outcome,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
