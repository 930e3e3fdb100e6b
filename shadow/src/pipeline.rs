//! The diff pipeline: one thread that prepares (decodes, redacts) and
//! compares each shadowed request's two answers, counts the outcome, keeps
//! the per-field aggregates and stores mismatch records. Diffing and sled
//! writes never run on the proxy's runtime.
//!
//! The proxy hands jobs over through a bounded queue without waking the
//! thread (a full queue drops the job and counts `dropped`); the thread
//! drains the queue every few milliseconds, so a busy proxy pays no
//! context switch per job. Answers equal in everything compared take a
//! quick path with no parsing at all, on the proxy's side before a job is
//! made ([`settle_quickly`]). The thread persists counters and
//! aggregates every second and applies the TTL every minute; `shutdown`
//! finishes what is queued, saves and flushes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::capture::Captured;
use crate::compare::{Comparator, Difference};
use crate::counters::{Counters, Outcome, RouteCounts};
use crate::record::{DiffRecord, Side};
use crate::redact::Redactor;
use crate::store::{DiffStore, EXAMPLES, FieldAgg, Signature};
use crate::time::{now_ms, rfc3339_ms};

/// How often the thread drains the queue.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Records written per route per second at most; past it only the
/// aggregates count (a record is still written while one of its fields has
/// fewer than [`EXAMPLES`] examples).
pub const RECORDS_PER_SECOND: u32 = 100;

/// What the shadow upstream did.
#[derive(Debug)]
pub enum ShadowAnswer {
    Answered(Captured),
    /// Refused, broken, or its body failed mid-stream.
    Failed(String),
    TimedOut,
}

