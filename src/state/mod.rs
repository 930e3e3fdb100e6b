//! The live routing state: the compiled route table (the file's config with
//! the runtime layer on top), the upstream pools and the stats cells,
//! swapped together atomically (arc-swap) on reload or on a runtime change.
//! A request loads it once and finishes on the state it started with.

pub mod config_file;
pub mod layer;
pub mod stats;
pub mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;
use std::collections::BTreeMap;
use strangler_rules::config::Route;
use strangler_rules::{Config, RouteTable};
use strangler_shadow::summary::{RouteRules, RouteSummary, summarize};
use strangler_shadow::{Comparator, Counters};

use crate::mirror::{ShadowPlan, ShadowRuntime};
use crate::policy::auth::RouteAuth;
use crate::policy::cache::RouteCache;
use crate::policy::ratelimit::RouteLimit;
use crate::state::layer::{ControlError, RuntimeLayer, VersionRecord};
use crate::state::stats::{Cell, DEFAULT_ROUTE, Registry};
use crate::state::versions::{SledVersions, VersionStore};
use crate::upstream::UpstreamPool;

/// One consistent generation of routing state.
#[derive(Debug)]
pub struct Live {
    pub table: RouteTable,
    /// Indexed by `UpstreamId`.
    pub pools: Vec<Arc<UpstreamPool>>,
    pub layer: RuntimeLayer,
    /// The runtime layer's version.
    pub version: u64,
    /// What the request path needs of each route, by slot: `[route index
    /// + 1]`; slot 0 is "no route" (requests no route matched).
    pub routes: Vec<LiveRoute>,
}

/// One route as the request path uses it, compiled once per generation:
/// its stats cells, shadow plan and policies. (Its split is compiled into
/// the route table, which chooses the upstream; its ramp lives in the
/// runtime layer, off the request path.)
#[derive(Debug, Default)]
pub struct LiveRoute {
    /// Stats cells by upstream (`UpstreamId::index`).
    pub cells: Vec<Arc<Cell>>,
    /// The live shadow settings (None: no shadow, or turned off).
    pub shadow: Option<ShadowPlan>,
    /// The rate limiter, if the route has one.
    pub limit: Option<Arc<RouteLimit>>,
    /// The JWT verifier, if the route has one.
    pub auth: Option<Arc<RouteAuth>>,
    /// The response cache, if the route has one.
    pub cache: Option<Arc<RouteCache>>,
}

