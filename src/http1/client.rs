//! The lean HTTP/1.1 exchange with plain-http upstreams.
//!
//! hyper's client runs each connection as a task of its own and hands a
//! request to it, and the response back, through channels: two tasks, a
//! channel and a oneshot per request, about a fifth of strangler's work per
//! proxied request. This module does the exchange in the task that serves
//! the client instead: it writes the request head, reads and parses the
//! response head with httparse, and streams the body (content-length,
//! chunked, or to the connection's close) as a `Body` that gives its
//! connection back to the instance's idle stack when read to its end.
//!
//! It takes the common case only: requests without a body and without an
//! upgrade, to `http://` instances. Everything else (request bodies,
//! WebSocket, TLS) goes through hyper's client; `upstream::send` chooses.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use strangler_shadow::capture::RawHeaders;

use crate::http1::common::{HeaderAt, parse_length, poll_read_buf};
use crate::http1::headers::Forwarding;

/// Idle connections kept per instance at most.
const MAX_IDLE: usize = 1024;

/// Idle keep-alive connections of one instance, last in first out.
#[derive(Debug)]
pub struct IdleStack<T>(Mutex<Vec<T>>);

impl<T> Default for IdleStack<T> {
    fn default() -> Self {
        IdleStack(Mutex::new(Vec::new()))
    }
}

impl<T> IdleStack<T> {
    pub fn pop(&self) -> Option<T> {
        self.0.lock().ok().and_then(|mut v| v.pop())
    }

    pub fn push(&self, c: T) {
        if let Ok(mut v) = self.0.lock()
            && v.len() < MAX_IDLE
        {
            v.push(c);
        }
    }
}

/// Response headers accepted at most (hyper's client default).
const MAX_HEADERS: usize = 100;
/// Bytes a response head may take at most.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes a chunk-size line or the trailer section may take at most.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Read sizes: the first read of a connection, and the most a read grows
/// to while reads keep filling the space offered (large bodies).
const READ_FIRST: usize = 16 * 1024;
const READ_MAX: usize = 256 * 1024;

/// What went wrong in an exchange.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("upstream closed the connection before answering")]
    ClosedBeforeResponse,
    #[error("upstream closed the connection before the end of the body")]
    ClosedInBody,
    #[error("upstream response head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid upstream response: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The connection failed after part of a response (or an interim
    /// response) had arrived.
    #[error("upstream connection failed mid-response: {0}")]
    IoMidResponse(io::Error),
}

