//! The lean HTTP/1.1 server path for client connections: plain TCP, and
//! TLS that negotiated HTTP/1.1.
//!
//! hyper's server connection is general: a dispatcher state machine, a
//! read buffer strategy, a message-head type and an encoder between the
//! socket and the service, about a third of strangler's work per proxied
//! request. This module serves the common case itself, in the task that
//! owns the connection: it reads a request head and parses it with
//! httparse, hands the request to the proxy, and writes the response head
//! and body, with keep-alive, pipelining, the header read timeout (which is
//! also the idle timeout), the header size and count limits, and graceful
//! shutdown, as hyper does them.
//!
//! It takes only requests without a body, upgrade or `Expect`. The first
//! request it does not take (or an HTTP/2 preface) hands the connection,
//! with every byte read so far, to hyper for the rest of its life. TLS
//! connections whose ALPN chose HTTP/2 are hyper's from the start, and so
//! is every connection with `[listen] lean = false` (src/server chooses).
//! tests/http1_paths.rs runs one table of cases against both paths.

use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulConnection;

use crate::http1::common::{BoxError, HeaderAt, parse_length, poll_read_buf};
use crate::timer::{PooledSleep, SleepPool};

/// The limits of `[listen]` that apply to request heads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive within this time of the connection
    /// becoming ready for it; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// A write to the client that makes no progress for this long fails.
    pub send_timeout: Duration,
    /// Largest request head; beyond it: 431.
    pub max_header_bytes: usize,
    /// Most request headers; beyond them: 431.
    pub max_headers: usize,
}

/// What every connection shares: the service, hyper's builder for the
/// connections handed over, the limits and the header read timers.
pub struct Server<Sv> {
    pub service: Arc<Sv>,
    pub hyper: Arc<auto::Builder<TokioExecutor>>,
    pub limits: Limits,
    pub sleeps: Arc<SleepPool>,
}

/// What a server serves: the proxy in strangler, a trivial function in
/// tests. Requests and responses share one body type.
pub trait Service: Send + Sync + 'static {
    /// A request's body (empty on this path, hyper's `Incoming` on
    /// hyper's) and a response's.
    type Body: http_body::Body<Data = Bytes, Error = BoxError>
        + Default
        + From<Incoming>
        + Send
        + Unpin
        + 'static;

    /// Answers one request; never fails (errors are responses). The
    /// `Result` is hyper's service shape, so the future is handed to hyper
    /// as it is (wrapping it would move it, several KiB, per request).
    fn call(
        &self,
        req: Request<Self::Body>,
        peer: SocketAddr,
        peer_ip: &HeaderValue,
    ) -> impl Future<Output = Result<Response<Self::Body>, Infallible>> + Send + use<Self>;

    /// The answer to a request head this server refuses before calling.
    fn refuse(&self, err: HeadError) -> Response<Self::Body>;
}

/// A request head refused by the server itself, or a final answer it
/// cannot send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// A malformed head: 400.
    BadRequest(String),
    /// Over `max_header_bytes` or `max_headers`: 431.
    HeadTooLarge,
    /// Over the longest request target: 414.
    UriTooLong,
    /// The service answered a 1xx as its final response: 502.
    InterimAsFinal(StatusCode),
}