impl Live {
    /// Builds the state for `config` with `layer` on top, keeping the pools
    /// (and their open connections and health) of unchanged upstreams.
    pub fn build(
        config: Arc<Config>,
        layer: RuntimeLayer,
        version: u64,
        previous: Option<&Live>,
        shared: Registries<'_>,
        auths: Vec<Option<Arc<RouteAuth>>>,
    ) -> Live {
        let Registries {
            stats,
            shadow,
            limits,
            caches,
        } = shared;
        let pools = config
            .upstreams
            .iter()
            .map(|u| {
                let reused = previous.and_then(|p| {
                    p.pools
                        .iter()
                        .find(|pool| pool.name == u.name && pool.config == *u)
                        .cloned()
                });
                reused.unwrap_or_else(|| {
                    let pool = UpstreamPool::new(u);
                    pool.spawn_health_checks();
                    pool
                })
            })
            .collect();
        let cells = |route: &str| -> Vec<Arc<Cell>> {
            config
                .upstreams
                .iter()
                .map(|u| stats.cell(route, &u.name))
                .collect()
        };
        let unrouted = LiveRoute {
            cells: cells(DEFAULT_ROUTE),
            ..LiveRoute::default()
        };
        let mut limits = limits.for_config(&config).into_iter();
        let mut caches = caches.for_config(&config).into_iter();
        let mut auths = auths.into_iter();
        let routes = std::iter::once(unrouted)
            .chain(config.routes.iter().map(|r| LiveRoute {
                cells: cells(&r.name),
                shadow: shadow.and_then(|rt| shadow_plan(r, &layer, rt.counters())),
                limit: limits.next().flatten(),
                auth: auths.next().flatten(),
                cache: caches.next().flatten(),
            }))
            .collect();
        let splits = layer::live_splits(&config, &layer);
        Live {
            table: RouteTable::with_splits(config, splits),
            pools,
            layer,
            version,
            routes,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        self.table.config()
    }

    /// Route `index` of the config (slot `index + 1`).
    #[inline]
    pub fn route(&self, index: usize) -> &LiveRoute {
        &self.routes[index + 1]
    }

    /// Each route's JWT verifier, in config order.
    pub fn auths(&self) -> Vec<Option<Arc<RouteAuth>>> {
        self.routes[1..].iter().map(|r| r.auth.clone()).collect()
    }
}

/// A route's live shadow settings: the file's with the runtime layer on
/// top (None: no shadow, or turned off).
fn shadow_plan(r: &Route, layer: &RuntimeLayer, counters: &Counters) -> Option<ShadowPlan> {
    let spec = r.shadow.as_ref()?;
    let o = layer.routes.get(&r.name);
    let (enabled, percent_bp) = match o.and_then(|o| o.shadow.as_ref()) {
        Some(s) => (
            s.enabled,
            s.percent
                .and_then(strangler_rules::config::percent_to_bp)
                .unwrap_or(spec.percent_bp),
        ),
        None => (true, spec.percent_bp),
    };
    if !enabled || percent_bp == 0 {
        return None;
    }
    let added = o.map(|o| o.ignore_fields_add.as_slice()).unwrap_or(&[]);
    Some(ShadowPlan {
        route: Arc::from(r.name.as_str()),
        upstream: spec.upstream,
        percent_bp,
        methods: spec.methods.clone(),
        comparator: Arc::new(Comparator::new(&r.compare, added)),
        counts: counters.route(&r.name),
        noise_bp: r.compare.noise_check.as_ref().map_or(0, |n| n.percent_bp),
    })
}

/// What outlives each generation of live state and is shared into it.
#[derive(Clone, Copy)]
pub struct Registries<'a> {
    pub stats: &'a Registry,
    pub shadow: Option<&'a ShadowRuntime>,
    pub limits: &'a crate::policy::ratelimit::Limits,
    pub caches: &'a crate::policy::cache::Caches,
}

/// What every connection and the admin API share.
#[derive(Debug)]
pub struct Shared {
    pub live: ArcSwap<Live>,
    /// The file SIGHUP reloads.
    pub config_path: PathBuf,
    pub access_log: bool,
    /// The proxy listener serves TLS.
    pub tls: bool,
    pub store: Option<sled::Db>,
    pub versions: Option<Box<dyn VersionStore>>,
    /// Serialises writers of the runtime layer.
    pub write_lock: tokio::sync::Mutex<()>,
    pub stats: Registry,
    /// Shadow traffic and the diff pipeline; None without a store.
    pub shadow: Option<Arc<ShadowRuntime>>,
    /// Where the proxy listens (`http://127.0.0.1:8080`), once bound.
    pub proxy_addr: std::sync::OnceLock<String>,
    /// Rate limiters by route, kept across reloads while unchanged.
    pub limits: crate::policy::ratelimit::Limits,
    /// Response caches by route, kept across reloads while unchanged.
    pub caches: crate::policy::cache::Caches,
    /// Each ramping route's gate figures over its current window, as the
    /// ramp engine last measured them (for `ramp status`).
    pub ramp_figures: std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>,
    /// Ramp notifications (`[notify] webhook`), set at start.
    pub notifier: std::sync::OnceLock<Box<dyn EventSink>>,
    /// Sleeps for request timeouts, reused (see `crate::timer`).
    pub sleeps: Arc<crate::timer::SleepPool>,
    /// Set once a shutdown began: the proxy no longer accepts and drains
    /// what is in flight (`/readyz` then answers 503).
    pub draining: std::sync::atomic::AtomicBool,
}

