//! Shadow dispatch on the proxy side: deciding per request whether a copy
//! goes to the route's shadow upstream, teeing the request and primary
//! response bodies while they stream, and the shadow call itself on its own
//! task. The client's answer is never held up: the primary streams as
//! usual, and everything here either runs beside it or is skipped and
//! counted. Comparison and storage happen on the diff pipeline's thread
//! (crate `strangler-shadow`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use strangler_rules::UpstreamId;
use strangler_rules::config::ShadowLimits;
use strangler_shadow::capture::{HashKey, RawHeaders};
use strangler_shadow::pipeline::{CompareJob, DiffPipeline, ShadowAnswer, settle_quickly};
use strangler_shadow::{BodyCapture, Captured, Comparator, Counters, Outcome, RouteCounts};
use tokio::sync::{Semaphore, oneshot};

use crate::upstream::UpstreamPool;
use crate::upstream::body::PooledBody;
use crate::upstream::body::ProxyBody;

/// The header that marks a shadow request; clients' copies are stripped.
pub const SHADOW_HEADER: http::HeaderName = http::HeaderName::from_static("x-strangler-shadow");

/// A route's live shadow settings: the file's with the runtime layer on top.
#[derive(Debug)]
pub struct ShadowPlan {
    /// The route's name, shared with every shadow task.
    pub route: Arc<str>,
    pub upstream: UpstreamId,
    pub percent_bp: u16,
    pub methods: Vec<String>,
    pub comparator: Arc<Comparator>,
    pub counts: Arc<RouteCounts>,
    /// Share of shadowed requests also sent a second time to the primary's
    /// upstream (Diffy's noise check), in basis points.
    pub noise_bp: u16,
}

/// Methods a noise check may send twice (never a write).
pub const NOISE_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

/// What the proxy shares for shadowing: limits, the in-flight bound and
/// the diff pipeline.
#[derive(Debug)]
pub struct ShadowRuntime {
    pub pipeline: DiffPipeline,
    timeout: Duration,
    max_body: usize,
    /// Shadow calls running at once.
    running: Semaphore,
    /// Shadow requests written at once on one connection at most.
    depth: usize,
    /// Admitted shadow tasks (running or waiting); at most concurrency + queue.
    admitted: AtomicUsize,
    capacity: usize,
    /// The tasks that run shadow calls, started on first use (on the
    /// proxy's runtime).
    workers: std::sync::OnceLock<ShadowWorkers>,
}

/// A shadow call, boxed for a worker.
type ShadowCall = Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a worker is given.
enum Work {
    Call(ShadowCall),
    /// A copy that may share a connection with others (see [`Queued`]).
    Pipelined(Box<Queued>),
}

/// A shadow copy that may be pipelined: a body-less request of a safe
/// method (GET, HEAD, OPTIONS), encoded for the lean exchange, without a
/// noise check. Those a worker finds queued together are written to one
/// connection at once (`UpstreamPool::pipeline`), up to
/// [`PIPELINE_DEPTH`]: one write and mostly one read for all of them,
/// where each alone costs two system calls and two wake-ups.
struct Queued {
    l: Launch,
    place: Admitted,
    primary_rx: oneshot::Receiver<Captured>,
    time_ms: u64,
}

/// Shadow requests written at once on one connection at most.
const PIPELINE_DEPTH: usize = 8;
/// Bytes of request heads written at once at most: a write that cannot
/// finish while the instance's answers go unread must not happen.
const PIPELINE_BYTES: usize = 16 * 1024;
/// Queued items a worker takes in one go at most.
const DRAIN_MAX: usize = 256;

/// Long-lived tasks that each run many shadow calls at once. A tokio task
/// per shadowed request would cost a 128-byte-aligned allocation, which
/// glibc's malloc serves on its slow path: a third of what launching a
/// shadow call cost. Calls go round-robin to one worker per runtime thread.
struct ShadowWorkers {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Work>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for ShadowWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowWorkers")
            .field("workers", &self.senders.len())
            .finish_non_exhaustive()
    }
}

impl ShadowWorkers {
    fn start(depth: usize) -> Self {
        let n = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let senders = (0..n)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(shadow_worker(rx, depth));
                tx
            })
            .collect();
        ShadowWorkers {
            senders,
            next: AtomicUsize::new(0),
        }
    }

    fn run(&self, work: Work) {
        let i = self.next.fetch_add(1, Relaxed) % self.senders.len();
        // A worker that is gone (its runtime shutting down): a task of its own.
        if let Err(back) = self.senders[i].send(work) {
            tokio::spawn(match back.0 {
                Work::Call(call) => call,
                Work::Pipelined(q) => Box::pin(run_pipelined(vec![q])),
            });
        }
    }
}