/// How the server's graceful shutdown reaches one connection.
pub trait ShutdownWatch: Send + 'static {
    /// Whether shutdown has begun; registers the task to be woken when it
    /// does.
    fn poll_shutting_down(&mut self, cx: &Context<'_>) -> bool;
    /// Whether shutdown has begun (registers nothing).
    fn is_shutting_down(&self) -> bool;
    /// Runs a connection hyper serves, shutting it down gracefully when
    /// the server does.
    fn watch<C>(self, conn: C) -> impl Future<Output = C::Output> + Send
    where
        C: GracefulConnection + Send,
        C::Output: Send;
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Space offered to each read of request bytes (hyper's first read size).
pub const READ_SIZE: usize = 8 * 1024;
/// A body chunk smaller than this is copied next to the head or the chunk
/// framing, and the lot written at once; a larger one is written from its
/// own buffer beside them (one vectored write).
const COPY_MAX: usize = 8 * 1024;
/// Copied bytes gathered at most before they are written.
const WRITE_BATCH: usize = 64 * 1024;
/// Header slots on the stack; a larger `max_headers` takes the heap.
const STACK_HEADERS: usize = 128;
/// How long, and for how many bytes, a closing connection keeps reading
/// what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How long an idle TLS connection being closed may take to send its
/// close_notify.
const CLOSE_NOTIFY_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;
/// Longest request target accepted (hyper's limit); beyond it: 414.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// What a request asks of its response.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head_only: bool,
    http10: bool,
    keep_alive: bool,
}

/// What reading the next request came to. (Mostly a request: boxing it
/// would cost an allocation per request to save a move.)
#[allow(clippy::large_enum_variant)]
enum Next<B> {
    Request(Request<B>, Asked),
    /// A request (or protocol) this module does not take: hyper takes the
    /// connection.
    HandOff,
    /// A head that cannot be served: answered with this error, then closed.
    Refuse(HeadError),
    /// The client closed, went quiet past the timeout, or shutdown began.
    Close,
}

/// What waiting for request bytes came to.
enum Wait {
    Read(usize),
    Failed,
    TimedOut,
    ShuttingDown,
}

/// One client connection on the lean path.
struct Conn<S> {
    /// The connection, its writes under `[listen].send_timeout` (the
    /// socket's, beneath TLS when there is TLS).
    stream: S,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// The response head and small body chunks, before they are written.
    wbuf: Vec<u8>,
    /// Where each header of the head being parsed lies.
    indices: Vec<HeaderAt>,
    /// The last response's emptied header map, reused for the next request
    /// (saves its allocations, as hyper does).
    spare_headers: Option<HeaderMap>,
    /// The header read timer, and when the head now awaited is due.
    timer: Option<PooledSleep>,
    deadline: tokio::time::Instant,
}

/// Serves one client connection until it closes or is handed to hyper.
pub async fn serve<S: ClientStream, Sv: Service, T: ShutdownWatch>(
    stream: S,
    peer: SocketAddr,
    peer_ip: HeaderValue,
    server: Arc<Server<Sv>>,
    mut ticket: T,
) {
    let mut conn = Conn {
        stream,
        rbuf: BytesMut::new(),
        wbuf: Vec::new(),
        indices: Vec::new(),
        spare_headers: None,
        timer: None,
        deadline: tokio::time::Instant::now(),
    };
    let mut first = true;
    loop {
        let (req, asked) = match conn.read_request(&server, &mut ticket, first).await {
            Next::Request(req, asked) => (req, asked),
            Next::HandOff => return hand_off(conn, peer, peer_ip, &server, ticket).await,
            Next::Refuse(err) => {
                let asked = Asked {
                    head_only: false,
                    http10: false,
                    keep_alive: false,
                };
                conn.write_response(server.service.refuse(err), asked, true, &*server.service)
                    .await;
                return conn.close().await;
            }
            Next::Close => {
                // TLS says goodbye (close_notify) rather than just closing;
                // briefly, as the client may be gone.
                if S::BUFFERS_WRITES {
                    let _ = tokio::time::timeout(CLOSE_NOTIFY_TIME, conn.stream.shutdown()).await;
                }
                return;
            }
        };
        first = false;
        // Pinned where it is made: the future (several KiB) is not moved.
        let handled = std::pin::pin!(server.service.call(req, peer, &peer_ip));
        let Some(resp) = conn.unless_client_leaves(handled).await else {
            // The client hung up: the request is dropped, as hyper does.
            return;
        };
        let Ok(resp) = resp;
        let shutting_down = ticket.is_shutting_down();
        if !conn
            .write_response(resp, asked, shutting_down, &*server.service)
            .await
        {
            return conn.close().await;
        }
    }
}

/// The service hyper runs for a connection it serves.
pub fn hyper_service<Sv: Service>(
    service: Arc<Sv>,
    peer: SocketAddr,
    peer_ip: HeaderValue,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Sv::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Sv::Body>, std::convert::Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        service.call(req.map(Sv::Body::from), peer, &peer_ip)
    })
}

/// hyper serves the rest of the connection, starting with the bytes read
/// and not yet consumed.
async fn hand_off<S: ClientStream, Sv: Service, T: ShutdownWatch>(
    conn: Conn<S>,
    peer: SocketAddr,
    peer_ip: HeaderValue,
    server: &Server<Sv>,
    ticket: T,
) {
    let io = TokioIo::new(Prefixed {
        prefix: conn.rbuf,
        io: conn.stream,
    });
    let service = hyper_service(server.service.clone(), peer, peer_ip);
    let served = server
        .hyper
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    if let Err(e) = ticket.watch(served).await {
        tracing::debug!(%peer, "connection ended with error: {e}");
    }
}

