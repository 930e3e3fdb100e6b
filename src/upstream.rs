//! Upstream pools: the instances of one upstream, load balancing over them,
//! passive health (eject after consecutive failures, never all of them),
//! active health checks, and the pooled keep-alive HTTP client. All state
//! on the request path is atomics; nothing here takes a lock per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use strangler_rules::config::{Balance, Upstream};

use crate::body::ProxyBody;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// One instance of an upstream.
#[derive(Debug)]
pub struct Instance {
    pub uri: Uri,
    pub scheme: Scheme,
    pub authority: Authority,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the pool's epoch until which the instance is ejected.
    ejected_until: AtomicU64,
    /// The active health check's verdict (true without a check).
    healthy: AtomicBool,
    in_flight: AtomicUsize,
}

/// The instances of one upstream and the client that reaches them.
#[derive(Debug)]
pub struct UpstreamPool {
    pub name: String,
    pub config: Upstream,
    pub instances: Vec<Instance>,
    pub client: HttpClient,
    next: AtomicUsize,
    epoch: Instant,
}

/// Why no instance could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// Every instance fails its active health check.
    NoneHealthy,
}

impl UpstreamPool {
    pub fn new(config: &Upstream) -> Arc<Self> {
        let instances = config
            .urls
            .iter()
            .filter_map(|u| {
                Some(Instance {
                    scheme: u.scheme().cloned().unwrap_or(Scheme::HTTP),
                    authority: u.authority()?.clone(),
                    uri: u.clone(),
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect();
        Arc::new(UpstreamPool {
            name: config.name.clone(),
            client: build_client(config),
            config: config.clone(),
            instances,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn available(&self, i: usize, now: u64) -> bool {
        let inst = &self.instances[i];
        inst.healthy.load(Ordering::Relaxed) && inst.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Picks an instance by the upstream's balance, skipping ejected and
    /// unhealthy ones and those in `exclude`.
    pub fn pick(&self, exclude: &[usize]) -> Result<usize, PickError> {
        let n = self.instances.len();
        let now = self.now_ms();
        let ok = |i: usize| !exclude.contains(&i) && self.available(i, now);
        let chosen = match self.config.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Balance::LeastRequests => (0..n)
                .filter(|&i| ok(i))
                .min_by_key(|&i| self.instances[i].in_flight.load(Ordering::Relaxed)),
            Balance::Random => {
                let candidates: Vec<usize> = (0..n).filter(|&i| ok(i)).collect();
                if candidates.is_empty() {
                    None
                } else {
                    Some(candidates[rand::random_range(0..candidates.len())])
                }
            }
        };
        if let Some(i) = chosen {
            return Ok(i);
        }
        // Nothing available. Instances failing the active check are never used;
        // ejected ones are (passive health never takes out every instance).
        let healthy: Vec<usize> = (0..n)
            .filter(|&i| !exclude.contains(&i) && self.instances[i].healthy.load(Ordering::Relaxed))
            .collect();
        if let Some(&i) = healthy.first() {
            return Ok(i);
        }
        if (0..n).all(|i| !self.instances[i].healthy.load(Ordering::Relaxed)) {
            return Err(PickError::NoneHealthy);
        }
        // Every healthy instance is excluded (already tried): no second choice.
        Err(PickError::NoneHealthy)
    }

    /// Whether there is an instance besides those in `exclude` worth trying.
    pub fn has_other(&self, exclude: &[usize]) -> bool {
        let now = self.now_ms();
        (0..self.instances.len()).any(|i| !exclude.contains(&i) && self.available(i, now))
    }

    pub fn start_request(&self, i: usize) {
        self.instances[i].in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_request(&self, i: usize) {
        self.instances[i].in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn record_success(&self, i: usize) {
        let inst = &self.instances[i];
        if inst.consecutive_failures.load(Ordering::Relaxed) != 0 {
            inst.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; ejects the instance after `eject_after` in a row,
    /// unless that would leave no instance available.
    pub fn record_failure(&self, i: usize) {
        let inst = &self.instances[i];
        let failures = inst.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.eject_after == 0 || failures < self.config.eject_after {
            return;
        }
        let now = self.now_ms();
        let others_available = (0..self.instances.len()).any(|j| j != i && self.available(j, now));
        if others_available {
            let until = now + self.config.eject_for.as_millis() as u64;
            inst.ejected_until.store(until, Ordering::Relaxed);
            inst.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(
                upstream = %self.name,
                instance = %inst.uri,
                failures,
                eject_for = ?self.config.eject_for,
                "instance ejected after consecutive failures"
            );
        }
    }

    /// Whether instance `i` takes traffic now: healthy and not ejected.
    pub fn is_available(&self, i: usize) -> bool {
        self.available(i, self.now_ms())
    }

    /// Whether instance `i` is ejected right now.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.instances[i].ejected_until.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Runs the active health check until the pool is dropped everywhere
    /// else (the task holds only a weak reference).
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let Some(check) = self.config.health.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(check.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                for (i, inst) in pool.instances.iter().enumerate() {
                    let uri = format!("{}://{}{}", inst.scheme, inst.authority, check.path);
                    let ok = match uri.parse::<Uri>() {
                        Ok(uri) => {
                            let req = http::Request::get(uri)
                                .header(http::header::HOST, inst.authority.as_str())
                                .header(http::header::USER_AGENT, "strangler-health-check")
                                .body(ProxyBody::Empty);
                            match req {
                                Ok(req) => matches!(
                                    tokio::time::timeout(check.timeout, pool.client.request(req)).await,
                                    Ok(Ok(resp)) if resp.status().is_success()
                                ),
                                Err(_) => false,
                            }
                        }
                        Err(_) => false,
                    };
                    let was = inst.healthy.swap(ok, Ordering::Relaxed);
                    if was != ok {
                        tracing::warn!(
                            upstream = %pool.name,
                            instance = %inst.uri,
                            healthy = ok,
                            "active health check changed"
                        );
                    }
                    let _ = i;
                }
            }
        });
    }
}

/// TLS settings for https upstreams: the system's roots, loaded once.
fn tls_config() -> rustls::ClientConfig {
    static CONFIG: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        })
        .clone()
}

fn build_client(config: &Upstream) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .http1_writev(false)
        .build(https)
}
