//! What the proxy keeps of an answer while it streams past: status, headers
//! and the first `cap` bytes of the body. A body longer than the cap is also
//! hashed as it streams, with the run's keyed hash (HMAC-SHA256 under the
//! in-memory redaction key), so two long bodies can still be compared and
//! nothing stored can be matched against a guessed body. A body within the
//! cap is hashed later, and only if a record needs it.

use aws_lc_rs::{digest, hmac};
use bytes::{Bytes, BytesMut};

/// The key of the run's keyed hashes (never written anywhere).
pub use aws_lc_rs::hmac::Key as HashKey;

/// Headers as they came over the wire, not yet in a header map: where each
/// name and value lies in the head's bytes, hop-by-hop ones left out. A
/// shadow's answer keeps its headers so: most answers match, and a quick
/// match looks at two or three headers, so the map is made only for the
/// answers that go on to a full comparison.
#[derive(Debug, Clone)]
pub struct RawHeaders {
    head: Bytes,
    /// (name start, name end, value start, value end) in `head` of the
    /// first headers, inline (the usual answer has fewer than these)...
    inline: [(u32, u32, u32, u32); INLINE_HEADERS],
    len: usize,
    /// ...and of the rest.
    more: Vec<(u32, u32, u32, u32)>,
}

/// Headers a [`RawHeaders`] holds without an allocation of its own.
const INLINE_HEADERS: usize = 20;

impl RawHeaders {
    /// No headers yet, of a head in `head`.
    pub fn new(head: Bytes) -> Self {
        RawHeaders {
            head,
            inline: [(0, 0, 0, 0); INLINE_HEADERS],
            len: 0,
            more: Vec::new(),
        }
    }

    /// Adds the header whose name and value lie at these places of the
    /// head; one that lies outside it is left out.
    pub fn push(&mut self, name: std::ops::Range<usize>, value: std::ops::Range<usize>) {
        let (Ok(ns), Ok(ne), Ok(vs), Ok(ve)) = (
            u32::try_from(name.start),
            u32::try_from(name.end),
            u32::try_from(value.start),
            u32::try_from(value.end),
        ) else {
            return;
        };
        if name.start > name.end
            || value.start > value.end
            || name.end > self.head.len()
            || value.end > self.head.len()
        {
            return;
        }
        let at = (ns, ne, vs, ve);
        if self.len < INLINE_HEADERS {
            self.inline[self.len] = at;
        } else {
            self.more.push(at);
        }
        self.len += 1;
    }

    /// The `i`th header's name and value.
    fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let &(ns, ne, vs, ve) = if i < INLINE_HEADERS {
            self.inline.get(i).filter(|_| i < self.len)?
        } else {
            self.more.get(i - INLINE_HEADERS)?
        };
        let name = self.head.get(ns as usize..ne as usize)?;
        let value = self.head.get(vs as usize..ve as usize)?;
        Some((name, value))
    }

    /// The `i`th header's name length (cheaper than `get`).
    fn name_len(&self, i: usize) -> Option<usize> {
        let &(ns, ne, _, _) = if i < INLINE_HEADERS {
            self.inline.get(i).filter(|_| i < self.len)?
        } else {
            self.more.get(i - INLINE_HEADERS)?
        };
        Some(ne.wrapping_sub(ns) as usize)
    }

    /// The headers in a map of their own (values copied out of `head`);
    /// a header whose name or value a map cannot hold is left out.
    pub fn to_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.len);
        for i in 0..self.len {
            if let Some((name, value)) = self.get(i)
                && let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name),
                    http::HeaderValue::from_bytes(value),
                )
            {
                map.append(n, v);
            }
        }
        map
    }
}

/// One captured answer (primary or shadow).
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: u16,
    /// As received (turned into text only if the comparison needs it).
    /// Empty while the headers are still `raw`.
    pub headers: http::HeaderMap,
    /// The headers as they came, when they have not been put in `headers`
    /// yet (see [`RawHeaders`]; boxed, as answers move often).
    pub raw: Option<Box<RawHeaders>>,
    /// The body as sent (still content-encoded), up to the capture cap.
    pub body: Bytes,
    /// Length of the whole body.
    pub body_len: u64,
    /// Keyed hash of the whole body when it was longer than the cap (the
    /// prefix in `body` is not all of it); None when `body` is the whole.
    pub long_body_hash: Option<String>,
    /// Time to response headers.
    pub latency_ms: f64,
}

impl Captured {
    /// Copies the body and header values out of whatever larger buffer they
    /// may share (a connection's read buffer), before the answer is queued
    /// for a while.
    pub fn compact(&mut self) {
        self.body = Bytes::copy_from_slice(&self.body);
        if let Some(raw) = self.raw.take() {
            // The map's values are copies already.
            self.headers = raw.to_map();
            return;
        }
        for v in self.headers.values_mut() {
            if let Ok(copy) = http::HeaderValue::from_bytes(v.as_bytes()) {
                *v = copy;
            }
        }
    }

    /// The values of header `name`, in order, wherever they are kept.
    pub fn values<'a>(&'a self, name: &'a http::HeaderName) -> Values<'a> {
        match &self.raw {
            Some(raw) => Values::Raw {
                raw,
                name: name.as_str().as_bytes(),
                next: 0,
            },
            None => Values::Map(self.headers.get_all(name).iter()),
        }
    }

    /// The headers in `headers`, made from `raw` if they are still there.
    pub fn into_mapped(mut self) -> Captured {
        if let Some(raw) = self.raw.take() {
            self.headers = raw.to_map();
        }
        self
    }

    /// The whole body fit under the cap.
    pub fn complete(&self) -> bool {
        self.long_body_hash.is_none()
    }
}

