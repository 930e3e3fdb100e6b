//! The floor: the smallest tokio + hyper 1 + hyper-util proxy (pooled
//! legacy client, streaming bodies, current-thread runtime, flattened
//! writes). benches/load.sh measures it beside strangler to show what
//! strangler's own work costs on top of hyper. Never run by CI.
//!
//! cargo bench --bench floor_proxy -- LISTEN_ADDR UPSTREAM_ADDR

use std::convert::Infallible;

use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 2 {
        eprintln!("usage: floor_proxy LISTEN_ADDR UPSTREAM_ADDR");
        return;
    }
    let (listen, upstream) = (args[0].clone(), args[1].clone());
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::bind(&listen).await else {
            eprintln!("cannot bind {listen}");
            return;
        };
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .http1_writev(false)
            .pool_max_idle_per_host(1024)
            .build(HttpConnector::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                    let client = client.clone();
                    let upstream = upstream.clone();
                    async move {
                        let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                        let uri = format!("http://{upstream}{pq}").parse().unwrap_or_default();
                        *req.uri_mut() = uri;
                        req.headers_mut().remove(http::header::CONNECTION);
                        let resp = match client.request(req).await {
                            Ok(r) => r.map(|b| b.boxed_unsync()),
                            Err(_) => {
                                let mut r = hyper::Response::new(
                                    http_body_util::Empty::new().map_err(|n: Infallible| match n {}).boxed_unsync(),
                                );
                                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                r
                            }
                        };
                        Ok::<hyper::Response<UnsyncBoxBody<bytes::Bytes, hyper::Error>>, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .writev(false)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
