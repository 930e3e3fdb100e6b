//! Sending a request to one instance of a pool over a keep-alive
//! connection: a body-less request to a plain-http instance takes the
//! lean HTTP/1.1 exchange (`http1::client`), everything else hyper's
//! client, over TLS to https instances. This is the one place that
//! chooses between them. Idle connections wait in a per-instance stack; a
//! response body read to its end gives its connection back. Also the
//! requests strangler makes itself (`send_once`, `send_head_once`) and
//! pipelines of them on one connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::uri::Scheme;
use http::{Request, Response, Uri};
use http_body::Body;
use hyper_util::rt::TokioIo;

use crate::http1::client::{H1Body, H1Conn, H1Error, IdleStack, KeepHeaders};
use crate::http1::headers::Forwarding;
use crate::upstream::body::{BoxError, Conn, HyperBody, PooledBody, ProxyBody};
use crate::upstream::pool::{Instance, UpstreamPool};

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent, the request is back.
    Connect(String, Box<Request<ProxyBody>>),
    /// The connection failed after the request was (maybe) sent.
    Broken(BoxError),
}

/// Why a lean exchange failed.
enum LeanError {
    /// No connection could be made: nothing was sent.
    Connect(String),
    Broken(crate::http1::client::H1Error),
}

impl Instance {
    /// An idle lean connection that can take a request, if any: those the
    /// instance closed meanwhile (or that hold stray bytes) are dropped.
    fn idle_lean(&self) -> Option<H1Conn> {
        while let Some(c) = self.lean_idle.pop() {
            if c.is_reusable() {
                return Some(c);
            }
        }
        None
    }
}

/// What goes along with a request to [`UpstreamPool::send`].
#[derive(Debug, Clone, Copy)]
pub struct SendWith<'a> {
    /// Its head, already encoded by `http1::client::encode_head` (forwarding headers
    /// included), when the caller has it: the lean exchange sends it as is.
    pub head: Option<&'a [u8]>,
    /// Where the lean exchange puts the response headers (hyper's client
    /// always puts them in the map).
    pub keep: KeepHeaders,
    /// Forwarding headers not in the request's map, added on the way.
    pub forwarding: Option<&'a Forwarding>,
}

impl Default for SendWith<'_> {
    fn default() -> Self {
        SendWith {
            head: None,
            keep: KeepHeaders::Map,
            forwarding: None,
        }
    }
}

