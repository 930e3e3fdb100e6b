//! Redaction: secrets are replaced before anything is compared or stored.
//! Authorization, Proxy-Authorization, Cookie and Set-Cookie headers, and
//! the headers and JSON fields a route lists in `compare.redact`, become an
//! HMAC-SHA256 under a key drawn at start and held only in memory. Equal
//! secrets still compare equal; nothing stored can be reversed or matched
//! offline against a guessed value (not even by its plain SHA-256).

use aws_lc_rs::{hmac, rand};
use serde_json::Value;

use crate::capture::hex;
use crate::pointer::Pattern;

/// Headers that are always redacted.
pub const ALWAYS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Holds the in-memory HMAC key.
pub struct Redactor {
    key: std::sync::Arc<hmac::Key>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(key hidden)")
    }
}

impl Redactor {
    /// A redactor with a fresh random key.
    pub fn new() -> Result<Self, String> {
        let mut key = [0u8; 32];
        rand::fill(&mut key).map_err(|_| "cannot draw a random redaction key".to_string())?;
        Ok(Redactor {
            key: std::sync::Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key)),
        })
    }

    /// The in-memory key, for keyed hashes of bodies.
    pub fn key(&self) -> &std::sync::Arc<hmac::Key> {
        &self.key
    }

    /// Keyed hash of a whole body, lower-case hex.
    pub fn hash(&self, data: &[u8]) -> String {
        crate::capture::keyed_hash(&self.key, data)
    }

    /// The stand-in for a secret value.
    pub fn token(&self, secret: &[u8]) -> String {
        let tag = hmac::sign(&self.key, secret);
        format!("redacted:{}", hex(&tag.as_ref()[..16]))
    }

    /// Redacts the always-secret headers and those named in `extra`
    /// (lower-case names).
    pub fn headers(&self, headers: &mut [(String, String)], extra: &[String]) {
        for (name, value) in headers.iter_mut() {
            if ALWAYS.contains(&name.as_str()) || extra.iter().any(|e| e == name) {
                *value = self.token(value.as_bytes());
            }
        }
    }

    /// Replaces every value at a path matching one of `patterns`.
    pub fn json(&self, value: &mut Value, patterns: &[Pattern]) {
        if patterns.is_empty() {
            return;
        }
        let mut path = Vec::new();
        self.walk(value, patterns, &mut path);
    }

    fn walk(&self, value: &mut Value, patterns: &[Pattern], path: &mut Vec<String>) {
        if patterns.iter().any(|p| p.matches(path)) {
            let canonical = value.to_string();
            *value = Value::String(self.token(canonical.as_bytes()));
            return;
        }
        if !patterns.iter().any(|p| p.may_match_below(path)) {
            return;
        }
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    path.push(k.clone());
                    self.walk(v, patterns, path);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    path.push(i.to_string());
                    self.walk(v, patterns, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_headers_and_fields_consistently() {
        let r = Redactor::new().unwrap();
        let mut h = vec![
            ("authorization".to_string(), "Bearer s3cret".to_string()),
            ("x-api-key".to_string(), "k3y".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        r.headers(&mut h, &["x-api-key".to_string()]);
        assert!(h[0].1.starts_with("redacted:"));
        assert!(!h[0].1.contains("s3cret"));
        assert!(h[1].1.starts_with("redacted:"));
        assert_eq!(h[2].1, "application/json");
        assert_eq!(r.token(b"same"), r.token(b"same"));
        assert_ne!(r.token(b"same"), r.token(b"other"));

        let mut v = json!({"customer": {"email": "a@b.c", "name": "A"}, "cards": [{"pan": "4111"}, {"pan": "5500"}]});
        r.json(
            &mut v,
            &[
                Pattern::parse("/customer/email"),
                Pattern::parse("/cards/*/pan"),
            ],
        );
        let s = v.to_string();
        assert!(!s.contains("a@b.c") && !s.contains("4111") && !s.contains("5500"));
        assert_eq!(v["customer"]["name"], "A");
        // Another redactor (another start) gives other tokens.
        assert_ne!(Redactor::new().unwrap().token(b"same"), r.token(b"same"));
    }
}
