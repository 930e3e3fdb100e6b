//! The typed, validated config, built from [`crate::file::FileConfig`]: every
//! default applied, names resolved to ids, matchers compiled. Validation
//! collects every semantic problem with its key path; the span index then
//! gives each one its line.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use regex::Regex;
use toml::de::DeTable;

use crate::error::{ConfigError, Problem, ProblemKind};
use crate::file::*;
use crate::matcher::{HostMatch, MatchSpec, PathMatch, PathTemplate, ValueMatch};
use crate::spans::SpanIndex;
use crate::split::{BUCKETS, Split, StickyKey, UpstreamId, fmt_bp, salt_seed, shadow_seed};

/// Defaults, in one place; docs/config.md lists the same.
pub mod defaults {
    use std::time::Duration;
    pub const PROXY: &str = "127.0.0.1:8080";
    pub const ADMIN: &str = "127.0.0.1:9901";
    pub const TOKEN_ENV: &str = "STRANGLER_ADMIN_TOKEN";
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    pub const MAX_HEADERS: usize = 100;
    pub const H2_MAX_STREAMS: u32 = 256;
    pub const LEAN: bool = true;
    pub const STORE_PATH: &str = "strangler-data";
    pub const MAX_DIFFS: u64 = 50_000;
    pub const DIFF_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const MAX_BODY_BYTES: u64 = 32 * 1024;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
    pub const EJECT_AFTER: u32 = 5;
    pub const EJECT_FOR: Duration = Duration::from_secs(10);
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
    pub const SHADOW_TIMEOUT: Duration = Duration::from_secs(5);
    pub const SHADOW_CONCURRENCY: u32 = 64;
    pub const SHADOW_QUEUE: u32 = 1024;
    pub const SHADOW_MAX_REQUEST_BODY: u64 = 1024 * 1024;
    pub const SHADOW_METHODS: [&str; 2] = ["GET", "HEAD"];
    pub const RETRIES: u32 = 0;
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const NOISE_RELATIVE: f64 = 20.0;
    pub const NOISE_ABSOLUTE: f64 = 0.03;
    pub const NOISE_MIN_SAMPLES: u64 = 20;
    pub const JWT_LEEWAY: Duration = Duration::from_secs(30);
    pub const JWKS_COOLDOWN: Duration = Duration::from_secs(60);
    pub const CACHE_MAX_ENTRIES: u64 = 10_000;
    pub const CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
    pub const RAMP_EVERY: Duration = Duration::from_secs(600);
    pub const RAMP_MAX_ERROR_RATE: f64 = 0.01;
    pub const RAMP_MAX_ERROR_RATIO: f64 = 2.0;
    pub const RAMP_MAX_P99_RATIO: f64 = 1.5;
    pub const RAMP_MAX_MISMATCH_RATE: f64 = 0.005;
    pub const RAMP_MIN_REQUESTS: u64 = 200;
}

