//! Bodies the proxy sends: a client's or upstream's streamed body passed
//! through untouched (possibly teed for a shadow comparison), a small
//! in-memory body (error JSON), or nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The error of a body strangler passes on (hyper's, or the lean client's).
pub use crate::http1::common::BoxError;

/// Every body strangler produces.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed through as it arrives.
    Incoming(Incoming),
    /// An upstream's response body on a pooled connection.
    Pooled(crate::upstream::PooledBody),
    /// A small body held in memory.
    Full(Option<Bytes>),
    /// A body passed through while a copy is captured for a shadow.
    Tee(Box<crate::mirror::TeeBody>),
    /// A body stored in the route's cache as it streams.
    Cache(Box<crate::policy::cache::CacheBody>),
    Empty,
}

impl Default for ProxyBody {
    fn default() -> Self {
        ProxyBody::Empty
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody::Incoming(body)
    }
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Pooled(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Tee(b) => Pin::new(b.as_mut()).poll_frame(cx),
            ProxyBody::Cache(b) => Pin::new(b.as_mut()).poll_frame(cx),
            ProxyBody::Empty => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(b) => b.is_end_stream(),
            ProxyBody::Pooled(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Tee(b) => b.is_end_stream(),
            ProxyBody::Cache(b) => b.is_end_stream(),
            ProxyBody::Empty => true,
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(b) => b.size_hint(),
            ProxyBody::Pooled(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Tee(b) => b.size_hint(),
            ProxyBody::Cache(b) => b.size_hint(),
            ProxyBody::Empty => SizeHint::with_exact(0),
        }
    }
}
