//! The admin API as the TUI uses it: reads for the views, and the actions
//! an operator takes. A trait, so `App` tests can record the calls; the
//! real one, [`HttpApi`], is the CLI's client (`strangler_api::AdminClient`)
//! with the same `--admin` URL and token.

use std::time::Duration;

use serde_json::json;
use strangler_api::{AdminClient, CallError, Method};

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

/// The admin API over HTTP: the shared client of `strangler_api`, with
/// short timeouts so a proxy that went away shows at once.
pub struct HttpApi {
    client: AdminClient,
}

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl HttpApi {
    pub fn new(base: &str, token: Option<String>, actor: String) -> Result<Self, ApiError> {
        let client = AdminClient::with_timeouts(base, token, actor, TIMEOUT, CONNECT_TIMEOUT)?;
        Ok(HttpApi { client })
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Refused(why) => ApiError::Refused(why),
            CallError::Unreachable { reason, .. } => ApiError::Unreachable(reason),
        }
    }
}

impl AdminApi for HttpApi {
    fn status(&self) -> Result<Status, ApiError> {
        Ok(self.client.status()?)
    }

    fn summary(&self) -> Result<Summary, ApiError> {
        Ok(self.client.diffs_summary()?)
    }

    fn history(&self) -> Result<History, ApiError> {
        Ok(self.client.history(200)?)
    }

    fn diff(&self, id: &str) -> Result<DiffRecord, ApiError> {
        Ok(self.client.diff(id)?)
    }

    fn act(&self, action: &Action) -> Result<String, ApiError> {
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
        let v = self.client.call(method, &path, Some(body))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_keep_their_message_and_their_kind() {
        let refused = CallError::Refused("no route \"x\"".into());
        assert_eq!(
            ApiError::from(refused),
            ApiError::Refused("no route \"x\"".into())
        );
        let away = CallError::Unreachable {
            base: "http://127.0.0.1:9".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            ApiError::from(away),
            ApiError::Unreachable("connection refused".into())
        );
    }

    #[test]
    fn a_base_that_is_not_http_is_refused_with_the_cli_text() {
        let Err(e) = HttpApi::new("127.0.0.1:9901", None, "a".into()) else {
            panic!("accepted a base without http://");
        };
        assert_eq!(
            e.to_string(),
            "invalid --admin URL \"127.0.0.1:9901\": give http://HOST:PORT"
        );
    }
}
