//! The diff pipeline: one thread, fed by a bounded queue, that prepares
//! (decodes, redacts) and compares each shadowed request's two answers,
//! counts the outcome and stores the mismatches. Diffing and sled writes
//! never run on the proxy's runtime; when the queue is full the job is
//! dropped and counted. The thread also persists the counters every second
//! and applies the TTL every minute; `shutdown` drains the queue, saves
//! and flushes.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::capture::Captured;
use crate::compare::Comparator;
use crate::counters::{Counters, Outcome, RouteCounts};
use crate::record::{DiffRecord, Side};
use crate::redact::Redactor;
use crate::store::DiffStore;
use crate::time::{now_ms, rfc3339_ms};

/// What the shadow upstream did.
#[derive(Debug)]
pub enum ShadowAnswer {
    Answered(Captured),
    /// Refused, broken, or its body failed mid-stream.
    Failed(String),
    TimedOut,
}

/// Both answers of one shadowed request.
#[derive(Debug)]
pub struct CompareJob {
    pub route: String,
    pub method: String,
    pub path: String,
    pub comparator: Arc<Comparator>,
    pub counts: Arc<RouteCounts>,
    pub primary_upstream: String,
    pub shadow_upstream: String,
    pub primary: Captured,
    pub shadow: ShadowAnswer,
    /// When the request arrived (ms since the epoch).
    pub time_ms: u64,
}

enum Msg {
    Job(Box<CompareJob>),
    Stop,
}

/// Limits of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub queue: usize,
    /// Bytes of each body kept in a record.
    pub max_body_bytes: usize,
    /// Largest decoded (decompressed) body compared.
    pub decode_limit: usize,
}

/// Handle to the pipeline thread.
#[derive(Debug)]
pub struct DiffPipeline {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub counters: Arc<Counters>,
    pub store: Arc<dyn DiffStore>,
}

impl DiffPipeline {
    /// Restores the persisted counters and starts the thread.
    pub fn start(
        store: Arc<dyn DiffStore>,
        counters: Arc<Counters>,
        config: PipelineConfig,
    ) -> Result<Self, String> {
        match store.load_counts() {
            Ok(saved) => counters.restore(&saved),
            Err(e) => return Err(e.to_string()),
        }
        let redactor = Redactor::new()?;
        let (tx, rx) = sync_channel(config.queue.max(1));
        let worker = Worker {
            rx,
            store: store.clone(),
            counters: counters.clone(),
            redactor,
            config,
        };
        let thread = std::thread::Builder::new()
            .name("strangler-diff".into())
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start the diff thread: {e}"))?;
        Ok(DiffPipeline {
            tx,
            thread: Mutex::new(Some(thread)),
            counters,
            store,
        })
    }

    /// Queues a comparison; a full queue drops it and counts `dropped`.
    pub fn submit(&self, job: CompareJob) {
        let counts = job.counts.clone();
        match self.tx.try_send(Msg::Job(Box::new(job))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                counts.add(Outcome::Dropped)
            }
        }
    }

    /// Finishes queued work, saves the counters, flushes the store and
    /// stops the thread. Blocks; call it off the async runtime.
    pub fn shutdown(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = self.tx.send(Msg::Stop);
            let _ = handle.join();
        }
    }
}

struct Worker {
    rx: Receiver<Msg>,
    store: Arc<dyn DiffStore>,
    counters: Arc<Counters>,
    redactor: Redactor,
    config: PipelineConfig,
}

impl Worker {
    fn run(self) {
        let mut saved = self.counters.snapshot();
        let mut last_expiry = Instant::now();
        self.expire();
        loop {
            match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Job(job)) => self.process(*job),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.counters.snapshot();
            if now != saved {
                if let Err(e) = self.store.save_counts(&now) {
                    tracing::error!("cannot save shadow counters: {e}");
                }
                saved = now;
            }
            if last_expiry.elapsed() >= Duration::from_secs(60) {
                self.expire();
                last_expiry = Instant::now();
            }
        }
        // Whatever is still queued was accepted: finish it.
        while let Ok(Msg::Job(job)) = self.rx.try_recv() {
            self.process(*job);
        }
        if let Err(e) = self.store.save_counts(&self.counters.snapshot()) {
            tracing::error!("cannot save shadow counters: {e}");
        }
        if let Err(e) = self.store.flush() {
            tracing::error!("cannot flush the diff store: {e}");
        }
    }

    fn expire(&self) {
        if let Err(e) = self.store.expire(now_ms()) {
            tracing::error!("cannot expire old diffs: {e}");
        }
    }

    fn process(&self, job: CompareJob) {
        let cmp = &job.comparator;
        let cap = self.config.max_body_bytes;
        let primary = cmp.prepare(job.primary, &self.redactor, self.config.decode_limit);
        let (outcome, shadow_side, differences, total) = match job.shadow {
            ShadowAnswer::Answered(c) => {
                let shadow = cmp.prepare(c, &self.redactor, self.config.decode_limit);
                job.counts
                    .observe_delta(shadow.latency_ms - primary.latency_ms);
                let (diffs, total) = cmp.compare(&primary, &shadow);
                let outcome = if shadow.status >= 500 && primary.status < 500 {
                    Outcome::ShadowError
                } else if total == 0 {
                    Outcome::Match
                } else {
                    Outcome::Mismatch
                };
                let side = Side::answered(&job.shadow_upstream, &shadow, cap);
                (outcome, side, diffs, total)
            }
            ShadowAnswer::Failed(why) => (
                Outcome::ShadowError,
                Side::failed(&job.shadow_upstream, why, None),
                Vec::new(),
                0,
            ),
            ShadowAnswer::TimedOut => (
                Outcome::ShadowTimeout,
                Side::failed(
                    &job.shadow_upstream,
                    "no answer within [shadow].timeout".into(),
                    None,
                ),
                Vec::new(),
                0,
            ),
        };
        job.counts.add(outcome);
        if outcome == Outcome::Match {
            return;
        }
        let record = DiffRecord {
            id: Uuid::now_v7().to_string(),
            time: rfc3339_ms(job.time_ms),
            route: job.route,
            method: job.method,
            path: job.path,
            primary: Side::answered(&job.primary_upstream, &primary, cap),
            shadow: shadow_side,
            differences,
            differences_total: total,
            outcome,
        };
        if let Err(e) = self.store.put(&record, job.time_ms) {
            tracing::error!("cannot store a diff: {e}");
        }
    }
}