impl H1Error {
    /// Nothing of a response arrived: on a reused connection, the instance
    /// most likely closed it while it was idle.
    pub fn nothing_received(&self) -> bool {
        match self {
            H1Error::ClosedBeforeResponse => true,
            H1Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// A keep-alive connection to a plain-http instance.
#[derive(Debug)]
pub struct H1Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// Space offered to the next read.
    read_size: usize,
    /// Where each response header lies in its head (reused across exchanges).
    indices: Vec<HeaderAt>,
}

impl H1Conn {
    pub fn new(io: TcpStream) -> Self {
        H1Conn {
            io,
            buf: BytesMut::new(),
            read_size: READ_FIRST,
            indices: Vec::new(),
        }
    }

    /// Whether an idle connection can take a request: the instance has not
    /// closed it, and sent nothing unasked. Costs no system call unless the
    /// socket was reported readable.
    pub fn is_reusable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: closed, stray bytes, or a stale readiness flag.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has into `buf`; `Ok(0)` at the end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let n = ready!(poll_read_buf(
            &mut self.io,
            &mut self.buf,
            self.read_size,
            cx
        ))?;
        // The room that read was offered (reading leaves the capacity as is).
        let offered = self.buf.capacity() - (self.buf.len() - n);
        // Adaptive, as hyper's reads: grow while reads fill all the room
        // they were given, shrink back when they come in far smaller, so
        // that small answers never pin large buffers.
        if n == offered && offered >= self.read_size && self.read_size < READ_MAX {
            self.read_size *= 2;
        } else if n < self.read_size / 8 && self.read_size > READ_FIRST {
            self.read_size /= 2;
        }
        Poll::Ready(Ok(n))
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Sends a request head (written by [`encode_head`]) and reads the
    /// response head. `head_only` is true for HEAD requests, whose responses
    /// have no body whatever their headers say. `keep` says whether the
    /// response headers go in its header map, come raw with its body
    /// (hop-by-hop ones left out: [`H1Body::take_raw_headers`]), or both.
    pub async fn exchange(
        mut self,
        head: &[u8],
        head_only: bool,
        home: Arc<IdleStack<H1Conn>>,
        keep: KeepHeaders,
    ) -> Result<Response<H1Body>, H1Error> {
        self.send(head).await?;
        self.read_response(head_only, home, keep).await
    }

    /// Writes request heads (one, or several pipelined).
    pub async fn send(&mut self, heads: &[u8]) -> io::Result<()> {
        self.io.write_all(heads).await
    }

    /// Reads the next response head on the connection, as
    /// [`Self::exchange`] does after its write. Its body must be read to
    /// its end (the connection then goes to `home`) before the response
    /// after it, when several requests were pipelined.
    pub async fn read_response(
        mut self,
        head_only: bool,
        home: Arc<IdleStack<H1Conn>>,
        keep: KeepHeaders,
    ) -> Result<Response<H1Body>, H1Error> {
        // Whether any byte of an answer arrived: then a failure is no
        // longer "closed while idle", and the request is not sent again.
        // (Bytes read with the answer in front of it, when pipelined.)
        let mut received = !self.buf.is_empty();
        loop {
            let parsed = loop {
                if !self.buf.is_empty() {
                    match parse_head(&self.buf, &mut self.indices)? {
                        Some(p) => break p,
                        None if self.buf.len() > MAX_HEAD => return Err(H1Error::HeadTooLarge),
                        None => {}
                    }
                }
                match self.fill().await {
                    Ok(0) if !received => return Err(H1Error::ClosedBeforeResponse),
                    Ok(0) => {
                        return Err(H1Error::Invalid(
                            "connection closed inside or after an interim response head",
                        ));
                    }
                    Ok(_) => received = true,
                    Err(e) if !received => return Err(e.into()),
                    Err(e) => return Err(H1Error::IoMidResponse(e)),
                }
            };
            let head_bytes = self.buf.split_to(parsed.len).freeze();
            // Interim responses (100 Continue, 103 Early Hints) are skipped;
            // a 101 was never asked for (upgrades take hyper's client).
            if (100..200).contains(&parsed.code) {
                if parsed.code == 101 {
                    return Err(H1Error::Invalid(
                        "101 Switching Protocols without an upgrade",
                    ));
                }
                continue;
            }
            return self.into_response(parsed, head_bytes, head_only, home, keep);
        }
    }

    fn into_response(
        mut self,
        parsed: ParsedHead,
        head: Bytes,
        head_only: bool,
        home: Arc<IdleStack<H1Conn>>,
        keep: KeepHeaders,
    ) -> Result<Response<H1Body>, H1Error> {
        let want_map = keep != KeepHeaders::Raw;
        let want_raw = keep != KeepHeaders::Map;
        let mut headers = if want_map {
            HeaderMap::with_capacity(self.indices.len())
        } else {
            HeaderMap::new()
        };
        let mut keep_alive = parsed.minor == 1;
        let mut close = false;
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut chunked = false;
        // Where the Transfer-Encoding values lie, for the codings besides
        // `chunked` that travel on in the map.
        let mut codings: Vec<(usize, usize)> = Vec::new();
        // The raw headers stay where they are in `head`: their places move
        // to the front of `indices`, `kept` of them.
        let mut kept = 0;
        // Where the Connection values that name other headers lie (rare).
        let mut named: Vec<(usize, usize)> = Vec::new();
        for i in 0..self.indices.len() {
            let (ns, ne, vs, ve) = self.indices[i];
            let raw = &head[vs..ve];
            // The header name made for the map says what it is (cheaper
            // than a second look at the bytes); without a map, the bytes.
            let (kind, name) = if want_map {
                let n = HeaderName::from_bytes(&head[ns..ne])
                    .map_err(|_| H1Error::Invalid("bad header name"))?;
                (NameKind::of(&n), Some(n))
            } else {
                (NameKind::of_raw(&head[ns..ne]), None)
            };
            if kind == NameKind::ContentLength {
                for part in raw.split(|&b| b == b',') {
                    let n = parse_length(part.trim_ascii())
                        .ok_or(H1Error::Invalid("bad content-length"))?;
                    if content_length.is_some_and(|c| c != n) {
                        return Err(H1Error::Invalid("conflicting content-length values"));
                    }
                    content_length = Some(n);
                }
            } else if kind == NameKind::Connection {
                // Kept in the map only when it names other headers, for the
                // proxy's hop-by-hop removal to find them. Never kept raw;
                // the headers it names are taken out of the raw ones below,
                // as the proxy takes them out of the map.
                let mut names_others = false;
                for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive |= parsed.minor == 0;
                    } else if !token.is_empty() {
                        names_others = true;
                    }
                }
                if !names_others {
                    continue;
                }
                if want_raw {
                    named.push((vs, ve));
                }
            } else if kind != NameKind::Other {
                // Never passed on (RFC 9110 section 7.6.1); the framing is
                // ours to decode.
                if kind == NameKind::TransferEncoding {
                    transfer_encoding = true;
                    chunked = raw
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                    if want_map {
                        codings.push((vs, ve));
                    }
                }
                continue;
            }
            if want_raw && kind != NameKind::Connection {
                self.indices[kept] = (ns, ne, vs, ve);
                kept += 1;
            }
            if let Some(name) = name {
                // SAFETY: httparse accepts in a header value only HTAB,
                // visible ASCII, SP and obs-text (0x80-0xFF): exactly the
                // bytes a HeaderValue may hold (hyper's client relies on
                // the same).
                let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(vs..ve)) };
                headers.append(name, value);
            }
        }
        if want_raw {
            // From here on `indices` holds exactly the raw headers.
            self.indices.truncate(kept);
        }
        if !named.is_empty() {
            self.indices.retain(|&(ns, ne, _, _)| {
                !named.iter().any(|&(vs, ve)| {
                    head[vs..ve]
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(&head[ns..ne]))
                })
            });
        }
        // `close` wins whatever else Connection says; an HTTP/1.0 answer with
        // Transfer-Encoding has faulty framing (RFC 9112 section 6.1): its
        // connection is not reused either.
        if close || (transfer_encoding && parsed.minor == 0) {
            keep_alive = false;
        }
        let status =
            StatusCode::from_u16(parsed.code).map_err(|_| H1Error::Invalid("bad status code"))?;
        // RFC 9112 section 6.3: the response's length.
        let framing = if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if transfer_encoding {
            // Transfer-Encoding overrides Content-Length, which must not be
            // passed on beside it; the connection is not reused after such
            // a response.
            if content_length.is_some() {
                headers.remove(CONTENT_LENGTH);
                if want_raw {
                    self.indices.retain(|&(ns, ne, _, _)| {
                        !head[ns..ne].eq_ignore_ascii_case(b"content-length")
                    });
                }
                keep_alive = false;
            }
            // Codings other than `chunked` (`gzip, chunked`) stay applied to
            // the body: they go on with it, never silently dropped.
            if let Some(kept) = crate::http1::headers::codings_besides_chunked(
                codings.iter().map(|&(vs, ve)| &head[vs..ve]),
            ) {
                headers.insert(TRANSFER_ENCODING, kept);
            }
            if chunked {
                Framing::Chunked(Chunked::Size)
            } else {
                keep_alive = false;
                Framing::Close
            }
        } else if let Some(n) = content_length {
            Framing::Length(n)
        } else {
            keep_alive = false;
            Framing::Close
        };
        let raw = want_raw.then(|| {
            let mut raw = Box::new(RawHeaders::new(head.clone()));
            for &(ns, ne, vs, ve) in &self.indices {
                raw.push(ns..ne, vs..ve);
            }
            raw
        });
        let mut response = Response::new(H1Body {
            conn: Some(self),
            framing,
            keep_alive,
            home: Some(home),
            raw,
        });
        *response.status_mut() = status;
        *response.version_mut() = if parsed.minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        *response.headers_mut() = headers;
        // A reason phrase other than the standard one travels on, as with
        // hyper's client.
        let (rs, re) = parsed.reason;
        if re > rs
            && status.canonical_reason().map(str::as_bytes) != Some(&head[rs..re])
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.slice(rs..re))
        {
            response.extensions_mut().insert(reason);
        }
        response.body_mut().finish_if_empty();
        Ok(response)
    }
}

