//! JWT auth per route (`auth.jwt`), with jsonwebtoken on aws-lc-rs. Keys
//! come from an env var (HMAC secret), a PEM file (RSA, EC or Ed25519
//! public key) or a JWKS file looked up by `kid`. A route accepts only the
//! algorithms it lists, of one key family (the config refuses a mix), and
//! a key only verifies its own family, so HS/RS confusion is impossible.
//! `exp` is required, `nbf` checked, `iss` and `aud` required when
//! configured, with `leeway`. Keys load at start and on every reload (so a
//! rotated JWKS file is picked up on SIGHUP), never on the request path.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use strangler_rules::config::{AuthSpec, Config, JwtKey};

/// The verified claims of a token.
pub type Claims = Map<String, Value>;

type KeySet = Vec<(String, DecodingKey, Option<String>)>;

enum Keys {
    /// One key for every token (secret_env, public_key_pem).
    Single(DecodingKey),
    /// By `kid`, with the JWK's own algorithm when it names one.
    Jwks(KeySet),
    /// By `kid`, fetched from a URL: refreshed in the background, and
    /// fetched again on an unknown kid at most once per cool-down.
    Remote(Arc<RemoteJwks>),
}

/// A JWKS behind a URL.
pub struct RemoteJwks {
    url: String,
    cooldown: std::time::Duration,
    keys: std::sync::RwLock<Arc<KeySet>>,
    /// Any fetch (for the periodic refresh).
    last_fetch: std::sync::Mutex<Option<std::time::Instant>>,
    /// The last fetch an unknown kid asked for (for the cool-down).
    last_on_demand: std::sync::Mutex<Option<std::time::Instant>>,
    /// Fetches made, for tests and logs.
    pub fetches: std::sync::atomic::AtomicU64,
}

impl RemoteJwks {
    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches again when the keys are older than `age` (and the cool-down
    /// allows). Blocking: run it off the runtime.
    pub fn refresh_if_older(&self, age: std::time::Duration) {
        let old = self
            .last_fetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| t.elapsed() >= age);
        if old && let Err(e) = self.fetch() {
            tracing::warn!(url = %self.url, "cannot refresh the JWKS: {e}");
        }
    }

    /// Claims the right to fetch for an unknown kid now (once per cool-down).
    fn may_fetch(&self) -> bool {
        let mut last = self
            .last_on_demand
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// Fetches the set (blocking; run off the runtime) and keeps it if it parses.
    fn fetch(&self) -> Result<(), String> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
        let url = self.url.clone();
        // reqwest's blocking client runs its own runtime: give it a thread.
        let body = std::thread::spawn(move || -> Result<Vec<u8>, String> {
            let client = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client.get(&url).send().map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            resp.bytes().map(|b| b.to_vec()).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the JWKS fetch failed".to_string())??;
        let keys = parse_jwks(&body, &self.url)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }
}

/// The signing keys of a JWKS document (keys without a kid, or meant for
/// encryption, are left out).
fn parse_jwks(text: &[u8], source: &str) -> Result<KeySet, String> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|e| format!("{source} is not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid} in {source}: {e}"))?;
        let alg = jwk.common.key_algorithm.map(|a| a.to_string());
        keys.push((kid, key, alg));
    }
    Ok(keys)
}

/// A route's verifier.
pub struct RouteAuth {
    algorithms: Vec<Algorithm>,
    keys: Keys,
    spec: AuthSpec,
}