/// Runs the calls it is sent until every sender is gone and they finished.
/// Pipelined copies queued together go out together, grouped by upstream.
async fn shadow_worker(mut rx: tokio::sync::mpsc::UnboundedReceiver<Work>, depth: usize) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut running: FuturesUnordered<ShadowCall> = FuturesUnordered::new();
    // Copies to go together: their heads' bytes, and them.
    let mut groups: Vec<(usize, Vec<Box<Queued>>)> = Vec::new();
    loop {
        tokio::select! {
            work = rx.recv() => {
                let Some(first) = work else { break };
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(work) = next.take() {
                    match work {
                        Work::Call(call) => running.push(call),
                        Work::Pipelined(q) => {
                            let len = q.l.request.encoded_len();
                            let same = groups.iter_mut().find(|(bytes, g)| {
                                g.len() < depth
                                    && bytes + len <= PIPELINE_BYTES
                                    && Arc::ptr_eq(&g[0].l.pool, &q.l.pool)
                            });
                            match same {
                                Some((bytes, g)) => {
                                    *bytes += len;
                                    g.push(q);
                                }
                                None => groups.push((len, vec![q])),
                            }
                        }
                    }
                    taken += 1;
                    if taken < DRAIN_MAX {
                        next = rx.try_recv().ok();
                    }
                }
                for (_, group) in groups.drain(..) {
                    running.push(Box::pin(run_pipelined(group)));
                }
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

impl ShadowRuntime {
    pub fn new(pipeline: DiffPipeline, limits: &ShadowLimits) -> Self {
        ShadowRuntime {
            pipeline,
            timeout: limits.timeout,
            max_body: usize::try_from(limits.max_request_body).unwrap_or(usize::MAX),
            running: Semaphore::new(limits.concurrency as usize),
            depth: PIPELINE_DEPTH.min(limits.concurrency as usize).max(1),
            admitted: AtomicUsize::new(0),
            capacity: limits.concurrency as usize + limits.queue as usize,
            workers: std::sync::OnceLock::new(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.pipeline.counters
    }

    /// Runs a shadow call on a worker (a task of its own before they start).
    fn run_call(&self, call: ShadowCall) {
        match self.workers.get() {
            Some(w) => w.run(Work::Call(call)),
            None => drop(tokio::spawn(call)),
        }
    }

    /// Takes a place for one shadow task, or says the queue is full.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let prev = self.admitted.fetch_add(1, Relaxed);
        if prev >= self.capacity {
            self.admitted.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Admitted(self.clone()))
    }
}

/// A place in the shadow queue, given back on drop.
struct Admitted(Arc<ShadowRuntime>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Relaxed);
    }
}

/// What the proxy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// No shadow on the route, or not this method, or not sampled.
    None,
    Sent,
    Skipped(Outcome),
}

impl Dispatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Dispatch::None => "none",
            Dispatch::Sent => "sent",
            Dispatch::Skipped(o) => o.as_str(),
        }
    }
}

/// A shadow call waiting for its inputs: the request body (when there is
/// one) and the primary's answer.
pub struct Pending {
    pub body_tx: Option<oneshot::Sender<Option<Bytes>>>,
    pub primary_tx: oneshot::Sender<Captured>,
    pub max_body: usize,
    pub runtime: Arc<ShadowRuntime>,
}

impl Pending {
    /// The key for keyed hashes of long bodies.
    pub fn key(&self) -> &Arc<HashKey> {
        self.runtime.pipeline.redactor.key()
    }
}

/// Everything the shadow task needs, taken from the request before it is
/// forwarded.
pub struct Launch {
    pub runtime: Arc<ShadowRuntime>,
    pub pool: Arc<UpstreamPool>,
    pub route: Arc<str>,
    pub method: http::Method,
    pub path_and_query: http::uri::PathAndQuery,
    pub request: ShadowRequest,
    pub comparator: Arc<Comparator>,
    pub counts: Arc<RouteCounts>,
    /// The upstream that answers the client.
    pub primary: Arc<UpstreamPool>,
    /// Sampled for the noise check: the primary's upstream, asked again.
    pub noise_pool: Option<Arc<UpstreamPool>>,
    pub has_body: bool,
    pub content_length: Option<u64>,
    /// The proxy's pooled timers (the shadow call's timeout is one).
    pub sleeps: Arc<crate::timer::SleepPool>,
}

