//! The one blocking client for the admin API (reqwest): the `--admin` URL
//! check, timeouts, no proxy, the bearer token, `x-strangler-actor`, and the
//! [`ADMIN_MARKER`](crate::ADMIN_MARKER) check. Errors sort into "refused or
//! invalid" (exit 1) and "cannot reach the proxy" (exit 2).

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::{DiffRecord, History, Status, Summary};

/// How long a whole call may take, by default (the CLI's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take, by default (the CLI's).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin API is and who is acting.
#[derive(Clone)]
pub struct AdminClient {
    /// The `--admin` URL, without a trailing `/`.
    pub base: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Sent as `x-strangler-actor`; the history records it.
    pub actor: String,
    http: reqwest::blocking::Client,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The proxy answered and refused, or the request was invalid (exit 1).
    #[error("{0}")]
    Refused(String),
    /// No answer, or not from a strangler admin API (exit 2).
    #[error("cannot reach strangler admin at {base}: {reason}")]
    Unreachable { base: String, reason: String },
}

impl CallError {
    /// The CLI's exit code: 1 refused or invalid, 2 cannot reach the proxy.
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

/// The innermost cause of an error, as a short phrase:
/// "Connection refused (os error 111)" becomes "connection refused".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let last = std::iter::successors(Some(e), |e| e.source())
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string);
    let trimmed = last.split(" (os error").next().unwrap_or(&last).to_string();
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
        None => trimmed,
    }
}