impl<S: ClientStream> Conn<S> {
    /// Reads and parses the next request head.
    async fn read_request<Sv: Service>(
        &mut self,
        server: &Server<Sv>,
        ticket: &mut impl ShutdownWatch,
        first: bool,
    ) -> Next<Sv::Body> {
        let limits = &server.limits;
        let mut armed = false;
        loop {
            if !self.rbuf.is_empty() {
                // HTTP/2 with prior knowledge starts with its preface.
                let n = self.rbuf.len().min(H2_PREFACE.len());
                let preface = first && self.rbuf[..n] == H2_PREFACE[..n];
                if preface && n == H2_PREFACE.len() {
                    return Next::HandOff;
                }
                if !preface {
                    match self.parse(limits) {
                        Ok(Some(next)) => return next,
                        Ok(None) if self.rbuf.len() >= limits.max_header_bytes => {
                            return Next::Refuse(HeadError::HeadTooLarge);
                        }
                        Ok(None) => {}
                        Err(e) => return Next::Refuse(e),
                    }
                }
            }
            let waited = std::future::poll_fn(|cx| {
                if ticket.poll_shutting_down(cx) {
                    return Poll::Ready(Wait::ShuttingDown);
                }
                match poll_read_buf(&mut self.stream, &mut self.rbuf, READ_SIZE, cx) {
                    Poll::Ready(Ok(n)) => return Poll::Ready(Wait::Read(n)),
                    Poll::Ready(Err(_)) => return Poll::Ready(Wait::Failed),
                    Poll::Pending => {}
                }
                // Armed on the first wait for this head: a pipelined or
                // already arrived request costs no timer. The timer itself
                // is moved only when it fires: until then it may still be
                // set for an earlier head, which is sooner (cheaper than
                // resetting it for every request).
                if !armed {
                    armed = true;
                    self.deadline = tokio::time::Instant::now() + limits.header_read_timeout;
                    if self.timer.is_none() {
                        self.timer = Some(server.sleeps.sleep_until(self.deadline));
                    }
                }
                while let Some(timer) = self.timer.as_mut() {
                    if Pin::new(&mut *timer).poll(cx).is_pending() {
                        break;
                    }
                    if tokio::time::Instant::now() >= self.deadline {
                        return Poll::Ready(Wait::TimedOut);
                    }
                    timer.reset(self.deadline);
                }
                Poll::Pending
            })
            .await;
            match waited {
                Wait::Read(0) | Wait::Failed | Wait::ShuttingDown => return Next::Close,
                Wait::Read(_) => {}
                Wait::TimedOut => {
                    if !self.rbuf.is_empty() {
                        tracing::debug!("request head not received within the header read timeout");
                    }
                    return Next::Close;
                }
            }
        }
    }

