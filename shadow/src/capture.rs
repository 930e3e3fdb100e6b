//! What the proxy keeps of an answer while it streams past: status, headers,
//! the first `cap` bytes of the body and a SHA-256 of the whole body.

use aws_lc_rs::digest;
use bytes::{Bytes, BytesMut};

/// One captured answer (primary or shadow).
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: u16,
    /// Lower-case names, in arrival order; repeated names stay repeated.
    pub headers: Vec<(String, String)>,
    /// The body as sent (still content-encoded), up to the capture cap.
    pub body: Bytes,
    /// Length of the whole body.
    pub body_len: u64,
    /// SHA-256 of the whole body, lower-case hex.
    pub body_sha256: String,
    /// The whole body fit under the cap.
    pub complete: bool,
    /// Time to response headers.
    pub latency_ms: f64,
}

/// Collects a body as it streams: the first `cap` bytes and a running hash.
pub struct BodyCapture {
    cap: usize,
    buf: BytesMut,
    hash: digest::Context,
    len: u64,
}

impl std::fmt::Debug for BodyCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCapture")
            .field("cap", &self.cap)
            .field("len", &self.len)
            .finish()
    }
}

impl BodyCapture {
    pub fn new(cap: usize) -> Self {
        BodyCapture {
            cap,
            buf: BytesMut::new(),
            hash: digest::Context::new(&digest::SHA256),
            len: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.hash.update(chunk);
        let room = self.cap.saturating_sub(self.buf.len());
        if room > 0 {
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The captured prefix, the whole length, its hash, and whether the
    /// prefix is the whole body.
    pub fn finish(self) -> (Bytes, u64, String, bool) {
        let complete = self.len <= self.cap as u64;
        let sha = hex(self.hash.finish().as_ref());
        (self.buf.freeze(), self.len, sha, complete)
    }

    /// Builds the captured answer.
    pub fn into_captured(
        self,
        status: u16,
        headers: Vec<(String, String)>,
        latency_ms: f64,
    ) -> Captured {
        let (body, body_len, body_sha256, complete) = self.finish();
        Captured {
            status,
            headers,
            body,
            body_len,
            body_sha256,
            complete,
            latency_ms,
        }
    }
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_a_prefix_and_hashes_the_whole() {
        let mut c = BodyCapture::new(4);
        c.push(b"abc");
        c.push(b"def");
        let (prefix, len, sha, complete) = c.finish();
        assert_eq!(&prefix[..], b"abcd");
        assert_eq!(len, 6);
        assert!(!complete);
        assert_eq!(sha, sha256_hex(b"abcdef"));
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
