//! What both sides of the lean HTTP/1.1 codec share: reading into a
//! buffer's spare room, where a parsed header sits in its head, and
//! Content-Length values.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// The error of a body the codec passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// (name start, name end, value start, value end) of a header in its head.
pub type HeaderAt = (usize, usize, usize, usize);

/// Reads what the stream has into the spare room of `buf`, first making
/// `reserve` bytes of room when less than 1 KiB is left; `Ok(0)` at the
/// end of the stream.
pub fn poll_read_buf<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    reserve: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(reserve);
    }
    let len = buf.len();
    let mut read = ReadBuf::uninit(buf.spare_capacity_mut());
    std::task::ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    let n = read.filled().len();
    // SAFETY: poll_read initialised the first `n` bytes of the spare
    // capacity (ReadBuf tracks them).
    unsafe { buf.set_len(len + n) };
    Poll::Ready(Ok(n))
}

/// A Content-Length value: decimal digits only.
pub fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}