    /// Parses the head at the start of `rbuf`: `None` while incomplete.
    fn parse<B: Default>(&mut self, limits: &Limits) -> Result<Option<Next<B>>, HeadError> {
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut heap;
        let slots = if limits.max_headers <= STACK_HEADERS {
            &mut stack[..limits.max_headers]
        } else {
            heap = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); limits.max_headers];
            &mut heap[..]
        };
        let mut req = httparse::Request::new(&mut []);
        let buf = &self.rbuf[..];
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, slots)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge),
            Err(e) => {
                return Err(HeadError::BadRequest(format!(
                    "malformed request head ({e})"
                )));
            }
        };
        if len > limits.max_header_bytes {
            return Err(HeadError::HeadTooLarge);
        }
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| s.as_ptr() as usize - base;
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Err(HeadError::BadRequest("malformed request head".into()));
        };
        if path.len() > MAX_URI_LEN {
            return Err(HeadError::UriTooLong);
        }
        let method = (offset(method.as_bytes()), method.len());
        let path = (offset(path.as_bytes()), path.len());
        self.indices.clear();
        self.indices.extend(req.headers.iter().map(|h| {
            let ns = offset(h.name.as_bytes());
            let vs = offset(h.value);
            (ns, ns + h.name.len(), vs, vs + h.value.len())
        }));

        let http10 = minor == 0;
        let mut keep_alive = !http10;
        let mut close = false;
        for &(ns, ne, vs, ve) in &self.indices {
            let (name, value) = (&buf[ns..ne], &buf[vs..ve]);
            let is = |n: &str| name.len() == n.len() && name.eq_ignore_ascii_case(n.as_bytes());
            // A body, an upgrade or an expectation: hyper's to serve.
            if is("transfer-encoding")
                || is("upgrade")
                || is("expect")
                || (is("content-length") && value.trim_ascii() != b"0")
            {
                return Ok(Some(Next::HandOff));
            }
            if is("connection") {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        let method_bytes = &buf[method.0..method.0 + method.1];
        if method_bytes == b"CONNECT" {
            return Ok(Some(Next::HandOff));
        }
        let method = Method::from_bytes(method_bytes)
            .map_err(|_| HeadError::BadRequest("invalid method".into()))?;

        let head = self.rbuf.split_to(len).freeze();
        let uri = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1))
            .map_err(|_| HeadError::BadRequest("invalid request target".into()))?;
        let mut headers = self.spare_headers.take().unwrap_or_default();
        // Room for the forwarding headers the proxy adds, too.
        headers.reserve(self.indices.len() + 4);
        for &(ns, ne, vs, ve) in &self.indices {
            let name = HeaderName::from_bytes(&head[ns..ne])
                .map_err(|_| HeadError::BadRequest("invalid header name".into()))?;
            // SAFETY: httparse accepts in a header value only HTAB, visible
            // ASCII, SP and obs-text (0x80-0xFF): exactly the bytes a
            // HeaderValue may hold (hyper's server relies on the same).
            let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(vs..ve)) };
            headers.append(name, value);
        }
        let asked = Asked {
            head_only: method == Method::HEAD,
            http10,
            keep_alive: keep_alive && !close,
        };
        let mut request = Request::new(B::default());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = if http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        *request.headers_mut() = headers;
        Ok(Some(Next::Request(request, asked)))
    }

    /// Runs `fut` unless the client closes the connection first (`None`).
    async fn unless_client_leaves<F: Future>(&mut self, mut fut: Pin<&mut F>) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if client_left(&mut self.stream, &mut self.rbuf, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes a response; true when the connection stays open for the
    /// next request.
    async fn write_response<Sv: Service>(
        &mut self,
        resp: Response<Sv::Body>,
        asked: Asked,
        shutting_down: bool,
        service: &Sv,
    ) -> bool {
        let (mut parts, mut body) = resp.into_parts();
        let mut keep_alive = asked.keep_alive && !shutting_down;
        if refuse_interim(&mut parts, &mut body, service) {
            keep_alive = false;
        }
        let framing = encode_response_head(&parts, &body, asked, &mut keep_alive, &mut self.wbuf);
        let mut headers = parts.headers;
        headers.clear();
        self.spare_headers = Some(headers);

        let Some(mut framing) = framing else {
            drop(body);
            return self.flush().await.is_ok() && keep_alive;
        };
        loop {
            let step = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Step::Frame(frame)),
                // Nothing more for now: what is gathered goes out first.
                Poll::Pending if !self.wbuf.is_empty() => Poll::Ready(Step::Flush),
                Poll::Pending if client_left(&mut self.stream, &mut self.rbuf, cx) => {
                    Poll::Ready(Step::ClientLeft)
                }
                Poll::Pending => Poll::Pending,
            })
            .await;
            let data = match step {
                Step::Flush => {
                    if self.flush().await.is_err() {
                        return false;
                    }
                    continue;
                }
                Step::ClientLeft => return false,
                Step::Frame(None) => {
                    let complete = match framing {
                        Framing::Chunked => {
                            self.wbuf.extend_from_slice(b"0\r\n\r\n");
                            true
                        }
                        Framing::Length(left) => left == 0,
                        Framing::Close => {
                            keep_alive = false;
                            true
                        }
                    };
                    // A body shorter than its length: the client can tell
                    // only by the connection closing.
                    return self.flush().await.is_ok() && complete && keep_alive;
                }
                Step::Frame(Some(Err(e))) => {
                    // Too late for an error response: the connection is
                    // closed, so the client sees the answer is incomplete.
                    tracing::debug!("response body failed: {e}");
                    let _ = self.flush().await;
                    return false;
                }
                Step::Frame(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    // Trailers are not passed on over HTTP/1.1.
                    _ => continue,
                },
            };
            let mut data = data;
            let mut overflow = false;
            match &mut framing {
                Framing::Length(left) => {
                    if data.len() as u64 > *left {
                        data.truncate(*left as usize);
                        overflow = true;
                    }
                    *left -= data.len() as u64;
                }
                Framing::Chunked => {
                    let mut line = [0u8; 18];
                    let n = chunk_size_line(data.len(), &mut line);
                    self.wbuf.extend_from_slice(&line[..n]);
                }
                Framing::Close => {}
            }
            if data.len() < COPY_MAX {
                self.wbuf.extend_from_slice(&data);
            } else if write_both(&mut self.stream, &mut self.wbuf, &data)
                .await
                .is_err()
            {
                return false;
            }
            if matches!(framing, Framing::Chunked) {
                self.wbuf.extend_from_slice(b"\r\n");
            }
            if overflow {
                tracing::debug!("response body longer than its content-length: cut");
                let _ = self.flush().await;
                return false;
            }
            if framing == Framing::Length(0) {
                // All of it: done, without waiting to hear the body end
                // (as hyper does).
                drop(body);
                return self.flush().await.is_ok() && keep_alive;
            }
            if self.wbuf.len() >= WRITE_BATCH && self.flush().await.is_err() {
                return false;
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let r = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        r?;
        if S::BUFFERS_WRITES {
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Closes the connection: what was written goes out, then what the
    /// client still sends is read and dropped for a moment (RFC 9112
    /// section 9.6), so that the kernel does not answer it with a reset
    /// that could destroy the response before the client reads it.
    async fn close(mut self) {
        use tokio::io::AsyncReadExt;
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let linger = async {
            let mut sink = [0u8; 4096];
            let mut left = LINGER_BYTES;
            while left > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, linger).await;
    }
}

/// A step of writing a response body.
enum Step {
    Frame(Option<Result<http_body::Frame<Bytes>, BoxError>>),
    Flush,
    ClientLeft,
}

/// Replaces a 1xx given as the final answer with a 502: only an upgrade
/// may end with one (and those are hyper's), and a client sent a 1xx would
/// wait for the real answer. True when it did.
fn refuse_interim<Sv: Service>(
    parts: &mut http::response::Parts,
    body: &mut Sv::Body,
    service: &Sv,
) -> bool {
    if !parts.status.is_informational() {
        return false;
    }
    (*parts, *body) = service
        .refuse(HeadError::InterimAsFinal(parts.status))
        .into_parts();
    true
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes still to write.
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, unknown length).
    Close,
}

