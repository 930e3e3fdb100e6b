//! `strangler demo`: a self-contained migration in one process: a toy
//! monolith (a small shop API), a toy new orders service, and the proxy in
//! front of them with a sticky split on `/api/orders` that also shadows the
//! monolith's orders traffic to the new service and compares the answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cli::serve::{LogFormat, ServeOptions};

/// Options of `demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub port: u16,
    pub admin_port: u16,
    pub traffic: bool,
}

/// Which toy service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toy {
    Monolith,
    Orders,
}

impl Toy {
    fn name(self) -> &'static str {
        match self {
            Toy::Monolith => "monolith",
            Toy::Orders => "orders-service",
        }
    }
}

fn order(id: u64, by: Toy) -> Value {
    let user = id % 5 + 1;
    json!({
        "id": id,
        "user": user,
        "status": if id.is_multiple_of(3) { "shipped" } else { "open" },
        "items": [
            {"sku": format!("sku-{}", id % 7 + 1), "qty": 1 + id % 3, "price": 12.5},
            {"sku": "sku-42", "qty": 1, "price": 3.0},
        ],
        "total": total(12.5 * (1 + id % 3) as f64 + 3.0, by),
        "served_by": by.name(),
    })
}

/// The new service's one real bug, for the shadow comparison to find: it
/// sends the order total as a string.
fn total(t: f64, by: Toy) -> Value {
    match by {
        Toy::Monolith => json!(t),
        Toy::Orders => json!(format!("{t:.2}")),
    }
}

/// Answers one request of a toy service.
pub fn toy_answer(toy: Toy, method: &str, path: &str) -> (StatusCode, Value) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = (
        StatusCode::NOT_FOUND,
        json!({"error": "not found", "served_by": toy.name()}),
    );
    match (toy, method, segs.as_slice()) {
        (_, "GET", ["healthz"]) => (StatusCode::OK, json!({"ok": true, "served_by": toy.name()})),
        (_, "GET", ["api", "orders"]) => (
            StatusCode::OK,
            json!({"orders": (1..=3).map(|i| order(i, toy)).collect::<Vec<_>>(), "served_by": toy.name()}),
        ),
        (_, "GET", ["api", "orders", id]) => match id.parse::<u64>() {
            Ok(id) => (StatusCode::OK, order(id, toy)),
            Err(_) => not_found,
        },
        (_, "POST", ["api", "orders"]) => (
            StatusCode::CREATED,
            json!({"id": 1001, "status": "open", "served_by": toy.name()}),
        ),
        (Toy::Monolith, "GET", ["api", "users"]) => (
            StatusCode::OK,
            json!({"users": (1..=5).map(|i| json!({"id": i, "name": format!("user{i}")})).collect::<Vec<_>>(), "served_by": "monolith"}),
        ),
        (Toy::Monolith, "GET", ["api", "users", id]) => match id.parse::<u64>() {
            Ok(id) => (
                StatusCode::OK,
                json!({"id": id, "name": format!("user{id}"), "served_by": "monolith"}),
            ),
            Err(_) => not_found,
        },
        (Toy::Monolith, "GET", ["api", "products"]) => (
            StatusCode::OK,
            json!({"products": [{"sku": "sku-42", "price": 3.0}, {"sku": "sku-1", "price": 12.5}], "served_by": "monolith"}),
        ),
        (Toy::Monolith, "GET", [""]) => (
            StatusCode::OK,
            json!({"shop": "the monolith", "try": ["/api/users", "/api/orders/7", "/api/products"]}),
        ),
        _ => not_found,
    }
}

/// Like many real services, the toys stamp every answer with a request id
/// and the time it was made: fields that differ on every call, even between
/// two calls to the monolith. The demo's noise check learns that they are
/// noise.
fn stamp(body: &mut Value) {
    if let Value::Object(m) = body {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let time = strangler_shadow::time::rfc3339(secs);
        let micros = now.subsec_micros();
        m.insert(
            "generated_at".into(),
            json!(time.replace('Z', &format!(".{micros:06}Z"))),
        );
        m.insert(
            "request_id".into(),
            json!(format!("req-{:016x}", rand::random::<u64>())),
        );
    }
}

