//! Experiment: the floor proxy with a hand-rolled per-upstream pool of
//! hyper http1 connections instead of hyper-util's legacy client.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

type Pool = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

struct Returning {
    body: Incoming,
    conn: Option<(SendRequest<Incoming>, Pool)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((s, pool)) = self.conn.take()
            && let Ok(mut p) = pool.lock()
        {
            p.push(s);
        }
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let r = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, std::task::Poll::Ready(None)) || self.body.is_end_stream() {
            self.give_back();
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 2 {
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
        let Ok(listener) = tokio::net::TcpListener::bind(&listen).await else { return };
        let pool: Pool = Arc::new(Mutex::new(Vec::new()));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                    let pool = pool.clone();
                    let upstream = upstream.clone();
                    async move {
                        req.headers_mut().remove(http::header::CONNECTION);
                        let mut sender = loop {
                            let popped = pool.lock().ok().and_then(|mut p| p.pop());
                            match popped {
                                Some(mut s) => {
                                    if s.ready().await.is_ok() {
                                        break Some(s);
                                    }
                                }
                                None => break None,
                            }
                        };
                        if sender.is_none()
                            && let Ok(tcp) = tokio::net::TcpStream::connect(&upstream).await {
                                let _ = tcp.set_nodelay(true);
                                if let Ok((s, conn)) = hyper::client::conn::http1::Builder::new()
                                    .writev(false)
                                    .handshake(TokioIo::new(tcp))
                                    .await
                                {
                                    tokio::spawn(conn);
                                    sender = Some(s);
                                }
                            }
                        let resp = match sender {
                            Some(mut s) => match s.send_request(req).await {
                                Ok(r) => r.map(|b| Returning { body: b, conn: Some((s, pool.clone())) }.boxed_unsync()),
                                Err(_) => bad(),
                            },
                            None => bad(),
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

fn bad() -> hyper::Response<UnsyncBoxBody<bytes::Bytes, hyper::Error>> {
    let mut r = hyper::Response::new(
        http_body_util::Empty::new()
            .map_err(|n: Infallible| match n {})
            .boxed_unsync(),
    );
    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
    r
}