/// Where control-plane events go: the `[notify] webhook`'s sender
/// (`control::notify::Notifier`) when one is configured.
pub trait EventSink: std::fmt::Debug + Send + Sync + 'static {
    /// Queues an event; never waits.
    fn send(&self, event: serde_json::Value);
    /// Events sent, failed and dropped so far, by result, for `/metrics`.
    fn counts(&self) -> [(&'static str, u64); 3];
}

impl Shared {
    /// Every shadowed route's summary, judged with the rules in force now,
    /// and those rules.
    pub fn shadow_summaries(
        &self,
        rt: &ShadowRuntime,
    ) -> (Vec<RouteSummary>, BTreeMap<String, RouteRules>) {
        let live = self.live.load_full();
        let rules: BTreeMap<String, RouteRules> = live
            .config()
            .routes
            .iter()
            .filter(|r| r.shadow.is_some())
            .map(|r| {
                let added = live
                    .layer
                    .routes
                    .get(&r.name)
                    .map(|o| o.ignore_fields_add.clone())
                    .unwrap_or_default();
                let ignore = r.compare.ignore_fields.iter().chain(&added);
                (
                    r.name.clone(),
                    RouteRules::new(ignore, r.compare.noise_check.clone()),
                )
            })
            .collect();
        // Counts first: every comparison they include is in the aggregates.
        let counts = rt.counters().snapshot();
        let fields = rt.pipeline.fields();
        let sigs = rt.pipeline.signatures();
        (summarize(&counts, fields, &sigs, &rules), rules)
    }

    /// Sends a ramp event to the webhook, if one is configured.
    pub fn notify(&self, event: serde_json::Value) {
        if let Some(n) = self.notifier.get() {
            n.send(event);
        }
    }

    fn registries(&self) -> Registries<'_> {
        Registries {
            stats: &self.stats,
            shadow: self.shadow.as_deref(),
            limits: &self.limits,
            caches: &self.caches,
        }
    }

    /// Builds the shared state: restores the runtime layer from the store,
    /// drops overrides of routes the file no longer has, and records the
    /// start as a version.
    pub fn start(
        config: Config,
        config_path: PathBuf,
        access_log: bool,
        tls: bool,
        store: Option<sled::Db>,
    ) -> Result<Shared, ControlError> {
        // Key files first: a start that fails on them records nothing.
        let auths =
            crate::policy::auth::load_all(&config, &config_path).map_err(ControlError::Invalid)?;
        let versions = match &store {
            Some(db) => Some(Box::new(SledVersions::open(db)?) as Box<dyn VersionStore>),
            None => None,
        };
        let last = match &versions {
            Some(v) => v.last()?,
            None => None,
        };
        let (mut layer, last_version) =
            last.map_or((RuntimeLayer::default(), 0), |r| (r.layer, r.version));
        let before = layer::layer_json(&layer);
        let dropped = layer::prune(&config, &mut layer);
        let mut version = last_version;
        if let Some(v) = &versions {
            let reason = if dropped.is_empty() {
                format!("started with {}", config_path.display())
            } else {
                format!(
                    "started with {}; dropped overrides that no longer fit the config: {}",
                    config_path.display(),
                    dropped.join(", ")
                )
            };
            let rec = layer::record(
                last_version,
                "strangler",
                &reason,
                None,
                before,
                layer::layer_json(&layer),
                &layer,
            );
            v.append(&rec)?;
            version = rec.version;
        }
        let stats = Registry::default();
        let shadow = match &store {
            Some(db) => Some(Arc::new(start_shadow(db, &config)?)),
            None => None,
        };
        let limits = crate::policy::ratelimit::Limits::default();
        let caches = crate::policy::cache::Caches::default();
        let live = Live::build(
            Arc::new(config),
            layer,
            version,
            None,
            Registries {
                stats: &stats,
                shadow: shadow.as_deref(),
                limits: &limits,
                caches: &caches,
            },
            auths,
        );
        Ok(Shared {
            live: ArcSwap::from_pointee(live),
            config_path,
            access_log,
            tls,
            store,
            versions,
            write_lock: tokio::sync::Mutex::new(()),
            stats,
            shadow,
            proxy_addr: std::sync::OnceLock::new(),
            limits,
            caches,
            notifier: std::sync::OnceLock::new(),
            ramp_figures: std::sync::Mutex::new(std::collections::HashMap::new()),
            sleeps: Arc::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Reloads the config file. Valid: the new state serves the next request
    /// on every connection, overrides of routes that still exist are kept,
    /// and the reload is a version. Invalid: the old state keeps serving and
    /// every problem is logged.
    pub async fn reload(&self, actor: &str) -> Result<u64, Vec<String>> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::state::config_file::load(&path))
            .await
            .map_err(|e| vec![format!("reload task failed: {e}")])?;
        let config = match loaded {
            Ok(c) => c,
            Err(e) => {
                let lines = e.lines();
                for line in &lines {
                    tracing::error!("config reload failed, keeping the previous config: {line}");
                }
                return Err(lines);
            }
        };
        // Keys (JWKS files, PEMs, secrets) are read again on every reload.
        let auths = match crate::policy::auth::load_all(&config, &self.config_path) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("config reload failed, keeping the previous config: {e}");
                return Err(vec![e]);
            }
        };
        let _guard = self.write_lock.lock().await;
        let old = self.live.load_full();
        if config.listen.proxy != old.config().listen.proxy {
            tracing::warn!(
                "listen.proxy changed to {}; a restart is needed to listen there",
                config.listen.proxy
            );
        }
        if config.listen.lean != old.config().listen.lean {
            tracing::warn!(
                "listen.lean changed to {}; a restart is needed for it to apply",
                config.listen.lean
            );
        }
        let mut layer = old.layer.clone();
        let before = layer::layer_json(&layer);
        let dropped = layer::prune(&config, &mut layer);
        let reason = if dropped.is_empty() {
            "config reloaded".to_string()
        } else {
            format!(
                "config reloaded; dropped overrides that no longer fit the config: {}",
                dropped.join(", ")
            )
        };
        let rec = layer::record(
            old.version,
            actor,
            &reason,
            None,
            before,
            layer::layer_json(&layer),
            &layer,
        );
        if let Some(v) = &self.versions
            && let Err(e) = v.append(&rec)
        {
            tracing::error!("config reload not applied: {e}");
            return Err(vec![e.to_string()]);
        }
        let routes = config.routes.len();
        let live = Live::build(
            Arc::new(config),
            layer,
            rec.version,
            Some(&old),
            self.registries(),
            auths,
        );
        self.live.store(Arc::new(live));
        tracing::info!(routes, version = rec.version, "{reason}");
        Ok(rec.version)
    }

    /// Applies a change to the runtime layer as a new version: checks
    /// `If-Match`, lets `mutate` edit the layer (returning the route touched
    /// and the before/after views), writes the version to disk, then swaps
    /// the live state.
    pub async fn change(
        &self,
        actor: &str,
        reason: &str,
        if_match: Option<u64>,
        mutate: impl FnOnce(
            &Config,
            &mut RuntimeLayer,
        ) -> Result<(Option<String>, Value, Value), ControlError>,
    ) -> Result<VersionRecord, ControlError> {
        let _guard = self.write_lock.lock().await;
        let old = self.live.load_full();
        if let Some(asked) = if_match
            && asked != old.version
        {
            return Err(ControlError::Conflict {
                current: old.version,
                asked,
            });
        }
        let mut layer = old.layer.clone();
        let (route, before, after) = mutate(old.config(), &mut layer)?;
        let rec = layer::record(
            old.version,
            actor,
            reason,
            route.as_deref(),
            before,
            after,
            &layer,
        );
        if let Some(v) = &self.versions {
            v.append(&rec)?;
        }
        let live = Live::build(
            old.config().clone(),
            layer,
            rec.version,
            Some(&old),
            self.registries(),
            old.auths(),
        );
        self.live.store(Arc::new(live));
        tracing::info!(
            version = rec.version,
            actor,
            reason,
            route = route.as_deref().unwrap_or("*"),
            "runtime change"
        );
        Ok(rec)
    }

    /// Changes one route's overrides: checks the route exists, lets `edit`
    /// change its override (an override left empty is removed), and records
    /// the before and after. A change that changes nothing writes no
    /// version and answers with the current one.
    pub async fn change_route(
        &self,
        actor: &str,
        reason: &str,
        if_match: Option<u64>,
        name: &str,
        edit: impl FnOnce(&Config, &mut layer::RouteOverride) -> Result<(), ControlError>,
    ) -> Result<Option<VersionRecord>, ControlError> {
        let live = self.live.load_full();
        if live.config().route(name).is_none() {
            return Err(ControlError::UnknownRoute(name.to_string()));
        }
        let current = live.layer.routes.get(name).cloned().unwrap_or_default();
        let mut edited = current.clone();
        edit(live.config(), &mut edited)?;
        if edited == current {
            if let Some(asked) = if_match.filter(|&v| v != live.version) {
                return Err(ControlError::Conflict {
                    current: live.version,
                    asked,
                });
            }
            return Ok(None);
        }
        let name = name.to_string();
        self.change(actor, reason, if_match, move |config, layer| {
            if config.route(&name).is_none() {
                return Err(ControlError::UnknownRoute(name));
            }
            let before = layer::override_json(layer, &name);
            if edited == layer::RouteOverride::default() {
                layer.routes.remove(&name);
            } else {
                layer.routes.insert(name.clone(), edited);
            }
            let after = layer::override_json(layer, &name);
            Ok((Some(name), before, after))
        })
        .await
        .map(Some)
    }

    /// Restores the runtime layer as it was right after `version`.
    pub async fn revert(
        &self,
        actor: &str,
        version: u64,
        if_match: Option<u64>,
    ) -> Result<VersionRecord, ControlError> {
        let target = match &self.versions {
            Some(v) => v
                .get(version)?
                .ok_or(ControlError::UnknownVersion(version))?,
            None => return Err(ControlError::UnknownVersion(version)),
        };
        let live = self.live.load_full();
        let mut restored = target.layer.clone();
        let dropped = layer::prune(live.config(), &mut restored);
        let reason = if dropped.is_empty() {
            format!("revert to version {version}")
        } else {
            format!(
                "revert to version {version}; dropped overrides that no longer fit the config: {}",
                dropped.join(", ")
            )
        };
        self.change(actor, &reason, if_match, move |config, layer| {
            let before = layer::layer_json(layer);
            let mut restored = restored;
            layer::prune(config, &mut restored);
            *layer = restored;
            Ok((None, before, layer::layer_json(layer)))
        })
        .await
    }
}

