//! Running shadow calls: the runtime every route's copies share (limits,
//! the bounded queue, the in-flight bound, the diff pipeline), the
//! long-lived workers that run the calls, copies pipelined on one
//! connection, and the shadow call itself: send the copy, read its whole
//! answer, wait for the primary's, then settle the comparison or queue it
//! for the diff pipeline.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, Version};
use http_body_util::BodyExt;
use strangler_rules::config::ShadowLimits;
use strangler_shadow::capture::HashKey;
use strangler_shadow::pipeline::{CompareJob, DiffPipeline, ShadowAnswer, settle_quickly};
use strangler_shadow::{BodyCapture, Captured, Comparator, Counters, Outcome, RouteCounts};
use tokio::sync::{Semaphore, oneshot};

use crate::mirror::request::{SHADOW_HEADER, ShadowRequest};
use crate::upstream::UpstreamPool;
use crate::upstream::body::PooledBody;
use crate::upstream::body::ProxyBody;

/// What the proxy shares for shadowing: limits, the in-flight bound and
/// the diff pipeline.
#[derive(Debug)]
pub struct ShadowRuntime {
    pub pipeline: DiffPipeline,
    timeout: Duration,
    pub(super) max_body: usize,
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
    pub(super) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let prev = self.admitted.fetch_add(1, Relaxed);
        if prev >= self.capacity {
            self.admitted.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Admitted(self.clone()))
    }

    /// Hands a launched copy to a worker, the workers started on first
    /// use: queued to go out with others when `pipelined` (see
    /// [`Queued`]), otherwise a call of its own.
    pub(super) fn start(
        &self,
        l: Launch,
        place: Admitted,
        pipelined: bool,
        body_rx: Option<oneshot::Receiver<Option<Bytes>>>,
        primary_rx: oneshot::Receiver<Captured>,
        time_ms: u64,
    ) {
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
        self.workers
            .get_or_init(|| ShadowWorkers::start(self.depth))
            .run(work);
    }
}

/// A place in the shadow queue, given back on drop.
pub(super) struct Admitted(Arc<ShadowRuntime>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Relaxed);
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
