//! The request as the proxy reads it: the head the rule engine sees, the
//! Host it is for, paths refused as ambiguous, which methods are safe to
//! retry, and percent-encoding for template values. Hop-by-hop and
//! forwarding headers are `http1::headers`.

use http::{Version, header, request::Parts};
use strangler_rules::RequestView;

/// The request as the rule engine sees it.
pub struct RequestHead<'a> {
    pub parts: &'a Parts,
    pub host: Option<&'a str>,
}

impl RequestView for RequestHead<'_> {
    #[inline]
    fn method(&self) -> &str {
        self.parts.method.as_str()
    }
    #[inline]
    fn path(&self) -> &str {
        self.parts.uri.path()
    }
    #[inline]
    fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }
    #[inline]
    fn host(&self) -> Option<&str> {
        self.host
    }
    #[inline]
    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(pred)
    }
}

/// The request's host: the Host header (exactly one for HTTP/1), or the
/// URI's authority (HTTP/2's :authority).
pub fn request_host(parts: &Parts) -> Result<Option<&str>, crate::proxy::error::ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(crate::proxy::error::ProxyError::DuplicateHost);
    }
    let header_host = match first {
        Some(v) => Some(v.to_str().map_err(|_| {
            crate::proxy::error::ProxyError::BadRequest("Host is not valid text".into())
        })?),
        None => None,
    };
    match parts.version {
        Version::HTTP_2 | Version::HTTP_3 => {
            Ok(parts.uri.authority().map(|a| a.as_str()).or(header_host))
        }
        // An absolute-form target's host wins over Host (RFC 9112 3.2.2).
        Version::HTTP_11 => match (parts.uri.authority(), header_host) {
            (Some(a), _) => Ok(Some(a.as_str())),
            (None, Some(h)) => Ok(Some(h)),
            (None, None) => Err(crate::proxy::error::ProxyError::MissingHost),
        },
        _ => Ok(parts.uri.authority().map(|a| a.as_str()).or(header_host)),
    }
}

/// Whether a request path is one that servers behind the proxy could read
/// differently from the router: a `.` or `..` segment (also percent-encoded,
/// with `;params`, or split by an encoded or back slash), or an empty
/// segment (`//`). Such paths are refused (400) rather than routed, so no
/// route's auth or rate limit can be stepped around by a path the monolith
/// would normalise to a protected one.
pub fn ambiguous_path(path: &str) -> bool {
    // Every request passes here: most paths have nothing to look at, which
    // one pass over the bytes tells (no substring search set up per call).
    let mut prev = 0u8;
    let suspicious = path.bytes().any(|b| {
        let hit = matches!(b, b'.' | b'%' | b'\\') || (b == b'/' && prev == b'/');
        prev = b;
        hit
    });
    if !suspicious {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    let unified = lower
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    let body = unified.strip_prefix('/').unwrap_or(&unified);
    if body.is_empty() {
        return false;
    }
    let segs: Vec<&str> = body.split('/').collect();
    segs.iter().enumerate().any(|(i, seg)| {
        let seg = seg.split(';').next().unwrap_or("");
        let decoded = seg.replace("%2e", ".");
        let last = i + 1 == segs.len();
        decoded == "." || decoded == ".." || (seg.is_empty() && !last)
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a
/// path segment or a query value).
pub fn percent_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod path_tests {
    use super::ambiguous_path;

    #[test]
    fn dot_and_empty_segments_are_ambiguous() {
        for p in [
            "/open/../secure/a",
            "/open/%2e%2e/secure/a",
            "/open/%2E%2E/secure",
            "/open/..;/secure/a",
            "//secure/a",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/open/..%2fsecure",
            "/open\\..\\secure",
        ] {
            assert!(ambiguous_path(p), "{p}");
        }
        for p in [
            "/",
            "/api/orders/7",
            "/api/orders/",
            "/a/b.c/..d/e..",
            "/files/%2e%2e.txt",
            "/x;y=1/z",
        ] {
            assert!(!ambiguous_path(p), "{p}");
        }
    }
}