/// Writes the response head into `dst` and decides the body's framing, as
/// hyper's server does (RFC 9112 sections 6 and 9): `None` when no body is
/// written. Clears `keep_alive` when the connection must close after it.
fn encode_response_head(
    parts: &http::response::Parts,
    body: &impl http_body::Body,
    asked: Asked,
    keep_alive: &mut bool,
    dst: &mut Vec<u8>,
) -> Option<Framing> {
    let status = parts.status;
    dst.clear();
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if !asked.http10 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(if asked.http10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let bodyless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let mut header_length = None;
    let mut wrote_length = false;
    let mut wrote_date = false;
    let mut wrote_close = false;
    let mut codings: Option<Vec<&HeaderValue>> = None;
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH {
            // A HEAD answer keeps the length the GET would have; otherwise
            // the body's own length is written below.
            if asked.head_only && !bodyless_status {
                wrote_length = true;
            } else {
                if header_length.is_none() {
                    header_length = parse_length(value.as_bytes().trim_ascii());
                }
                continue;
            }
        } else if *name == header::TRANSFER_ENCODING {
            // The framing is this connection's to choose; codings besides
            // `chunked` that the body still carries go on, with `chunked`
            // added last (as hyper's server does), to HTTP/1.1 clients.
            if !asked.http10 && !asked.head_only && !bodyless_status {
                codings.get_or_insert_with(Vec::new).push(value);
            }
            continue;
        } else if *name == header::CONNECTION {
            if value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                *keep_alive = false;
                wrote_close = true;
            }
        } else if *name == header::DATE {
            wrote_date = true;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let framing = if asked.head_only || bodyless_status {
        if asked.head_only
            && !bodyless_status
            && !wrote_length
            && let Some(n) = known.filter(|&n| n > 0)
        {
            write_length(dst, n);
        }
        None
    } else if let Some(codings) = codings {
        dst.extend_from_slice(b"transfer-encoding: ");
        for value in codings {
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b", ");
        }
        dst.extend_from_slice(b"chunked\r\n");
        Some(Framing::Chunked)
    } else {
        match known.or(header_length) {
            Some(n) => {
                write_length(dst, n);
                (n > 0).then_some(Framing::Length(n))
            }
            None if asked.http10 => {
                *keep_alive = false;
                Some(Framing::Close)
            }
            None => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Some(Framing::Chunked)
            }
        }
    };
    if asked.http10 {
        if *keep_alive {
            dst.extend_from_slice(b"connection: keep-alive\r\n");
        }
    } else if !*keep_alive && !wrote_close {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        http_date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    framing
}

