//! The admin API as the TUI uses it: reads for the views, and the actions
//! an operator takes. A trait, so `App` tests can record the calls; the
//! real one speaks HTTP with the same `--admin` URL and token as the CLI.

use std::time::Duration;

use serde_json::{Value, json};

use crate::view::{DiffRecord, History, Status, Summary};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The proxy answered and refused: its message.
    #[error("{0}")]
    Refused(String),
    /// No answer: the proxy is away.
    #[error("cannot reach the admin API: {0}")]
    Unreachable(String),
}

/// Something the operator asked for, sent to the admin API.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Give `percent` to the route's new upstream (`to`), the rest to the default.
    Shift {
        route: String,
        to: String,
        percent: f64,
    },
    Rollback {
        route: String,
    },
    RollbackAll,
    Reset {
        route: String,
    },
    Shadow {
        route: String,
        enabled: bool,
    },
    MarkNoise {
        route: String,
        field: String,
    },
    Revert {
        version: u64,
    },
}

impl Action {
    /// What will happen, said before it happens.
    pub fn describe(&self) -> String {
        match self {
            Action::Shift { route, to, percent } => {
                format!("Shift route {route}: {percent}% to {to}, the rest to the default upstream")
            }
            Action::Rollback { route } => {
                format!("Roll back route {route}: 100% to the default upstream, at once")
            }
            Action::RollbackAll => {
                "Roll back EVERY route: 100% to the default upstream, at once".to_string()
            }
            Action::Reset { route } => {
                format!("Reset route {route}: drop its runtime overrides, the file applies again")
            }
            Action::Shadow { route, enabled } => format!(
                "Turn the shadow of route {route} {}",
                if *enabled { "on" } else { "off" }
            ),
            Action::MarkNoise { route, field } => format!(
                "Mark {field} on route {route} as noise: add an ignore rule (a new version)"
            ),
            Action::Revert { version } => format!(
                "Revert the runtime layer to how it was right after version {version} (a new version)"
            ),
        }
    }
}

/// The admin API calls the TUI makes.
pub trait AdminApi {
    fn status(&self) -> Result<Status, ApiError>;
    fn summary(&self) -> Result<Summary, ApiError>;
    fn history(&self) -> Result<History, ApiError>;
    fn diff(&self, id: &str) -> Result<DiffRecord, ApiError>;
    /// Performs an action; returns the version line to show.
    fn act(&self, action: &Action) -> Result<String, ApiError>;
}

/// The admin API over HTTP.
pub struct HttpApi {
    base: String,
    token: Option<String>,
    actor: String,
    http: reqwest::blocking::Client,
}

impl HttpApi {
    pub fn new(base: &str, token: Option<String>, actor: String) -> Result<Self, ApiError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        Ok(HttpApi {
            base: base.trim_end_matches('/').to_string(),
            token,
            actor,
            http,
        })
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-strangler-actor", &self.actor);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .map_err(|e| ApiError::Unreachable(root_cause(&e)))?;
        if !resp.headers().contains_key("x-strangler-admin") {
            return Err(ApiError::Unreachable(format!(
                "{} is not a strangler admin API",
                self.base
            )));
        }
        let status = resp.status();
        let text = resp
            .text()
            .map_err(|e| ApiError::Unreachable(root_cause(&e)))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            Err(ApiError::Refused(
                value["error"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_string),
            ))
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let v = self.call(reqwest::Method::GET, path, None)?;
        serde_json::from_value(v).map_err(|e| ApiError::Refused(format!("unexpected answer: {e}")))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

impl AdminApi for HttpApi {
    fn status(&self) -> Result<Status, ApiError> {
        self.get("/api/v1/status")
    }

    fn summary(&self) -> Result<Summary, ApiError> {
        self.get("/api/v1/diffs/summary")
    }

    fn history(&self) -> Result<History, ApiError> {
        self.get("/api/v1/history?limit=200")
    }

    fn diff(&self, id: &str) -> Result<DiffRecord, ApiError> {
        self.call(reqwest::Method::GET, &format!("/api/v1/diffs/{id}"), None)
            .map(DiffRecord)
    }

    fn act(&self, action: &Action) -> Result<String, ApiError> {
        use reqwest::Method;
        let reason = json!({"reason": format!("tui: {}", action.describe())});
        let (method, path, body) = match action {
            Action::Shift { route, to, percent } => (
                Method::POST,
                format!("/api/v1/routes/{route}/shift"),
                json!({"percent": percent, "to": to}),
            ),
            Action::Rollback { route } => (
                Method::POST,
                format!("/api/v1/routes/{route}/rollback"),
                reason,
            ),
            Action::RollbackAll => (Method::POST, "/api/v1/rollback".to_string(), reason),
            Action::Reset { route } => (
                Method::POST,
                format!("/api/v1/routes/{route}/reset"),
                reason,
            ),
            Action::Shadow { route, enabled } => (
                Method::PUT,
                format!("/api/v1/routes/{route}/shadow"),
                json!({"enabled": enabled}),
            ),
            Action::MarkNoise { route, field } => (
                Method::PUT,
                format!("/api/v1/routes/{route}/compare"),
                json!({"ignore_fields_add": [field]}),
            ),
            Action::Revert { version } => {
                (Method::POST, format!("/api/v1/revert/{version}"), json!({}))
            }
        };
        let v = self.call(method, &path, Some(body))?;
        Ok(if v["unchanged"].as_bool() == Some(true) {
            format!("unchanged (version {})", v["version"])
        } else {
            format!(
                "version {}: {}",
                v["version"],
                v["reason"].as_str().unwrap_or("done")
            )
        })
    }
}
