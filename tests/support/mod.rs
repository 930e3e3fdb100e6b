//! Test harness: fake upstreams on 127.0.0.1:0 (real hyper servers), the
//! real `strangler` binary started on port 0 with a config written to a
//! temp dir, and a small HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc as tmpsc};

type RespBody = BoxBody<Bytes, hyper::Error>;

/// A fake upstream. Paths:
/// - `/status/{code}`: that status;
/// - `/gate`: reports arrival, then waits until `open_gate()`;
/// - `/echo`: streams the request body back;
/// - `/bytes/{n}`: streams n bytes;
/// - `/hop`: answers with hop-by-hop headers;
/// - `/healthz`: 200, or 500 while `set_healthy(false)`;
/// - anything else: JSON describing the request (`backend`, `method`,
///   `path`, `query`, `headers`, `body_len`).
///
/// While `set_failing(true)` every request but /healthz gets 503.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<BackendState>,
}

struct BackendState {
    name: String,
    requests: AtomicUsize,
    connections: AtomicUsize,
    failing: AtomicBool,
    healthy: AtomicBool,
    gate: Notify,
    arrived: Mutex<Option<tmpsc::UnboundedSender<()>>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let state = Arc::new(BackendState {
            name: name.to_string(),
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            gate: Notify::new(),
            arrived: Mutex::new(None),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                st.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Returns a receiver that gets one message per request arriving at `/gate`.
    pub fn watch_gate(&self) -> tmpsc::UnboundedReceiver<()> {
        let (tx, rx) = tmpsc::unbounded_channel();
        *self.state.arrived.lock().expect("lock") = Some(tx);
        rx
    }

    /// Lets every request waiting at `/gate` (and the next one) through.
    pub fn open_gate(&self) {
        self.state.gate.notify_waiters();
        self.state.gate.notify_one();
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn handle(
    st: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        let ok = st.healthy.load(Ordering::SeqCst);
        let mut r = Response::new(full(if ok { "ok" } else { "sick" }));
        *r.status_mut() = if ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Ok(r);
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    if st.failing.load(Ordering::SeqCst) {
        let mut r = Response::new(full(format!(
            "{{\"backend\":\"{}\",\"failing\":true}}",
            st.name
        )));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(full(format!("{{\"backend\":\"{}\"}}", st.name)));
        *r.status_mut() = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
        return Ok(r);
    }
    if path == "/gate" {
        let notified = st.gate.notified();
        if let Some(tx) = st.arrived.lock().expect("lock").as_ref() {
            let _ = tx.send(());
        }
        notified.await;
        return Ok(Response::new(full(format!(
            "{{\"backend\":\"{}\",\"gate\":\"passed\"}}",
            st.name
        ))));
    }
    if path == "/echo" {
        let body = req.into_body().boxed();
        return Ok(Response::new(body));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let body = Repeat {
            left: n,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        };
        return Ok(Response::new(body.boxed()));
    }
    if path == "/close" {
        let mut r = Response::new(full(format!("{{\"backend\":\"{}\"}}", st.name)));
        r.headers_mut()
            .insert("connection", "close".parse().expect("value"));
        return Ok(r);
    }
    if path == "/hop" {
        let mut r = Response::new(full("hop"));
        let h = r.headers_mut();
        h.insert("connection", "x-internal".parse().expect("value"));
        h.insert("x-internal", "secret".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.to_string())
            .or_default()
            .push(v.to_str().unwrap_or("").to_string());
    }
    let json = serde_json::json!({
        "backend": st.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body_len,
        "version": format!("{:?}", parts.version),
    });
    Ok(Response::new(full(json.to_string())))
}

/// A streamed body of `left` bytes, produced chunk by chunk.
pub struct Repeat {
    left: usize,
    chunk: Bytes,
}

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// The real binary, serving a config on 127.0.0.1:0.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    logs: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

/// `[listen]` and `[store]` for a test, followed by `body`.
pub fn config_with(dir: &std::path::Path, listen_extra: &str, body: &str) -> String {
    format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{listen_extra}\n[store]\npath = \"{}\"\n\n{body}",
        dir.join("data").display()
    )
}

impl Proxy {
    pub fn start(body: &str) -> Proxy {
        Self::start_with("", body, &[])
    }

    /// Starts with extra `[listen]` lines and extra CLI arguments.
    pub fn start_with(listen_extra: &str, body: &str, args: &[&str]) -> Proxy {
        Self::start_env(listen_extra, body, args, &[])
    }

    /// Starts with extra environment variables too.
    pub fn start_env(
        listen_extra: &str,
        body: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("strangler.toml");
        std::fs::write(&config_path, config_with(dir.path(), listen_extra, body))
            .expect("write config");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(dir, config_path, args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the binary; the error holds what it printed when it did not come up.
    pub fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Result<Proxy, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strangler"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(&args)
            .env("RUST_LOG", "info");
        cmd.env_remove("STRANGLER_ADMIN_TOKEN");
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strangler");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut proxy = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (prefix, slot) in [
                    ("strangler: proxy listening on ", 0),
                    ("strangler: admin listening on ", 1),
                ] {
                    if let Some(a) = line.strip_prefix(prefix) {
                        let a = a
                            .trim_start_matches("http://")
                            .trim_start_matches("https://");
                        if let Ok(a) = a.parse::<SocketAddr>() {
                            if slot == 0 {
                                proxy = Some(a);
                            } else if let Some(p) = proxy {
                                let _ = addr_tx.send((p, a));
                            }
                        }
                    }
                }
                let _ = tx.send(line);
            }
        });
        match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok((addr, admin)) => Ok(Proxy {
                child,
                addr,
                admin,
                args,
                envs,
                dir,
                config_path,
                logs,
                seen: Vec::new(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let mut out = Vec::new();
                while let Ok(l) = logs.recv_timeout(Duration::from_millis(200)) {
                    out.push(l);
                }
                Err(format!("proxy did not start:\n{}", out.join("\n")))
            }
        }
    }

    /// SIGTERM, waits for a clean exit, then starts again on the same
    /// config and store.
    pub fn stop_and_restart(mut self) -> Proxy {
        self.signal("TERM");
        assert_eq!(self.wait_exit(), Some(0), "clean stop");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let (config_path, args, envs) = (
            self.config_path.clone(),
            self.args.clone(),
            self.envs.clone(),
        );
        drop(self);
        Self::spawn(dir, config_path, args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kill -9`, then starts again on the same config and store.
    pub fn crash_and_restart(mut self) -> Proxy {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let (config_path, args, envs) = (
            self.config_path.clone(),
            self.args.clone(),
            self.envs.clone(),
        );
        drop(self);
        Self::spawn(dir, config_path, args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Runs the CLI against this proxy's admin API.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_at(&self.admin_url(), args, None)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (HUP, TERM, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Rewrites the config body (same listen/store) and sends SIGHUP.
    pub fn reload(&mut self, body: &str) {
        std::fs::write(&self.config_path, config_with(self.dir.path(), "", body))
            .expect("write config");
        self.signal("HUP");
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_logs(needle, 1)
    }

    /// Waits for the `n`th log line containing `needle` and returns it.
    pub fn wait_for_logs(&mut self, needle: &str, n: usize) -> String {
        let mut found = 0;
        for l in &self.seen {
            if l.contains(needle) {
                found += 1;
                if found == n {
                    return l.clone();
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        found += 1;
                        if found == n {
                            return line;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line containing {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory of the proxy process, in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI with `--admin URL` and an optional token.
pub fn cli_at(admin: &str, args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strangler"));
    cmd.arg("--admin")
        .arg(admin)
        .args(args)
        .env_remove("STRANGLER_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("STRANGLER_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run the CLI")
}

/// The tests' HTTP client.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The backend that answered (from the echo JSON).
    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or("").to_string()
    }

    /// Values of a header as the backend saw it.
    pub fn seen_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sends a request; `headers` are (name, value) pairs.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = client.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send(client, "GET", url, headers, Bytes::new()).await
}

/// Sends raw bytes on a new connection and returns everything read until
/// the server closes or a full response head arrived.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end].lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if let Some(len) = len
                        && out.len() >= head_end + 4 + len
                    {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A streamed request body of `n` bytes.
pub type Chunks = Repeat;

impl Repeat {
    pub fn new(n: usize) -> Repeat {
        Repeat {
            left: n,
            chunk: Bytes::from(vec![b'z'; 64 * 1024]),
        }
    }
}

/// What a scripted backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A scripted answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(v: serde_json::Value) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }

    pub fn status(mut self, status: u16) -> Answer {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Script = dyn Fn(&Seen) -> Answer + Send + Sync;

/// A fake upstream whose answers a closure writes. It records every request
/// and, while held, keeps each one waiting until `release()`.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    state: Arc<ScriptedState>,
}

struct ScriptedState {
    script: Box<Script>,
    delay_ms: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    held: AtomicBool,
    release: Notify,
    arrived: tmpsc::UnboundedSender<()>,
}

impl ScriptedBackend {
    /// Starts the backend; the receiver gets one message per request.
    pub async fn start(
        script: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> (ScriptedBackend, tmpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (arrived, rx) = tmpsc::unbounded_channel();
        let state = Arc::new(ScriptedState {
            script: Box::new(script),
            delay_ms: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            held: AtomicBool::new(false),
            release: Notify::new(),
            arrived,
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| scripted(st.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (ScriptedBackend { addr, state }, rx)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// Every answer from now on comes this much later.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    /// From now on every request waits until `release()`.
    pub fn hold(&self) {
        self.state.held.store(true, Ordering::SeqCst);
    }

    /// Lets every waiting request (and every later one) through.
    pub fn release(&self) {
        self.state.held.store(false, Ordering::SeqCst);
        self.state.release.notify_waiters();
    }
}

async fn scripted(
    st: Arc<ScriptedState>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string()),
        headers: parts.headers,
        body,
    };
    st.seen.lock().expect("lock").push(seen.clone());
    let released = st.release.notified();
    let _ = st.arrived.send(());
    if st.held.load(Ordering::SeqCst) {
        released.await;
    }
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let answer = (st.script)(&seen);
    let mut r = Response::new(full(answer.body));
    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    Ok(r)
}

/// Polls `f` until it returns Some, for up to 30 s; the condition, not the
/// pause between polls, is what the test waits for.
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A bare TCP upstream that records each request head exactly as it came
/// over the wire (request line and headers) and answers `200 ok`.
pub struct RawBackend {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    pipelined: Arc<AtomicUsize>,
}

/// What a [`RawBackend`] writes for one request head, and whether it then
/// closes the connection.
pub struct RawReply {
    pub bytes: Vec<u8>,
    pub then_close: bool,
    /// Written only once a permit of this semaphore is taken.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl RawReply {
    pub fn keep(bytes: &[u8]) -> RawReply {
        RawReply {
            bytes: bytes.to_vec(),
            then_close: false,
            gate: None,
        }
    }

    pub fn close(bytes: &[u8]) -> RawReply {
        RawReply {
            bytes: bytes.to_vec(),
            then_close: true,
            gate: None,
        }
    }

    /// Kept alive, written once `gate` gives a permit.
    pub fn gated(bytes: &[u8], gate: &Arc<tokio::sync::Semaphore>) -> RawReply {
        RawReply {
            gate: Some(gate.clone()),
            ..RawReply::keep(bytes)
        }
    }
}

type RawScript = Arc<dyn Fn(&str) -> RawReply + Send + Sync>;

impl RawBackend {
    /// Answers every body-less request with `200 ok`.
    pub async fn start() -> RawBackend {
        Self::start_with(|_| {
            RawReply::keep(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
            )
        })
        .await
    }

    /// Answers each request head (of a body-less request) with the bytes
    /// `script` gives for it, exactly as given.
    pub async fn start_with(
        script: impl Fn(&str) -> RawReply + Send + Sync + 'static,
    ) -> RawBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let script: RawScript = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let pipelined = Arc::new(AtomicUsize::new(0));
        let h = heads.clone();
        let conns = connections.clone();
        let piped = pipelined.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                let script = script.clone();
                let piped = piped.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let complete = buf.windows(4).filter(|w| w == b"\r\n\r\n").count();
                        if complete > 1 {
                            piped.fetch_add(complete, Ordering::SeqCst);
                        }
                        // Bodiless requests only: answer each complete head.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let reply = script(&head);
                            h.lock().expect("lock").push(head);
                            if let Some(gate) = &reply.gate
                                && let Ok(permit) = gate.acquire().await
                            {
                                permit.forget();
                            }
                            if stream.write_all(&reply.bytes).await.is_err() || reply.then_close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        RawBackend {
            addr,
            heads,
            connections,
            pipelined,
        }
    }

    /// Request heads that were read from the wire together with another
    /// (pipelined: written before the answer to the one in front).
    pub fn pipelined(&self) -> usize {
        self.pipelined.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request heads seen so far, whole (request line and headers,
    /// without the blank line), as they came over the wire.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }

    /// The request lines seen so far (`GET /path HTTP/1.1`).
    pub fn request_lines(&self) -> Vec<String> {
        self.heads
            .lock()
            .expect("lock")
            .iter()
            .map(|h| h.lines().next().unwrap_or("").to_string())
            .collect()
    }
}

/// One response as a raw client reads it off the wire.
#[derive(Debug)]
pub struct WireResponse {
    /// The status line and headers, as sent (lines joined by `\r\n`).
    pub head: String,
    /// The body after removing its framing.
    pub body: Vec<u8>,
}

impl WireResponse {
    /// A header's value (the first with that name, any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// A client connection that writes raw bytes and reads responses one at a
/// time, decoding content-length, chunked and close-delimited bodies.
pub struct WireClient<S = tokio::net::TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl WireClient {
    pub async fn connect(addr: SocketAddr) -> WireClient {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        WireClient::new(stream)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> WireClient<S> {
    /// Over a connection made elsewhere (TLS, say).
    pub fn new(stream: S) -> WireClient<S> {
        WireClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Whether the server closed the connection (after what was read).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await && self.buf.is_empty()
    }

    /// Reads the next response; `head_only` for a HEAD request's.
    pub async fn response(&mut self, head_only: bool) -> WireResponse {
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill().await, "closed before a response head");
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut r = WireResponse {
            head,
            body: Vec::new(),
        };
        let status: u16 = r
            .head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if head_only || status == 204 || status == 304 {
            return r;
        }
        if r.header("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "closed inside a chunked body");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "closed inside a chunk");
                }
                r.body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                assert_eq!(&self.buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
                self.buf.drain(..line_end + 4 + size);
                if size == 0 {
                    return r;
                }
            }
        }
        match r.header("content-length") {
            Some(len) => {
                let len: usize = len.parse().expect("content-length");
                while self.buf.len() < len {
                    assert!(self.fill().await, "closed inside a body");
                }
                r.body = self.buf.drain(..len).collect();
            }
            None => {
                while self.fill().await {}
                r.body = std::mem::take(&mut self.buf);
            }
        }
        r
    }
}
