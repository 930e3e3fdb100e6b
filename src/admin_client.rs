//! The CLI's client for the admin API (reqwest, blocking). Errors sort into
//! "refused or invalid" (exit 1) and "cannot reach the proxy" (exit 2).

use std::time::Duration;

use serde_json::Value;

/// Where the admin API is and who is acting.
#[derive(Debug, Clone)]
pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    pub actor: String,
    http: reqwest::blocking::Client,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The proxy answered and refused (exit 1).
    #[error("{0}")]
    Refused(String),
    /// No answer (exit 2).
    #[error("cannot reach strangler admin at {base}: {reason}")]
    Unreachable { base: String, reason: String },
}

impl CallError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CallError::Refused(_) => 1,
            CallError::Unreachable { .. } => 2,
        }
    }
}

/// `$USER@hostname`.
pub fn default_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    // "Connection refused (os error 111)" -> "connection refused"
    let trimmed = last.split(" (os error").next().unwrap_or(&last).to_string();
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
        None => trimmed,
    }
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>, actor: String) -> Result<Self, CallError> {
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(CallError::Refused(format!(
                "invalid --admin URL \"{base}\": give http://HOST:PORT"
            )));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .map_err(|e| CallError::Unreachable {
                base: base.to_string(),
                reason: root_cause(&e),
            })?;
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            actor,
            http,
        })
    }

    /// Calls the API; returns the JSON answer of a 2xx.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CallError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("x-strangler-actor", &self.actor);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().map_err(|e| CallError::Unreachable {
            base: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        // Only strangler's admin API marks its answers; anything else on that
        // address (the proxy port, another server) is not it.
        if !resp.headers().contains_key(crate::control::api::ADMIN_MARKER) {
            return Err(CallError::Unreachable {
                base: self.base.clone(),
                reason: format!(
                    "it answered HTTP {} but is not a strangler admin API",
                    status.as_u16()
                ),
            });
        }
        let text = resp.text().map_err(|e| CallError::Unreachable {
            base: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status.is_success() {
            Ok(json)
        } else {
            let msg = json
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}: {text}"));
            Err(CallError::Refused(msg))
        }
    }
}
