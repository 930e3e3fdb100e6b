//! Rollback under load: how many requests reach the new service after
//! `strangler rollback` has returned. Several keep-alive connections send
//! sticky requests to a 50/50 route; once the CLI returns, every request the
//! clients send is tagged, and the new service counts tagged arrivals.
//! The goal is zero. Never run by CI.
//!
//! cargo build --release && cargo bench --bench rollback

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn backend(tagged: Arc<AtomicU64>, total: Arc<AtomicU64>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let (tagged, total) = (tagged.clone(), total.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    total.fetch_add(1, Ordering::Relaxed);
                    if req.headers().contains_key("x-after-rollback") {
                        tagged.fetch_add(1, Ordering::Relaxed);
                    }
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn main() {
    let bin = std::env::var("STRANGLER_BIN").unwrap_or_else(|_| "target/release/strangler".into());
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let (mono_tagged, mono_total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (new_tagged, new_total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mono = backend(mono_tagged.clone(), mono_total.clone()).await;
        let new = backend(new_tagged.clone(), new_total.clone()).await;
        let dir = std::env::temp_dir().join(format!("strangler-rollback-bench-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let cfg = dir.join("strangler.toml");
        let pick = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        let (pport, aport) = (pick(), pick());
        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:{pport}\"\nadmin = \"127.0.0.1:{aport}\"\n[store]\npath = \"{}\"\n\
             [upstreams.monolith]\nurls = [\"http://{mono}\"]\n[upstreams.orders]\nurls = [\"http://{new}\"]\n\
             [default]\nupstream = \"monolith\"\n[[routes]]\nname = \"orders\"\nmatch.path_prefix = \"/\"\n\
             split = {{ orders = 50, monolith = 50 }}\nsticky = \"header:x-user-id\"\n",
            dir.join("data").display()
        );
        let _ = std::fs::write(&cfg, text);
        let Ok(mut child) = std::process::Command::new(&bin)
            .args(["serve", "--access-log", "off", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
        else {
            eprintln!("cannot start {bin}; build it with cargo build --release");
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", pport)).await.is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..32 {
            let (after, stop, failures) = (after.clone(), stop.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", pport)).await else { return };
                let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await else { return };
                tokio::spawn(conn);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut req = hyper::Request::get("/x")
                        .header("host", "bench")
                        .header("x-user-id", format!("u{c}-{}", n % 50));
                    if after.load(Ordering::SeqCst) {
                        req = req.header("x-after-rollback", "1");
                    }
                    let Ok(req) = req.body(Empty::<Bytes>::new()) else { break };
                    if send.ready().await.is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    match send.send_request(req).await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.into_body().collect().await;
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["--admin", &format!("http://127.0.0.1:{aport}"), "rollback", "orders"])
                .output()
        })
        .await;
        let cli_ms = started.elapsed().as_secs_f64() * 1000.0;
        after.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let _ = t.await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let ok = matches!(out, Ok(Ok(ref o)) if o.status.success());
        println!(
            "rollback cli ok={ok} took {cli_ms:.1} ms; requests: monolith {} orders {}; sent after the CLI returned: \
             {} to monolith, {} to orders (goal 0); failed requests {}",
            mono_total.load(Ordering::Relaxed),
            new_total.load(Ordering::Relaxed),
            mono_tagged.load(Ordering::Relaxed),
            new_tagged.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed),
        );
    });
}