impl UpstreamPool {
    /// Opens a TCP connection to instance `i`.
    async fn connect_tcp(&self, i: usize) -> Result<tokio::net::TcpStream, String> {
        let inst = &self.instances[i];
        let connect = tokio::net::TcpStream::connect(inst.address.as_str());
        let tcp = match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let msg = e.to_string();
                return Err(msg
                    .split(" (os error")
                    .next()
                    .unwrap_or(&msg)
                    .to_lowercase());
            }
            Err(_) => {
                return Err(format!(
                    "connect timed out after {:?}",
                    self.config.connect_timeout
                ));
            }
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Opens a new connection to instance `i` for hyper's client.
    async fn connect(&self, i: usize) -> Result<Conn, String> {
        let inst = &self.instances[i];
        let tcp = self.connect_tcp(i).await?;
        let mut builder = hyper::client::conn::http1::Builder::new();
        builder.writev(false);
        match (&self.tls, &inst.server_name) {
            (Some(tls), Some(name)) => {
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                let (conn, driver) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                // Upgrades (WebSocket) hand the connection over to a tunnel.
                tokio::spawn(driver.with_upgrades());
                Ok(conn)
            }
            (_, None) if inst.scheme == Scheme::HTTPS => {
                Err("invalid TLS server name for this https instance".to_string())
            }
            _ => {
                let (conn, driver) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| e.to_string())?;
                // Upgrades (WebSocket) hand the connection over to a tunnel.
                tokio::spawn(driver.with_upgrades());
                Ok(conn)
            }
        }
    }

    /// Sends `req` to instance `i` on an idle connection or a new one. A
    /// pooled connection that the instance closed meanwhile is replaced
    /// without counting against the instance (the request was not sent).
    /// `with` says what goes along (see [`SendWith`]).
    pub async fn send(
        &self,
        i: usize,
        mut req: Request<ProxyBody>,
        with: SendWith<'_>,
    ) -> Result<Response<PooledBody>, SendError> {
        // hyper's connection-level client writes the URI as given, and
        // upstreams must see origin-form (`GET /path?q HTTP/1.1`).
        if req.uri().authority().is_some() {
            let origin = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(origin);
        }
        let inst = &self.instances[i];
        if inst.scheme != Scheme::HTTPS
            && req.body().is_end_stream()
            && req.method() != http::Method::CONNECT
            && !req.headers().contains_key(http::header::UPGRADE)
        {
            return self.send_lean(i, req, with).await;
        }
        let Some(forwarding) = with.forwarding else {
            // Boxed: the common (lean) case then carries none of this
            // future's state, which keeps every request's future small.
            return Box::pin(self.send_hyper(i, req)).await;
        };
        forwarding.insert_into(req.headers_mut());
        match Box::pin(self.send_hyper(i, req)).await {
            // Given back unsent, as it came.
            Err(SendError::Connect(msg, mut back)) => {
                forwarding.remove_from(back.headers_mut());
                Err(SendError::Connect(msg, back))
            }
            other => other,
        }
    }

    /// Sends `req` to instance `i` through hyper's client.
    async fn send_hyper(
        &self,
        i: usize,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let idle = &self.instances[i].idle;
        loop {
            let (mut conn, fresh) = match idle.pop() {
                Some(mut c) => {
                    if c.is_closed() || c.ready().await.is_err() {
                        continue;
                    }
                    (c, false)
                }
                // Boxed: connecting (TCP, maybe TLS, handshake) is rare per
                // request, and inline its state would make every request's
                // future (moved around by hyper) several times larger.
                None => match Box::pin(self.connect(i)).await {
                    Ok(c) => (c, true),
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                },
            };
            match conn.try_send_request(req).await {
                Ok(mut resp) => {
                    // A switched connection, or one whose framing was
                    // doubtful, is not reused.
                    let reusable = normalize_framing(&mut resp)
                        && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                    let back = reusable.then(|| (conn, idle.clone()));
                    return Ok(resp.map(|body| PooledBody::Hyper(HyperBody { body, back })));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: a stale pooled connection. Try another one.
                    Some(r) if !fresh => req = r,
                    Some(r) => {
                        return Err(SendError::Connect(e.into_error().to_string(), Box::new(r)));
                    }
                    None => return Err(SendError::Broken(e.into_error().into())),
                },
            }
        }
    }

    /// The lean exchange (`http1::client`) for a body-less request to a plain-http
    /// instance.
    async fn send_lean(
        &self,
        i: usize,
        req: Request<ProxyBody>,
        with: SendWith<'_>,
    ) -> Result<Response<PooledBody>, SendError> {
        let encoded;
        let head = match with.head {
            Some(h) => h,
            None => {
                let mut v = Vec::with_capacity(512);
                crate::http1::client::encode_head(&req, with.forwarding, &mut v);
                encoded = v;
                &encoded
            }
        };
        match self.lean_exchange(i, head, req.method(), with.keep).await {
            Ok(resp) => Ok(resp.map(PooledBody::Lean)),
            Err(LeanError::Connect(e)) => Err(SendError::Connect(e, Box::new(req))),
            Err(LeanError::Broken(e)) => Err(SendError::Broken(e.into())),
        }
    }

    /// Sends an encoded request head (`http1::client`) to instance `i`. A reused
    /// connection that fails before any byte of a response arrived was most
    /// likely closed by the instance while idle: an idempotent request is
    /// sent again, once, on a new connection.
    async fn lean_exchange(
        &self,
        i: usize,
        head: &[u8],
        method: &http::Method,
        keep: KeepHeaders,
    ) -> Result<Response<H1Body>, LeanError> {
        let inst = &self.instances[i];
        let head_only = method == http::Method::HEAD;
        let idempotent = crate::http1::headers::idempotent(method);
        let mut resent = false;
        loop {
            let pooled = if resent { None } else { inst.idle_lean() };
            let (conn, fresh) = match pooled {
                Some(c) => (c, false),
                None => match Box::pin(self.connect_tcp(i)).await {
                    Ok(tcp) => (H1Conn::new(tcp), true),
                    Err(e) => return Err(LeanError::Connect(e)),
                },
            };
            match conn
                .exchange(head, head_only, inst.lean_idle.clone(), keep)
                .await
            {
                Ok(resp) => return Ok(resp),
                // A resend is always on a fresh connection, so at most once.
                Err(e) if !fresh && idempotent && e.nothing_received() => {
                    resent = true;
                }
                Err(e) => return Err(LeanError::Broken(e)),
            }
        }
    }

    /// Whether every instance speaks plain http, so that body-less requests
    /// take the lean exchange and may be sent as encoded heads.
    pub fn is_plain_http(&self) -> bool {
        self.tls.is_none()
    }

    /// [`Self::send_once`] for a request already encoded by
    /// `http1::client::encode_head_parts` (body-less, to a plain-http upstream). The
    /// response's headers come raw with its body (a shadow's answer:
    /// see `RawHeaders`), its header map empty.
    pub async fn send_head_once(
        &self,
        head: &[u8],
        method: &http::Method,
    ) -> Result<Response<PooledBody>, String> {
        match self
            .on_one_instance(|i| self.lean_exchange(i, head, method, KeepHeaders::Raw))
            .await?
        {
            Ok(resp) => Ok(resp.map(PooledBody::Lean)),
            Err(LeanError::Connect(e)) => Err(e),
            Err(LeanError::Broken(e)) => Err(e.to_string()),
        }
    }

    /// A connection to one picked instance for `requests` body-less
    /// requests written at once (see [`Pipeline`]): an idle one, or a new
    /// one. They count in flight on the instance while it lives.
    pub async fn pipeline(&self, requests: usize) -> Result<Pipeline<'_>, String> {
        let i = self
            .pick(&[])
            .map_err(|_| "no healthy instance".to_string())?;
        let inst = &self.instances[i];
        inst.in_flight.fetch_add(requests, Ordering::Relaxed);
        let mut pipeline = Pipeline {
            pool: self,
            i,
            requests,
            conn: None,
            held: Arc::default(),
            fresh: false,
            asked: 0,
        };
        if let Some(c) = inst.idle_lean() {
            pipeline.conn = Some(c);
            return Ok(pipeline);
        }
        let tcp = Box::pin(self.connect_tcp(i)).await?;
        pipeline.conn = Some(H1Conn::new(tcp));
        pipeline.fresh = true;
        Ok(pipeline)
    }

    /// Sends a request strangler makes on its own (a shadow copy, an
    /// aggregate part) to one instance, counted in flight, without retries
    /// or passive health; the error says what happened.
    pub async fn send_once(&self, req: Request<ProxyBody>) -> Result<Response<PooledBody>, String> {
        self.on_one_instance(|i| self.send(i, req, SendWith::default()))
            .await?
            .map_err(|e| match e {
                SendError::Connect(msg, _) => msg,
                SendError::Broken(e) => e.to_string(),
            })
    }

    /// Runs `send` against one picked instance, counted in flight while it
    /// runs (requests strangler makes itself: no retries, no passive health).
    async fn on_one_instance<T, F: std::future::Future<Output = T>>(
        &self,
        send: impl FnOnce(usize) -> F,
    ) -> Result<T, String> {
        let i = self
            .pick(&[])
            .map_err(|_| "no healthy instance".to_string())?;
        self.start_request(i);
        let sent = send(i).await;
        self.end_request(i);
        Ok(sent)
    }
}