fn write_length(dst: &mut Vec<u8>, n: u64) {
    dst.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
    dst.extend_from_slice(b"\r\n");
}

/// `{size:x}\r\n` into `line`; returns its length.
fn chunk_size_line(size: usize, line: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut v = size;
    loop {
        i -= 1;
        digits[i] = HEX[v & 0xf];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    let n = digits.len() - i;
    line[..n].copy_from_slice(&digits[i..]);
    line[n..n + 2].copy_from_slice(b"\r\n");
    n + 2
}

/// The current time as an HTTP date, formatted once a second per thread.
fn http_date(dst: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            } else {
                dst.extend_from_slice(text.as_bytes());
                return;
            }
        }
        dst.extend_from_slice(&c.1);
    });
}

/// Whether the client closed its side (or the connection failed) while a
/// response is being made. Bytes that arrive meanwhile (a pipelined
/// request) are kept; while some are held nothing more is read, as hyper
/// does. Costs no system call unless the socket was reported readable.
fn client_left<S: ClientStream>(stream: &mut S, rbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    if !rbuf.is_empty() {
        return false;
    }
    stream.poll_left(rbuf, cx)
}

/// A client connection the lean path serves: plain TCP, or TLS that
/// negotiated HTTP/1.1.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether a write may leave bytes behind until a flush (TLS does).
    const BUFFERS_WRITES: bool;

    /// [`client_left`] with nothing held: reads what came (kept in
    /// `rbuf`) and says whether the client closed or the connection failed.
    fn poll_left(&mut self, rbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool;
}

/// [`client_left`] for plain TCP. Costs no system call unless the socket
/// was reported readable.
pub fn tcp_left(stream: &TcpStream, rbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    loop {
        match stream.poll_read_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) => {
                rbuf.reserve(READ_SIZE);
                match stream.try_read_buf(rbuf) {
                    Ok(0) => return true,
                    Ok(_) => return false,
                    // The readiness was stale; poll again to be woken.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return true,
                }
            }
        }
    }
}

/// Writes `head` then `data` in as few system calls as the kernel allows,
/// and empties `head`.
async fn write_both<S: ClientStream>(
    stream: &mut S,
    head: &mut Vec<u8>,
    data: &[u8],
) -> io::Result<()> {
    let (mut a, mut b) = (0, 0);
    while a < head.len() || b < data.len() {
        let bufs = [IoSlice::new(&head[a..]), IoSlice::new(&data[b..])];
        let n = stream.write_vectored(&bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len() - a);
        a += from_head;
        b += n - from_head;
    }
    head.clear();
    if S::BUFFERS_WRITES {
        stream.flush().await?;
    }
    Ok(())
}

/// A connection whose first bytes were already read: hyper reads them
/// again from here.
struct Prefixed<S> {
    prefix: BytesMut,
    io: S,
}