/// Starts a toy service on 127.0.0.1:0 and returns its address.
pub async fn start_toy(toy: Toy) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(move |req: Request<Incoming>| async move {
                let method = req.method().as_str().to_string();
                let path = req.uri().path().to_string();
                // Drain the request body; toys ignore it.
                let _ = req.into_body().collect().await;
                let (status, mut body) = toy_answer(toy, &method, &path);
                stamp(&mut body);
                let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                resp.headers_mut()
                    .insert("x-served-by", http::HeaderValue::from_static(toy.name()));
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config, pointing at the toy services.
pub fn demo_config(
    port: u16,
    admin_port: u16,
    monolith: SocketAddr,
    orders: SocketAddr,
    data: &str,
) -> String {
    format!(
        r#"# Written by `strangler demo`.
[listen]
proxy = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin_port}"

[store]
path = "{data}"

[upstreams.monolith]
urls = ["http://{monolith}"]

[upstreams.orders]
urls = ["http://{orders}"]

[default]
upstream = "monolith"

# The orders API is being carved out: 20 % of users go to the new service,
# always the same users (sticky on x-user-id).
[[routes]]
name = "orders"
match.path_prefix = "/api/orders"
split = {{ orders = 20, monolith = 80 }}
sticky = "header:x-user-id"
# Everything the monolith still answers is also sent to the new service and
# the two answers compared; `strangler diffs` shows what differs.
shadow = {{ upstream = "orders", percent = 100 }}
# "served_by" names the service that answered: different by design.
compare.ignore_fields = ["/served_by", "/orders/*/served_by"]
# Diffy's method: every shadowed request is also sent again to the monolith,
# and fields that differ between two monolith answers as often as between
# monolith and new service (request ids, timestamps) are noise. A real
# deployment would check a sample (percent = 5 or 10).
compare.noise_check = {{ percent = 100 }}
"#
    )
}

pub fn run(opts: DemoOptions) -> ExitCode {
    crate::cli::serve::init_logging(LogFormat::Text);
    crate::cli::serve::install_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let (monolith, orders) =
            match (start_toy(Toy::Monolith).await, start_toy(Toy::Orders).await) {
                (Ok(m), Ok(o)) => (m, o),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("cannot start the toy services: {e}");
                    return ExitCode::from(1);
                }
            };
        let dir: PathBuf =
            std::env::temp_dir().join(format!("strangler-demo-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return ExitCode::from(1);
        }
        let config_path = dir.join("strangler.toml");
        let data = dir.join("data");
        let text = demo_config(
            opts.port,
            opts.admin_port,
            monolith,
            orders,
            &data.display().to_string(),
        );
        if let Err(e) = std::fs::write(&config_path, text) {
            eprintln!("cannot write {}: {e}", config_path.display());
            return ExitCode::from(1);
        }
        let config = match crate::state::config_file::load(&config_path) {
            Ok(c) => c,
            Err(e) => {
                for line in e.lines() {
                    eprintln!("{line}");
                }
                return ExitCode::from(1);
            }
        };
        let traffic = opts.traffic;
        let serve_opts = ServeOptions {
            config: config_path.clone(),
            data: None,
            log_format: LogFormat::Text,
            access_log: !traffic,
            on_listening: Some(Arc::new(move |addr: SocketAddr, admin: SocketAddr| {
                print_intro(addr, admin, monolith, orders, &config_path);
                if traffic {
                    tokio::spawn(generate_traffic(addr));
                }
            })),
        };
        let code = crate::cli::serve::serve(serve_opts, config).await;
        let _ = std::fs::remove_dir_all(&dir);
        code
    })
}

fn print_intro(
    proxy: SocketAddr,
    admin: SocketAddr,
    monolith: SocketAddr,
    orders: SocketAddr,
    config: &std::path::Path,
) {
    // A closed stdout (e.g. piped into `head`) must not stop the demo.
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout().lock(),
        r#"
strangler demo
  toy monolith      http://{monolith}   (users, orders, products)
  toy orders svc    http://{orders}   (the new orders service)
  proxy             http://{proxy}
  config            {config}

Try:
  curl -s http://{proxy}/api/users                      # not migrated: the monolith answers
  curl -s http://{proxy}/api/orders/7 -H 'x-user-id: 1' # 20% of users get the new service ("served_by")
  for u in 1 2 3 4 5 6 7 8 9 10; do curl -s http://{proxy}/api/orders/7 -H "x-user-id: $u" | grep -o '"served_by":"[^"]*"'; done
  strangler explain GET /api/orders/7 -H 'x-user-id: 3' --config {config}

Steer the migration from another terminal (admin API on http://{admin}{hint}):
  strangler status                       # live split, overrides, traffic per side
  strangler shift orders 50 --reason "canary looks good"
  strangler rollback orders              # everyone back on the monolith, at once
  strangler history                      # who changed what, when and why
  strangler reset orders                 # back to the file's split
  strangler diffs                        # what the shadow comparison found
  strangler diffs show ID                # one mismatch, side by side

Edit the config and send SIGHUP (kill -HUP {pid}) to reload. Ctrl-C stops the demo.
"#,
        pid = std::process::id(),
        admin = admin,
        hint = if admin.port() == 9901 {
            String::new()
        } else {
            format!("; first: export STRANGLER_ADMIN=http://{admin}")
        },
        config = config.display()
    );
}

/// Background requests through the proxy, as if users were shopping.
async fn generate_traffic(proxy: SocketAddr) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut n: u64 = 0;
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        ticker.tick().await;
        n += 1;
        let path = if n.is_multiple_of(3) {
            "/api/users".to_string()
        } else {
            format!("/api/orders/{}", n % 20)
        };
        let Ok(uri) = format!("http://{proxy}{path}").parse::<http::Uri>() else {
            continue;
        };
        let req = Request::get(uri)
            .header("x-user-id", (n % 50).to_string())
            .body(Full::new(Bytes::new()));
        if let Ok(req) = req {
            let _ = client.request(req).await;
        }
    }
}
