//! The client's request body on its way to the upstream, watched: read to
//! its end, failed (an invalid chunk size, a client gone midway), or still
//! due. When an exchange fails, this tells whose fault it was: a failure of
//! the client's own body is the client's (400), a body still due when the
//! upstream timeout fires means the client stalled (408). Neither counts
//! against the upstream: no passive-health failure, no 5xx in the route's
//! error rate or a ramp's gate.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::upstream::body::{BoxError, ProxyBody};

const DUE: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// Where a watched body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientBody {
    /// Not read to its end yet.
    Due,
    /// Read to its end.
    Done,
    /// The client's side failed.
    Failed,
}

/// The watcher's end: read after the exchange.
#[derive(Debug)]
pub(super) struct BodyWatch(Arc<AtomicU8>);

impl BodyWatch {
    pub fn state(&self) -> ClientBody {
        match self.0.load(Ordering::Acquire) {
            DONE => ClientBody::Done,
            FAILED => ClientBody::Failed,
            _ => ClientBody::Due,
        }
    }
}

/// `body`, watched.
pub(super) fn watch(body: ProxyBody) -> (ProxyBody, BodyWatch) {
    let state = Arc::new(AtomicU8::new(DUE));
    let watched = Watched {
        inner: body,
        state: state.clone(),
    };
    (ProxyBody::Layered(Box::pin(watched)), BodyWatch(state))
}

struct Watched {
    inner: ProxyBody,
    state: Arc<AtomicU8>,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let now = match &polled {
            Poll::Ready(None) => Some(DONE),
            Poll::Ready(Some(Err(_))) => Some(FAILED),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => Some(DONE),
            _ => None,
        };
        if let Some(s) = now {
            self.state.store(s, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;

    impl Body for Failing {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(Err("invalid chunk size".into())))
        }
    }

    fn poll(body: &mut ProxyBody) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let waker = std::task::Waker::noop();
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_body_is_due_until_read_to_its_end_and_failed_when_it_fails() {
        let (mut body, watched) = watch(ProxyBody::full("abc"));
        assert_eq!(watched.state(), ClientBody::Due);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert_eq!(watched.state(), ClientBody::Done);

        let (mut body, watched) = watch(ProxyBody::Layered(Box::pin(Failing)));
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Err(_)))));
        assert_eq!(watched.state(), ClientBody::Failed);
    }
}
