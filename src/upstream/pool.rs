//! An upstream's pool: its instances and load balancing over them. Each
//! instance carries what the other files of the room keep on it: its
//! health (health.rs) and its idle keep-alive connections (send.rs).
//! Balancing and health are atomics; the idle stacks are one short,
//! uncontended mutex each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use http::Uri;
use http::uri::{Authority, Scheme};
use strangler_rules::config::{Balance, Upstream};

use crate::http1::client::{H1Conn, IdleStack};
use crate::upstream::body::Conn;

/// One instance of an upstream.
#[derive(Debug)]
pub struct Instance {
    pub uri: Uri,
    pub scheme: Scheme,
    pub authority: Authority,
    pub(super) consecutive_failures: AtomicU32,
    /// Milliseconds since the pool's epoch until which the instance is ejected.
    pub(super) ejected_until: AtomicU64,
    /// The active health check's verdict (true without a check).
    pub(super) healthy: AtomicBool,
    pub(super) in_flight: AtomicUsize,
    pub(super) idle: Arc<IdleStack<Conn>>,
    /// Idle connections of the lean exchange (plain http only).
    pub(super) lean_idle: Arc<IdleStack<H1Conn>>,
    /// `host:port` to connect to.
    pub(super) address: String,
    /// The TLS server name, for https instances.
    pub(super) server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// The instances of one upstream and the client that reaches them.
#[derive(Debug)]
pub struct UpstreamPool {
    pub name: String,
    pub config: Upstream,
    pub instances: Vec<Instance>,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
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
                let scheme = u.scheme().cloned().unwrap_or(Scheme::HTTP);
                let authority = u.authority()?.clone();
                let https = scheme == Scheme::HTTPS;
                let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let address = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let server_name = if https {
                    rustls::pki_types::ServerName::try_from(host).ok()
                } else {
                    None
                };
                Some(Instance {
                    scheme,
                    authority,
                    uri: u.clone(),
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                    in_flight: AtomicUsize::new(0),
                    idle: Arc::default(),
                    lean_idle: Arc::default(),
                    address,
                    server_name,
                })
            })
            .collect();
        let needs_tls = config
            .urls
            .iter()
            .any(|u| u.scheme() == Some(&Scheme::HTTPS));
        Arc::new(UpstreamPool {
            name: config.name.clone(),
            tls: needs_tls.then(|| Arc::new(tls_config())),
            config: config.clone(),
            instances,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Healthy and not ejected. The clock is read only for an instance that
    /// has been ejected (`ejected_until` is 0 for one never ejected).
    pub(super) fn available(&self, i: usize) -> bool {
        let inst = &self.instances[i];
        if !inst.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = inst.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// Picks an instance by the upstream's balance, skipping ejected and
    /// unhealthy ones and those in `exclude`.
    pub fn pick(&self, exclude: &[usize]) -> Result<usize, PickError> {
        let n = self.instances.len();
        let ok = |i: usize| !exclude.contains(&i) && self.available(i);
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
        // Every healthy instance is excluded (already tried), or none is healthy.
        (0..n)
            .find(|&i| !exclude.contains(&i) && self.instances[i].healthy.load(Ordering::Relaxed))
            .ok_or(PickError::NoneHealthy)
    }

    /// Whether there is an instance besides those in `exclude` worth trying.
    pub fn has_other(&self, exclude: &[usize]) -> bool {
        (0..self.instances.len()).any(|i| !exclude.contains(&i) && self.available(i))
    }

    pub fn start_request(&self, i: usize) {
        self.instances[i].in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_request(&self, i: usize) {
        self.instances[i].in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether instance `i` takes traffic now: healthy and not ejected.
    pub fn is_available(&self, i: usize) -> bool {
        self.available(i)
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
            let mut config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        })
        .clone()
}
