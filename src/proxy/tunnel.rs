//! WebSocket tunnels: after both sides switched protocols (101), bytes are
//! copied both ways without parsing frames, until either side closes or
//! nothing moved for the route's `idle_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Joins the client's and the upstream's upgraded connections.
pub fn spawn(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, route: String) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(%route, "websocket upgrade failed: {e}");
                return;
            }
        };
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut a = Active::new(TokioIo::new(client), last.clone(), start);
        let mut b = Active::new(TokioIo::new(upstream), last.clone(), start);
        let watchdog = async {
            loop {
                tokio::time::sleep(idle / 4 + Duration::from_millis(1)).await;
                let quiet = start
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Relaxed)));
                if quiet >= idle {
                    return;
                }
            }
        };
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut a, &mut b) => {
                if let Err(e) = r {
                    tracing::debug!(%route, "websocket tunnel ended: {e}");
                }
            }
            () = watchdog => tracing::debug!(%route, "websocket tunnel idle, closed"),
        }
    });
}

/// An upgraded connection that notes when bytes last moved.
struct Active {
    io: TokioIo<Upgraded>,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl Active {
    fn new(io: TokioIo<Upgraded>, last: Arc<AtomicU64>, start: Instant) -> Self {
        Active { io, last, start }
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
}

impl AsyncRead for Active {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Active {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The request asks to switch to WebSocket (`Upgrade: websocket` and
/// `Connection: upgrade`).
pub fn wants_websocket(headers: &http::HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(http::header::UPGRADE, "websocket") && has(http::header::CONNECTION, "upgrade")
}
