//! The client write timeout (`[listen].send_timeout`, nginx's
//! `send_timeout`): a write to a client that makes no progress for that
//! long fails, and the connection is closed, so that a client that stops
//! reading its answer does not hold its connection (and the upstream's
//! behind it) forever. The timer is armed only when a write has to wait
//! for the client: a write that goes straight through costs a branch.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::http1::common::poll_read_buf;
use crate::http1::server::{ClientStream, READ_SIZE, tcp_left};

/// A client connection whose writes time out.
#[derive(Debug)]
pub struct SendTimeout<S> {
    io: S,
    limit: Duration,
    peer: SocketAddr,
    /// Kept once made, reset when armed again.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> SendTimeout<S> {
    pub fn new(io: S, limit: Duration, peer: SocketAddr) -> Self {
        SendTimeout {
            io,
            limit,
            peer,
            sleep: None,
            armed: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// A write is waiting for the client: the timer runs from the first
    /// wait after progress; when it fires, the write fails.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            let deadline = Instant::now() + self.limit;
            match self.sleep.as_mut() {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Pending;
        };
        ready!(sleep.as_mut().poll(cx));
        tracing::info!(
            client = %self.peer.ip(),
            send_timeout = ?self.limit,
            "a client stopped reading its answer: connection closed after send_timeout"
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing within send_timeout",
        )))
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.wait(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.progress(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.progress(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.progress(r, cx)
    }
}

impl ClientStream for SendTimeout<TcpStream> {
    const BUFFERS_WRITES: bool = false;

    fn poll_left(&mut self, rbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
        tcp_left(self.get_ref(), rbuf, cx)
    }
}

/// The timeout beneath TLS: every write to the socket is progress, so a
/// client reading slowly but steadily is never cut off mid-flush.
impl ClientStream for tokio_rustls::server::TlsStream<SendTimeout<TcpStream>> {
    const BUFFERS_WRITES: bool = true;

    /// Readiness of the socket says nothing of what TLS records decrypt
    /// to: a read says.
    fn poll_left(&mut self, rbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
        match poll_read_buf(self, rbuf, READ_SIZE, cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(n)) => n == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn peer() -> SocketAddr {
        ([127, 0, 0, 1], 1).into()
    }

    #[tokio::test]
    async fn writes_a_reader_keeps_taking_never_time_out() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = SendTimeout::new(a, Duration::from_secs(2), peer());
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.map(|_| all.len())
        });
        // A thousand times the pipe: every write waits for the reader.
        for _ in 0..1000 {
            w.write_all(&[7; 1024])
                .await
                .expect("the reader makes room");
        }
        w.shutdown().await.expect("shutdown");
        drop(w);
        assert_eq!(reader.await.expect("reader").expect("read"), 1024 * 1000);
    }

    #[tokio::test]
    async fn a_write_the_reader_never_takes_times_out() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = SendTimeout::new(a, Duration::from_millis(100), peer());
        // Goes straight through: no timer.
        w.write_all(&[0; 1024]).await.expect("fits the pipe");
        assert!(!w.armed);
        let e = w.write_all(&[1; 1024]).await.expect_err("times out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