/// Where an exchange puts the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepHeaders {
    /// In the response's header map (for the client).
    Map,
    /// Raw, with the body (a shadow's answer, captured for comparison).
    Raw,
    /// Both (a primary answer that is also compared).
    Both,
}

/// What a response header's name means to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    ContentLength,
    Connection,
    TransferEncoding,
    /// Another hop-by-hop header: never passed on.
    HopByHop,
    Other,
}

impl NameKind {
    fn of(name: &HeaderName) -> NameKind {
        if *name == CONTENT_LENGTH {
            NameKind::ContentLength
        } else if *name == CONNECTION {
            NameKind::Connection
        } else if *name == TRANSFER_ENCODING {
            NameKind::TransferEncoding
        } else if crate::http1::headers::is_hop_by_hop(name) {
            NameKind::HopByHop
        } else {
            NameKind::Other
        }
    }

    /// [`NameKind::of`] a name as it came (any case); most names are ruled
    /// out by their length alone.
    fn of_raw(name: &[u8]) -> NameKind {
        if !matches!(name.len(), 2 | 7 | 10 | 14 | 16..=19) {
            return NameKind::Other;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            return NameKind::ContentLength;
        }
        match crate::http1::headers::hop_by_hop_ignore_case(name) {
            Some(0) => NameKind::Connection,
            Some(7) => NameKind::TransferEncoding,
            Some(_) => NameKind::HopByHop,
            None => NameKind::Other,
        }
    }
}