/// The shadow request's head, as the shadow task will send it.
pub enum ShadowRequest {
    /// Encoded once, `x-strangler-shadow: 1` included: for body-less
    /// requests to plain-http upstreams (the lean exchange), with no header
    /// map to copy, build into a request and drop.
    Encoded(Vec<u8>),
    /// For everything else: a request is built from these headers.
    Headers(HeaderMap),
}

/// The shadow header as the last line of an encoded head.
const SHADOW_LINE: &[u8] = b"x-strangler-shadow: 1\r\n\r\n";

impl ShadowRequest {
    /// Bytes of the encoded head (0 for a header map).
    fn encoded_len(&self) -> usize {
        match self {
            ShadowRequest::Encoded(head) => head.len(),
            ShadowRequest::Headers(_) => 0,
        }
    }

    /// The head for a copy of a request with these parts, sent to every
    /// pool in `to` (the shadow's, and the primary's for a noise check).
    /// When the primary's pool is plain http too, the primary's own head
    /// (`h1::encode_head`'s) comes with it: the copy is that head plus one
    /// line, and the primary's send reuses it instead of encoding it again.
    pub fn new<'a>(
        method: &http::Method,
        path_and_query: &http::uri::PathAndQuery,
        headers: &HeaderMap,
        forwarding: Option<&crate::http1::headers::Forwarding>,
        has_body: bool,
        primary: &UpstreamPool,
        mut to: impl Iterator<Item = &'a UpstreamPool>,
    ) -> (Self, Option<Vec<u8>>) {
        if has_body || !to.all(UpstreamPool::is_plain_http) {
            let mut headers = headers.clone();
            if let Some(f) = forwarding {
                f.insert_into(&mut headers);
            }
            return (ShadowRequest::Headers(headers), None);
        }
        let mut head = Vec::with_capacity(512);
        crate::http1::client::encode_head_parts(
            method,
            path_and_query.as_str(),
            headers,
            forwarding,
            &mut head,
        );
        // The blank line that ends the head becomes the shadow header's.
        let mut copy = Vec::with_capacity(head.len() + SHADOW_LINE.len());
        copy.extend_from_slice(&head[..head.len().saturating_sub(2)]);
        copy.extend_from_slice(SHADOW_LINE);
        let primary_head = primary.is_plain_http().then_some(head);
        (ShadowRequest::Encoded(copy), primary_head)
    }
}