impl<S: ClientStream> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: ClientStream> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A body for tests: nothing, bytes in memory, or hyper's.
    #[derive(Default)]
    enum TestBody {
        #[default]
        Empty,
        Full(Option<Bytes>),
        Incoming(Incoming),
    }

    impl TestBody {
        fn full(b: &'static str) -> Self {
            TestBody::Full(Some(Bytes::from_static(b.as_bytes())))
        }
    }

    impl From<Incoming> for TestBody {
        fn from(b: Incoming) -> Self {
            TestBody::Incoming(b)
        }
    }

    impl http_body::Body for TestBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            match self.get_mut() {
                TestBody::Empty => Poll::Ready(None),
                TestBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(http_body::Frame::data(d)))),
                TestBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            }
        }

        fn size_hint(&self) -> http_body::SizeHint {
            match self {
                TestBody::Empty => http_body::SizeHint::with_exact(0),
                TestBody::Full(b) => {
                    http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
                }
                TestBody::Incoming(b) => b.size_hint(),
            }
        }
    }

    /// A trivial service: answers `METHOD PATH`, and refusals with their
    /// status and the error's debug text.
    struct Echo;

    impl Service for Echo {
        type Body = TestBody;

        fn call(
            &self,
            req: Request<TestBody>,
            _peer: SocketAddr,
            _peer_ip: &HeaderValue,
        ) -> impl Future<Output = Result<Response<TestBody>, Infallible>> + Send + use<> {
            let text = format!("{} {}", req.method(), req.uri().path());
            async move { Ok(Response::new(TestBody::Full(Some(Bytes::from(text))))) }
        }

        fn refuse(&self, err: HeadError) -> Response<TestBody> {
            let status = match err {
                HeadError::BadRequest(_) => StatusCode::BAD_REQUEST,
                HeadError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
                HeadError::InterimAsFinal(_) => StatusCode::BAD_GATEWAY,
            };
            let mut resp = Response::new(TestBody::Full(Some(Bytes::from(format!("{err:?}")))));
            *resp.status_mut() = status;
            resp
        }
    }

    /// Plain TCP without the send timeout, for tests.
    impl ClientStream for TcpStream {
        const BUFFERS_WRITES: bool = false;

        fn poll_left(&mut self, rbuf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
            tcp_left(self, rbuf, cx)
        }
    }

    /// A server that never shuts down.
    struct Never;

    impl ShutdownWatch for Never {
        fn poll_shutting_down(&mut self, _cx: &Context<'_>) -> bool {
            false
        }

        fn is_shutting_down(&self) -> bool {
            false
        }

        fn watch<C>(self, conn: C) -> impl Future<Output = C::Output> + Send
        where
            C: GracefulConnection + Send,
            C::Output: Send,
        {
            conn
        }
    }

    /// The codec serves a trivial service over a real socket: keep-alive,
    /// pipelining, and a malformed head refused through `Service::refuse`.
    #[tokio::test]
    async fn serves_a_trivial_service_over_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Arc::new(Server {
            service: Arc::new(Echo),
            hyper: Arc::new(auto::Builder::new(TokioExecutor::new())),
            limits: Limits {
                header_read_timeout: Duration::from_secs(5),
                send_timeout: Duration::from_secs(5),
                max_header_bytes: 8192,
                max_headers: 100,
            },
            sleeps: Arc::new(SleepPool::default()),
        });
        let served = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.expect("accept");
            serve(
                stream,
                peer,
                HeaderValue::from_static("127.0.0.1"),
                server,
                Never,
            )
            .await;
        });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nHEAD /b HTTP/1.1\r\nhost: x\r\n\r\nGET /c HTTP/1.1\r\nhost x\r\n\r\n")
            .await
            .expect("write");
        // Half-closed: the lingering close after the 400 ends at once.
        client.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        let got = String::from_utf8_lossy(&got);
        let answers: Vec<&str> = got.matches("HTTP/1.1 ").collect();
        assert_eq!(answers.len(), 3, "{got}");
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("content-length: 6\r\n"), "{got}");
        assert!(got.contains("\r\n\r\nGET /aHTTP/1.1 200 OK\r\n"), "{got}");
        // HEAD: the length of the body GET would get, and no body.
        assert!(
            got.contains("\r\n\r\nHTTP/1.1 400 Bad Request\r\n"),
            "{got}"
        );
        assert!(
            got.ends_with("BadRequest(\"malformed request head (invalid header name)\")"),
            "{got}"
        );
        served.await.expect("served");
    }

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        body: TestBody,
        asked: Asked,
    ) -> (String, Option<Framing>, bool) {
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        for (n, v) in headers {
            resp.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let (parts, body) = resp.into_parts();
        let mut keep = asked.keep_alive;
        let mut dst = Vec::new();
        let framing = encode_response_head(&parts, &body, asked, &mut keep, &mut dst);
        let text = String::from_utf8(dst).expect("utf-8");
        // The date changes; the rest is compared.
        let text = text
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (text, framing, keep)
    }

    const GET11: Asked = Asked {
        head_only: false,
        http10: false,
        keep_alive: true,
    };

    #[test]
    fn known_lengths_are_written_from_the_body() {
        let (text, framing, keep) = head(
            200,
            &[("content-type", "text/plain"), ("content-length", "99")],
            TestBody::full("hello"),
            GET11,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\ncontent-type: text/plain\ncontent-length: 5\n"
        );
        assert_eq!(framing, Some(Framing::Length(5)));
        assert!(keep);
        let (text, framing, _) = head(404, &[], TestBody::Empty, GET11);
        assert_eq!(text, "HTTP/1.1 404 Not Found\ncontent-length: 0\n");
        assert_eq!(framing, None);
    }

    #[test]
    fn head_answers_keep_their_length_and_bodyless_statuses_get_none() {
        let asked = Asked {
            head_only: true,
            ..GET11
        };
        let (text, framing, _) = head(200, &[("content-length", "1234")], TestBody::Empty, asked);
        assert_eq!(text, "HTTP/1.1 200 OK\ncontent-length: 1234\n");
        assert_eq!(framing, None);
        let (text, framing, _) = head(
            304,
            &[("content-length", "10"), ("etag", "\"x\"")],
            TestBody::Empty,
            GET11,
        );
        assert_eq!(text, "HTTP/1.1 304 Not Modified\netag: \"x\"\n");
        assert_eq!(framing, None);
    }

    #[test]
    fn connection_headers_follow_the_client_version_and_keep_alive() {
        let close = Asked {
            keep_alive: false,
            ..GET11
        };
        let (text, _, keep) = head(200, &[], TestBody::Empty, close);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\ncontent-length: 0\nconnection: close\n"
        );
        assert!(!keep);
        let old_keep = Asked {
            http10: true,
            ..GET11
        };
        let (text, _, keep) = head(200, &[], TestBody::Empty, old_keep);
        assert_eq!(
            text,
            "HTTP/1.0 200 OK\ncontent-length: 0\nconnection: keep-alive\n"
        );
        assert!(keep);
        let old = Asked {
            http10: true,
            keep_alive: false,
            ..GET11
        };
        let (text, _, _) = head(200, &[], TestBody::Empty, old);
        assert_eq!(text, "HTTP/1.0 200 OK\ncontent-length: 0\n");
    }

    #[test]
    fn date_is_added_once() {
        let mut resp = Response::new(TestBody::Empty);
        resp.headers_mut().insert(
            header::DATE,
            HeaderValue::from_static("Thu, 01 Jan 2026 00:00:00 GMT"),
        );
        let (parts, body) = resp.into_parts();
        let mut keep = true;
        let mut dst = Vec::new();
        encode_response_head(&parts, &body, GET11, &mut keep, &mut dst);
        let text = String::from_utf8(dst).expect("utf-8");
        assert_eq!(text.matches("date: ").count(), 1, "{text}");
        assert!(
            text.contains("date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"),
            "{text}"
        );
        let mut dst = Vec::new();
        let (parts, body) = Response::new(TestBody::Empty).into_parts();
        encode_response_head(&parts, &body, GET11, &mut keep, &mut dst);
        let text = String::from_utf8(dst).expect("utf-8");
        assert!(
            text.contains("\r\ndate: ") && text.ends_with(" GMT\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn an_interim_status_as_final_answer_becomes_a_502() {
        let (mut parts, mut body) = Response::new(TestBody::Empty).into_parts();
        assert!(!refuse_interim(&mut parts, &mut body, &Echo));
        assert_eq!(parts.status, StatusCode::OK);
        parts.status = StatusCode::SWITCHING_PROTOCOLS;
        assert!(refuse_interim(&mut parts, &mut body, &Echo));
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY);
        assert!(body.size_hint().exact().is_some_and(|n| n > 0));
    }

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        let mut line = [0u8; 18];
        for (size, want) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let n = chunk_size_line(size, &mut line);
            assert_eq!(&line[..n], want.as_bytes());
        }
    }
}
