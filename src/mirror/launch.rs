//! Deciding per request and launching: the route's shadow plan, whether
//! a sampled request gets a copy (not too large, room in the queue), and
//! handing the copy (a [`Launch`]) to the workers, with what the proxy
//! keeps to feed it the request body and the primary's answer
//! ([`Pending`]).

use std::sync::Arc;

use bytes::Bytes;
use strangler_rules::UpstreamId;
use strangler_shadow::capture::HashKey;
use strangler_shadow::{Captured, Comparator, Outcome, RouteCounts};
use tokio::sync::oneshot;

use crate::mirror::request::ShadowRequest;
use crate::mirror::workers::{Launch, ShadowRuntime};

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
    runtime.start(l, place, pipelined, body_rx, primary_rx, time_ms);
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