impl AdminClient {
    /// A client for the admin API at `base` (`http://HOST:PORT`), with the
    /// default timeouts.
    pub fn new(base: &str, token: Option<String>, actor: String) -> Result<Self, CallError> {
        Self::with_timeouts(base, token, actor, DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`AdminClient::new`] with other timeouts: `timeout` for a whole call,
    /// `connect_timeout` for connecting (the TUI's poller wants them short).
    pub fn with_timeouts(
        base: &str,
        token: Option<String>,
        actor: String,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, CallError> {
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(CallError::Refused(format!(
                "invalid --admin URL \"{base}\": give http://HOST:PORT"
            )));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
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

    fn unreachable(&self, reason: String) -> CallError {
        CallError::Unreachable {
            base: self.base.clone(),
            reason,
        }
    }

    /// Calls the API (`path` from `/api/v1/...` on); returns the JSON
    /// answer of a 2xx. A non-2xx is [`CallError::Refused`] with the
    /// answer's `error`; no answer, or one without the admin marker, is
    /// [`CallError::Unreachable`].
    pub fn call(
        &self,
        method: Method,
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
        let resp = req.send().map_err(|e| self.unreachable(root_cause(&e)))?;
        let status = resp.status();
        // Only strangler's admin API marks its answers; anything else on that
        // address (the proxy port, another server) is not it.
        if !resp.headers().contains_key(crate::ADMIN_MARKER) {
            return Err(self.unreachable(format!(
                "it answered HTTP {} but is not a strangler admin API",
                status.as_u16()
            )));
        }
        let text = resp.text().map_err(|e| self.unreachable(root_cause(&e)))?;
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

    /// `GET path`, the answer read as `T`; an answer of another shape is
    /// [`CallError::Refused`] ("unexpected answer: ...").
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        let v = self.call(Method::GET, path, None)?;
        serde_json::from_value(v).map_err(|e| CallError::Refused(format!("unexpected answer: {e}")))
    }

    /// `GET /api/v1/status`.
    pub fn status(&self) -> Result<Status, CallError> {
        self.get("/api/v1/status")
    }

    /// `GET /api/v1/diffs/summary`.
    pub fn diffs_summary(&self) -> Result<Summary, CallError> {
        self.get("/api/v1/diffs/summary")
    }

    /// `GET /api/v1/history?limit=LIMIT`, newest first.
    pub fn history(&self, limit: usize) -> Result<History, CallError> {
        self.get(&format!("/api/v1/history?limit={limit}"))
    }

    /// `GET /api/v1/diffs/{id}`.
    pub fn diff(&self, id: &str) -> Result<DiffRecord, CallError> {
        self.call(Method::GET, &format!("/api/v1/diffs/{id}"), None)
            .map(DiffRecord)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    use serde_json::json;

    fn client(base: &str) -> AdminClient {
        AdminClient::new(base, Some("s3cret".into()), "ana@laptop".into()).unwrap()
    }

    /// A one-shot HTTP server on 127.0.0.1:0: reads one request, answers
    /// `status` with `body` (with the admin marker if `marked`), and sends
    /// the request's text back.
    fn serve_once(status: &str, marked: bool, body: &str) -> (String, mpsc::Receiver<String>) {
        let marker = if marked {
            "x-strangler-admin: 1\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 {status}\r\n{marker}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = reader.into_inner();
            stream.write_all(response.as_bytes()).unwrap();
            stream.flush().unwrap();
            let _ = tx.send(head + "\r\n" + &String::from_utf8_lossy(&body));
        });
        (base, rx)
    }

    #[test]
    fn a_base_that_is_not_http_is_refused_with_the_cli_text() {
        for base in ["127.0.0.1:9901", "ftp://x", ""] {
            let e = AdminClient::new(base, None, "a".into()).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid --admin URL \"{base}\": give http://HOST:PORT")
            );
            assert_eq!(e.exit_code(), 1);
        }
        assert!(AdminClient::new("HTTPS://proxy:9901", None, "a".into()).is_ok());
    }

    #[test]
    fn the_base_loses_its_trailing_slash() {
        assert_eq!(
            client("http://127.0.0.1:9901/").base,
            "http://127.0.0.1:9901"
        );
    }

    #[test]
    fn exit_codes_and_texts() {
        let refused = CallError::Refused("no route \"x\"".into());
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(refused.to_string(), "no route \"x\"");
        let away = CallError::Unreachable {
            base: "http://127.0.0.1:9".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(away.exit_code(), 2);
        assert_eq!(
            away.to_string(),
            "cannot reach strangler admin at http://127.0.0.1:9: connection refused"
        );
    }

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl fmt::Display for Chain {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn root_cause_is_the_innermost_error_trimmed_and_lowercased() {
        let e = Chain(
            "error sending request",
            Some(Box::new(Chain(
                "client error (Connect)",
                Some(Box::new(Chain("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(root_cause(&e), "connection refused");
        assert_eq!(root_cause(&Chain("timed out", None)), "timed out");
        assert_eq!(root_cause(&Chain("", None)), "");
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let shown = format!("{:?}", client("http://127.0.0.1:9901"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_marked_answer_is_returned_and_the_request_carries_token_actor_and_body() {
        let (base, seen) = serve_once("200 OK", true, r#"{"version": 8}"#);
        let v = client(&base)
            .call(
                Method::POST,
                "/api/v1/routes/orders/shift",
                Some(json!({"percent": 25})),
            )
            .unwrap();
        assert_eq!(v, json!({"version": 8}));
        let req = seen.recv().unwrap();
        let lower = req.to_ascii_lowercase();
        assert!(
            req.starts_with("POST /api/v1/routes/orders/shift HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            lower.contains("\r\nauthorization: bearer s3cret\r\n"),
            "{req}"
        );
        assert!(
            lower.contains("\r\nx-strangler-actor: ana@laptop\r\n"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\n{\"percent\":25}"), "{req}");
    }

    #[test]
    fn an_unmarked_answer_is_not_the_admin_api() {
        let (base, _seen) = serve_once("404 Not Found", false, "not found");
        let e = client(&base)
            .call(Method::GET, "/api/v1/status", None)
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach strangler admin at {base}: it answered HTTP 404 but is not a strangler admin API"
            )
        );
    }

    #[test]
    fn a_marked_refusal_gives_its_error() {
        let (base, _seen) = serve_once("409 Conflict", true, r#"{"error": "no route \"nope\""}"#);
        let e = client(&base)
            .call(
                Method::POST,
                "/api/v1/routes/nope/rollback",
                Some(json!({})),
            )
            .unwrap_err();
        assert_eq!(e, CallError::Refused("no route \"nope\"".into()));
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_marked_refusal_without_an_error_field_gives_status_and_text() {
        let (base, _seen) = serve_once("500 Internal Server Error", true, "boom");
        let e = client(&base)
            .call(Method::GET, "/api/v1/status", None)
            .unwrap_err();
        assert_eq!(
            e,
            CallError::Refused("HTTP 500 Internal Server Error: boom".into())
        );
    }

    #[test]
    fn an_answer_of_another_shape_is_unexpected() {
        let (base, _seen) = serve_once("200 OK", true, r#"{"versions": "no"}"#);
        let e = client(&base).history(200).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().starts_with("unexpected answer: "), "{e}");
    }

    #[test]
    fn typed_reads_parse_the_answer() {
        let (base, seen) = serve_once(
            "200 OK",
            true,
            r#"{"version": 3, "default_upstream": "monolith"}"#,
        );
        let s = client(&base).status().unwrap();
        assert_eq!((s.version, s.default_upstream.as_str()), (3, "monolith"));
        assert!(
            seen.recv()
                .unwrap()
                .starts_with("GET /api/v1/status HTTP/1.1\r\n")
        );
    }

    #[test]
    fn nobody_listening_is_unreachable() {
        // A port that was free a moment ago: nobody listens there now.
        let base = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = client(&base)
            .call(Method::GET, "/api/v1/status", None)
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            format!("cannot reach strangler admin at {base}: connection refused")
        );
    }
}
