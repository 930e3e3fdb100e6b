//! The server loop: accept connections (plain or TLS), serve each with the
//! proxy as the service and the configured limits (HTTP/1.1 on the lean
//! `http1` server unless `[listen] lean = false`, HTTP/2 on hyper's), and on
//! shutdown stop accepting and drain in-flight requests within the drain
//! timeout (`drain`), a second signal (`shutdown`) ending the wait.

pub mod drain;
pub mod send_timeout;
pub mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::http1::server::Server;
use crate::proxy::Proxy;
use crate::server::drain::Drain;
use crate::server::send_timeout::SendTimeout;
use crate::state::Shared;

/// Connection settings taken from `[listen]`.
fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let live = shared.live.load();
    let listen = &live.config().listen;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // The header read timeout is armed for every request: pooled sleeps.
        .timer(crate::timer::PooledTimer {
            pool: shared.sleeps.clone(),
        })
        .header_read_timeout(listen.header_read_timeout)
        .max_buf_size(listen.max_header_bytes.max(8192))
        .max_headers(listen.max_headers)
        .writev(false)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(listen.h2_max_streams)
        .max_header_list_size(listen.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts and serves until `shutdown` completes, then stops accepting and
/// waits up to the drain timeout for in-flight requests. Returns whether
/// every connection finished in time.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let builder = Arc::new(builder(&shared));
    // `[listen] lean = false`: hyper's server takes every client connection.
    let path = if shared.live.load().config().listen.lean {
        Http1Path::Lean
    } else {
        tracing::info!("[listen] lean = false: hyper's server serves every client connection");
        Http1Path::Hyper
    };
    let lean = {
        let live = shared.live.load();
        let listen = &live.config().listen;
        Arc::new(crate::http1::server::Server {
            service: Arc::new(Proxy {
                shared: shared.clone(),
            }),
            hyper: builder.clone(),
            sleeps: shared.sleeps.clone(),
            limits: crate::http1::server::Limits {
                header_read_timeout: listen.header_read_timeout,
                send_timeout: listen.send_timeout,
                max_header_bytes: listen.max_header_bytes.max(8192),
                max_headers: listen.max_headers,
            },
        })
    };
    let graceful = Drain::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                serve_connection(stream, peer, &lean, path, tls.as_ref(), &graceful);
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // Not ready from now on: a load balancer polling `/readyz` stops
    // sending here while what is in flight finishes.
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // A second SIGTERM/SIGINT during the drain stops waiting, as operators
    // expect. Listen for it before announcing the drain, so a signal sent
    // on seeing the announcement cannot slip past.
    let second = shutdown::shutdown_signal();
    let drain = shared.live.load().config().listen.drain_timeout;
    tracing::info!(
        connections = graceful.count(),
        ?drain,
        "draining in-flight requests"
    );
    tokio::select! {
        done = tokio::time::timeout(drain, graceful.shutdown()) => done.is_ok(),
        () = second => {
            tracing::warn!("second shutdown signal: closing the remaining connections now");
            false
        }
    }
}

/// Which server HTTP/1.1 client connections start on (`[listen] lean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Http1Path {
    /// The lean server, which hands what it does not take to hyper.
    Lean,
    /// hyper's server for every connection.
    Hyper,
}

/// Serves one accepted connection on a task of its own: plain TCP and TLS
/// that negotiated HTTP/1.1 on the lean HTTP/1.1 path (which hands HTTP/2
/// and requests with bodies to hyper), TLS with h2 on hyper's; with
/// `Http1Path::Hyper`, everything on hyper's.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    lean: &Arc<Server<Proxy>>,
    path: Http1Path,
    tls: Option<&TlsAcceptor>,
    graceful: &Drain,
) {
    // The peer's address as a header value, made once per connection.
    let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
    let ticket = graceful.ticket();
    match tls {
        None if path == Http1Path::Lean => {
            let stream = SendTimeout::new(stream, lean.limits.send_timeout, peer);
            tokio::spawn(crate::http1::server::serve(
                stream,
                peer,
                peer_ip,
                lean.clone(),
                ticket,
            ));
        }
        None => {
            let stream = SendTimeout::new(stream, lean.limits.send_timeout, peer);
            tokio::spawn(serve_with_hyper(
                stream,
                peer,
                peer_ip,
                lean.clone(),
                ticket,
            ));
        }
        Some(acceptor) => {
            let acceptor = acceptor.clone();
            let lean = lean.clone();
            let handshake_timeout = lean.limits.header_read_timeout;
            let send_timeout = lean.limits.send_timeout;
            tokio::spawn(async move {
                // The send timeout beneath TLS: each write to the socket
                // counts as progress.
                let stream = SendTimeout::new(stream, send_timeout, peer);
                let tls_stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                // HTTP/1.1 (or no ALPN) takes the lean path, as on plain TCP,
                // unless `[listen] lean = false`.
                if path == Http1Path::Lean && tls_stream.get_ref().1.alpn_protocol() != Some(b"h2")
                {
                    return crate::http1::server::serve(tls_stream, peer, peer_ip, lean, ticket)
                        .await;
                }
                serve_with_hyper(tls_stream, peer, peer_ip, lean, ticket).await;
            });
        }
    }
}

/// hyper's server serves the whole connection: HTTP/1.1 or HTTP/2 (by
/// ALPN, or h2c with prior knowledge), upgrades included.
async fn serve_with_hyper<S>(
    stream: S,
    peer: SocketAddr,
    peer_ip: http::HeaderValue,
    lean: Arc<Server<Proxy>>,
    ticket: drain::Ticket,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = crate::http1::server::hyper_service(lean.service.clone(), peer, peer_ip);
    let conn = lean
        .hyper
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    if let Err(e) = ticket.watch(conn).await {
        tracing::debug!(%peer, "connection ended with error: {e}");
    }
}

/// TLS for the proxy listener: the PEM certificate chain and key, with ALPN
/// offering h2 and http/1.1.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read TLS certificate {cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid TLS certificate {cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {cert}"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read TLS key {key}: {e}"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