/// A response head's parts, as offsets into the bytes it was parsed from
/// (the headers' are in the `indices` given to [`parse_head`]).
struct ParsedHead {
    len: usize,
    minor: u8,
    code: u16,
    reason: (usize, usize),
}

/// Parses a response head; `None` when more bytes are needed.
fn parse_head(buf: &[u8], indices: &mut Vec<HeaderAt>) -> Result<Option<ParsedHead>, H1Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut response, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Invalid("more than 100 response headers"));
        }
        Err(_) => return Err(H1Error::Invalid("malformed response head")),
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    indices.clear();
    indices.extend(response.headers.iter().map(|h| {
        let ns = offset(h.name.as_bytes());
        let vs = offset(h.value);
        (ns, ns + h.name.len(), vs, vs + h.value.len())
    }));
    let reason = match response.reason {
        Some(r) if !r.is_empty() => {
            let rs = offset(r.as_bytes());
            (rs, rs + r.len())
        }
        _ => (0, 0),
    };
    Ok(Some(ParsedHead {
        len,
        minor: response.version.unwrap_or(1),
        code: response.code.unwrap_or(0),
        reason,
    }))
}

/// Writes the head of a body-less request, as hyper's client would: origin
/// form, the headers as they are, and `content-length: 0` for methods that
/// normally carry a body.
pub fn encode_head<B>(req: &Request<B>, forwarding: Option<&Forwarding>, dst: &mut Vec<u8>) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    encode_head_parts(req.method(), target, req.headers(), forwarding, dst);
}

