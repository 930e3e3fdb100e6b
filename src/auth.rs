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

enum Keys {
    /// One key for every token (secret_env, public_key_pem).
    Single(DecodingKey),
    /// By `kid`, with the JWK's own algorithm when it names one.
    Jwks(Vec<(String, DecodingKey, Option<String>)>),
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
    /// Loads the route's keys.
    pub fn load(route: &str, spec: &AuthSpec) -> Result<Self, String> {
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
                let pem = std::fs::read(path)
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
                let text = std::fs::read(path)
                    .map_err(|e| format!("route {route}: cannot read {path}: {e}"))?;
                let set: JwkSet = serde_json::from_slice(&text)
                    .map_err(|e| format!("route {route}: {path} is not a JWKS: {e}"))?;
                let mut keys = Vec::new();
                for jwk in &set.keys {
                    // Keys not meant for signatures are never used to verify.
                    if matches!(
                        jwk.common.public_key_use,
                        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
                    ) {
                        continue;
                    }
                    let Some(kid) = jwk.common.key_id.clone() else {
                        continue;
                    };
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| format!("route {route}: key {kid} in {path}: {e}"))?;
                    let alg = jwk.common.key_algorithm.map(|a| a.to_string());
                    keys.push((kid, key, alg));
                }
                Keys::Jwks(keys)
            }
            JwtKey::JwksUrl(url) => {
                return Err(format!(
                    "route {route}: auth.jwt.jwks_url ({url}) is not supported yet; use jwks_file"
                ));
            }
        };
        Ok(RouteAuth {
            algorithms,
            keys,
            spec: spec.clone(),
        })
    }

    /// Verifies the request's bearer token; returns its claims.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Claims, AuthError> {
        let token = bearer(headers).ok_or(AuthError::Missing)?;
        let invalid = |why: &str| AuthError::Invalid(why.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(invalid("algorithm not accepted"));
        }
        let key = match &self.keys {
            Keys::Single(k) => k,
            Keys::Jwks(keys) => {
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
                key
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

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
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
/// what is missing.
pub fn load_all(config: &Config) -> Result<Vec<Option<Arc<RouteAuth>>>, String> {
    config
        .routes
        .iter()
        .map(|r| match &r.auth {
            Some(spec) => RouteAuth::load(&r.name, spec).map(|a| Some(Arc::new(a))),
            None => Ok(None),
        })
        .collect()
}