/// Starts the shadow task for a sampled request, or counts why not.
pub fn launch(l: Launch) -> (Dispatch, Option<Pending>) {
    let max_body = l.runtime.max_body;
    if l.content_length.is_some_and(|n| n > max_body as u64) {
        l.counts.add(Outcome::SkippedTooLarge);
        return (Dispatch::Skipped(Outcome::SkippedTooLarge), None);
    }
    let Some(place) = l.runtime.admit() else {
        l.counts.add(Outcome::Dropped);
        return (Dispatch::Skipped(Outcome::Dropped), None);
    };
    let (body_tx, body_rx) = if l.has_body {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (primary_tx, primary_rx) = oneshot::channel();
    let time_ms = strangler_shadow::time::now_ms();
    let runtime = l.runtime.clone();
    let pipelined = matches!(l.request, ShadowRequest::Encoded(_))
        && l.noise_pool.is_none()
        && NOISE_METHODS.contains(&l.method.as_str());
    let work = if pipelined {
        Work::Pipelined(Box::new(Queued {
            l,
            place,
            primary_rx,
            time_ms,
        }))
    } else {
        Work::Call(Box::pin(run(l, place, body_rx, primary_rx, time_ms)))
    };
    runtime
        .workers
        .get_or_init(|| ShadowWorkers::start(runtime.depth))
        .run(work);
    (
        Dispatch::Sent,
        Some(Pending {
            body_tx,
            primary_tx,
            max_body,
            runtime,
        }),
    )
}

async fn run(
    l: Launch,
    place: Admitted,
    body_rx: Option<oneshot::Receiver<Option<Bytes>>>,
    primary_rx: oneshot::Receiver<Captured>,
    time_ms: u64,
) {
    let runtime = place.0.clone();
    let body = match body_rx {
        None => None,
        Some(rx) => match rx.await {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => {
                l.counts.add(Outcome::SkippedTooLarge);
                return;
            }
            // The client's body never arrived whole: no fair comparison.
            Err(_) => {
                l.counts.add(Outcome::PrimaryError);
                return;
            }
        },
    };
    let (answer, noise) = {
        let _permit = runtime.running.acquire().await;
        let ask = |pool: Arc<UpstreamPool>| {
            let body = body.clone().map_or(ProxyBody::Empty, ProxyBody::full);
            let (l, runtime) = (&l, &runtime);
            async move {
                let started = Instant::now();
                let call = call(l, &pool, body, runtime.max_body, started);
                match l.sleeps.timeout(runtime.timeout, call).await {
                    Ok(Ok(c)) => ShadowAnswer::Answered(c),
                    Ok(Err(why)) => ShadowAnswer::Failed(why),
                    Err(_) => ShadowAnswer::TimedOut,
                }
            }
        };
        match l.noise_pool.clone() {
            // The shadow and the primary's second answer, side by side.
            // Boxed, so that the usual task (no noise check) is half the size.
            Some(again) => {
                let (a, n) =
                    Box::pin(async { tokio::join!(ask(l.pool.clone()), ask(again)) }).await;
                (a, Some(n))
            }
            None => (ask(l.pool.clone()).await, None),
        }
    };
    finish(l, place, primary_rx, time_ms, answer, noise).await;
}

/// Pipelined shadow copies of one upstream (see [`Queued`]): written at
/// once on one connection, their answers read in order, within
/// `[shadow].timeout` for the whole batch. A copy's latency counts from
/// when the answer in front of it was read (waiting in line is not the
/// shadow's time). Each copy is settled, and its permit given back, as
/// soon as its answer is read. When the connection fails, the write does
/// not go through, or the time runs out, the copies without an answer
/// are sent again, each alone (all are safe methods), except the first,
/// which had the whole time: an outcome is never the fault of the copy in
/// front of it.
#[allow(clippy::vec_box)] // boxed as queued: moved, never copied
async fn run_pipelined(jobs: Vec<Box<Queued>>) {
    let Some(first) = jobs.first() else {
        return;
    };
    let runtime = first.place.0.clone();
    let pool = first.l.pool.clone();
    let sleeps = first.l.sleeps.clone();
    let timeout = runtime.timeout;
    let n = jobs.len();
    let mut waiting = std::collections::VecDeque::from(jobs);
    // What becomes of the copies still waiting at the end.
    let mut rest = Rest::SendAlone;
    // One permit per copy, as when each is sent alone (the depth is at most
    // the concurrency); one goes back with each answer.
    let mut permits = runtime.running.acquire_many(n as u32).await.ok();
    // The first copy's latency counts getting a connection, as a copy
    // sent alone would.
    let batch_start = Instant::now();
    let deadline = batch_start + timeout;
    match sleeps.timeout(timeout, pool.pipeline(n)).await {
        Err(_) => rest = Rest::TimedOut,
        Ok(Err(why)) => rest = Rest::Failed(why),
        Ok(Ok(mut p)) => {
            let mut heads = Vec::with_capacity(n * 512);
            for q in &waiting {
                if let ShadowRequest::Encoded(head) = &q.l.request {
                    heads.extend_from_slice(head);
                }
            }
            let limit = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(())) = sleeps.timeout(limit, p.send(&heads)).await {
                let key = runtime.pipeline.redactor.key();
                let mut started = batch_start;
                let mut k = 0;
                while let Some(q) = waiting.front() {
                    let head_only = q.l.method == http::Method::HEAD;
                    let one = async {
                        let resp = p.next(head_only).await.map_err(|e| {
                            let resend = e.nothing_received() && (k > 0 || !p.is_fresh());
                            (resend, e.to_string())
                        })?;
                        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                        capture(
                            resp.map(PooledBody::Lean),
                            latency_ms,
                            runtime.max_body,
                            key,
                        )
                        .await
                        .map_err(|e| (false, e))
                    };
                    let limit = deadline.saturating_duration_since(Instant::now());
                    let answer = match sleeps.timeout(limit, one).await {
                        Ok(Ok(c)) => ShadowAnswer::Answered(c),
                        // Nothing of it came: sent again.
                        Ok(Err((true, _))) => break,
                        Ok(Err((false, why))) => ShadowAnswer::Failed(why),
                        // The first copy had its whole time.
                        Err(_) if k == 0 => ShadowAnswer::TimedOut,
                        // The others waited behind it: sent again.
                        Err(_) => break,
                    };
                    let failed = !matches!(answer, ShadowAnswer::Answered(_));
                    if let Some(q) = waiting.pop_front() {
                        if let Some(all) = permits.as_mut() {
                            drop(all.split(1));
                        }
                        settle_now(*q, answer, &runtime);
                    }
                    if failed {
                        // The connection is gone.
                        break;
                    }
                    k += 1;
                    started = Instant::now();
                }
            }
            // A write that failed or did not go through: all sent again.
        }
    }
    drop(permits);
    for q in waiting {
        match &rest {
            Rest::SendAlone => {
                let Queued {
                    l,
                    place,
                    primary_rx,
                    time_ms,
                } = *q;
                runtime.run_call(Box::pin(run(l, place, None, primary_rx, time_ms)));
            }
            Rest::TimedOut => settle_now(*q, ShadowAnswer::TimedOut, &runtime),
            Rest::Failed(why) => settle_now(*q, ShadowAnswer::Failed(why.clone()), &runtime),
        }
    }
}

