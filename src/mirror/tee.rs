//! Teeing a body: the request body, for the shadow copy, and the
//! primary's response body, for the comparison, passed through untouched
//! while a capped copy of it is captured and, at its end, sent to the
//! shadow task.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use strangler_shadow::capture::{HashKey, RawHeaders};
use strangler_shadow::{BodyCapture, Captured};
use tokio::sync::oneshot;

use crate::upstream::body::ProxyBody;

/// Where a tee sends what it captured when its body ends.
enum TeeSink {
    /// The request body, for the shadow request; None when over the cap.
    Request(oneshot::Sender<Option<Bytes>>),
    /// The primary's answer.
    Response {
        tx: oneshot::Sender<Captured>,
        status: u16,
        headers: Result<Box<RawHeaders>, HeaderMap>,
        latency_ms: f64,
    },
}

/// A body passed through untouched while a copy of it is captured. When
/// the body ends, the capture goes to the shadow task; when it is dropped
/// before its end, nothing is sent and the shadow task counts it.
pub struct TeeBody {
    inner: ProxyBody,
    capture: Option<BodyCapture>,
    sink: Option<TeeSink>,
}

impl std::fmt::Debug for TeeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeBody").finish_non_exhaustive()
    }
}

impl TeeBody {
    /// Tees a request body for the shadow request.
    pub fn request(
        inner: ProxyBody,
        cap: usize,
        key: &Arc<HashKey>,
        tx: oneshot::Sender<Option<Bytes>>,
    ) -> ProxyBody {
        Self::wrap(inner, BodyCapture::new(cap, key), TeeSink::Request(tx))
    }

    /// Tees the primary's response body for the comparison. Its headers
    /// as the upstream sent them: raw when the lean exchange kept them so
    /// (no copy of the map), otherwise the map's (copied).
    pub fn response(
        inner: ProxyBody,
        cap: usize,
        key: &Arc<HashKey>,
        tx: oneshot::Sender<Captured>,
        status: u16,
        headers: Result<Box<RawHeaders>, &HeaderMap>,
        latency_ms: f64,
    ) -> ProxyBody {
        let sink = TeeSink::Response {
            tx,
            status,
            headers: headers.map_err(HeaderMap::clone),
            latency_ms,
        };
        Self::wrap(inner, BodyCapture::new(cap, key), sink)
    }

    fn wrap(inner: ProxyBody, capture: BodyCapture, sink: TeeSink) -> ProxyBody {
        let mut tee = TeeBody {
            inner,
            capture: Some(capture),
            sink: Some(sink),
        };
        if tee.inner.is_end_stream() {
            // Nothing will be polled (HEAD, 204, empty): done already.
            tee.complete();
            return std::mem::replace(&mut tee.inner, ProxyBody::Empty);
        }
        ProxyBody::Layered(Box::pin(tee))
    }

    fn complete(&mut self) {
        let (Some(capture), Some(sink)) = (self.capture.take(), self.sink.take()) else {
            return;
        };
        match sink {
            TeeSink::Request(tx) => {
                let (bytes, _, long) = capture.finish();
                let _ = tx.send(long.is_none().then_some(bytes));
            }
            TeeSink::Response {
                tx,
                status,
                headers,
                latency_ms,
            } => {
                let captured = match headers {
                    Ok(raw) => {
                        let mut c = capture.into_captured(status, HeaderMap::new(), latency_ms);
                        c.raw = Some(raw);
                        c
                    }
                    Err(map) => capture.into_captured(status, map, latency_ms),
                };
                let _ = tx.send(captured);
            }
        }
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // Some servers stop polling once the length is reached.
        if self.inner.is_end_stream() {
            self.complete();
        }
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = crate::upstream::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::body::BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(c)) = (frame.data_ref(), this.capture.as_mut()) {
                    c.push_bytes(data);
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            // A failed body is not compared: dropping the sink says so.
            Poll::Ready(Some(Err(_))) => {
                this.sink = None;
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