/// The values of one header of a [`Captured`].
pub enum Values<'a> {
    Map(http::header::ValueIter<'a, http::HeaderValue>),
    Raw {
        raw: &'a RawHeaders,
        /// Lower case.
        name: &'a [u8],
        next: usize,
    },
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(it) => it.next().map(http::HeaderValue::as_bytes),
            Values::Raw { raw, name, next } => {
                while let Some(len) = raw.name_len(*next) {
                    let i = *next;
                    *next += 1;
                    // Most names are ruled out by their length alone.
                    if len == name.len()
                        && let Some((n, v)) = raw.get(i)
                        && n.eq_ignore_ascii_case(name)
                    {
                        return Some(v);
                    }
                }
                None
            }
        }
    }
}

/// Collects a body as it streams: the first `cap` bytes, and a keyed hash
/// of the whole once it is longer than that.
pub struct BodyCapture {
    cap: usize,
    /// The body while it is one chunk within the cap, shared, not copied.
    first: Option<Bytes>,
    buf: BytesMut,
    key: std::sync::Arc<hmac::Key>,
    /// Boxed: a hash context is large, and captures move around (into
    /// tees, tasks and channels) far more often than bodies exceed the cap.
    hash: Option<Box<hmac::Context>>,
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
    /// `key` is shared, not copied: a capture per shadowed answer is cheap.
    pub fn new(cap: usize, key: &std::sync::Arc<hmac::Key>) -> Self {
        BodyCapture {
            cap,
            first: None,
            buf: BytesMut::new(),
            key: key.clone(),
            hash: None,
            len: 0,
        }
    }

    /// Like [`Self::push`], but a body that arrives as one chunk within the
    /// cap (most answers) is kept by reference instead of copied.
    pub fn push_bytes(&mut self, chunk: &Bytes) {
        if self.len == 0 && chunk.len() <= self.cap {
            self.len = chunk.len() as u64;
            self.first = Some(chunk.clone());
            return;
        }
        self.push(chunk);
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if let Some(first) = self.first.take() {
            self.buf.reserve((first.len() + chunk.len()).min(self.cap));
            self.buf.extend_from_slice(&first);
        }
        self.len += chunk.len() as u64;
        let take = self.cap.saturating_sub(self.buf.len()).min(chunk.len());
        self.buf.extend_from_slice(&chunk[..take]);
        match &mut self.hash {
            // Hashing is on: every new byte goes in.
            Some(h) => h.update(chunk),
            // Past the cap for the first time: everything so far is the
            // full prefix plus the rest of this chunk.
            None if self.len > self.cap as u64 => {
                let mut h = Box::new(hmac::Context::with_key(&self.key));
                h.update(&self.buf);
                h.update(&chunk[take..]);
                self.hash = Some(h);
            }
            None => {}
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The captured prefix, the whole length, and the keyed hash of the
    /// whole when the prefix is not all of it.
    pub fn finish(self) -> (Bytes, u64, Option<String>) {
        if let Some(first) = self.first {
            return (first, self.len, None);
        }
        let hash = self.hash.map(|h| hex(h.sign().as_ref()));
        (self.buf.freeze(), self.len, hash)
    }

    /// Builds the captured answer.
    pub fn into_captured(self, status: u16, headers: http::HeaderMap, latency_ms: f64) -> Captured {
        let (body, body_len, long_body_hash) = self.finish();
        Captured {
            status,
            headers,
            raw: None,
            body,
            body_len,
            long_body_hash,
            latency_ms,
        }
    }
}

/// Keyed hash of `data`, lower-case hex.
pub fn keyed_hash(key: &hmac::Key, data: &[u8]) -> String {
    hex(hmac::sign(key, data).as_ref())
}

/// Plain SHA-256 of `data`, lower-case hex (for tests that look for it).
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

/// Headers as lower-case (name, value) pairs, values lossily as text.
pub fn header_list(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_a_prefix_and_hashes_a_long_body_whole() {
        let key = std::sync::Arc::new(hmac::Key::new(hmac::HMAC_SHA256, b"k"));
        let mut c = BodyCapture::new(4, &key);
        c.push(b"abc");
        c.push(b"def");
        c.push(b"gh");
        let (prefix, len, hash) = c.finish();
        assert_eq!(&prefix[..], b"abcd");
        assert_eq!(len, 8);
        assert_eq!(hash, Some(keyed_hash(&key, b"abcdefgh")));
        // Crossing the cap exactly at a chunk boundary.
        let mut c = BodyCapture::new(3, &key);
        c.push(b"abc");
        c.push(b"def");
        assert_eq!(c.finish().2, Some(keyed_hash(&key, b"abcdef")));
        // Within the cap: no hash yet.
        let mut c = BodyCapture::new(8, &key);
        c.push(b"abc");
        assert_eq!(c.finish(), (Bytes::from_static(b"abc"), 3, None));
        assert_ne!(keyed_hash(&key, b"x"), sha256_hex(b"x"));
    }

    #[test]
    fn shared_chunks_capture_the_same_as_copied_ones() {
        let key = std::sync::Arc::new(hmac::Key::new(hmac::HMAC_SHA256, b"k"));
        let chunks: [&[&[u8]]; 4] = [&[b"abc"], &[b"abc", b"def", b"gh"], &[b"abcdefghij"], &[]];
        for cap in [0, 3, 4, 8, 64] {
            for pieces in chunks {
                let mut shared = BodyCapture::new(cap, &key);
                let mut copied = BodyCapture::new(cap, &key);
                for p in pieces {
                    shared.push_bytes(&Bytes::copy_from_slice(p));
                    copied.push(p);
                }
                assert_eq!(shared.finish(), copied.finish(), "cap {cap}, {pieces:?}");
            }
        }
    }
}