/// What becomes of pipelined copies without an answer.
enum Rest {
    SendAlone,
    /// No connection in time: each alone would not have had one either.
    TimedOut,
    /// No connection: the reason.
    Failed(String),
}

/// Settles a pipelined copy with its answer: here when the primary's is
/// in, otherwise on a worker once it is (a copy never waits for another
/// copy's primary).
fn settle_now(q: Queued, answer: ShadowAnswer, runtime: &Arc<ShadowRuntime>) {
    let Queued {
        l,
        place,
        mut primary_rx,
        time_ms,
    } = q;
    match primary_rx.try_recv() {
        Ok(primary) => settle(l, place, primary, time_ms, answer, None),
        Err(oneshot::error::TryRecvError::Empty) => {
            runtime.run_call(Box::pin(finish(
                l, place, primary_rx, time_ms, answer, None,
            )));
        }
        Err(oneshot::error::TryRecvError::Closed) => l.counts.add(Outcome::PrimaryError),
    }
}

/// A shadow call's end: waits for the primary's answer, then settles.
async fn finish(
    l: Launch,
    place: Admitted,
    primary_rx: oneshot::Receiver<Captured>,
    time_ms: u64,
    answer: ShadowAnswer,
    noise: Option<ShadowAnswer>,
) {
    match primary_rx.await {
        Ok(primary) => settle(l, place, primary, time_ms, answer, noise),
        Err(_) => l.counts.add(Outcome::PrimaryError),
    }
}

/// Settles the comparison here when it can, or queues it for the diff
/// pipeline.
fn settle(
    l: Launch,
    place: Admitted,
    mut primary: Captured,
    time_ms: u64,
    mut answer: ShadowAnswer,
    mut noise: Option<ShadowAnswer>,
) {
    let runtime = &place.0;
    if settle_quickly(&l.comparator, &l.counts, &primary, &answer, noise.as_ref()) {
        return;
    }
    // Queued now: keep no connection's read buffer alive for it.
    primary.compact();
    for a in std::iter::once(&mut answer).chain(noise.as_mut()) {
        if let ShadowAnswer::Answered(c) = a {
            c.compact();
        }
    }
    runtime.pipeline.submit(CompareJob {
        route: l.route.to_string(),
        method: l.method.to_string(),
        path: l.path_and_query.to_string(),
        comparator: l.comparator,
        counts: l.counts,
        primary_upstream: l.primary.name.clone(),
        shadow_upstream: l.pool.name.clone(),
        primary,
        shadow: answer,
        noise,
        time_ms,
    });
    drop(place);
}