/// Opens the diff store and starts the diff pipeline.
fn start_shadow(db: &sled::Db, config: &Config) -> Result<ShadowRuntime, ControlError> {
    use strangler_shadow::pipeline::{DiffPipeline, PipelineConfig};
    use strangler_shadow::{Counters, SledDiffStore};
    let store = SledDiffStore::open(db, config.store.max_diffs, config.store.diff_ttl)
        .map_err(|e| ControlError::Store(e.to_string()))?;
    let max_request_body = usize::try_from(config.shadow.max_request_body).unwrap_or(usize::MAX);
    let pipeline = DiffPipeline::start(
        Arc::new(store),
        Arc::new(Counters::default()),
        PipelineConfig {
            // Every admitted shadow task may finish at once.
            queue: (config.shadow.concurrency as usize + config.shadow.queue as usize).max(64),
            max_body_bytes: usize::try_from(config.store.max_body_bytes).unwrap_or(usize::MAX),
            decode_limit: max_request_body.saturating_mul(DECODE_FACTOR),
        },
    )
    .map_err(ControlError::Store)?;
    Ok(ShadowRuntime::new(pipeline, &config.shadow))
}

/// A compressed body is compared when it decodes to at most this many
/// times `[shadow].max_request_body`.
const DECODE_FACTOR: usize = 8;
