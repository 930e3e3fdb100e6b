//! Bodies the proxy sends: a client's or upstream's streamed body passed
//! through untouched, a small in-memory body (error JSON), or nothing. The
//! request body sent upstream can be taken back when the upstream refused
//! the connection before reading it, so it can go to another instance.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Every body strangler produces.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed through as it arrives.
    Incoming(Incoming),
    /// A request body the sender may reclaim while it is unread.
    Reclaimable(ReclaimableBody),
    /// A small body held in memory.
    Full(Option<Bytes>),
    Empty,
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Reclaimable(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Empty => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(b) => b.is_end_stream(),
            ProxyBody::Reclaimable(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Empty => true,
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(b) => b.size_hint(),
            ProxyBody::Reclaimable(b) => b.hint,
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A request body shared with the sender until the upstream first reads it.
#[derive(Debug)]
pub struct ReclaimableBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    owned: Option<Incoming>,
    hint: SizeHint,
    end: bool,
}

/// The sender's handle: takes the body back if it was never read.
#[derive(Debug, Clone)]
pub struct Reclaim(Arc<Mutex<Option<Incoming>>>);

impl Reclaim {
    /// The body, if the upstream never started reading it.
    pub fn take(&self) -> Option<Incoming> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

impl ReclaimableBody {
    pub fn new(body: Incoming) -> (Self, Reclaim) {
        let hint = body.size_hint();
        let end = body.is_end_stream();
        let slot = Arc::new(Mutex::new(Some(body)));
        (
            ReclaimableBody {
                slot: slot.clone(),
                owned: None,
                hint,
                end,
            },
            Reclaim(slot),
        )
    }
}

impl Body for ReclaimableBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.owned.is_none() {
            let taken = self.slot.lock().ok().and_then(|mut s| s.take());
            match taken {
                Some(b) => self.owned = Some(b),
                // Reclaimed by the sender: this attempt was abandoned.
                None => return Poll::Ready(None),
            }
        }
        match self.owned.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.owned {
            Some(b) => b.is_end_stream(),
            None => self.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.owned {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}