/// A validated config. Immutable; the route table is compiled from it.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub store: Store,
    /// In name order; [`UpstreamId`] indexes this.
    pub upstreams: Vec<Upstream>,
    pub default_upstream: UpstreamId,
    pub shadow: ShadowLimits,
    /// In file order: the first match wins.
    pub routes: Vec<Route>,
    pub aggregates: Vec<Aggregate>,
    pub notify: Notify,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// `None`: one per core.
    pub workers: Option<usize>,
    pub trusted_hops: u32,
    pub drain_timeout: Duration,
    pub tls: Option<Tls>,
    /// A client must send each request's headers within this time of the
    /// connection becoming ready for it (HTTP/1): it cuts off slow clients
    /// and is also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// A write to a client that makes no progress for this long closes
    /// the connection (a client that stopped reading its answer).
    pub send_timeout: Duration,
    /// Largest request head accepted; beyond it: 431.
    pub max_header_bytes: usize,
    /// Most request headers accepted; beyond it: 431.
    pub max_headers: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// HTTP/1.1 client connections start on the lean server path (which
    /// hands what it does not take to hyper); `false`: hyper's server
    /// serves every client connection, plain and TLS.
    pub lean: bool,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub token_env: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub path: String,
    pub max_diffs: u64,
    pub diff_ttl: Duration,
    pub max_body_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequests,
    Random,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub urls: Vec<http::Uri>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub eject_after: u32,
    pub eject_for: Duration,
    pub health: Option<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ShadowLimits {
    pub timeout: Duration,
    pub concurrency: u32,
    pub queue: u32,
    pub max_request_body: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Notify {
    pub webhook: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: MatchSpec,
    pub split: Split,
    pub sticky: Option<StickyKey>,
    /// The salt for sticky buckets: `sticky_salt`, or the route name.
    pub sticky_salt: String,
    pub sticky_seed: u64,
    /// Seed for shadow sampling, independent of the split's.
    pub shadow_seed: u64,
    pub host_rewrite: Option<String>,
    pub shadow: Option<ShadowSpec>,
    pub compare: CompareSpec,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub websocket: bool,
    pub idle_timeout: Duration,
    pub auth: Option<AuthSpec>,
    pub forward_claims: Vec<(String, String)>,
    pub rate_limit: Option<RateLimitSpec>,
    pub cache: Option<CacheSpec>,
    pub ramp: Option<RampSpec>,
}

#[derive(Debug, Clone)]
pub struct ShadowSpec {
    pub upstream: UpstreamId,
    /// Sampled share in basis points.
    pub percent_bp: u16,
    pub methods: Vec<String>,
    pub allow_writes: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CompareSpec {
    pub headers: Vec<String>,
    pub ignore_headers: Vec<String>,
    pub ignore_fields: Vec<String>,
    pub unordered_arrays: Vec<String>,
    pub normalize: Vec<Normalizer>,
    pub noise_check: Option<NoiseCheck>,
    pub redact: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalizer {
    Timestamps,
    Uuids,
}

#[derive(Debug, Clone)]
pub struct NoiseCheck {
    pub percent_bp: u16,
    pub relative: f64,
    pub absolute: f64,
    pub min_samples: u64,
}

#[derive(Debug, Clone)]
pub struct AuthSpec {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub algorithms: Vec<String>,
    pub key: JwtKey,
    pub leeway: Duration,
    pub jwks_cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    SecretEnv(String),
    PublicKeyPem(String),
    JwksFile(String),
    JwksUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    Ip,
    Header(String),
    Claim(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSpec {
    pub per_second: f64,
    pub burst: u32,
    pub key: RateKey,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheSpec {
    pub ttl: Duration,
    pub max_entries: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    Rollback,
    Pause,
}

#[derive(Debug, Clone)]
pub struct RampSpec {
    pub to: UpstreamId,
    pub steps_bp: Vec<u16>,
    pub every: Duration,
    pub max_error_rate: f64,
    pub max_error_ratio: f64,
    pub max_p99_ratio: f64,
    pub max_mismatch_rate: f64,
    pub min_requests: u64,
    pub on_fail: OnFail,
}

#[derive(Debug, Clone)]
pub struct Aggregate {
    pub name: String,
    pub matcher: MatchSpec,
    pub parts: Vec<AggregatePart>,
}

#[derive(Debug, Clone)]
pub struct AggregatePart {
    pub name: String,
    /// Path with `{param}` placeholders from the aggregate's template.
    pub path: String,
    pub timeout: Option<Duration>,
    /// `None`: the part goes through the route table.
    pub upstream: Option<UpstreamId>,
}

impl Config {
    /// Parses and validates a config. `file` names the source in messages.
    /// Pure: the caller reads the file.
    pub fn parse(source: &str, file: &str) -> Result<Config, ConfigError> {
        let spans_or_err = DeTable::parse(source);
        let table = match spans_or_err {
            Ok(t) => t,
            Err(e) => return Err(syntax_error(file, source, &SpanIndex::empty(), &e)),
        };
        let spans = SpanIndex::build(source, &table);
        let parsed: Result<FileConfig, _> =
            serde::Deserialize::deserialize(toml::de::Deserializer::from(table));
        let file_config = match parsed {
            Ok(f) => f,
            Err(e) => return Err(syntax_error(file, source, &spans, &e)),
        };
        let mut v = Validator::default();
        let config = v.config(file_config);
        if v.problems.is_empty()
            && let Some(config) = config
        {
            return Ok(config);
        }
        let problems = v
            .problems
            .into_iter()
            .map(|(key, mut kind)| {
                if let ProblemKind::DuplicateName { first_line, .. } = &mut kind {
                    *first_line = spans.line(first_line).map_or("?".into(), |l| l.to_string());
                }
                Problem {
                    file: file.to_string(),
                    line: spans.line(&key),
                    key,
                    kind,
                }
            })
            .collect();
        let mut problems: Vec<Problem> = problems;
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        Err(ConfigError::Invalid { problems })
    }

    pub fn upstream(&self, id: UpstreamId) -> &Upstream {
        &self.upstreams[id.index()]
    }

    pub fn upstream_id(&self, name: &str) -> Option<UpstreamId> {
        self.upstreams
            .iter()
            .position(|u| u.name == name)
            .map(|i| UpstreamId(i as u32))
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The upstream `shift ROUTE P` moves traffic to when no `--to` is given:
    /// the route's one non-default upstream, if it has exactly one.
    pub fn shift_target(&self, route: &Route) -> Option<UpstreamId> {
        let mut others = route
            .split
            .weights()
            .map(|(id, _)| id)
            .filter(|&id| id != self.default_upstream);
        match (others.next(), others.next()) {
            (Some(id), None) => Some(id),
            _ => None,
        }
    }
}

fn syntax_error(file: &str, _source: &str, spans: &SpanIndex, e: &toml::de::Error) -> ConfigError {
    let (line, column, key) = match e.span() {
        Some(span) => (
            spans.line_of(span.start),
            spans.column_of(span.start),
            spans.key_at(span.start).map(str::to_string),
        ),
        None => (None, None, None),
    };
    // The empty index (a parse error) cannot place the span; count lines here.
    let (line, column) = match (line, e.span()) {
        (None, Some(span)) => {
            let before = &_source[..span.start.min(_source.len())];
            let l = before.matches('\n').count() + 1;
            let c = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (Some(l), Some(c))
        }
        _ => (line, column),
    };
    ConfigError::Syntax {
        file: file.to_string(),
        line,
        column,
        key,
        message: friendly_message(e.message().trim(), e.span().and_then(|sp| _source.get(sp))),
    }
}

/// Says what the deserializer means in TOML terms.
fn friendly_message(message: &str, snippet: Option<&str>) -> String {
    let mut m = message.to_string();
    for (rust, toml) in [
        ("expected f64", "expected a number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ] {
        m = m.replace(rust, toml);
    }
    if m == "duplicate key"
        && let Some(key) = snippet.filter(|k| !k.contains('\n') && !k.is_empty())
    {
        m = format!("duplicate key `{}`", key.trim());
    }
    m
}

/// Collects problems while building the typed config.
#[derive(Default)]
struct Validator {
    problems: Vec<(String, ProblemKind)>,
    upstream_names: Vec<String>,
}

const SAFE_METHODS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];
const HMAC_ALGS: [&str; 3] = ["HS256", "HS384", "HS512"];
const ASYM_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Validator {
    fn problem(&mut self, key: impl Into<String>, kind: ProblemKind) {
        self.problems.push((key.into(), kind));
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v) {
                Ok(d) => d,
                Err(reason) => {
                    self.problem(
                        key,
                        ProblemKind::BadDuration {
                            value: v.to_string(),
                            reason,
                        },
                    );
                    default
                }
            },
        }
    }

    fn address(&mut self, key: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let v = value.unwrap_or(default);
        match v.parse() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    key,
                    ProblemKind::BadAddress {
                        value: v.to_string(),
                    },
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn upstream_ref(&mut self, key: &str, name: &str) -> Option<UpstreamId> {
        match self.upstream_names.iter().position(|n| n == name) {
            Some(i) => Some(UpstreamId(i as u32)),
            None => {
                let known = self.upstream_names.join(", ");
                self.problem(
                    key,
                    ProblemKind::UnknownUpstream {
                        name: name.to_string(),
                        known,
                    },
                );
                None
            }
        }
    }

    /// A percentage 0..=100 with at most two decimals, as basis points.
    fn percent(&mut self, key: &str, what: &'static str, value: f64) -> Option<u16> {
        match percent_to_bp(value) {
            Some(bp) => Some(bp),
            None => {
                self.problem(
                    key,
                    ProblemKind::BadPercent {
                        what,
                        value: fmt_f64(value),
                    },
                );
                None
            }
        }
    }

    fn regex(&mut self, key: &str, pattern: &str) -> Option<Regex> {
        // Compile the pattern alone first, so that `a)|(b` cannot escape
        // the anchors added around it.
        match Regex::new(pattern).and_then(|_| Regex::new(&format!("^(?:{pattern})$"))) {
            Ok(r) => Some(r),
            Err(e) => {
                let reason = e.to_string();
                let reason = reason.lines().last().unwrap_or("").trim();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason).to_string();
                self.problem(
                    key,
                    ProblemKind::BadRegex {
                        pattern: pattern.to_string(),
                        reason,
                    },
                );
                None
            }
        }
    }

    /// Names appear in URLs (`/api/v1/routes/{name}`) and on the command line.
    fn name(&mut self, key: &str, what: &'static str, name: &str) {
        let ok = !name.is_empty()
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            self.problem(
                key,
                ProblemKind::BadValue {
                    what,
                    value: name.to_string(),
                    expected: "a name of letters, digits, '.', '_' and '-', not starting with '-'"
                        .into(),
                },
            );
        }
    }

    /// Checks the `name` of the entry at `key` and that no earlier entry in
    /// `seen` (name -> key path of its name) has it.
    fn unique_name(
        &mut self,
        seen: &mut HashMap<String, String>,
        key: &str,
        what: &'static str,
        name: &str,
    ) {
        let name_key = format!("{key}.name");
        self.name(&name_key, what, name);
        match seen.get(name) {
            Some(first) => {
                let first_line = first.clone();
                self.problem(
                    name_key,
                    ProblemKind::DuplicateName {
                        what,
                        name: name.to_string(),
                        first_line,
                    },
                );
            }
            None => {
                seen.insert(name.to_string(), name_key);
            }
        }
    }

    fn methods(&mut self, key: &str, methods: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(is_tchar) {
                self.problem(
                    format!("{key}[{i}]"),
                    ProblemKind::BadMethod { value: m.clone() },
                );
            } else {
                let m = m.to_ascii_uppercase();
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    fn config(&mut self, f: FileConfig) -> Option<Config> {
        let listen = Listen {
            proxy: self.address("listen.proxy", f.listen.proxy.as_deref(), defaults::PROXY),
            admin: self.address("listen.admin", f.listen.admin.as_deref(), defaults::ADMIN),
            workers: f.listen.workers,
            trusted_hops: f.listen.trusted_hops.unwrap_or(0),
            drain_timeout: self.duration(
                "listen.drain_timeout",
                f.listen.drain_timeout.as_deref(),
                defaults::DRAIN_TIMEOUT,
            ),
            tls: f.listen.tls.map(|t| Tls {
                cert: t.cert,
                key: t.key,
            }),
            header_read_timeout: self.duration(
                "listen.header_read_timeout",
                f.listen.header_read_timeout.as_deref(),
                defaults::HEADER_READ_TIMEOUT,
            ),
            send_timeout: self.duration(
                "listen.send_timeout",
                f.listen.send_timeout.as_deref(),
                defaults::SEND_TIMEOUT,
            ),
            max_header_bytes: f
                .listen
                .max_header_bytes
                .unwrap_or(defaults::MAX_HEADER_BYTES),
            max_headers: f.listen.max_headers.unwrap_or(defaults::MAX_HEADERS),
            h2_max_streams: f.listen.h2_max_streams.unwrap_or(defaults::H2_MAX_STREAMS),
            lean: f.listen.lean.unwrap_or(defaults::LEAN),
        };
        if listen.max_header_bytes < 8192 {
            self.problem(
                "listen.max_header_bytes",
                ProblemKind::BadValue {
                    what: "max_header_bytes",
                    value: listen.max_header_bytes.to_string(),
                    expected: "at least 8192".into(),
                },
            );
        }
        if listen.max_headers == 0 || listen.h2_max_streams == 0 {
            self.problem(
                "listen",
                ProblemKind::BadValue {
                    what: "limit",
                    value: "0".into(),
                    expected: "max_headers and h2_max_streams of at least 1".into(),
                },
            );
        }
        if listen.workers == Some(0) {
            self.problem(
                "listen.workers",
                ProblemKind::BadValue {
                    what: "worker count",
                    value: "0".into(),
                    expected: "at least 1".into(),
                },
            );
        }
        if listen.proxy.port() == listen.admin.port()
            && listen.proxy.port() != 0
            && (listen.proxy.ip() == listen.admin.ip()
                || listen.proxy.ip().is_unspecified()
                || listen.admin.ip().is_unspecified())
        {
            self.problem(
                "listen.admin",
                ProblemKind::Conflict {
                    reason: format!(
                        "admin address {} is the same as the proxy address",
                        listen.admin
                    ),
                },
            );
        }
        let admin = Admin {
            token_env: f
                .admin
                .token_env
                .unwrap_or_else(|| defaults::TOKEN_ENV.to_string()),
        };
        if admin.token_env.is_empty() {
            self.problem(
                "admin.token_env",
                ProblemKind::Missing {
                    what: "environment variable name".into(),
                },
            );
        }
        let store = Store {
            path: f
                .store
                .path
                .unwrap_or_else(|| defaults::STORE_PATH.to_string()),
            max_diffs: f.store.max_diffs.unwrap_or(defaults::MAX_DIFFS),
            diff_ttl: self.duration(
                "store.diff_ttl",
                f.store.diff_ttl.as_deref(),
                defaults::DIFF_TTL,
            ),
            max_body_bytes: f.store.max_body_bytes.unwrap_or(defaults::MAX_BODY_BYTES),
        };

        self.upstream_names = f.upstreams.keys().cloned().collect();
        for name in self.upstream_names.clone() {
            self.name(&format!("upstreams.{name}"), "upstream", &name);
        }
        if f.upstreams.is_empty() {
            self.problem("upstreams", ProblemKind::Missing {
                what: "upstreams: define at least the monolith, e.g. [upstreams.monolith] urls = [\"http://127.0.0.1:3000\"]".into(),
            });
        }
        let upstreams: Vec<Upstream> = f
            .upstreams
            .into_iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect();

        let default_upstream = match &f.default {
            Some(d) => self.upstream_ref("default.upstream", &d.upstream),
            None => {
                self.problem("default", ProblemKind::Missing {
                    what: "[default] upstream: where requests that match no route go (normally the monolith)".into(),
                });
                None
            }
        };

        let shadow = ShadowLimits {
            timeout: self.duration(
                "shadow.timeout",
                f.shadow.timeout.as_deref(),
                defaults::SHADOW_TIMEOUT,
            ),
            concurrency: f.shadow.concurrency.unwrap_or(defaults::SHADOW_CONCURRENCY),
            queue: f.shadow.queue.unwrap_or(defaults::SHADOW_QUEUE),
            max_request_body: f
                .shadow
                .max_request_body
                .unwrap_or(defaults::SHADOW_MAX_REQUEST_BODY),
        };
        if shadow.concurrency == 0 {
            self.problem(
                "shadow.concurrency",
                ProblemKind::BadValue {
                    what: "concurrency",
                    value: "0".into(),
                    expected: "at least 1".into(),
                },
            );
        }

        let default_id = default_upstream.unwrap_or(UpstreamId(0));
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut routes = Vec::new();
        for (i, r) in f.routes.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            self.unique_name(&mut seen, &key, "route", &r.name);
            if let Some(route) = self.route(&key, r, default_id) {
                routes.push(route);
            }
        }

        let mut seen_agg: HashMap<String, String> = HashMap::new();
        let mut aggregates = Vec::new();
        for (i, a) in f.aggregates.into_iter().enumerate() {
            let key = format!("aggregates[{i}]");
            self.unique_name(&mut seen_agg, &key, "aggregate", &a.name);
            if let Some(agg) = self.aggregate(&key, a) {
                aggregates.push(agg);
            }
        }

        let notify = Notify {
            webhook: f.notify.webhook,
        };
        if let Some(w) = &notify.webhook
            && (!(w.starts_with("http://") || w.starts_with("https://"))
                || w.parse::<http::Uri>().is_err())
        {
            self.problem(
                "notify.webhook",
                ProblemKind::BadValue {
                    what: "webhook url",
                    value: w.clone(),
                    expected: "an http:// or https:// URL".into(),
                },
            );
        }

        Some(Config {
            listen,
            admin,
            store,
            upstreams,
            default_upstream: default_upstream?,
            shadow,
            routes,
            aggregates,
            notify,
        })
    }

    fn upstream(&mut self, name: String, u: UpstreamFile) -> Upstream {
        let key = format!("upstreams.{}", name);
        if u.urls.is_empty() {
            self.problem(format!("{key}.urls"), ProblemKind::EmptyUpstreamList);
        }
        let mut urls = Vec::new();
        for (i, url) in u.urls.iter().enumerate() {
            match check_url(url) {
                Ok(uri) => urls.push(uri),
                Err(reason) => self.problem(
                    format!("{key}.urls[{i}]"),
                    ProblemKind::BadUrl {
                        url: url.clone(),
                        reason,
                    },
                ),
            }
        }
        let balance = match u.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_requests") => Balance::LeastRequests,
            Some("random") => Balance::Random,
            Some(other) => {
                self.problem(
                    format!("{key}.balance"),
                    ProblemKind::BadValue {
                        what: "balance",
                        value: other.to_string(),
                        expected: "round_robin, least_requests or random".into(),
                    },
                );
                Balance::RoundRobin
            }
        };
        let health = u.health.map(|h| {
            if !h.path.starts_with('/') {
                self.problem(
                    format!("{key}.health.path"),
                    ProblemKind::BadPath {
                        reason: format!("health check path \"{}\" must start with /", h.path),
                    },
                );
            }
            HealthCheck {
                interval: self.duration(
                    &format!("{key}.health.interval"),
                    h.interval.as_deref(),
                    defaults::HEALTH_INTERVAL,
                ),
                timeout: self.duration(
                    &format!("{key}.health.timeout"),
                    h.timeout.as_deref(),
                    defaults::HEALTH_TIMEOUT,
                ),
                path: h.path,
            }
        });
        Upstream {
            connect_timeout: self.duration(
                &format!("{key}.connect_timeout"),
                u.connect_timeout.as_deref(),
                defaults::CONNECT_TIMEOUT,
            ),
            timeout: self.duration(
                &format!("{key}.timeout"),
                u.timeout.as_deref(),
                defaults::UPSTREAM_TIMEOUT,
            ),
            eject_after: u.eject_after.unwrap_or(defaults::EJECT_AFTER),
            eject_for: self.duration(
                &format!("{key}.eject_for"),
                u.eject_for.as_deref(),
                defaults::EJECT_FOR,
            ),
            name,
            urls,
            balance,
            health,
        }
    }

    fn matcher(&mut self, key: &str, m: MatchFile) -> MatchSpec {
        let key = format!("{key}.match");
        let mut path = None;
        let given: Vec<&str> = [
            ("path", m.path.is_some()),
            ("path_prefix", m.path_prefix.is_some()),
            ("path_template", m.path_template.is_some()),
            ("path_regex", m.path_regex.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
        if given.len() > 1 {
            self.problem(
                format!("{key}.{}", given[1]),
                ProblemKind::Conflict {
                    reason: format!(
                        "only one path matcher per route, found {}",
                        given.join(" and ")
                    ),
                },
            );
        }
        if let Some(p) = m.path {
            if p.starts_with('/') {
                path = Some(PathMatch::Exact(p));
            } else {
                self.problem(
                    format!("{key}.path"),
                    ProblemKind::BadPath {
                        reason: format!("path \"{p}\" must start with /"),
                    },
                );
            }
        } else if let Some(p) = m.path_prefix {
            if p.starts_with('/') {
                path = Some(PathMatch::Prefix(p));
            } else {
                self.problem(
                    format!("{key}.path_prefix"),
                    ProblemKind::BadPath {
                        reason: format!("path prefix \"{p}\" must start with /"),
                    },
                );
            }
        } else if let Some(t) = m.path_template {
            match PathTemplate::parse(&t) {
                Ok(t) => path = Some(PathMatch::Template(t)),
                Err(reason) => self.problem(
                    format!("{key}.path_template"),
                    ProblemKind::BadPath { reason },
                ),
            }
        } else if let Some(r) = m.path_regex {
            path = self
                .regex(&format!("{key}.path_regex"), &r)
                .map(PathMatch::Regex);
        }
        let methods = self.methods(
            &format!("{key}.methods"),
            m.methods.as_deref().unwrap_or(&[]),
        );
        let host = m.host.and_then(|h| {
            let lower = h.to_ascii_lowercase();
            if let Some(suffix) = lower.strip_prefix("*.") {
                if suffix.is_empty() {
                    self.problem(
                        format!("{key}.host"),
                        ProblemKind::BadValue {
                            what: "host",
                            value: h.clone(),
                            expected: "a host name such as shop.example.com or *.example.com"
                                .into(),
                        },
                    );
                    return None;
                }
                Some(HostMatch::Suffix(format!(".{suffix}")))
            } else if lower.is_empty()
                || lower.contains(['/', ' ', '*', '@'])
                || (!lower.starts_with('[') && lower.contains(':'))
                || (lower.starts_with('[') && !lower.ends_with(']'))
            {
                self.problem(
                    format!("{key}.host"),
                    ProblemKind::BadValue {
                        what: "host",
                        value: h.clone(),
                        expected: "a host name without port, such as shop.example.com or *.example.com (the request's port is ignored)".into(),
                    },
                );
                None
            } else {
                Some(HostMatch::Exact(lower))
            }
        });
        let headers = self.values(&format!("{key}.headers"), m.headers, true);
        let query = self.values(&format!("{key}.query"), m.query, false);
        let cookies = self.values(&format!("{key}.cookies"), m.cookies, false);
        MatchSpec {
            path,
            methods,
            host,
            headers,
            query,
            cookies,
        }
    }

    fn values(
        &mut self,
        key: &str,
        map: BTreeMap<String, String>,
        lowercase: bool,
    ) -> Vec<(String, ValueMatch)> {
        let mut out = Vec::new();
        for (name, value) in map {
            let k = format!("{key}.{}", name);
            let vm = if value == "*" {
                ValueMatch::Present
            } else if let Some(pattern) = value.strip_prefix('~') {
                match self.regex(&k, pattern) {
                    Some(r) => ValueMatch::Regex(r),
                    None => continue,
                }
            } else {
                ValueMatch::Exact(value)
            };
            let name = if lowercase {
                name.to_ascii_lowercase()
            } else {
                name
            };
            out.push((name, vm));
        }
        out
    }

    fn route(&mut self, key: &str, r: RouteFile, default: UpstreamId) -> Option<Route> {
        let matcher = self.matcher(key, r.matcher);
        let split = match (&r.split, &r.upstream) {
            (Some(_), Some(_)) => {
                self.problem(
                    format!("{key}.upstream"),
                    ProblemKind::Conflict {
                        reason: "give either split or upstream, not both".into(),
                    },
                );
                None
            }
            (Some(weights), None) => self.split(&format!("{key}.split"), weights, default),
            (None, Some(name)) => self
                .upstream_ref(&format!("{key}.upstream"), name)
                .map(|id| Split::single(id, default)),
            (None, None) => Some(Split::single(default, default)),
        };
        let sticky = r.sticky.as_deref().and_then(|s| match StickyKey::parse(s) {
            Some(StickyKey::Header(h)) if !h.bytes().all(is_tchar) => {
                self.problem(
                    format!("{key}.sticky"),
                    ProblemKind::BadValue {
                        what: "sticky key",
                        value: s.to_string(),
                        expected: "header:NAME with a valid header name".into(),
                    },
                );
                None
            }
            Some(k) => Some(k),
            None => {
                self.problem(
                    format!("{key}.sticky"),
                    ProblemKind::BadValue {
                        what: "sticky key",
                        value: s.to_string(),
                        expected: "header:NAME, cookie:NAME or claim:NAME".into(),
                    },
                );
                None
            }
        });
        let sticky_salt = r.sticky_salt.clone().unwrap_or_else(|| r.name.clone());
        let shadow = r
            .shadow
            .and_then(|s| self.shadow(&format!("{key}.shadow"), s));
        let compare = self.compare(&format!("{key}.compare"), r.compare);
        let timeout = r
            .timeout
            .as_deref()
            .map(|t| self.duration(&format!("{key}.timeout"), Some(t), Duration::ZERO));
        let idle_timeout = self.duration(
            &format!("{key}.idle_timeout"),
            r.idle_timeout.as_deref(),
            defaults::IDLE_TIMEOUT,
        );
        let auth = r
            .auth
            .jwt
            .and_then(|j| self.jwt(&format!("{key}.auth.jwt"), j));
        let mut forward_claims = Vec::new();
        for (claim, header) in r.auth.forward_claims {
            let lower = header.to_ascii_lowercase();
            if RESERVED_CLAIM_TARGETS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                self.problem(
                    format!("{key}.auth.forward_claims.{}", claim),
                    ProblemKind::BadValue {
                        what: "header name",
                        value: header.clone(),
                        expected: "a header of your own such as x-user-id, not one that frames, routes or authorizes the request".into(),
                    },
                );
            } else if header.is_empty() || !header.bytes().all(is_tchar) {
                self.problem(
                    format!("{key}.auth.forward_claims.{}", claim),
                    ProblemKind::BadValue {
                        what: "header name",
                        value: header.clone(),
                        expected: "an HTTP header name such as x-user-id".into(),
                    },
                );
            }
            forward_claims.push((claim, header.to_ascii_lowercase()));
        }
        if !forward_claims.is_empty() && auth.is_none() {
            self.problem(
                format!("{key}.auth.forward_claims"),
                ProblemKind::Conflict {
                    reason: "forward_claims needs auth.jwt to verify the claims first".into(),
                },
            );
        }
        if let Some(StickyKey::Claim(c)) = &sticky
            && auth.is_none()
        {
            self.problem(
                format!("{key}.sticky"),
                ProblemKind::Conflict {
                    reason: format!("sticky key claim:{c} needs auth.jwt on this route"),
                },
            );
        }
        let rate_limit = r.rate_limit.and_then(|rl| {
            let k = format!("{key}.rate_limit");
            if !(rl.per_second > 0.0 && rl.per_second.is_finite()) {
                self.problem(
                    format!("{k}.per_second"),
                    ProblemKind::BadValue {
                        what: "rate",
                        value: fmt_f64(rl.per_second),
                        expected: "a number of requests per second above 0".into(),
                    },
                );
                return None;
            }
            let rk = match rl.key.as_deref() {
                None | Some("ip") => RateKey::Ip,
                Some(s) => match s.split_once(':') {
                    Some(("header", n)) if !n.is_empty() => RateKey::Header(n.to_ascii_lowercase()),
                    Some(("claim", n)) if !n.is_empty() => RateKey::Claim(n.to_string()),
                    _ => {
                        self.problem(
                            format!("{k}.key"),
                            ProblemKind::BadValue {
                                what: "rate limit key",
                                value: s.to_string(),
                                expected: "ip, header:NAME or claim:NAME".into(),
                            },
                        );
                        return None;
                    }
                },
            };
            if let RateKey::Claim(c) = &rk
                && auth.is_none()
            {
                self.problem(
                    format!("{k}.key"),
                    ProblemKind::Conflict {
                        reason: format!("rate limit key claim:{c} needs auth.jwt on this route"),
                    },
                );
            }
            let burst = rl
                .burst
                .unwrap_or_else(|| rl.per_second.ceil().max(1.0) as u32);
            if burst == 0 {
                self.problem(
                    format!("{k}.burst"),
                    ProblemKind::BadValue {
                        what: "burst",
                        value: "0".into(),
                        expected: "at least 1".into(),
                    },
                );
            }
            Some(RateLimitSpec {
                per_second: rl.per_second,
                burst,
                key: rk,
            })
        });
        let cache = r.cache.map(|c| {
            let spec = CacheSpec {
                ttl: self.duration(&format!("{key}.cache.ttl"), Some(&c.ttl), Duration::ZERO),
                max_entries: c.max_entries.unwrap_or(defaults::CACHE_MAX_ENTRIES),
                max_bytes: c.max_bytes.unwrap_or(defaults::CACHE_MAX_BYTES),
            };
            for (field, zero) in [
                ("ttl", spec.ttl.is_zero()),
                ("max_entries", spec.max_entries == 0),
                ("max_bytes", spec.max_bytes == 0),
            ] {
                if zero {
                    self.problem(
                        format!("{key}.cache.{field}"),
                        ProblemKind::BadValue {
                            what: "cache limit",
                            value: "0".into(),
                            expected: "more than 0 (a cache that can hold nothing stores nothing)"
                                .into(),
                        },
                    );
                }
            }
            spec
        });
        let ramp = r
            .ramp
            .and_then(|rf| self.ramp(&format!("{key}.ramp"), rf, split.as_ref(), default));
        if let Some(h) = &r.host_rewrite
            && (h.is_empty() || h.contains(['/', ' ']))
        {
            self.problem(
                format!("{key}.host_rewrite"),
                ProblemKind::BadValue {
                    what: "host",
                    value: h.clone(),
                    expected: "a host name, optionally with :port".into(),
                },
            );
        }
        let split = split?;
        Some(Route {
            sticky_seed: salt_seed(&sticky_salt),
            shadow_seed: shadow_seed(&sticky_salt),
            name: r.name,
            matcher,
            split,
            sticky,
            sticky_salt,
            host_rewrite: r.host_rewrite,
            shadow,
            compare,
            timeout,
            retries: r.retries.unwrap_or(defaults::RETRIES),
            websocket: r.websocket.unwrap_or(false),
            idle_timeout,
            auth,
            forward_claims,
            rate_limit,
            cache,
            ramp,
        })
    }

    fn split(
        &mut self,
        key: &str,
        weights: &BTreeMap<String, f64>,
        default: UpstreamId,
    ) -> Option<Split> {
        let mut ok = true;
        let mut out = Vec::new();
        let mut sum: f64 = 0.0;
        for (name, &w) in weights {
            let k = format!("{key}.{}", name);
            sum += w;
            let id = self.upstream_ref(&k, name);
            let bp = self.percent(&k, "weight", w);
            match (id, bp) {
                (Some(id), Some(bp)) => out.push((id, bp)),
                _ => ok = false,
            }
        }
        if weights.is_empty() {
            self.problem(
                key,
                ProblemKind::Missing {
                    what: "weights: give at least one upstream".into(),
                },
            );
            return None;
        }
        let total: u32 = out.iter().map(|&(_, bp)| u32::from(bp)).sum();
        if ok && total != u32::from(BUCKETS) {
            self.problem(
                key,
                ProblemKind::WeightsSum {
                    sum: fmt_f64((sum * 100.0).round() / 100.0),
                },
            );
            ok = false;
        }
        ok.then(|| Split::new(&out, default))
    }

    fn shadow(&mut self, key: &str, s: ShadowFile) -> Option<ShadowSpec> {
        let upstream = self.upstream_ref(&format!("{key}.upstream"), &s.upstream);
        let percent_bp = match s.percent {
            Some(p) => self.percent(&format!("{key}.percent"), "shadow percent", p),
            None => Some(BUCKETS),
        };
        let allow_writes = s.allow_writes.unwrap_or(false);
        let methods = match &s.methods {
            Some(m) => self.methods(&format!("{key}.methods"), m),
            None => defaults::SHADOW_METHODS
                .iter()
                .map(|m| m.to_string())
                .collect(),
        };
        if !allow_writes {
            let written: Vec<String> = s.methods.clone().unwrap_or_default();
            for (i, m) in written.iter().enumerate() {
                let m = m.to_ascii_uppercase();
                if !m.is_empty() && m.bytes().all(is_tchar) && !SAFE_METHODS.contains(&m.as_str()) {
                    self.problem(
                        format!("{key}.methods[{i}]"),
                        ProblemKind::ShadowWrites { method: m },
                    );
                }
            }
        }
        Some(ShadowSpec {
            upstream: upstream?,
            percent_bp: percent_bp?,
            methods,
            allow_writes,
        })
    }

    fn pointer(&mut self, key: &str, p: &str) {
        if !(p.is_empty() || p.starts_with('/')) {
            self.problem(
                key,
                ProblemKind::BadValue {
                    what: "JSON Pointer",
                    value: p.to_string(),
                    expected: "a pointer starting with /, e.g. /meta/request_id or /items/*/id"
                        .into(),
                },
            );
        }
    }

    fn compare(&mut self, key: &str, c: CompareFile) -> CompareSpec {
        for (i, p) in c.ignore_fields.iter().enumerate() {
            self.pointer(&format!("{key}.ignore_fields[{i}]"), p);
        }
        for (i, p) in c.unordered_arrays.iter().enumerate() {
            self.pointer(&format!("{key}.unordered_arrays[{i}]"), p);
        }
        for (i, p) in c.redact.iter().enumerate() {
            // A redact entry is a JSON Pointer (starts with /) or a header name.
            if !p.starts_with('/') && (p.is_empty() || !p.bytes().all(is_tchar)) {
                self.problem(
                    format!("{key}.redact[{i}]"),
                    ProblemKind::BadValue {
                        what: "redact entry",
                        value: p.clone(),
                        expected: "a header name or a JSON Pointer starting with /".into(),
                    },
                );
            }
        }
        let mut normalize = Vec::new();
        for (i, n) in c.normalize.iter().enumerate() {
            match n.as_str() {
                "timestamps" => normalize.push(Normalizer::Timestamps),
                "uuids" => normalize.push(Normalizer::Uuids),
                other => self.problem(
                    format!("{key}.normalize[{i}]"),
                    ProblemKind::BadValue {
                        what: "normalizer",
                        value: other.to_string(),
                        expected: "timestamps or uuids".into(),
                    },
                ),
            }
        }
        let noise_check = c.noise_check.and_then(|n| {
            let k = format!("{key}.noise_check");
            let percent_bp =
                self.percent(&format!("{k}.percent"), "noise_check percent", n.percent)?;
            let relative = n.relative.unwrap_or(defaults::NOISE_RELATIVE);
            let absolute = n.absolute.unwrap_or(defaults::NOISE_ABSOLUTE);
            for (name, v) in [("relative", relative), ("absolute", absolute)] {
                if !(0.0..=100.0).contains(&v) {
                    self.problem(
                        format!("{k}.{name}"),
                        ProblemKind::BadValue {
                            what: "threshold",
                            value: fmt_f64(v),
                            expected: "a percentage between 0 and 100".into(),
                        },
                    );
                }
            }
            Some(NoiseCheck {
                percent_bp,
                relative,
                absolute,
                min_samples: n.min_samples.unwrap_or(defaults::NOISE_MIN_SAMPLES),
            })
        });
        let lower = |v: Vec<String>| v.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        CompareSpec {
            headers: lower(c.headers),
            ignore_headers: lower(c.ignore_headers),
            ignore_fields: c.ignore_fields,
            unordered_arrays: c.unordered_arrays,
            normalize,
            noise_check,
            redact: c.redact,
        }
    }

    fn jwt(&mut self, key: &str, j: JwtFile) -> Option<AuthSpec> {
        let sources: Vec<(&str, JwtKey)> = [
            ("secret_env", j.secret_env.clone().map(JwtKey::SecretEnv)),
            (
                "public_key_pem",
                j.public_key_pem.clone().map(JwtKey::PublicKeyPem),
            ),
            ("jwks_file", j.jwks_file.clone().map(JwtKey::JwksFile)),
            ("jwks_url", j.jwks_url.clone().map(JwtKey::JwksUrl)),
        ]
        .into_iter()
        .filter_map(|(n, k)| k.map(|k| (n, k)))
        .collect();
        if j.algorithms.is_empty() {
            self.problem(
                format!("{key}.algorithms"),
                ProblemKind::Missing {
                    what: "algorithms: list the accepted algorithms, e.g. [\"RS256\"]".into(),
                },
            );
        }
        let mut hmac = false;
        let mut asym = false;
        for (i, a) in j.algorithms.iter().enumerate() {
            if HMAC_ALGS.contains(&a.as_str()) {
                hmac = true;
            } else if ASYM_ALGS.contains(&a.as_str()) {
                asym = true;
            } else {
                self.problem(
                    format!("{key}.algorithms[{i}]"),
                    ProblemKind::BadValue {
                        what: "algorithm",
                        value: a.clone(),
                        expected: format!(
                            "one of {}, {}",
                            HMAC_ALGS.join(", "),
                            ASYM_ALGS.join(", ")
                        ),
                    },
                );
            }
        }
        if hmac && asym {
            self.problem(format!("{key}.algorithms"), ProblemKind::Conflict {
                reason: "mixes HMAC (HS*) and public-key algorithms; one key family per route prevents algorithm confusion".into(),
            });
        }
        let key_source = match sources.len() {
            0 => {
                self.problem(
                    key,
                    ProblemKind::Missing {
                        what: "key: give one of secret_env, public_key_pem, jwks_file or jwks_url"
                            .into(),
                    },
                );
                None
            }
            1 => sources.into_iter().next().map(|(_, k)| k),
            _ => {
                let names: Vec<&str> = sources.iter().map(|(n, _)| *n).collect();
                self.problem(
                    format!("{key}.{}", names[1]),
                    ProblemKind::Conflict {
                        reason: format!("give one key source, found {}", names.join(" and ")),
                    },
                );
                None
            }
        };
        if let Some(k) = key_source.as_ref().filter(|_| !(hmac && asym)) {
            let is_secret = matches!(k, JwtKey::SecretEnv(_));
            if is_secret && asym {
                self.problem(
                    format!("{key}.algorithms"),
                    ProblemKind::Conflict {
                        reason: "secret_env is an HMAC secret; it needs HS256, HS384 or HS512"
                            .into(),
                    },
                );
            }
            if !is_secret && hmac {
                self.problem(
                    format!("{key}.algorithms"),
                    ProblemKind::Conflict {
                        reason: "public keys need RS*, PS*, ES* or EdDSA algorithms, not HS*"
                            .into(),
                    },
                );
            }
        }
        let leeway = self.duration(
            &format!("{key}.leeway"),
            j.leeway.as_deref(),
            defaults::JWT_LEEWAY,
        );
        let jwks_cooldown = self.duration(
            &format!("{key}.jwks_cooldown"),
            j.jwks_cooldown.as_deref(),
            defaults::JWKS_COOLDOWN,
        );
        if let Some(aud) = &j.audience
            && aud.clone().into_vec().is_empty()
        {
            self.problem(
                format!("{key}.audience"),
                ProblemKind::BadValue {
                    what: "audience",
                    value: "[]".into(),
                    expected: "at least one audience, or leave audience out to not check it".into(),
                },
            );
        }
        Some(AuthSpec {
            issuer: j.issuer,
            audience: j.audience.map(OneOrMany::into_vec).unwrap_or_default(),
            algorithms: j.algorithms,
            key: key_source?,
            leeway,
            jwks_cooldown,
        })
    }

    fn ramp(
        &mut self,
        key: &str,
        r: RampFile,
        split: Option<&Split>,
        default: UpstreamId,
    ) -> Option<RampSpec> {
        let to = match (&r.to, split) {
            (Some(name), _) => match self.upstream_ref(&format!("{key}.to"), name) {
                Some(id) if id == default => {
                    self.problem(format!("{key}.to"), ProblemKind::ShiftTarget {
                        reason: format!("ramp target \"{name}\" is the default upstream; ramp towards the new service"),
                    });
                    None
                }
                other => other,
            },
            // The split has its own problem; say nothing more about `to`.
            (None, None) => None,
            (None, Some(split)) => {
                let others: Vec<UpstreamId> = split
                    .weights()
                    .map(|(id, _)| id)
                    .filter(|&id| id != default)
                    .collect();
                if others.len() != 1 {
                    let reason = if others.is_empty() {
                        "ramp needs `to`: the route's split has no upstream besides the default"
                            .to_string()
                    } else {
                        format!(
                            "ramp needs `to`: the route's split has {} upstreams besides the default",
                            others.len()
                        )
                    };
                    self.problem(format!("{key}.to"), ProblemKind::ShiftTarget { reason });
                    None
                } else {
                    Some(others[0])
                }
            }
        };
        let mut steps_bp = Vec::new();
        for (i, &s) in r.steps.iter().enumerate() {
            if let Some(bp) = self.percent(&format!("{key}.steps[{i}]"), "ramp step", s) {
                if steps_bp.last().is_some_and(|&last| bp <= last) {
                    self.problem(
                        format!("{key}.steps[{i}]"),
                        ProblemKind::BadValue {
                            what: "ramp step",
                            value: fmt_bp(bp),
                            expected: "steps in increasing order".into(),
                        },
                    );
                }
                steps_bp.push(bp);
            }
        }
        if r.steps.is_empty() {
            self.problem(
                format!("{key}.steps"),
                ProblemKind::Missing {
                    what: "steps, e.g. [1, 5, 25, 50, 100]".into(),
                },
            );
        }
        let on_fail = match r.on_fail.as_deref() {
            None | Some("rollback") => OnFail::Rollback,
            Some("pause") => OnFail::Pause,
            Some(other) => {
                self.problem(
                    format!("{key}.on_fail"),
                    ProblemKind::BadValue {
                        what: "on_fail",
                        value: other.to_string(),
                        expected: "rollback or pause".into(),
                    },
                );
                OnFail::Rollback
            }
        };
        let rates = [
            ("max_error_rate", r.max_error_rate),
            ("max_mismatch_rate", r.max_mismatch_rate),
        ];
        for (name, v) in rates {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                self.problem(
                    format!("{key}.{name}"),
                    ProblemKind::BadValue {
                        what: "rate",
                        value: fmt_f64(v),
                        expected: "a fraction between 0 and 1, e.g. 0.01 for 1%".into(),
                    },
                );
            }
        }
        for (name, v) in [
            ("max_error_ratio", r.max_error_ratio),
            ("max_p99_ratio", r.max_p99_ratio),
        ] {
            if let Some(v) = v
                && !(v > 0.0 && v.is_finite())
            {
                self.problem(
                    format!("{key}.{name}"),
                    ProblemKind::BadValue {
                        what: "ratio",
                        value: fmt_f64(v),
                        expected: "a number above 0".into(),
                    },
                );
            }
        }
        let every = self.duration(
            &format!("{key}.every"),
            r.every.as_deref(),
            defaults::RAMP_EVERY,
        );
        Some(RampSpec {
            to: to?,
            steps_bp,
            every,
            max_error_rate: r.max_error_rate.unwrap_or(defaults::RAMP_MAX_ERROR_RATE),
            max_error_ratio: r.max_error_ratio.unwrap_or(defaults::RAMP_MAX_ERROR_RATIO),
            max_p99_ratio: r.max_p99_ratio.unwrap_or(defaults::RAMP_MAX_P99_RATIO),
            max_mismatch_rate: r
                .max_mismatch_rate
                .unwrap_or(defaults::RAMP_MAX_MISMATCH_RATE),
            min_requests: r.min_requests.unwrap_or(defaults::RAMP_MIN_REQUESTS),
            on_fail,
        })
    }

    fn aggregate(&mut self, key: &str, a: AggregateFile) -> Option<Aggregate> {
        let matcher = self.matcher(key, a.matcher);
        let params: Vec<String> = match &matcher.path {
            Some(PathMatch::Template(t)) => t.params().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        if matcher.path.is_none()
            && matcher.host.is_none()
            && matcher.headers.is_empty()
            && matcher.query.is_empty()
            && matcher.cookies.is_empty()
        {
            self.problem(
                format!("{key}.match"),
                ProblemKind::Missing {
                    what: "match: an aggregate without matchers would take every request; give e.g. match.path_template".into(),
                },
            );
        }
        if a.parts.is_empty() {
            self.problem(
                format!("{key}.parts"),
                ProblemKind::Missing {
                    what: "parts: an aggregate needs at least one part".into(),
                },
            );
        }
        let mut parts = Vec::new();
        for (name, p) in a.parts {
            let k = format!("{key}.parts.{}", name);
            if !p.path.starts_with('/') {
                self.problem(
                    format!("{k}.path"),
                    ProblemKind::BadPath {
                        reason: format!("part path \"{}\" must start with /", p.path),
                    },
                );
            }
            for placeholder in placeholders(&p.path) {
                if !params.iter().any(|x| x == placeholder) {
                    self.problem(format!("{k}.path"), ProblemKind::BadPath {
                        reason: format!("placeholder {{{placeholder}}} is not a parameter of the aggregate's path_template"),
                    });
                }
            }
            let upstream = match &p.upstream {
                Some(u) => self.upstream_ref(&format!("{k}.upstream"), u),
                None => None,
            };
            parts.push(AggregatePart {
                timeout: p
                    .timeout
                    .as_deref()
                    .map(|t| self.duration(&format!("{k}.timeout"), Some(t), Duration::ZERO)),
                name,
                path: p.path,
                upstream,
            });
        }
        Some(Aggregate {
            name: a.name,
            matcher,
            parts,
        })
    }
}

/// `{name}` placeholders in an aggregate part's path.
fn placeholders(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(n, _)| n))
}

/// Durations like `500ms`, `10s`, `5m`, `1h 30m`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        let msg = e.to_string();
        match msg.split_once(", supported units") {
            Some((head, _)) => head.to_string(),
            None => msg,
        }
    })
}

