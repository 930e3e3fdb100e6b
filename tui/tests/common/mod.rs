//! Canned admin API data for the TUI tests.

#![allow(dead_code)]

use serde_json::json;
use strangler_tui::app::{App, Update};
use strangler_tui::view::{History, Status, Summary};

pub fn status() -> Status {
    serde_json::from_value(json!({
        "version": 7, "default_upstream": "monolith",
        "routes": [
            {"name": "orders", "match": "path prefix /api/orders", "split": {"orders": 25, "monolith": 75},
             "file_split": {"orders": 10, "monolith": 90}, "override": true, "sticky": "header:x-user-id",
             "shadow": {"enabled": true, "upstream": "orders", "percent": 100}, "requests": 1234,
             "mismatch_rate": 0.02, "shadow_compared": 300,
             "upstreams": {"orders": {"rps": 12.5, "error_rate": 0.001, "p99_ms": 8.2, "requests": 300},
                           "monolith": {"rps": 37.5, "error_rate": 0.0, "p99_ms": 5.1, "requests": 934}}},
            {"name": "users", "match": "path template /api/users/{id}", "split": {"monolith": 100},
             "file_split": {"monolith": 100}, "override": true, "rolled_back": true,
             "requests": 10, "upstreams": {}},
            {"name": "search", "match": "path prefix /search", "split": {"a": 50, "b": 50},
             "file_split": {"a": 50, "b": 50}, "requests": 0, "upstreams": {}}
        ]
    }))
    .unwrap()
}

pub fn summary() -> Summary {
    serde_json::from_value(json!({"routes": [{
        "route": "orders", "compared": 300, "matched": 6, "mismatched": 294, "shadow_errors": 0,
        "shadow_timeouts": 0, "mismatch_rate": 0.98,
        "fields": [
            {"path": "/total", "kind": "body", "count": 294, "raw_rate": 0.98, "noise_rate": 0.0, "noise": false,
             "first_seen": "2026-11-26T14:00:00.000Z", "last_seen": "2026-11-26T15:00:00.000Z",
             "examples": ["01a218b9-0000-7000-8000-000000000001", "01a218b9-0000-7000-8000-000000000002"]},
            {"path": "/generated_at", "kind": "body", "count": 300, "raw_rate": 1.0, "noise_rate": 1.0, "noise": true,
             "first_seen": "2026-11-26T14:00:00.000Z", "last_seen": "2026-11-26T15:00:00.000Z", "examples": []},
            {"path": "cache-control", "kind": "header", "count": 3, "raw_rate": 0.01, "noise_rate": 0.0, "noise": null,
             "first_seen": "2026-11-26T14:00:00.000Z", "last_seen": "2026-11-26T15:00:00.000Z", "examples": []}
        ]}]}))
    .unwrap()
}

pub fn history() -> History {
    serde_json::from_value(json!({"versions": [
        {"version": 7, "time": "2026-11-26T15:10:02Z", "actor": "ana@laptop", "reason": "canary", "route": "orders",
         "change": {"before": null, "after": {"split": {"orders": 25, "monolith": 75}}}},
        {"version": 6, "time": "2026-11-26T15:00:00Z", "actor": "strangler", "reason": "started", "route": null,
         "change": {"before": {}, "after": {}}}
    ]}))
    .unwrap()
}

pub fn record() -> serde_json::Value {
    json!({
        "id": "01a218b9-0000-7000-8000-000000000002", "time": "2026-11-26T15:00:00.000Z", "route": "orders",
        "method": "GET", "path": "/api/orders/7", "outcome": "mismatch", "differences_total": 1,
        "differences": [{"kind": "body", "path": "/total", "field": "/total", "primary": 10, "shadow": "10"}],
        "primary": {"upstream": "monolith", "status": 200, "latency_ms": 3.1, "headers": {"content-type": "application/json"},
                    "body": {"id": 7, "items": [{"sku": "a"}, {"sku": "b"}], "total": 10}},
        "shadow": {"upstream": "orders", "status": 200, "latency_ms": 2.7, "headers": {"content-type": "application/json"},
                   "body": {"id": 7, "items": [{"sku": "a"}, {"sku": "b"}], "total": "10"}}
    })
}

/// An app with data loaded.
pub fn loaded() -> App {
    let mut app = App::new("http://127.0.0.1:9901", false);
    app.apply(Update::Data {
        status: status(),
        summary: Some(summary()),
        history: Some(history()),
    });
    app
}