impl std::fmt::Debug for RouteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteAuth")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why a request is refused (401).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl RouteAuth {
    /// Loads the route's keys; relative file paths are read from `base`
    /// (the config file's directory).
    pub fn load(route: &str, spec: &AuthSpec, base: &std::path::Path) -> Result<Self, String> {
        let file = |p: &str| base.join(p);
        let algorithms = spec
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a).map_err(|_| format!("route {route}: unknown algorithm {a}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = match &spec.key {
            JwtKey::SecretEnv(var) => match std::env::var(var) {
                Ok(s) if !s.is_empty() => Keys::Single(DecodingKey::from_secret(s.as_bytes())),
                _ => {
                    return Err(format!(
                        "route {route}: auth.jwt.secret_env names {var}, which is not set"
                    ));
                }
            },
            JwtKey::PublicKeyPem(path) => {
                let pem = std::fs::read(file(path))
                    .map_err(|e| format!("route {route}: cannot read {path}: {e}"))?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .or_else(|_| DecodingKey::from_ec_pem(&pem))
                    .or_else(|_| DecodingKey::from_ed_pem(&pem))
                    .map_err(|_| {
                        format!("route {route}: {path} holds no RSA, EC or Ed25519 public key")
                    })?;
                Keys::Single(key)
            }
            JwtKey::JwksFile(path) => {
                let text = std::fs::read(file(path))
                    .map_err(|e| format!("route {route}: cannot read {path}: {e}"))?;
                Keys::Jwks(parse_jwks(&text, path).map_err(|e| format!("route {route}: {e}"))?)
            }
            JwtKey::JwksUrl(url) => {
                let remote = Arc::new(RemoteJwks {
                    url: url.clone(),
                    cooldown: spec.jwks_cooldown,
                    keys: std::sync::RwLock::new(Arc::new(Vec::new())),
                    last_fetch: std::sync::Mutex::new(None),
                    last_on_demand: std::sync::Mutex::new(None),
                    fetches: std::sync::atomic::AtomicU64::new(0),
                });
                // A JWKS endpoint that is down at start must not stop the
                // proxy: tokens fail until a fetch succeeds.
                if let Err(e) = remote.fetch() {
                    tracing::warn!(%route, "cannot fetch the JWKS yet: {e}");
                }
                Keys::Remote(remote)
            }
        };
        Ok(RouteAuth {
            algorithms,
            keys,
            spec: spec.clone(),
        })
    }

    /// The remote JWKS, if the keys come from a URL.
    pub fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        match &self.keys {
            Keys::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// Verifies the request's bearer token; returns its claims.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<Claims, AuthError> {
        let invalid = |why: &str| AuthError::Invalid(why.to_string());
        // Which one would the upstream read? Refuse to guess.
        if headers.get_all(http::header::AUTHORIZATION).iter().count() > 1 {
            return Err(invalid("more than one Authorization header"));
        }
        let token = bearer(headers).ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid("algorithm not accepted"));
        }
        let remote_keys;
        let key = match &self.keys {
            Keys::Single(k) => k,
            Keys::Jwks(keys) => pick(keys, &header)?,
            Keys::Remote(r) => {
                let kid = header
                    .kid
                    .clone()
                    .ok_or_else(|| invalid("token has no kid"))?;
                let mut keys = r.keys();
                if !keys.iter().any(|(k, _, _)| *k == kid) && r.may_fetch() {
                    // An unknown kid may be a new key: fetch again, at most
                    // once per cool-down, off the runtime.
                    let r2 = r.clone();
                    match tokio::task::spawn_blocking(move || r2.fetch()).await {
                        Ok(Err(e)) => tracing::warn!("cannot fetch the JWKS: {e}"),
                        Err(e) => tracing::warn!("cannot fetch the JWKS: {e}"),
                        Ok(Ok(())) => {}
                    }
                    keys = r.keys();
                }
                remote_keys = keys;
                pick(&remote_keys, &header)?
            }
        };
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.spec.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.spec.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        if self.spec.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.spec.audience);
            required.push("aud");
        }
        v.required_spec_claims = required
            .into_iter()
            .map(str::to_string)
            .collect::<HashSet<_>>();
        jsonwebtoken::decode::<Claims>(token, key, &v)
            .map(|t| t.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                invalid(match e.kind() {
                    K::ExpiredSignature => "token expired",
                    K::ImmatureSignature => "token not valid yet (nbf)",
                    K::InvalidAudience => "wrong audience",
                    K::InvalidIssuer => "wrong issuer",
                    K::MissingRequiredClaim(_) => "a required claim is missing",
                    K::InvalidSignature => "bad signature",
                    K::InvalidAlgorithm | K::InvalidAlgorithmName => "algorithm not accepted",
                    _ => "cannot verify the token",
                })
            })
    }
}

/// The key a token names by `kid`, if its algorithm fits the key's.
fn pick<'k>(keys: &'k KeySet, header: &jsonwebtoken::Header) -> Result<&'k DecodingKey, AuthError> {
    let invalid = |why: &str| AuthError::Invalid(why.to_string());
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| invalid("token has no kid"))?;
    let (_, key, alg) = keys
        .iter()
        .find(|(k, _, _)| k == kid)
        .ok_or_else(|| invalid("unknown key id"))?;
    let header_alg = format!("{:?}", header.alg);
    if alg.as_ref().is_some_and(|a| *a != header_alg) {
        return Err(invalid("algorithm does not match the key"));
    }
    Ok(key)
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Sets `forward_claims` headers from verified claims, removing any copies
/// the client sent under those names first.
pub fn forward_claims(claims: &Claims, pairs: &[(String, String)], headers: &mut HeaderMap) {
    for (claim, name) in pairs {
        headers.remove(name.as_str());
        if let (Some(v), Ok(n)) = (
            claim_text(claims, claim).and_then(|v| http::HeaderValue::from_str(&v).ok()),
            http::header::HeaderName::from_bytes(name.as_bytes()),
        ) {
            headers.insert(n, v);
        }
    }
}

/// A claim as a header value or key: strings as they are, other values as
/// JSON.
pub fn claim_text(claims: &Claims, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Every route's verifier, in route order; an error names the route and
/// what is missing. Relative key files are read next to `config_path`.
pub fn load_all(
    config: &Config,
    config_path: &std::path::Path,
) -> Result<Vec<Option<Arc<RouteAuth>>>, String> {
    let base = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    config
        .routes
        .iter()
        .map(|r| match &r.auth {
            Some(spec) => RouteAuth::load(&r.name, spec, base).map(|a| Some(Arc::new(a))),
            None => Ok(None),
        })
        .collect()
}