/// The quick path: answers equal in everything compared (and a noise
/// check's answer equal too, when there is one) are counted as a match at
/// once, with no parsing. Returns whether it settled the request; if not,
/// the answers need the pipeline's thread ([`DiffPipeline::submit`]).
///
/// The proxy calls it on its own thread before building a job: most
/// shadowed answers match, and settling them where they were captured keeps
/// their memory from being freed on another thread (costly for malloc).
pub fn settle_quickly(
    comparator: &Comparator,
    counts: &RouteCounts,
    primary: &Captured,
    shadow: &ShadowAnswer,
    noise: Option<&ShadowAnswer>,
) -> bool {
    let ShadowAnswer::Answered(s) = shadow else {
        return false;
    };
    // A noise check that got no answer checks nothing.
    let noise_matches = match noise {
        Some(ShadowAnswer::Answered(n)) => Some(comparator.quick_match(primary, n)),
        _ => None,
    };
    if noise_matches == Some(false) || !comparator.quick_match(primary, s) {
        return false;
    }
    counts.observe_delta(s.latency_ms - primary.latency_ms);
    if noise_matches.is_some() {
        counts.add_noise_checked();
    }
    counts.add(Outcome::Match);
    true
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
    /// The primary's upstream asked a second time (Diffy's noise check).
    pub noise: Option<ShadowAnswer>,
    /// When the request arrived (ms since the epoch).
    pub time_ms: u64,
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

type FieldKey = (String, String, String);

/// State shared by the proxy, the admin API and the thread.
#[derive(Debug)]
struct Inner {
    queue: Mutex<VecDeque<CompareJob>>,
    capacity: usize,
    stop: AtomicBool,
    fields: Mutex<BTreeMap<FieldKey, FieldAgg>>,
    signatures: Mutex<SignatureMap>,
}

/// Distinct field sets tracked per route; past it, one catch-all set
/// (which always counts as a real mismatch).
pub const MAX_SIGNATURES: usize = 1000;

/// Handle to the pipeline thread.
#[derive(Debug)]
pub struct DiffPipeline {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub counters: Arc<Counters>,
    pub store: Arc<dyn DiffStore>,
    pub redactor: Arc<Redactor>,
}

impl DiffPipeline {
    /// Restores the persisted counters and aggregates and starts the thread.
    pub fn start(
        store: Arc<dyn DiffStore>,
        counters: Arc<Counters>,
        config: PipelineConfig,
    ) -> Result<Self, String> {
        counters.restore(&store.load_counts().map_err(|e| e.to_string())?);
        let fields = store
            .load_fields()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|f| ((f.route.clone(), f.kind.clone(), f.field.clone()), f))
            .collect();
        let signatures = store
            .load_signatures()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(route, sigs)| {
                let map = sigs.into_iter().map(|s| (s.fields, s.count)).collect();
                (route, map)
            })
            .collect();
        let redactor = Arc::new(Redactor::new()?);
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            capacity: config.queue.max(1),
            stop: AtomicBool::new(false),
            fields: Mutex::new(fields),
            signatures: Mutex::new(signatures),
        });
        let worker = Worker {
            inner: inner.clone(),
            store: store.clone(),
            counters: counters.clone(),
            redactor: redactor.clone(),
            config,
            budget: BTreeMap::new(),
            dirty: BTreeSet::new(),
            dirty_sigs: BTreeSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("strangler-diff".into())
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start the diff thread: {e}"))?;
        Ok(DiffPipeline {
            inner,
            thread: Mutex::new(Some(thread)),
            counters,
            store,
            redactor,
        })
    }

    /// Queues a comparison; a full queue (or a stopped pipeline) drops it
    /// and counts `dropped`.
    pub fn submit(&self, job: CompareJob) {
        let mut q = lock(&self.inner.queue);
        if q.len() >= self.inner.capacity || self.inner.stop.load(Ordering::Relaxed) {
            drop(q);
            job.counts.add(Outcome::Dropped);
            return;
        }
        q.push_back(job);
    }

    /// Every field aggregate, as of the last comparison.
    pub fn fields(&self) -> Vec<FieldAgg> {
        lock(&self.inner.fields).values().cloned().collect()
    }

    /// Every route's field-set counts, as of the last comparison.
    pub fn signatures(&self) -> BTreeMap<String, Vec<Signature>> {
        signature_lists(&lock(&self.inner.signatures))
    }

    /// Finishes queued work, saves counters and aggregates, flushes the
    /// store and stops the thread. Blocks; call it off the async runtime.
    pub fn shutdown(&self) {
        let handle = lock(&self.thread).take();
        if let Some(handle) = handle {
            self.inner.stop.store(true, Ordering::Relaxed);
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Worker {
    inner: Arc<Inner>,
    store: Arc<dyn DiffStore>,
    counters: Arc<Counters>,
    redactor: Arc<Redactor>,
    config: PipelineConfig,
    /// Per route: the second and how many records were written in it.
    budget: BTreeMap<String, (u64, u32)>,
    /// Aggregates changed since the last save.
    dirty: BTreeSet<FieldKey>,
    /// Routes whose signatures changed since the last save.
    dirty_sigs: BTreeSet<String>,
}

impl Worker {
    fn run(mut self) {
        let mut saved = self.counters.snapshot();
        let mut last_save = Instant::now();
        let mut last_expiry = Instant::now();
        self.expire();
        loop {
            let stopping = self.inner.stop.load(Ordering::Relaxed);
            let batch: Vec<CompareJob> = lock(&self.inner.queue).drain(..).collect();
            for job in batch {
                self.process(job);
            }
            if stopping {
                break;
            }
            if last_save.elapsed() >= Duration::from_secs(1) {
                saved = self.save(saved);
                last_save = Instant::now();
            }
            if last_expiry.elapsed() >= Duration::from_secs(60) {
                self.expire();
                last_expiry = Instant::now();
            }
            std::thread::park_timeout(DRAIN_EVERY);
        }
        self.save(BTreeMap::new());
        if let Err(e) = self.store.flush() {
            tracing::error!("cannot flush the diff store: {e}");
        }
    }

    /// Saves changed counters and aggregates; returns what is saved.
    fn save(
        &mut self,
        saved: BTreeMap<String, crate::counters::CountSnapshot>,
    ) -> BTreeMap<String, crate::counters::CountSnapshot> {
        let now = self.counters.snapshot();
        if now != saved
            && let Err(e) = self.store.save_counts(&now)
        {
            tracing::error!("cannot save shadow counters: {e}");
        }
        if !self.dirty.is_empty() {
            let changed: Vec<FieldAgg> = {
                let fields = lock(&self.inner.fields);
                self.dirty
                    .iter()
                    .filter_map(|k| fields.get(k).cloned())
                    .collect()
            };
            self.dirty.clear();
            if let Err(e) = self.store.save_fields(&changed) {
                tracing::error!("cannot save diff aggregates: {e}");
            }
        }
        if !self.dirty_sigs.is_empty() {
            let all = signature_lists(&lock(&self.inner.signatures));
            for route in std::mem::take(&mut self.dirty_sigs) {
                if let Some(sigs) = all.get(&route)
                    && let Err(e) = self.store.save_signatures(&route, sigs)
                {
                    tracing::error!("cannot save diff signatures: {e}");
                }
            }
        }
        now
    }

    fn expire(&self) {
        if let Err(e) = self.store.expire(now_ms()) {
            tracing::error!("cannot expire old diffs: {e}");
        }
    }

    fn process(&mut self, job: CompareJob) {
        let cmp = job.comparator.clone();
        if settle_quickly(
            &cmp,
            &job.counts,
            &job.primary,
            &job.shadow,
            job.noise.as_ref(),
        ) {
            return;
        }
        let cap = self.config.max_body_bytes;
        let limit = self.config.decode_limit;
        let primary = cmp.prepare(job.primary, &self.redactor, limit);
        // Diffy's noise check: the primary against itself.
        if let Some(ShadowAnswer::Answered(n)) = job.noise {
            let again = cmp.prepare(n, &self.redactor, limit);
            let (noise, _) = cmp.compare(&primary, &again);
            self.aggregate_noise(&job.route, &noise, job.time_ms);
            job.counts.add_noise_checked();
        }
        let (outcome, shadow_side, differences, total) = match job.shadow {
            ShadowAnswer::Answered(c) => {
                let shadow = cmp.prepare(c, &self.redactor, limit);
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
        if outcome == Outcome::Match {
            job.counts.add(outcome);
            return;
        }
        if outcome == Outcome::Mismatch {
            self.signature(&job.route, &differences);
        }
        let id = Uuid::now_v7().to_string();
        let write = self.should_write(&job.route, &differences, job.time_ms);
        self.aggregate(&job.route, &differences, job.time_ms, write.then_some(&id));
        if write {
            let record = DiffRecord {
                id,
                time: rfc3339_ms(job.time_ms),
                route: job.route,
                method: job.method,
                path: job.path,
                primary: Side::answered(&job.primary_upstream, &primary, cap),
                shadow: shadow_side,
                differences,
                differences_total: total,
                hidden: 0,
                outcome,
            };
            if let Err(e) = self.store.put(&record) {
                tracing::error!("cannot store a diff: {e}");
            }
        }
        // Counted last: whoever sees the count sees the aggregates too.
        job.counts.add(outcome);
    }

    /// Counts the set of fields one mismatching request differed in.
    fn signature(&mut self, route: &str, diffs: &[Difference]) {
        let fields: BTreeSet<(String, String)> = diffs
            .iter()
            .map(|d| (d.kind.as_str().to_string(), d.field.clone()))
            .collect();
        let mut key: Vec<(String, String)> = fields.into_iter().collect();
        let mut all = lock(&self.inner.signatures);
        let sigs = all.entry(route.to_string()).or_default();
        if !sigs.contains_key(&key) && sigs.len() >= MAX_SIGNATURES {
            key = vec![("other".to_string(), "*".to_string())];
        }
        *sigs.entry(key).or_insert(0) += 1;
        self.dirty_sigs.insert(route.to_string());
    }

    /// Counts each field where the primary differed from itself.
    fn aggregate_noise(&mut self, route: &str, diffs: &[Difference], time_ms: u64) {
        self.update_fields(route, diffs, time_ms, |agg| agg.noise_count += 1);
    }

    /// Within the route's records-per-second budget, or a field still
    /// short of examples.
    fn should_write(&mut self, route: &str, diffs: &[Difference], time_ms: u64) -> bool {
        let second = time_ms / 1000;
        let slot = self.budget.entry(route.to_string()).or_insert((second, 0));
        if slot.0 != second {
            *slot = (second, 0);
        }
        let needed = {
            let fields = lock(&self.inner.fields);
            diffs.iter().any(|d| {
                fields
                    .get(&(
                        route.to_string(),
                        d.kind.as_str().to_string(),
                        d.field.clone(),
                    ))
                    .is_none_or(|f| f.examples.len() < EXAMPLES)
            })
        };
        if slot.1 < RECORDS_PER_SECOND || needed {
            slot.1 += 1;
            true
        } else {
            false
        }
    }

    /// Counts each differing field once per record.
    fn aggregate(&mut self, route: &str, diffs: &[Difference], time_ms: u64, id: Option<&String>) {
        self.update_fields(route, diffs, time_ms, |agg| {
            if agg.count == 0 {
                agg.first_seen_ms = time_ms;
            }
            agg.count += 1;
            agg.last_seen_ms = agg.last_seen_ms.max(time_ms);
            if let Some(id) = id {
                agg.examples.push(id.clone());
                if agg.examples.len() > EXAMPLES {
                    agg.examples.remove(0);
                }
            }
        });
    }

    /// Applies `update` once to the aggregate of each (kind, field) of the
    /// route that `diffs` name, however often they name it (a new one
    /// starts at `time_ms`), and marks it for the next save.
    fn update_fields(
        &mut self,
        route: &str,
        diffs: &[Difference],
        time_ms: u64,
        mut update: impl FnMut(&mut FieldAgg),
    ) {
        let keys: BTreeSet<FieldKey> = diffs
            .iter()
            .map(|d| {
                (
                    route.to_string(),
                    d.kind.as_str().to_string(),
                    d.field.clone(),
                )
            })
            .collect();
        let mut fields = lock(&self.inner.fields);
        for key in keys {
            let agg = fields
                .entry(key.clone())
                .or_insert_with(|| new_agg(&key, time_ms));
            update(agg);
            self.dirty.insert(key);
        }
    }
}

fn new_agg(key: &FieldKey, time_ms: u64) -> FieldAgg {
    FieldAgg {
        route: key.0.clone(),
        kind: key.1.clone(),
        field: key.2.clone(),
        count: 0,
        noise_count: 0,
        first_seen_ms: time_ms,
        last_seen_ms: time_ms,
        examples: Vec::new(),
    }
}

type SignatureMap = BTreeMap<String, BTreeMap<Vec<(String, String)>, u64>>;

fn signature_lists(all: &SignatureMap) -> BTreeMap<String, Vec<Signature>> {
    all.iter()
        .map(|(route, sigs)| {
            let list = sigs
                .iter()
                .map(|(fields, count)| Signature {
                    fields: fields.clone(),
                    count: *count,
                })
                .collect();
            (route.clone(), list)
        })
        .collect()
}