/// Sends the shadow request and reads its whole answer.
async fn call(
    l: &Launch,
    pool: &UpstreamPool,
    body: ProxyBody,
    cap: usize,
    started: Instant,
) -> Result<Captured, String> {
    let resp = match &l.request {
        ShadowRequest::Encoded(head) => pool.send_head_once(head, &l.method).await?,
        ShadowRequest::Headers(headers) => {
            let mut req = Request::new(body);
            *req.method_mut() = l.method.clone();
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(l.path_and_query.clone());
            *req.headers_mut() = headers.clone();
            req.headers_mut()
                .insert(SHADOW_HEADER, HeaderValue::from_static("1"));
            // Boxed: the usual (encoded) case carries none of its state.
            Box::pin(pool.send_once(req)).await?
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    capture(resp, latency_ms, cap, l.runtime.pipeline.redactor.key()).await
}

/// Reads a shadow answer's whole body into its capture.
async fn capture(
    resp: http::Response<PooledBody>,
    latency_ms: f64,
    cap: usize,
    key: &Arc<HashKey>,
) -> Result<Captured, String> {
    let (parts, mut body) = resp.into_parts();
    let raw = match &mut body {
        PooledBody::Lean(b) => b.take_raw_headers(),
        PooledBody::Hyper(_) => None,
    };
    let mut capture = BodyCapture::new(cap, key);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("shadow body failed: {e}"))?;
        if let Some(data) = frame.data_ref() {
            capture.push_bytes(data);
        }
    }
    let mut captured = capture.into_captured(parts.status.as_u16(), parts.headers, latency_ms);
    captured.raw = raw;
    Ok(captured)
}

/// Where a tee sends what it captured when its body ends.
enum TeeSink {
    /// The request body, for the shadow request; None when over the cap.
    Request(oneshot::Sender<Option<Bytes>>),
    /// The primary's answer.
    Response {
        tx: oneshot::Sender<Captured>,
        status: u16,
        headers: Result<Box<RawHeaders>, HeaderMap>,
        latency_ms: f64,
    },
}

/// A body passed through untouched while a copy of it is captured. When
/// the body ends, the capture goes to the shadow task; when it is dropped
/// before its end, nothing is sent and the shadow task counts it.
pub struct TeeBody {
    inner: ProxyBody,
    capture: Option<BodyCapture>,
    sink: Option<TeeSink>,
}

impl std::fmt::Debug for TeeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeBody").finish_non_exhaustive()
    }
}

impl TeeBody {
    /// Tees a request body for the shadow request.
    pub fn request(
        inner: ProxyBody,
        cap: usize,
        key: &Arc<HashKey>,
        tx: oneshot::Sender<Option<Bytes>>,
    ) -> ProxyBody {
        Self::wrap(inner, BodyCapture::new(cap, key), TeeSink::Request(tx))
    }

    /// Tees the primary's response body for the comparison. Its headers
    /// as the upstream sent them: raw when the lean exchange kept them so
    /// (no copy of the map), otherwise the map's (copied).
    pub fn response(
        inner: ProxyBody,
        cap: usize,
        key: &Arc<HashKey>,
        tx: oneshot::Sender<Captured>,
        status: u16,
        headers: Result<Box<RawHeaders>, &HeaderMap>,
        latency_ms: f64,
    ) -> ProxyBody {
        let sink = TeeSink::Response {
            tx,
            status,
            headers: headers.map_err(HeaderMap::clone),
            latency_ms,
        };
        Self::wrap(inner, BodyCapture::new(cap, key), sink)
    }

    fn wrap(inner: ProxyBody, capture: BodyCapture, sink: TeeSink) -> ProxyBody {
        let mut tee = TeeBody {
            inner,
            capture: Some(capture),
            sink: Some(sink),
        };
        if tee.inner.is_end_stream() {
            // Nothing will be polled (HEAD, 204, empty): done already.
            tee.complete();
            return std::mem::replace(&mut tee.inner, ProxyBody::Empty);
        }
        ProxyBody::Layered(Box::pin(tee))
    }

    fn complete(&mut self) {
        let (Some(capture), Some(sink)) = (self.capture.take(), self.sink.take()) else {
            return;
        };
        match sink {
            TeeSink::Request(tx) => {
                let (bytes, _, long) = capture.finish();
                let _ = tx.send(long.is_none().then_some(bytes));
            }
            TeeSink::Response {
                tx,
                status,
                headers,
                latency_ms,
            } => {
                let captured = match headers {
                    Ok(raw) => {
                        let mut c = capture.into_captured(status, HeaderMap::new(), latency_ms);
                        c.raw = Some(raw);
                        c
                    }
                    Err(map) => capture.into_captured(status, map, latency_ms),
                };
                let _ = tx.send(captured);
            }
        }
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // Some servers stop polling once the length is reached.
        if self.inner.is_end_stream() {
            self.complete();
        }
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = crate::upstream::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::body::BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(c)) = (frame.data_ref(), this.capture.as_mut()) {
                    c.push_bytes(data);
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            // A failed body is not compared: dropping the sink says so.
            Poll::Ready(Some(Err(_))) => {
                this.sink = None;
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