/// [`encode_head`] from a request's parts, with the forwarding headers
/// (when not in the map) after the others.
pub fn encode_head_parts(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    forwarding: Option<&Forwarding>,
    dst: &mut Vec<u8>,
) {
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    // Two-byte separators pushed one by one: cheaper than a copy call each.
    for (name, value) in headers {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.push(b':');
        dst.push(b' ');
        dst.extend_from_slice(value.as_bytes());
        dst.push(b'\r');
        dst.push(b'\n');
    }
    if let Some(f) = forwarding {
        f.encode(dst);
    }
    let carries_body = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if carries_body && !headers.contains_key(CONTENT_LENGTH) {
        dst.extend_from_slice(b"content-length: 0\r\n");
    }
    dst.push(b'\r');
    dst.push(b'\n');
}

/// How the rest of a response body is delimited.
#[derive(Debug)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunked),
    /// Until the instance closes the connection.
    Close,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes remain.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section, this many bytes read so far.
    Trailers(usize),
    Done,
}

/// One step of chunked decoding over `buf`.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes),
    NeedMore,
    Done,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(H1Error::Invalid("chunk-size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if end + 1 > MAX_CHUNK_LINE {
                        return Err(H1Error::Invalid("chunk-size line too long"));
                    }
                    let line = buf.split_to(end + 1);
                    let size = parse_chunk_size(crlf_line(&line)?)?;
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(rem) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = rem - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Invalid("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                        if seen + buf.len() > MAX_TRAILERS {
                            return Err(H1Error::Invalid("trailer section too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let line = buf.split_to(end + 1);
                    // Trailer fields are not passed on; an empty line ends them.
                    *self = if crlf_line(&line)?.is_empty() {
                        Chunked::Done
                    } else if seen + line.len() > MAX_TRAILERS {
                        return Err(H1Error::Invalid("trailer section too long"));
                    } else {
                        Chunked::Trailers(seen + line.len())
                    };
                }
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// A line without its CRLF; a bare LF or a CR inside is an error.
fn crlf_line(line: &[u8]) -> Result<&[u8], H1Error> {
    match line {
        [rest @ .., b'\r', b'\n'] if !rest.contains(&b'\r') => Ok(rest),
        _ => Err(H1Error::Invalid("chunked line not ended by CRLF")),
    }
}

/// The size in a chunk-size line (`1a;ext=v`, CRLF removed): hex digits
/// (leading zeros do not count against the limit), then optional
/// whitespace and extensions, which are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let bad = || H1Error::Invalid("bad chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (number, rest) = line.split_at(digits);
    let significant = number.iter().skip_while(|&&b| b == b'0').count();
    if digits == 0 || significant > 15 {
        return Err(bad());
    }
    match rest.first() {
        None | Some(b';' | b' ' | b'\t') => {}
        _ => return Err(bad()),
    }
    number
        .iter()
        .try_fold(0u64, |n, &b| {
            let d = (b as char).to_digit(16)?;
            Some(n * 16 + u64::from(d))
        })
        .ok_or_else(bad)
}

/// An upstream response body read from an [`H1Conn`]; at its end the
/// connection goes back to its idle stack, unless it is to be closed.
#[derive(Debug)]
pub struct H1Body {
    /// None once the body ended (or failed).
    conn: Option<H1Conn>,
    framing: Framing,
    keep_alive: bool,
    home: Option<Arc<IdleStack<H1Conn>>>,
    /// The response headers, when the exchange was asked to keep them raw
    /// (boxed: bodies move often, and most have none).
    raw: Option<Box<RawHeaders>>,
}

impl H1Body {
    /// The response headers kept raw (see `H1Conn::exchange`).
    pub fn take_raw_headers(&mut self) -> Option<Box<RawHeaders>> {
        self.raw.take()
    }

    fn finish_if_empty(&mut self) {
        if matches!(self.framing, Framing::Length(0)) {
            self.finish();
        }
    }

    /// The body ended: the connection is reused when it can be. Bytes
    /// already read past the body are the next pipelined response's, or
    /// stray: an idle stack's user checks `H1Conn::is_reusable`.
    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.keep_alive
        {
            home.push(conn);
        }
    }

    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Length(rem) => {
                    if *rem == 0 {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*rem)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(n).freeze();
                        *rem -= n as u64;
                        if *rem == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => match state.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e),
                },
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::Close) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(H1Error::ClosedInBody),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.framing) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Framing::Length(n)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), H1Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n1;name=value\r\n \r\n00000000000000006\r\nworld!\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..input.len() {
            let (out, clean) = decode_all(input, step).expect("valid chunked body");
            assert_eq!(out, b"hello world!", "step {step}");
            assert!(clean, "step {step}");
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        for input in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"1ffffffffffffffff\r\n",
            b"5x\r\nhello\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\rX\nhello\r\n",
        ] {
            assert!(decode_all(input, input.len()).is_err(), "{input:?}");
        }
    }

    #[test]
    fn raw_names_are_classified_as_their_header_names() {
        for name in [
            "Content-Length",
            "connection",
            "CONNECTION",
            "Transfer-Encoding",
            "keep-alive",
            "TE",
            "Trailer",
            "upgrade",
            "Proxy-Connection",
            "proxy-authenticate",
            "Proxy-Authorization",
            "content-type",
            "x",
            "date",
            "x-content-length",
            "content-lengths",
            "etag",
            "Server",
        ] {
            let header = HeaderName::from_bytes(name.as_bytes()).expect("name");
            assert_eq!(
                NameKind::of_raw(name.as_bytes()),
                NameKind::of(&header),
                "{name}"
            );
        }
    }

    #[test]
    fn content_length_values_are_digits_only() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1234"), Some(1234));
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }

    #[test]
    fn heads_are_origin_form_with_the_headers_as_given() {
        let req = Request::post("/a/b?c=1")
            .header("host", "example")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .expect("valid request");
        let mut out = Vec::new();
        encode_head(&req, None, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /a/b?c=1 HTTP/1.1\r\nhost: example\r\nx-two: 1\r\nx-two: 2\r\ncontent-length: 0\r\n\r\n"
        );
        // Forwarding headers not in the map go after the others, as
        // set_forwarded would have put them in it.
        let fwd = Forwarding::new(
            req.headers(),
            &HeaderValue::from_static("10.0.0.1"),
            false,
            Some(&HeaderValue::from_static("example")),
            Version::HTTP_11,
        )
        .expect("none of its own");
        let mut out = Vec::new();
        encode_head(&req, Some(&fwd), &mut out);
        let mut map = req.headers().clone();
        crate::http1::headers::set_forwarded(
            &mut map,
            &HeaderValue::from_static("10.0.0.1"),
            false,
            Some(&HeaderValue::from_static("example")),
            0,
            Version::HTTP_11,
        );
        let mut expected = Vec::new();
        encode_head_parts(req.method(), "/a/b?c=1", &map, None, &mut expected);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        let mut inserted = req.headers().clone();
        fwd.insert_into(&mut inserted);
        assert_eq!(inserted, map);
        fwd.remove_from(&mut inserted);
        assert_eq!(&inserted, req.headers());
        let with_own = req.headers().clone();
        let mut with_own = with_own;
        with_own.insert("via", HeaderValue::from_static("1.1 cdn"));
        assert!(
            Forwarding::new(
                &with_own,
                &HeaderValue::from_static("10.0.0.1"),
                false,
                None,
                Version::HTTP_11
            )
            .is_none()
        );
    }

    #[test]
    fn response_heads_parse_incrementally() {
        let head = b"HTTP/1.1 200 Fine\r\ncontent-length: 2\r\nx-a: b\r\n\r\nok";
        for cut in 0..head.len() - 2 {
            assert!(
                parse_head(&head[..cut], &mut Vec::new())
                    .expect("prefix is valid")
                    .is_none()
            );
        }
        let mut indices = Vec::new();
        let parsed = parse_head(head, &mut indices)
            .expect("valid")
            .expect("complete");
        assert_eq!(parsed.len, head.len() - 2);
        assert_eq!(parsed.code, 200);
        assert_eq!(indices.len(), 2);
        let (rs, re) = parsed.reason;
        assert_eq!(&head[rs..re], b"Fine");
    }
}