/// Makes a response from hyper's client say what the lean exchange's do
/// (RFC 9112 section 6.3): with Transfer-Encoding, Content-Length is
/// removed (hyper decodes the chunks but keeps both headers, and a length
/// passed on would cut the body), and Transfer-Encoding keeps only the
/// codings besides a final `chunked`, which stay applied to the body.
/// False when the connection should not be reused (both headers came).
fn normalize_framing<B>(resp: &mut Response<B>) -> bool {
    let headers = resp.headers_mut();
    if !headers.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    let had_length = headers.remove(http::header::CONTENT_LENGTH).is_some();
    let kept = crate::http1::headers::codings_besides_chunked(
        headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .map(http::HeaderValue::as_bytes),
    );
    headers.remove(http::header::TRANSFER_ENCODING);
    if let Some(kept) = kept {
        headers.insert(http::header::TRANSFER_ENCODING, kept);
    }
    !had_length
}

/// Several body-less requests of safe methods written to one connection
/// at once and answered in order (HTTP/1.1 pipelining, RFC 9112 section
/// 9.3.2): one write and, mostly, one read for all of them instead of one
/// each. The connection goes back to the instance's idle stack when every
/// response was read to its end; otherwise it is closed.
pub struct Pipeline<'a> {
    pool: &'a UpstreamPool,
    i: usize,
    /// Counted in flight on the instance.
    requests: usize,
    /// The connection, until a response takes it.
    conn: Option<H1Conn>,
    /// Where a response body that ended leaves the connection for the next.
    held: Arc<IdleStack<H1Conn>>,
    fresh: bool,
    /// Responses asked for.
    asked: usize,
}

impl Pipeline<'_> {
    /// Whether the connection is new (not one that was idle, which the
    /// instance may have closed meanwhile).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Writes the request heads, `http1::client::encode_head_parts`'s one after another.
    pub async fn send(&mut self, heads: &[u8]) -> Result<(), H1Error> {
        let conn = self.conn.as_mut().ok_or(H1Error::ClosedBeforeResponse)?;
        conn.send(heads).await.map_err(H1Error::Io)
    }

    /// The next response, its headers raw (see `RawHeaders`). The body of
    /// the one before must have been read to its end: otherwise, or when
    /// the instance closed the connection after it, the error says nothing
    /// was received.
    pub async fn next(&mut self, head_only: bool) -> Result<Response<H1Body>, H1Error> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.held.pop().ok_or(H1Error::ClosedBeforeResponse)?,
        };
        self.asked += 1;
        conn.read_response(head_only, self.held.clone(), KeepHeaders::Raw)
            .await
    }
}

impl Drop for Pipeline<'_> {
    fn drop(&mut self) {
        let inst = &self.pool.instances[self.i];
        inst.in_flight.fetch_sub(self.requests, Ordering::Relaxed);
        // Reusable only with every response read: no answer still to come.
        if self.asked == self.requests
            && let Some(conn) = self.conn.take().or_else(|| self.held.pop())
        {
            inst.lean_idle.push(conn);
        }
    }
}
