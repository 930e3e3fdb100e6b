//! Bodies the proxy sends: a client's or upstream's streamed body passed
//! through untouched (possibly wrapped by a layer: a shadow's tee, the
//! cache), a small in-memory body (error JSON), or nothing; and an
//! upstream's response body, which gives its connection back when read to
//! its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::http1::client::{H1Body, IdleStack};

/// The error of a body strangler passes on (hyper's, or the lean client's).
pub use crate::http1::common::BoxError;

/// Every body strangler produces.
#[derive(Default)]
pub enum ProxyBody {
    /// Streamed through as it arrives.
    Incoming(Incoming),
    /// An upstream's response body on a pooled connection.
    Pooled(PooledBody),
    /// A small body held in memory.
    Full(Option<Bytes>),
    /// A body passed through by a layer that looks at it as it streams:
    /// a copy captured for a shadow (`mirror::TeeBody`), or the route's
    /// cache storing it (`policy::cache::CacheBody`).
    Layered(Layered),
    #[default]
    Empty,
}

/// A body wrapped by a layer (boxed: this module knows no layer).
pub type Layered = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Sync>>;

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyBody::Incoming(b) => f.debug_tuple("Incoming").field(b).finish(),
            ProxyBody::Pooled(b) => f.debug_tuple("Pooled").field(b).finish(),
            ProxyBody::Full(b) => f.debug_tuple("Full").field(b).finish(),
            ProxyBody::Layered(_) => f.write_str("Layered"),
            ProxyBody::Empty => f.write_str("Empty"),
        }
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
            ProxyBody::Layered(b) => b.as_mut().poll_frame(cx),
            ProxyBody::Empty => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(b) => b.is_end_stream(),
            ProxyBody::Pooled(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Layered(b) => b.is_end_stream(),
            ProxyBody::Empty => true,
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(b) => b.size_hint(),
            ProxyBody::Pooled(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Layered(b) => b.size_hint(),
            ProxyBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A keep-alive connection to an instance through hyper's client.
pub type Conn = SendRequest<ProxyBody>;

/// A response body that gives its connection back when read to the end.
#[derive(Debug)]
pub enum PooledBody {
    /// Read by hyper's client.
    Hyper(HyperBody),
    /// Read by the lean exchange (`http1::client`).
    Lean(H1Body),
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            PooledBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            PooledBody::Lean(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Hyper(b) => b.is_end_stream(),
            PooledBody::Lean(b) => b.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Hyper(b) => b.size_hint(),
            PooledBody::Lean(b) => b.size_hint(),
        }
    }
}

/// A body read by hyper's client; its connection goes back at the end.
#[derive(Debug)]
pub struct HyperBody {
    pub(super) body: Incoming,
    pub(super) back: Option<(Conn, Arc<IdleStack<Conn>>)>,
}

impl HyperBody {
    fn give_back(&mut self) {
        if let Some((conn, idle)) = self.back.take()
            && !conn.is_closed()
        {
            idle.push(conn);
        }
    }
}

impl Drop for HyperBody {
    fn drop(&mut self) {
        // Dropped before its end: the connection has unread bytes; close it.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for HyperBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.body.is_end_stream() {
            self.give_back();
        }
        r
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