/// A percentage 0..=100 with at most two decimals, as basis points.
pub fn percent_to_bp(value: f64) -> Option<u16> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return None;
    }
    let scaled = value * 100.0;
    let bp = scaled.round();
    if (scaled - bp).abs() > 1e-6 {
        return None;
    }
    Some(bp as u16)
}

fn fmt_f64(v: f64) -> String {
    let s = format!("{v}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Headers a claim may not be forwarded as: they frame, route or
/// authorize the request.
const RESERVED_CLAIM_TARGETS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "authorization",
    "cookie",
    "x-strangler-shadow",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => return Err(format!("scheme {other} is not http or https")),
        None => return Err("missing scheme, write http://host:port".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    if let Some(a) = uri.authority() {
        let a = a.as_str();
        let host_end = if a.starts_with('[') {
            a.find(']').map_or(a.len(), |i| i + 1)
        } else {
            a.rfind(':').unwrap_or(a.len())
        };
        if let Some(port) = a[host_end..].strip_prefix(':')
            && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
        {
            return Err(format!("invalid port \"{port}\": expected 1-65535"));
        }
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("credentials in upstream urls are not supported".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(
            "a path is not supported in upstream urls; requests keep their own path".into(),
        );
    }
    if uri.query().is_some() {
        return Err("a query is not supported in upstream urls".into());
    }
    Ok(uri)
}
