//! The config file as written: serde structs that mirror the TOML exactly,
//! reject unknown keys, and leave every default to validation
//! (`crate::config`), which turns them into the typed [`crate::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listen: ListenFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    pub default: Option<DefaultFile>,
    #[serde(default)]
    pub shadow: ShadowLimitsFile,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub aggregates: Vec<AggregateFile>,
    #[serde(default)]
    pub notify: NotifyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub proxy: Option<String>,
    pub admin: Option<String>,
    pub workers: Option<usize>,
    pub trusted_hops: Option<u32>,
    pub drain_timeout: Option<String>,
    pub tls: Option<TlsFile>,
    pub header_read_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub h2_max_streams: Option<u32>,
    pub lean: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub path: Option<String>,
    pub max_diffs: Option<u64>,
    pub diff_ttl: Option<String>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub urls: Vec<String>,
    pub balance: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub eject_after: Option<u32>,
    pub eject_for: Option<String>,
    pub health: Option<HealthFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub path: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultFile {
    pub upstream: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowLimitsFile {
    pub timeout: Option<String>,
    pub concurrency: Option<u32>,
    pub queue: Option<u32>,
    pub max_request_body: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    pub webhook: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchFile,
    pub split: Option<BTreeMap<String, f64>>,
    /// Shorthand for `split = { NAME = 100 }`.
    pub upstream: Option<String>,
    pub sticky: Option<String>,
    pub sticky_salt: Option<String>,
    pub host_rewrite: Option<String>,
    pub shadow: Option<ShadowFile>,
    #[serde(default)]
    pub compare: CompareFile,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub websocket: Option<bool>,
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub auth: AuthFile,
    pub rate_limit: Option<RateLimitFile>,
    pub cache: Option<CacheFile>,
    pub ramp: Option<RampFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_template: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowFile {
    pub upstream: String,
    pub percent: Option<f64>,
    pub methods: Option<Vec<String>>,
    pub allow_writes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareFile {
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub ignore_headers: Vec<String>,
    #[serde(default)]
    pub ignore_fields: Vec<String>,
    #[serde(default)]
    pub unordered_arrays: Vec<String>,
    #[serde(default)]
    pub normalize: Vec<String>,
    pub noise_check: Option<NoiseCheckFile>,
    #[serde(default)]
    pub redact: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseCheckFile {
    pub percent: f64,
    pub relative: Option<f64>,
    pub absolute: Option<f64>,
    pub min_samples: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub jwt: Option<JwtFile>,
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    pub issuer: Option<String>,
    pub audience: Option<OneOrMany>,
    pub algorithms: Vec<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub public_key_pem: Option<String>,
    pub secret_env: Option<String>,
    pub leeway: Option<String>,
    pub jwks_cooldown: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub per_second: f64,
    pub burst: Option<u32>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub ttl: String,
    pub max_entries: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampFile {
    pub to: Option<String>,
    pub steps: Vec<f64>,
    pub every: Option<String>,
    pub max_error_rate: Option<f64>,
    pub max_error_ratio: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    pub max_mismatch_rate: Option<f64>,
    pub min_requests: Option<u64>,
    pub on_fail: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateFile {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchFile,
    #[serde(default)]
    pub parts: BTreeMap<String, AggregatePartFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatePartFile {
    pub path: String,
    pub timeout: Option<String>,
    pub upstream: Option<String>,
}
